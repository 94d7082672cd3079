//! `writ disclose`, `writ approver` end to end: the binary in a temp dir, a
//! real keyring, messages sealed with `writ seal`, approvers with their own
//! keys and passphrases.
//!
//! Every tampering with a bundle (a flipped byte in a plaintext, a stored
//! message, the manifest, its signature; a deleted file; an added file)
//! must be caught by `writ disclose verify` and the file named; every
//! refusal (not sealed, too few approvals, an approval of another request,
//! reused, unknown or forged) must leave no bundle and no audit record.

mod common;

use std::path::Path;
use std::process::Output;

use common::cli::Env;
use common::files::{copy_dir, mode};

/// Three messages: CRLF, bare LF with 8-bit octets, and header only.
const MESSAGES: [&[u8]; 3] = [
    b"From: ann@example.org\r\nTo: bob@example.org\r\nSubject: first\r\n\
Message-ID: <1@example.org>\r\n\r\nThe first body.\r\n",
    b"From: ann@example.org\nSubject: =?utf-8?q?zw=C3=B6lf?=\nMessage-ID: <2@example.org>\n\n\
Gr\xc3\xbc\xc3\x9fe, 8-bit \xff body\n",
    b"From: ann@example.org\r\nSubject: no body\r\n\r\n",
];

impl Env {
    /// A keyring and three sealed messages s1.eml .. s3.eml (originals
    /// m1.eml ..).
    fn with_messages() -> Env {
        let env = Env::new();
        env.init_keyring();
        for (i, m) in MESSAGES.iter().enumerate() {
            let n = i + 1;
            std::fs::write(env.path(&format!("m{n}.eml")), m).unwrap();
            let sealed = env.ok(&["seal", &format!("m{n}.eml")]).stdout;
            std::fs::write(env.path(&format!("s{n}.eml")), sealed).unwrap();
        }
        env
    }

