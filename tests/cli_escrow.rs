//! `writ escrow ...` end to end: the binary in a temp dir, a real keyring,
//! custodians with their own age identities.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::cli::{Env, KEYS_INIT};

const MESSAGE: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: escrow test\r\n\
Message-ID: <1@example.org>\r\n\r\nThe body, sealed after escrow was set up.\r\n";

impl Env {
    /// The test's working directory, with the message `msg.eml`.
    fn with_message() -> Env {
        let env = Env::new();
        std::fs::write(env.path("msg.eml"), MESSAGE).unwrap();
        env
    }

    /// Writes custodian identity files `c1.key`.. and returns their
    /// recipients.
    fn custodians(&self, n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| {
                let id = age::x25519::Identity::generate();
                use age::secrecy::ExposeSecret;
                std::fs::write(
                    self.path(&format!("c{i}.key")),
                    format!("# custodian {i}\n{}\n", id.to_string().expose_secret()),
                )
                .unwrap();
                id.to_public().to_string()
            })
            .collect()
    }

    fn escrow_init(&self, shares: usize, threshold: usize, custodians: &[String]) -> Output {
        let shares = shares.to_string();
        let threshold = threshold.to_string();
        let mut args = vec![
            "escrow",
            "init",
            "--shares",
            &shares,
            "--threshold",
            &threshold,
        ];
        for c in custodians {
            args.extend(["--custodian", c.as_str()]);
        }
        self.run(&args)
    }

    fn seal(&self, out: &str) {
        let sealed = self.ok(&["seal", "msg.eml"]).stdout;
        std::fs::write(self.path(out), sealed).unwrap();
    }
}

fn share(i: usize, n: usize) -> String {
    format!("escrow-shares/escrow-share-{i}-of-{n}.age")
}