    /// `writ disclose` with the keyring passphrase, the given messages and
    /// extra arguments.
    fn disclose_args<'a>(&self, case: &'a str, out: &'a str, files: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "disclose",
            "--case",
            case,
            "--out",
            out,
            "--passphrase-file",
            "pw",
            "--from-file",
        ];
        args.extend_from_slice(files);
        args
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok_text(&["audit", "show", "--json"])).unwrap()
    }

    /// Creates approver `name` (key `name.key`, passphrase file `name.pw`)
    /// and returns the public key line.
    fn approver(&self, name: &str) -> String {
        std::fs::write(self.path(&format!("{name}.pw")), format!("{name} secret\n")).unwrap();
        let key = format!("{name}.key");
        let pw = format!("{name}.pw");
        let text = self.ok_text(&[
            "approver",
            "init",
            "--out",
            &key,
            "--name",
            name,
            "--work-factor",
            "10",
            "--passphrase-file",
            &pw,
        ]);
        let public = std::fs::read_to_string(self.path(&format!("{key}.pub"))).unwrap();
        let public = public.lines().last().unwrap().to_string();
        assert!(text.contains(&public), "{text}");
        public
    }

    /// `[disclosure]` with `quorum` and these (name, key) approvers.
    fn config(&self, quorum: usize, approvers: &[(&str, &str)]) {
        let list: Vec<String> = approvers
            .iter()
            .map(|(n, k)| format!("  {{ name = \"{n}\", public_key = \"{k}\" }},\n"))
            .collect();
        std::fs::write(
            self.path("config/writ.toml"),
            format!(
                "[disclosure]\nquorum = {quorum}\napprovers = [\n{}]\n",
                list.concat()
            ),
        )
        .unwrap();
    }

    /// The request for a case and files, as `writ disclose request`
    /// prints it, written to `file`.
    fn request(&self, case: &str, files: &[&str], file: &str) {
        let mut args = vec!["disclose", "request", "--case", case, "--from-file"];
        args.extend_from_slice(files);
        let out = self.ok(&args).stdout;
        std::fs::write(self.path(file), out).unwrap();
    }

    /// `name` approves `request` for `case` into `out`.
    fn approve(&self, name: &str, case: &str, request: &str, out: &str) -> Output {
        let key = format!("{name}.key");
        let pw = format!("{name}.pw");
        self.run(&[
            "approver",
            "approve",
            "--key",
            &key,
            "--case",
            case,
            "--request",
            request,
            "--out",
            out,
            "--passphrase-file",
            &pw,
        ])
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn round_trip_from_files() {
    let env = Env::with_messages();
    let args = env.disclose_args("LG-2026-17", "bundle", &["s1.eml", "s2.eml", "s3.eml"]);
    let text = env.ok_text(&args);
    assert!(
        text.starts_with("disclosed 3 message(s) for case \"LG-2026-17\" into bundle\n"),
        "{text}"
    );
    assert!(text.contains("approvals: none (quorum 0)"), "{text}");
    let bundle = env.path("bundle");
    assert_eq!(mode(&bundle), 0o700);

    let manifest_bytes = std::fs::read(bundle.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["case"], "LG-2026-17");
    assert_eq!(manifest["operator"], "tester");
    assert!(manifest["time"].as_str().unwrap().ends_with('Z'));
    let audit_pub = std::fs::read_to_string(env.path("keys/audit.pub")).unwrap();
    assert_eq!(
        manifest["gateway"].as_str().unwrap(),
        audit_pub.lines().last().unwrap()
    );
    let messages = manifest["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        let original = MESSAGES[i];
        let sealed = std::fs::read(env.path(&format!("s{n}.eml"))).unwrap();
        assert_ne!(sealed, original);
        // Plaintext byte-exact, stored exactly as given, hashes right.
        let plain_file = bundle.join(m["plaintext"]["file"].as_str().unwrap());
        let stored_file = bundle.join(m["stored"]["file"].as_str().unwrap());
        assert_eq!(std::fs::read(&plain_file).unwrap(), original, "message {n}");
        assert_eq!(std::fs::read(&stored_file).unwrap(), sealed, "message {n}");
        assert_eq!(mode(&plain_file), 0o600);
        assert_eq!(m["plaintext"]["sha256"], sha256_hex(original));
        assert_eq!(m["plaintext"]["size"], original.len() as u64);
        assert_eq!(m["stored"]["sha256"], sha256_hex(&sealed));
        assert_eq!(m["source"]["kind"], "file");
        assert_eq!(m["source"]["name"], format!("s{n}.eml"));
        assert_eq!(m["epoch"].as_str().unwrap().len(), 16);
    }
    assert_eq!(messages[0]["message_id"], "<1@example.org>");
    assert_eq!(messages[1]["message_id"], "<2@example.org>");
    assert!(messages[2]["message_id"].is_null());
    assert_eq!(messages[0]["plaintext"]["file"], "plaintext/0001.eml");
    assert_eq!(messages[2]["stored"]["file"], "stored/0003.eml");

    // The request in the bundle is what `disclose request` prints.
    env.request("LG-2026-17", &["s1.eml", "s2.eml", "s3.eml"], "req.json");
    let printed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("req.json")).unwrap()).unwrap();
    let in_bundle = std::fs::read(bundle.join("request.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&in_bundle).unwrap(),
        printed
    );
    assert_eq!(manifest["request"]["sha256"], sha256_hex(&in_bundle));

    // Verified with a copy of the gateway's key, and without one.
    std::fs::copy(env.path("keys/audit.pub"), env.path("audit-copy.pub")).unwrap();
    let out = env.ok_text(&[
        "disclose",
        "verify",
        "bundle",
        "--public-key",
        "audit-copy.pub",
    ]);
    assert!(
        out.starts_with(
            "bundle: case \"LG-2026-17\", 3 message(s), 9 files: hashes and manifest signature OK\n"
        ),
        "{out}"
    );
    assert!(out.contains("signed by the given audit key"), "{out}");
    // Without the key only on request, and saying loudly what that means.
    let e = env.fail(&["disclose", "verify", "bundle"]);
    assert!(
        e.contains("--public-key FILE") && e.contains("--unauthenticated"),
        "{e}"
    );
    let out = env.ok_text(&["disclose", "verify", "bundle", "--unauthenticated"]);
    assert!(
        out.contains("NOT AUTHENTICATED: signed by audit key")
            && out.contains("as the manifest itself names it"),
        "{out}"
    );

    // The audit records (the disclosure begun, before anything was
    // opened, then done), and the log still verifies.
    let records = env.audit_records();
    let last = records.last().unwrap();
    let begun = &records[records.len() - 2];
    assert_eq!(begun["action"], "disclose.begin");
    assert_eq!(begun["params"]["case"], "LG-2026-17");
    assert_eq!(begun["params"]["messages"], 3);
    assert_eq!(
        begun["params"]["request_sha256"],
        manifest["request"]["sha256"]
    );
    assert_eq!(last["action"], "disclose");
    assert_eq!(last["operator"], "tester");
    assert_eq!(last["params"]["case"], "LG-2026-17");
    assert_eq!(last["params"]["messages"], 3);
    assert_eq!(
        last["params"]["manifest_sha256"],
        sha256_hex(&manifest_bytes)
    );
    assert_eq!(
        last["params"]["request_sha256"],
        manifest["request"]["sha256"]
    );
    assert_eq!(last["params"]["approvers"], serde_json::json!([]));
    let log = std::fs::read_to_string(env.path("keys/audit.log")).unwrap();
    assert!(!log.contains("first body") && !log.contains("horse"));
    env.ok(&["audit", "verify"]);

    // An existing empty directory is fine; a non-empty one is refused.
    std::fs::create_dir(env.path("empty")).unwrap();
    env.ok(&env.disclose_args("LG-2026-17", "empty", &["s2.eml"]));
    assert_eq!(mode(&env.path("empty")), 0o700);
    let before = env.audit_records().len();
    let e = env.fail(&env.disclose_args("LG-2026-17", "bundle", &["s2.eml"]));
    assert!(e.contains("bundle is not an empty directory"), "{e}");
    assert_eq!(env.audit_records().len(), before);
}