#[test]
fn init_seal_recover_open_without_keyring() {
    let env = Env::with_message();
    env.init_keyring();
    env.seal("before.eml");
    let custodians = env.custodians(3);
    let out = env.escrow_init(3, 2, &custodians);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let escrow_txt = std::fs::read_to_string(env.path("keys/escrow.txt")).unwrap();
    let recipient = escrow_txt
        .lines()
        .find(|l| l.starts_with("age1"))
        .unwrap()
        .to_string();
    assert!(text.contains(&recipient), "{text}");
    assert!(
        env.ok_text(&["keys", "list"])
            .contains(&format!("escrow: {recipient}"))
    );
    for i in 1..=3 {
        let path = env.path(&share(i, 3));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let bytes = std::fs::read_to_string(&path).unwrap();
        assert!(bytes.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(text.contains(&custodians[i - 1]));
        // Each share opens with its custodian's key (the reference age CLI
        // is enough) and holds no whole key.
        let plain = Command::new("/usr/bin/age")
            .args(["-d", "-i"])
            .arg(env.path(&format!("c{i}.key")))
            .arg(&path)
            .output()
            .unwrap();
        assert!(plain.status.success());
        let plain = String::from_utf8(plain.stdout).unwrap();
        assert!(plain.contains(&format!("index: {i}")) && plain.contains("threshold: 2"));
        assert!(!plain.contains("AGE-SECRET-KEY"));
    }

    // Mail sealed from now on includes the escrow recipient.
    env.seal("after.eml");

    // The keyring is lost.
    std::fs::rename(env.path("keys"), env.path("keys.lost")).unwrap();

    let out = env.run(&[
        "escrow",
        "recover",
        "--share",
        &share(3, 3),
        "--share",
        &share(1, 3),
        "--identity",
        "c1.key",
        "--identity",
        "c3.key",
        "--out",
        "escrow.key",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(
        stderr.contains("not recorded in an audit log: no keyring"),
        "{stderr}"
    );
    let key = std::fs::read_to_string(env.path("escrow.key")).unwrap();
    assert!(key.contains(&recipient));
    assert_eq!(
        std::fs::metadata(env.path("escrow.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let opened = env.ok(&[
        "escrow",
        "open",
        "--escrow-identity",
        "escrow.key",
        "after.eml",
    ]);
    assert_eq!(opened.stdout, MESSAGE);
    let summary = env.ok_text(&[
        "escrow",
        "open",
        "--summary",
        "--escrow-identity",
        "escrow.key",
        "after.eml",
    ]);
    let _: serde_json::Value = serde_json::from_str(&summary).unwrap();
    // Mail sealed before escrow was set up stays closed to it.
    let out = env.run(&[
        "escrow",
        "open",
        "--escrow-identity",
        "escrow.key",
        "before.eml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    // The reference age CLI opens the rebuilt identity file too.
    let check = Command::new("/usr/bin/age-keygen")
        .arg("-y")
        .arg(env.path("escrow.key"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(check.stdout).unwrap().trim(), recipient);

    // Never overwrites the output.
    let e = env.fail(&[
        "escrow",
        "recover",
        "--share",
        &share(1, 3),
        "--share",
        &share(2, 3),
        "--identity",
        "c1.key",
        "--identity",
        "c2.key",
        "--out",
        "escrow.key",
    ]);
    assert!(e.contains("escrow.key exists"), "{e}");
}

#[test]
fn recover_refusals() {
    let env = Env::with_message();
    env.init_keyring();
    let custodians = env.custodians(5);
    assert!(env.escrow_init(5, 3, &custodians).status.success());
    let all = [
        "--identity",
        "c1.key",
        "--identity",
        "c2.key",
        "--identity",
        "c3.key",
    ];
    let all: Vec<&str> = all
        .into_iter()
        .chain(["--identity", "c4.key", "--identity", "c5.key"])
        .collect();
    let recover = |shares: &[usize], ids: &[&str]| {
        let paths: Vec<String> = shares.iter().map(|&i| share(i, 5)).collect();
        let mut args = vec!["escrow", "recover", "--out", "out.key"];
        for p in &paths {
            args.extend(["--share", p.as_str()]);
        }
        args.extend(ids);
        env.fail(&args)
    };

    // Too few.
    let e = recover(&[2, 4], &all);
    assert_eq!(
        e,
        "writ: 2 distinct share(s) given, 3 needed to rebuild the escrow key: 1 missing"
    );
    let e = recover(&[5], &all);
    assert!(e.ends_with("2 missing"), "{e}");
    // A share given twice does not count twice.
    let e = recover(&[1, 2, 1], &all);
    assert!(e.contains("repeats share 1"), "{e}");
    let dup = env.path("dup.age");
    std::fs::copy(env.path(&share(2, 5)), &dup).unwrap();
    let e = env.fail(&[
        "escrow",
        "recover",
        "--out",
        "out.key",
        "--share",
        &share(1, 5),
        "--share",
        &share(2, 5),
        "--share",
        "dup.age",
        "--identity",
        "c1.key",
        "--identity",
        "c2.key",
    ]);
    assert!(e.contains("dup.age repeats share 2"), "{e}");
    // No identity that opens a share.
    let e = recover(
        &[1, 2, 3],
        &["--identity", "c1.key", "--identity", "c2.key"],
    );
    assert!(
        e.contains("escrow-share-3-of-5.age: none of the given identities or passphrases opens it"),
        "{e}"
    );
    // A damaged share file.
    std::fs::write(env.path("junk.age"), "not age\n").unwrap();
    let e = env.fail(&[
        "escrow",
        "recover",
        "--out",
        "out.key",
        "--share",
        "junk.age",
        "--identity",
        "c1.key",
    ]);
    assert!(e.contains("junk.age: not a writ escrow share"), "{e}");
    // An identity file that is not one.
    std::fs::write(env.path("bad.key"), "hello\n").unwrap();
    let e = env.fail(&[
        "escrow",
        "recover",
        "--out",
        "out.key",
        "--share",
        &share(1, 5),
        "--identity",
        "bad.key",
    ]);
    assert!(e.contains("identity file bad.key"), "{e}");
    // A share of another escrow key mixed in.
    let other = Env::with_message();
    other.init_keyring();
    // Share 1 of the other escrow is for this test's custodian 1.
    let mut mine = other.custodians(3);
    mine[0] = custodians[0].clone();
    assert!(other.escrow_init(3, 2, &mine).status.success());
    std::fs::copy(other.path(&share(1, 3)), env.path("foreign.age")).unwrap();
    let mixed = [
        "escrow",
        "recover",
        "--out",
        "out.key",
        "--share",
        &share(2, 5),
        "--share",
        "foreign.age",
        "--share",
        &share(3, 5),
        "--identity",
        "c1.key",
        "--identity",
        "c2.key",
        "--identity",
        "c3.key",
    ];
    let e = env.fail(&mixed);
    assert!(
        e.contains("share foreign.age is for escrow key age1")
            && e.contains("but keys/escrow.txt holds"),
        "{e}"
    );
    // Without the keyring, the other shares are the reference.
    let e = env.fail(&[&["--keys", "elsewhere"], &mixed[..]].concat());
    assert!(
        e.contains("foreign.age belongs to another escrow key"),
        "{e}"
    );
    assert!(!env.path("out.key").exists());

    // Enough shares: any three.
    let paths: Vec<String> = [5, 1, 3].iter().map(|&i| share(i, 5)).collect();
    let mut args = vec!["escrow", "recover", "--out", "out.key"];
    for p in &paths {
        args.extend(["--share", p.as_str()]);
    }
    args.extend(&all);
    env.ok(&args);
    // Recorded in the audit log, which still verifies.
    let show = env.ok_text(&["audit", "show"]);
    assert!(
        show.contains("escrow.init") && show.contains("escrow.recover"),
        "{show}"
    );
    assert!(show.contains("shares_used=[5,1,3]"), "{show}");
    env.ok(&["audit", "verify"]);
}

#[test]
fn init_refusals() {
    let env = Env::with_message();
    let custodians = env.custodians(3);
    // No keyring.
    let out = env.escrow_init(3, 2, &custodians);
    assert_eq!(out.status.code(), Some(1));
    env.init_keyring();
    let before = std::fs::read_to_string(env.path("keys/audit.log")).unwrap();
    for (shares, threshold, n, want) in [
        (2, 2, 3, "--shares 2 but 3 --custodian given"),
        (3, 4, 3, "threshold 4 and share count 3"),
        (3, 0, 3, "threshold 0 and share count 3"),
    ] {
        let out = env.escrow_init(shares, threshold, &custodians[..n]);
        let e = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(e.contains(want), "{e}");
        assert!(!env.path("keys/escrow.txt").exists());
        assert!(
            !env.path("escrow-shares").exists()
                || std::fs::read_dir(env.path("escrow-shares"))
                    .unwrap()
                    .count()
                    == 0
        );
    }
    // One custodian given twice would hold two shares: with threshold 2,
    // a quorum alone.
    let twice = [
        custodians[0].clone(),
        custodians[1].clone(),
        custodians[0].clone(),
    ];
    let e = String::from_utf8(env.escrow_init(3, 2, &twice).stderr).unwrap();
    assert_eq!(
        e,
        format!(
            "writ: --custodian 3 repeats --custodian 1 ({}): one custodian would hold 2 shares; \
             give each share a different custodian\n",
            custodians[0]
        )
    );
    // The same passphrase, in one file or two.
    std::fs::write(env.path("pw-a"), "one passphrase\n").unwrap();
    std::fs::write(env.path("pw-b"), "one passphrase\n").unwrap();
    for second in ["passphrase-file:pw-a", "passphrase-file:pw-b"] {
        let e = env.fail(&[
            "escrow",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--custodian",
            "passphrase-file:pw-a",
            "--custodian",
            &custodians[1],
            "--custodian",
            second,
        ]);
        assert_eq!(
            e,
            "writ: --custodian 3 repeats --custodian 1 (the same passphrase): one custodian \
             would hold 2 shares; give each share a different custodian"
        );
    }
    assert!(!env.path("keys/escrow.txt").exists());
    assert!(
        !env.path("escrow-shares").exists()
            || std::fs::read_dir(env.path("escrow-shares"))
                .unwrap()
                .count()
                == 0
    );
    let out = env.run(&[
        "escrow",
        "init",
        "--shares",
        "1",
        "--threshold",
        "1",
        "--custodian",
        "age1nope",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("not an age X25519 recipient"), "{e}");
    assert_eq!(
        std::fs::read_to_string(env.path("keys/audit.log")).unwrap(),
        before
    );

    assert!(env.escrow_init(3, 2, &custodians).status.success());
    let out = env.escrow_init(3, 2, &custodians);
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(
        e.contains("keys/escrow.txt exists: this keyring already has an escrow recipient"),
        "{e}"
    );
    // A keyring made with --escrow-recipient also has one.
    let env2 = Env::with_message();
    env2.custodians(1);
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    env2.ok(&[KEYS_INIT, &["--escrow-recipient", &recipient]].concat());
    let out = env2.escrow_init(1, 1, &custodians[..1]);
    assert_eq!(out.status.code(), Some(1));
    // Existing share files are never overwritten.
    let env3 = Env::with_message();
    env3.init_keyring();
    let c3 = env3.custodians(2);
    std::fs::create_dir(env3.path("escrow-shares")).unwrap();
    std::fs::write(env3.path(&share(2, 2)), "precious").unwrap();
    let out = env3.escrow_init(2, 2, &c3);
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("escrow-share-2-of-2.age exists"), "{e}");
    assert_eq!(std::fs::read(env3.path(&share(2, 2))).unwrap(), b"precious");
    assert!(!env3.path("keys/escrow.txt").exists());
}

#[test]
fn passphrase_custodian() {
    let env = Env::with_message();
    env.init_keyring();
    let custodians = env.custodians(1);
    std::fs::write(env.path("cpw"), "custodian two's passphrase\n").unwrap();
    std::fs::write(env.path("wrong"), "not it\n").unwrap();
    let out = env.ok_text(&[
        "escrow",
        "init",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--custodian",
        &custodians[0],
        "--custodian",
        "passphrase-file:cpw",
    ]);
    assert!(out.contains("(for passphrase)"), "{out}");
    env.seal("after.eml");
    let recover = |pw: &str| {
        env.run(&[
            "escrow",
            "recover",
            "--out",
            "escrow.key",
            "--share",
            &share(1, 2),
            "--share",
            &share(2, 2),
            "--identity",
            "c1.key",
            "--share-passphrase-file",
            pw,
        ])
    };
    let bad = recover("wrong");
    assert_eq!(bad.status.code(), Some(1));
    let e = String::from_utf8(bad.stderr).unwrap();
    assert!(
        e.contains("escrow-share-2-of-2.age: none of the given identities or passphrases opens it"),
        "{e}"
    );
    let good = recover("cpw");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let opened = env.ok(&[
        "escrow",
        "open",
        "--escrow-identity",
        "escrow.key",
        "after.eml",
    ]);
    assert_eq!(opened.stdout, MESSAGE);
    let e = env.fail(&[
        "escrow",
        "recover",
        "--out",
        "x.key",
        "--share",
        &share(1, 2),
    ]);
    assert!(
        e.contains("--identity FILE or --share-passphrase-file FILE"),
        "{e}"
    );
    let log = std::fs::read_to_string(env.path("keys/audit.log")).unwrap();
    assert!(!log.contains("custodian two"));
}

/// Rewrites share file `from` (for custodian `i` of `env`) with `edit`
/// applied to its text, encrypted again to that custodian, as `to`: what
/// anyone holding the custodians' public keys can make (or a damaged
/// share).
fn reshare(
    env: &Env,
    from: &str,
    i: usize,
    recipient: &str,
    to: &str,
    edit: &dyn Fn(&str) -> String,
) {
    let plain = Command::new("/usr/bin/age")
        .args(["-d", "-i"])
        .arg(env.path(&format!("c{i}.key")))
        .arg(env.path(from))
        .output()
        .unwrap();
    assert!(plain.status.success());
    let text = edit(&String::from_utf8(plain.stdout).unwrap());
    std::fs::write(env.path("plain.tmp"), text).unwrap();
    let enc = Command::new("/usr/bin/age")
        .args(["-a", "-r", recipient, "-o"])
        .arg(env.path(to))
        .arg(env.path("plain.tmp"))
        .output()
        .unwrap();
    assert!(enc.status.success());
    std::fs::remove_file(env.path("plain.tmp")).unwrap();
}

/// Flips the lowest bit of byte `k` of the share (a damaged share).
/// Damage two shares at different bytes: the same change to shares 2 and
/// 3 of a 2-of-3 cancels out when all three are combined.
fn damage(k: usize) -> impl Fn(&str) -> String {
    move |text| {
        text.lines()
            .map(|l| match l.strip_prefix("share: ") {
                Some(y) => {
                    let mut y = y.as_bytes().to_vec();
                    let digit = u8::from_str_radix(&String::from(char::from(y[2 * k + 1])), 16);
                    y[2 * k + 1] = format!("{:x}", digit.unwrap() ^ 1).as_bytes()[0];
                    format!("share: {}\n", String::from_utf8(y).unwrap())
                }
                None => format!("{l}\n"),
            })
            .collect()
    }
}

fn recover_args<'a>(shares: &'a [String], ids: &'a [String], out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["escrow", "recover", "--out", out];
    for s in shares {
        args.extend(["--share", s.as_str()]);
    }
    for i in ids {
        args.extend(["--identity", i.as_str()]);
    }
    args
}

#[test]
fn recover_checks_keyring_and_names_misfits() {
    let env = Env::with_message();
    env.init_keyring();
    let custodians = env.custodians(3);
    assert!(env.escrow_init(3, 2, &custodians).status.success());
    let escrow_txt = std::fs::read_to_string(env.path("keys/escrow.txt")).unwrap();
    let recipient = escrow_txt.lines().find(|l| l.starts_with("age1")).unwrap();
    let ids: Vec<String> = (1..=3).map(|i| format!("c{i}.key")).collect();

    // A forger knows the custodians' public keys and makes shares of their
    // own escrow key for them: they open, agree and rebuild the key they
    // name, which is not this keyring's.
    let forger = Env::with_message();
    forger.init_keyring();
    assert!(forger.escrow_init(3, 2, &custodians).status.success());
    let forged: Vec<String> = (1..=2)
        .map(|i| {
            let name = format!("forged-{i}.age");
            std::fs::copy(forger.path(&share(i, 3)), env.path(&name)).unwrap();
            name
        })
        .collect();
    let e = env.fail(&recover_args(&forged, &ids, "out.key"));
    assert!(
        e.starts_with("writ: share forged-1.age is for escrow key age1")
            && e.contains(&format!(
                ", but keys/escrow.txt holds {recipient}: a forged share"
            ))
            && e.ends_with("leave it out, or give --keys the keyring it was made for"),
        "{e}"
    );
    assert!(!env.path("out.key").exists());
    // Without a keyring to check against, the key the shares name is all
    // there is, and recover says so.
    let out = env.run(
        &[
            &["--keys", "elsewhere"],
            recover_args(&forged, &ids, "out.key").as_slice(),
        ]
        .concat(),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: no elsewhere/escrow.txt to check against: age1"),
        "{stderr}"
    );
    std::fs::remove_file(env.path("out.key")).unwrap();

    // One damaged share among three of a 2-of-3: named and left out, and
    // the other two rebuild the key.
    reshare(
        &env,
        &share(2, 3),
        2,
        &custodians[1],
        "bad-2.age",
        &damage(31),
    );
    let shares = [share(1, 3), "bad-2.age".to_string(), share(3, 3)];
    let e = env.fail(&recover_args(&shares[..2], &ids, "out.key"));
    assert_eq!(
        e,
        format!(
            "writ: the shares do not rebuild escrow key {recipient}: a share is damaged or forged; \
             give one more custodian's share to find which"
        )
    );
    let out = env.run(&recover_args(&shares, &ids, "out.key"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "writ: warning: share bad-2.age (number 2) does not fit the others: damaged or forged, \
         left out; ask its custodian\n\
         writ: warning: out.key holds the escrow private key: whoever holds it can read all mail \
         sealed since escrow was set up. Keep it offline, delete it after use.\n"
    );
    assert!(
        std::fs::read_to_string(env.path("out.key"))
            .unwrap()
            .contains(recipient)
    );
    let show = env.ok_text(&["audit", "show"]);
    assert!(
        show.contains("shares_used=[1,3]") && show.contains("shares_misfit=[2]"),
        "{show}"
    );
    // Two of three damaged: no two rebuild it.
    reshare(
        &env,
        &share(3, 3),
        3,
        &custodians[2],
        "bad-3.age",
        &damage(30),
    );
    let shares = [
        share(1, 3),
        "bad-2.age".to_string(),
        "bad-3.age".to_string(),
    ];
    let e = env.fail(&recover_args(&shares, &ids, "out2.key"));
    assert!(
        e.starts_with("writ: no 2 of the 3 shares rebuild escrow key age1")
            && e.contains("more than 1 are damaged or forged"),
        "{e}"
    );

    // Finding the misfit among 16 shares of an 8-of-16 would take 12,870
    // tries: refused, asking for exactly 8.
    let big = Env::with_message();
    big.init_keyring();
    let many = big.custodians(16);
    assert!(big.escrow_init(16, 8, &many).status.success());
    reshare(&big, &share(5, 16), 5, &many[4], "bad-5.age", &damage(31));
    let shares: Vec<String> = (1..=16)
        .map(|i| {
            if i == 5 {
                "bad-5.age".to_string()
            } else {
                share(i, 16)
            }
        })
        .collect();
    let ids: Vec<String> = (1..=16).map(|i| format!("c{i}.key")).collect();
    let e = big.fail(&recover_args(&shares, &ids, "out.key"));
    assert!(
        e.contains("the 16 shares do not rebuild escrow key age1")
            && e.ends_with(
                "finding which do not fit would take more than 10000 tries: give exactly 8 shares at a time"
            ),
        "{e}"
    );
    // 9 of them: 9 tries at most.
    let out = big.run(&recover_args(&shares[..9], &ids, "out.key"));
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("share bad-5.age (number 5) does not fit")
    );
}

#[test]
fn a_lost_escrow_txt_stops_sealing_instead_of_dropping_escrow() {
    // escrow init records the recipient in keyring.toml: without
    // escrow.txt, `writ seal` refuses (naming the file and the recipient
    // to restore) instead of sealing new mail without escrow.
    let env = Env::with_message();
    env.init_keyring();
    let custodians = env.custodians(2);
    let out = env.escrow_init(2, 2, &custodians);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let escrow_txt = env.path("keys/escrow.txt");
    let kept = std::fs::read(&escrow_txt).unwrap();
    let recipient = String::from_utf8_lossy(&kept)
        .lines()
        .find(|l| l.starts_with("age1"))
        .unwrap()
        .to_string();
    std::fs::remove_file(&escrow_txt).unwrap();
    let out = env.run(&["seal", "msg.eml"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("keys/escrow.txt is missing but keyring.toml records escrow to")
            && e.contains(&recipient),
        "{e}"
    );
    std::fs::write(&escrow_txt, &kept).unwrap();
    env.seal("after.eml");
}