#[test]
fn tampering_is_detected_and_named() {
    let env = Env::with_messages();
    env.ok(&env.disclose_args("C-9", "good", &["s1.eml", "s2.eml"]));
    std::fs::copy(env.path("keys/audit.pub"), env.path("audit-copy.pub")).unwrap();
    env.ok(&[
        "disclose",
        "verify",
        "good",
        "--public-key",
        "audit-copy.pub",
    ]);

    let mut n = 0;
    let mut tampered = |change: &dyn Fn(&Path)| -> String {
        n += 1;
        let dir = format!("t{n}");
        copy_dir(&env.path("good"), &env.path(&dir));
        change(&env.path(&dir));
        env.fail(&["disclose", "verify", &dir, "--public-key", "audit-copy.pub"])
    };
    let flip = |rel: &'static str, at: fn(usize) -> usize| {
        move |dir: &Path| {
            let p = dir.join(rel);
            let mut bytes = std::fs::read(&p).unwrap();
            let i = at(bytes.len());
            bytes[i] ^= 0x01;
            std::fs::write(&p, bytes).unwrap();
        }
    };

    let e = tampered(&flip("plaintext/0002.eml", |len| len - 3));
    assert!(
        e.ends_with("t1/plaintext/0002.eml: altered: its SHA-256 differs from the manifest's"),
        "{e}"
    );
    let e = tampered(&flip("stored/0001.eml", |len| len / 2));
    assert!(
        e.ends_with("t2/stored/0001.eml: altered: its SHA-256 differs from the manifest's"),
        "{e}"
    );
    // A digit of a hash in the manifest, then a letter of the case.
    let e = tampered(&|dir: &Path| {
        let p = dir.join("manifest.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replacen("\"case\": \"C-9\"", "\"case\": \"C-8\"", 1),
        )
        .unwrap();
    });
    assert!(
        e.contains("t3/manifest.json: the signature in manifest.sig does not match"),
        "{e}"
    );
    let e = tampered(&flip("manifest.json", |len| len / 3));
    assert!(e.contains("t4/manifest.json: the signature"), "{e}");
    // A byte of the signature itself (inside the base64 line), and a
    // signature file that is not one.
    let e = tampered(&|dir: &Path| {
        let p = dir.join("manifest.sig");
        let text = std::fs::read_to_string(&p).unwrap();
        let sig_line = text.lines().last().unwrap();
        let c = if sig_line.starts_with('A') { "B" } else { "A" };
        let changed = format!("{c}{}", &sig_line[1..]);
        std::fs::write(&p, text.replace(sig_line, &changed)).unwrap();
    });
    assert!(
        e.contains("t5/manifest.json: the signature in manifest.sig does not match"),
        "{e}"
    );
    let e = tampered(&|dir: &Path| std::fs::write(dir.join("manifest.sig"), "junk\n").unwrap());
    assert!(
        e.ends_with("t6/manifest.sig: damaged: not a signature"),
        "{e}"
    );
    // Deleted files.
    let e = tampered(&|dir: &Path| std::fs::remove_file(dir.join("plaintext/0001.eml")).unwrap());
    assert!(
        e.ends_with("t7/plaintext/0001.eml: missing: the manifest lists it (deleted or renamed)"),
        "{e}"
    );
    let e = tampered(&|dir: &Path| std::fs::remove_file(dir.join("manifest.sig")).unwrap());
    assert!(e.ends_with("t8/manifest.sig: missing"), "{e}");
    let e = tampered(&|dir: &Path| std::fs::remove_file(dir.join("manifest.json")).unwrap());
    assert!(e.ends_with("t9/manifest.json: missing"), "{e}");
    // Added files, at the top and in a subdirectory.
    let e = tampered(&|dir: &Path| std::fs::write(dir.join("notes.txt"), "x").unwrap());
    assert!(
        e.ends_with("t10/notes.txt: not in the manifest (added after the bundle was signed)"),
        "{e}"
    );
    let e = tampered(&|dir: &Path| {
        std::fs::copy(
            dir.join("plaintext/0001.eml"),
            dir.join("plaintext/0003.eml"),
        )
        .unwrap();
    });
    assert!(
        e.ends_with(
            "t11/plaintext/0003.eml: not in the manifest (added after the bundle was signed)"
        ),
        "{e}"
    );
    // The request replaced by another (for other messages).
    let e = tampered(&|dir: &Path| {
        let p = dir.join("request.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("s2.eml", "s9.eml")).unwrap();
    });
    assert!(
        e.ends_with("t12/request.json: altered: its SHA-256 differs from the manifest's"),
        "{e}"
    );
    // Signed by another gateway.
    let other = Env::with_messages();
    std::fs::copy(other.path("keys/audit.pub"), env.path("other.pub")).unwrap();
    let e = env.fail(&["disclose", "verify", "good", "--public-key", "other.pub"]);
    assert!(
        e.contains("good/manifest.json: the signature in manifest.sig does not match"),
        "{e}"
    );
    assert!(
        e.contains("or another key than the one given signed them"),
        "{e}"
    );
    // A bundle made wholesale under another keyring passes only
    // --unauthenticated, and says so.
    other.ok(&other.disclose_args("C-9", "forged", &["s1.eml"]));
    copy_dir(&other.path("forged"), &env.path("forged"));
    let e = env.fail(&[
        "disclose",
        "verify",
        "forged",
        "--public-key",
        "audit-copy.pub",
    ]);
    assert!(e.contains("does not match"), "{e}");
    let e = env.fail(&["disclose", "verify", "forged"]);
    assert!(e.contains("--public-key"), "{e}");
    let out = env.ok_text(&["disclose", "verify", "forged", "--unauthenticated"]);
    assert!(out.contains("NOT AUTHENTICATED"), "{out}");
    // An extra directory, even an empty one.
    let e = tampered(&|dir: &Path| std::fs::create_dir(dir.join("notes")).unwrap());
    assert!(
        e.ends_with("/notes: a directory not in the manifest (added after the bundle was signed)"),
        "{e}"
    );
    // Not a bundle.
    let e = env.fail(&["disclose", "verify", "keys", "--unauthenticated"]);
    assert!(e.ends_with("keys/manifest.json: missing"), "{e}");
}

#[test]
fn refusals_leave_no_plaintext() {
    let env = Env::with_messages();
    let before = env.audit_records().len();

    // Not sealed (the original given instead), in second place.
    let e = env.fail(&env.disclose_args("C", "out", &["s1.eml", "m2.eml"]));
    assert!(
        e.contains("message 2 (m2.eml) is not sealed: writ discloses sealed messages only"),
        "{e}"
    );
    assert!(!env.path("out").exists());

    // Sealed by another gateway (an epoch this keyring does not have).
    let other = Env::with_messages();
    std::fs::copy(other.path("s1.eml"), env.path("foreign.eml")).unwrap();
    let e = env.fail(&env.disclose_args("C", "out", &["s1.eml", "foreign.eml"]));
    assert!(e.contains("which is not in the keyring"), "{e}");
    assert!(!env.path("out").exists());

    // Sealed here, but its payload damaged: the first message was opened
    // already; everything is removed.
    let mut damaged = std::fs::read(env.path("s2.eml")).unwrap();
    let text = String::from_utf8(damaged.clone()).unwrap();
    let payload = text.rfind("-----END AGE ENCRYPTED FILE-----").unwrap();
    let at = text[..payload].rfind('\n').unwrap() - 10;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(env.path("damaged.eml"), damaged).unwrap();
    let e = env.fail(&env.disclose_args("C", "out", &["s1.eml", "damaged.eml"]));
    assert!(
        e.contains(
            "nothing disclosed (no plaintext left behind): message 2 (damaged.eml) cannot be opened"
        ),
        "{e}"
    );
    assert!(!env.path("out").exists());
    // Into an empty directory given: it stays, empty.
    std::fs::create_dir(env.path("given")).unwrap();
    env.fail(&env.disclose_args("C", "given", &["s1.eml", "damaged.eml"]));
    assert_eq!(std::fs::read_dir(env.path("given")).unwrap().count(), 0);

    // Wrong keyring passphrase.
    std::fs::write(env.path("bad"), "wrong\n").unwrap();
    let mut args = env.disclose_args("C", "out", &["s1.eml"]);
    args[6] = "bad";
    let e = env.fail(&args);
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(!env.path("out").exists());

    // The same message twice, an empty case, a missing file.
    let e = env.fail(&env.disclose_args("C", "out", &["s1.eml", "s1.eml"]));
    assert!(e.contains("message 2 is message 1 again"), "{e}");
    let e = env.fail(&env.disclose_args("", "out", &["s1.eml"]));
    assert!(e.contains("case reference"), "{e}");
    let e = env.fail(&env.disclose_args("C", "out", &["nope.eml"]));
    assert!(e.contains("cannot read nope.eml"), "{e}");
    assert!(!env.path("out").exists());

    // Refusals before anything is opened leave no record; the two
    // disclosures of a damaged message opened the first message, so each
    // is recorded as begun (and never as done).
    let actions: Vec<String> = env.audit_records()[before..]
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(actions, ["disclose.begin", "disclose.begin"], "{actions:?}");
    env.ok(&["audit", "verify"]);
}

#[test]
fn quorum_of_approvals() {
    let env = Env::with_messages();
    std::fs::create_dir(env.path("config")).unwrap();
    let legal = env.approver("legal");
    let dpo = env.approver("dpo");
    let board = env.approver("board");
    // Has a key, but is not listed in the config.
    env.approver("outsider");
    env.config(2, &[("legal", &legal), ("dpo", &dpo), ("board", &board)]);
    let check = env.ok_text(&["check-config"]);
    assert!(
        check.contains(
            "disclosure: 2 of 3 approvers (legal, dpo, board) must approve each request\n"
        ),
        "{check}"
    );
    let files = ["s1.eml", "s3.eml"];
    env.request("LG-1", &files, "req.json");
    for name in ["legal", "dpo", "board", "outsider"] {
        let out = env.approve(name, "LG-1", "req.json", &format!("{name}.approval"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with(&format!(
                "{name} approves disclosure for case \"LG-1\" of 2 message(s), in this order:\n  1. file s1.eml (sha256 "
            )),
            "{text}"
        );
    }
    // Approvals of other requests: another case, another list of messages.
    env.request("LG-2", &files, "req-case.json");
    assert!(
        env.approve("dpo", "LG-2", "req-case.json", "dpo-case.approval")
            .status
            .success()
    );
    env.request("LG-1", &["s1.eml"], "req-list.json");
    assert!(
        env.approve("dpo", "LG-1", "req-list.json", "dpo-list.approval")
            .status
            .success()
    );
    env.request("LG-1", &["s3.eml", "s1.eml"], "req-order.json");
    assert!(
        env.approve("dpo", "LG-1", "req-order.json", "dpo-order.approval")
            .status
            .success()
    );
    // A forged approval: legal's file with board's signature.
    let legal_approval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("legal.approval")).unwrap()).unwrap();
    let board_approval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("board.approval")).unwrap()).unwrap();
    let mut forged = legal_approval.clone();
    forged["signature"] = board_approval["signature"].clone();
    std::fs::write(env.path("forged.approval"), forged.to_string()).unwrap();

    let before = env.audit_records().len();
    let disclose = |approvals: &[&str]| {
        let mut args = env.disclose_args("LG-1", "out", &files);
        for a in approvals {
            args.extend(["--approval", a]);
        }
        let e = env.fail(&args);
        assert!(!env.path("out").exists(), "{approvals:?}");
        e
    };
    let e = disclose(&[]);
    assert!(
        e.ends_with("quorum not met: 0 valid approval(s) from distinct approvers, 2 required by [disclosure] quorum: 2 missing"),
        "{e}"
    );
    let e = disclose(&["legal.approval"]);
    assert!(
        e.ends_with("1 valid approval(s) from distinct approvers (legal), 2 required by [disclosure] quorum: 1 missing"),
        "{e}"
    );
    // Reused: counts once.
    let e = disclose(&["legal.approval", "legal.approval"]);
    assert!(e.contains("(legal), 2 required by [disclosure] quorum: 1 missing; legal.approval repeats legal's approval (an approver counts once)"), "{e}");
    let e = disclose(&["legal.approval", "dpo-case.approval"]);
    assert!(
        e.contains("approval dpo-case.approval by dpo is for another request: it approves case \"LG-2\", not \"LG-1\""),
        "{e}"
    );
    for other in ["dpo-list.approval", "dpo-order.approval"] {
        let e = disclose(&["legal.approval", other]);
        assert!(
            e.contains(&format!("approval {other} by dpo is for another request: it approves another list of messages")),
            "{e}"
        );
    }
    let e = disclose(&["legal.approval", "outsider.approval"]);
    assert!(
        e.contains("approval outsider.approval (signed as \"outsider\") is by a key that is not an approver in [disclosure]"),
        "{e}"
    );
    let e = disclose(&["dpo.approval", "forged.approval"]);
    assert!(
        e.contains("approval forged.approval does not carry a valid signature by legal's key"),
        "{e}"
    );
    std::fs::write(env.path("junk.approval"), "{}").unwrap();
    let e = disclose(&["dpo.approval", "legal.approval", "junk.approval"]);
    assert!(
        e.contains("approval junk.approval: not a writ approval file"),
        "{e}"
    );
    // The quorum is refused before the passphrase is asked for: no
    // passphrase file, no terminal, still the quorum error.
    let e = env.fail(&[
        "disclose",
        "--case",
        "LG-1",
        "--out",
        "out",
        "--from-file",
        "s1.eml",
        "s3.eml",
    ]);
    assert!(e.contains("quorum not met"), "{e}");
    assert_eq!(env.audit_records().len(), before, "a refusal was recorded");

    // M valid approvals: disclosed, the approvals in the bundle.
    let mut args = env.disclose_args("LG-1", "out", &files);
    args.extend([
        "--approval",
        "board.approval",
        "--approval",
        "legal.approval",
    ]);
    let text = env.ok_text(&args);
    assert!(text.contains("approvals: board, legal"), "{text}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("out/manifest.json")).unwrap()).unwrap();
    let approvers: Vec<&str> = manifest["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approver"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["board", "legal"]);
    assert_eq!(
        std::fs::read(env.path("out/approvals/1.json")).unwrap(),
        std::fs::read(env.path("board.approval")).unwrap()
    );
    let out = env.ok_text(&[
        "disclose",
        "verify",
        "out",
        "--public-key",
        "keys/audit.pub",
    ]);
    // Each approver with the key its approval is signed with.
    let key_of = |file: &str| {
        let a: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.path(file)).unwrap()).unwrap();
        a["public_key"].as_str().unwrap().to_string()
    };
    let (board, legal) = (key_of("board.approval"), key_of("legal.approval"));
    assert!(
        out.contains(&format!(
            "approvals: board (key {board}), legal (key {legal})"
        )),
        "{out}"
    );
    let records = env.audit_records();
    assert_eq!(records.len(), before + 2, "begun, then done");
    let last = records.last().unwrap();
    assert_eq!(
        last["params"]["approvers"],
        serde_json::json!(["board", "legal"])
    );
    assert_eq!(
        records[before]["params"]["approvers"],
        serde_json::json!(["board", "legal"])
    );
    assert_eq!(last["params"]["quorum"], 2);
    env.ok(&["audit", "verify"]);

    // An approval in the bundle replaced by another approver's valid one
    // for another request is caught (its hash, then its signature).
    copy_dir(&env.path("out"), &env.path("out2"));
    std::fs::copy(
        env.path("dpo-list.approval"),
        env.path("out2/approvals/2.json"),
    )
    .unwrap();
    let e = env.fail(&[
        "disclose",
        "verify",
        "out2",
        "--public-key",
        "keys/audit.pub",
    ]);
    assert!(
        e.ends_with("out2/approvals/2.json: altered: its SHA-256 differs from the manifest's"),
        "{e}"
    );
}

#[test]
fn approver_keys() {
    let env = Env::with_messages();
    std::fs::write(env.path("a.pw"), "approver one\n").unwrap();
    let text = env.ok_text(&[
        "approver",
        "init",
        "--out",
        "a.key",
        "--work-factor",
        "10",
        "--passphrase-file",
        "a.pw",
    ]);
    // The name defaults to the operator.
    assert!(
        text.starts_with("approval key of tester written to a.key"),
        "{text}"
    );
    assert!(
        text.contains("{ name = \"tester\", public_key = \""),
        "{text}"
    );
    assert_eq!(mode(&env.path("a.key")), 0o600);
    let key = std::fs::read_to_string(env.path("a.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{key}"
    );
    let public = std::fs::read_to_string(env.path("a.key.pub")).unwrap();
    assert!(!public.contains("PRIVATE") && public.lines().count() == 2);
    // Not overwritten.
    let e = env.fail(&[
        "approver",
        "init",
        "--out",
        "a.key",
        "--passphrase-file",
        "a.pw",
    ]);
    assert_eq!(e, "writ: a.key exists: not overwriting it");

    env.request("K-1", &["s1.eml"], "req.json");
    // Wrong passphrase: a clear error, no approval.
    std::fs::write(env.path("wrong.pw"), "approver two\n").unwrap();
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-1",
        "--request",
        "req.json",
        "--out",
        "x.approval",
        "--passphrase-file",
        "wrong.pw",
    ]);
    assert_eq!(e, "writ: wrong passphrase for approval key a.key");
    assert!(!env.path("x.approval").exists());
    // Without a passphrase file there is no terminal to ask on.
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-1",
        "--request",
        "req.json",
        "--out",
        "x.approval",
    ]);
    assert!(e.contains("no terminal"), "{e}");
    // The case given must be the request's.
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-2",
        "--request",
        "req.json",
        "--out",
        "x.approval",
        "--passphrase-file",
        "a.pw",
    ]);
    assert!(
        e.contains("the request is for case \"K-1\", not \"K-2\""),
        "{e}"
    );
    // Not a request; not a key.
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-1",
        "--request",
        "s1.eml",
        "--out",
        "x.approval",
        "--passphrase-file",
        "a.pw",
    ]);
    assert!(
        e.contains("request s1.eml: not a writ disclosure request"),
        "{e}"
    );
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key.pub",
        "--case",
        "K-1",
        "--request",
        "req.json",
        "--out",
        "x.approval",
        "--passphrase-file",
        "a.pw",
    ]);
    assert!(e.contains("a.key.pub is not a writ approval key"), "{e}");
    env.ok(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-1",
        "--request",
        "req.json",
        "--out",
        "x.approval",
        "--passphrase-file",
        "a.pw",
    ]);
    let approval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("x.approval")).unwrap()).unwrap();
    assert_eq!(approval["approver"], "tester");
    assert_eq!(approval["case"], "K-1");
    assert_eq!(approval["public_key"], public.lines().last().unwrap());
    let e = env.fail(&[
        "approver",
        "approve",
        "--key",
        "a.key",
        "--case",
        "K-1",
        "--request",
        "req.json",
        "--out",
        "x.approval",
        "--passphrase-file",
        "a.pw",
    ]);
    assert_eq!(e, "writ: x.approval exists: not overwriting it");
}

#[test]
fn provider_form() {
    let env = Env::with_messages();
    // The request can be made (and approved) before the messages are
    // fetched: UIDs first, then Message-IDs, each in order.
    let out = env.ok_text(&[
        "disclose",
        "request",
        "--case",
        "P-1",
        "--account",
        "ann@example.org",
        "--mailbox",
        "INBOX",
        "--message-id",
        "<9@example.org>",
        "--uid",
        "42",
        "--uid",
        "7",
        "--uidvalidity",
        "5",
    ]);
    let request: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<String> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}{}",
                m["kind"].as_str().unwrap(),
                m["uid"],
                m["message_id"]
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "uid:42null",
            "uid:7null",
            "message_id:null\"<9@example.org>\""
        ]
    );
    assert_eq!(request["messages"][0]["uidvalidity"], 5);
    assert_eq!(request["messages"][1]["uidvalidity"], 5);
    let e = env.fail(&[
        "disclose",
        "--case",
        "P-1",
        "--out",
        "out",
        "--account",
        "ann@example.org",
        "--mailbox",
        "INBOX",
        "--uid",
        "42",
        "--passphrase-file",
        "pw",
    ]);
    // UIDs name messages only under a UIDVALIDITY.
    assert!(e.contains("--uid needs --uidvalidity"), "{e}");
    let e = env.fail(&[
        "disclose",
        "--case",
        "P-1",
        "--out",
        "out",
        "--account",
        "ann@example.org",
        "--mailbox",
        "INBOX",
        "--uid",
        "42",
        "--uidvalidity",
        "5",
        "--passphrase-file",
        "pw",
    ]);
    // Without [provider.imap] there is nowhere to fetch from (the real
    // fetch is tested against Dovecot in tests/disclose_provider.rs).
    assert!(e.contains("no [provider.imap]"), "{e}");
    assert!(!env.path("out").exists());
    let e = env.fail(&[
        "disclose",
        "--case",
        "P-1",
        "--out",
        "out",
        "--account",
        "ann@example.org",
        "--mailbox",
        "INBOX",
    ]);
    assert!(e.contains("no message named"), "{e}");
    // Files and provider messages do not mix (a usage error).
    let out = env.run(&[
        "disclose",
        "--case",
        "P-1",
        "--out",
        "out",
        "--from-file",
        "s1.eml",
        "--account",
        "a",
        "--mailbox",
        "INBOX",
        "--uid",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
