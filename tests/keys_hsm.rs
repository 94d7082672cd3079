//! The HSM keyring against a real SoftHSM2 token: `writ keys init --token`,
//! unlock with the PIN (wrong PIN, absent token), rotate, the `passwd`
//! counterparts, `writ serve` sealing and opening mail, disclosure and
//! escrow with an HSM keyring, and the keyring files alone not opening.
//!
//! Each test has its own token directory and `SOFTHSM2_CONF` in a temp dir
//! (never the system's), made with `softhsm2-util --init-token`.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::cli::Env;
use common::hsm::{MODULE, PIN, SoftHsm, TOKEN};
use common::mail::{contains, short_message, unique};
use common::provider;
use common::python;
use common::tls::test_tls;
use common::writ::{Writ, WritConfig, free_port};

/// An [`Env`] whose writ sees `hsm`, with the PIN in `pin` and a wrong one
/// in `badpin`.
struct HsmEnv {
    env: Env,
    hsm: SoftHsm,
}

impl HsmEnv {
    fn new() -> HsmEnv {
        let env = Env::new();
        std::fs::write(env.path("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(env.path("badpin"), "0000-wrong\n").unwrap();
        HsmEnv {
            env,
            hsm: SoftHsm::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env
            .command(args)
            .env("SOFTHSM2_CONF", self.hsm.conf())
            .env_remove("WRIT_PIN_FILE")
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "writ {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[track_caller]
    fn ok_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args)).unwrap()
    }

    /// Expects exit 1, nothing on stdout, one `writ: ` line on stderr
    /// without the PIN in it, and keys/ unchanged; returns the line.
    #[track_caller]
    fn fail(&self, args: &[&str]) -> String {
        let before = self.env.snapshot();
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "writ {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "writ {args:?} printed on stdout");
        assert!(
            stderr.starts_with("writ: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
            "not one line: {stderr:?}"
        );
        assert!(!stderr.contains(PIN) && !stderr.contains("0000-wrong"));
        assert_eq!(before, self.env.snapshot(), "writ {args:?} changed keys/");
        stderr.trim_end().to_string()
    }

    fn init(&self) -> String {
        self.ok_text(&[
            "keys",
            "init",
            "--token",
            TOKEN,
            "--token-module",
            MODULE,
            "--pin-file",
            "pin",
        ])
    }

    fn epoch_ids(&self) -> Vec<String> {
        self.ok_text(&["keys", "list"])
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("escrow") && !l.starts_with("token"))
            .map(|l| l[2..18].to_string())
            .collect()
    }

    /// `writ seal` of `message`, written to `name`.
    fn seal(&self, message: &[u8], name: &str) -> Vec<u8> {
        std::fs::write(self.env.path(&format!("{name}.eml")), message).unwrap();
        let sealed = self.ok(&["seal", &format!("{name}.eml")]);
        std::fs::write(self.env.path(&format!("{name}.sealed")), &sealed).unwrap();
        sealed
    }

    fn open(&self, name: &str) -> Vec<u8> {
        self.ok(&["--pin-file", "pin", "open", &format!("{name}.sealed")])
    }
}

fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: ann@example.org\r\nTo: bob@example.org\r\nSubject: {marker}\r\n\r\nbody {marker}\r\n"
    )
    .into_bytes()
}

#[test]
fn init_on_the_token_seals_and_opens_and_the_files_alone_do_not_open() {
    let h = HsmEnv::new();
    let text = h.init();
    assert!(text.contains("active epoch"), "{text}");
    let list = h.ok_text(&["keys", "list"]);
    assert!(
        list.contains(&format!(
            "token: {TOKEN} key writ-keyring (module {MODULE})"
        )),
        "{list}"
    );
    // check-config reads only the public part: no PIN needed.
    let check = h.ok_text(&["check-config"]);
    assert!(
        check.contains(&format!("on token `{TOKEN}` (key `writ-keyring`)")),
        "{check}"
    );
    let keyring = std::fs::read_to_string(h.env.path("keys/keyring.toml")).unwrap();
    assert!(keyring.contains("version = 2"), "{keyring}");
    assert!(
        keyring.contains(&format!("token_label = \"{TOKEN}\"")),
        "{keyring}"
    );
    assert!(!keyring.contains("master_recipient"), "{keyring}");
    assert!(!h.env.path("keys/master.age").exists());
    let id = h.epoch_ids().remove(0);
    let wrapped = std::fs::read(h.env.path(&format!("keys/epochs/{id}.hsm"))).unwrap();
    assert!(!h.env.path(&format!("keys/epochs/{id}.age")).exists());

    let original = message("hsm secret one");
    let sealed = h.seal(&original, "m1");
    assert!(!contains(&sealed, b"hsm secret one"));
    assert_eq!(h.open("m1"), original);

    // The identity, from the token: the file never holds it, in any form.
    let identity = h.ok_text(&["--pin-file", "pin", "keys", "export-identity", &id]);
    let identity = identity.trim();
    assert!(identity.starts_with("AGE-SECRET-KEY-1"), "{identity}");
    assert!(!contains(&wrapped, identity.as_bytes()));
    assert!(!contains(&wrapped, b"AGE-SECRET-KEY"));
    let (_, data) = bech32::decode(identity).unwrap();
    assert!(!contains(&wrapped, &data), "raw key bytes in the file");
    for line in String::from_utf8(wrapped.clone()).unwrap().lines() {
        if let Some(b64) = line.strip_prefix("ciphertext: ") {
            use base64::Engine as _;
            let ct = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert!(!contains(&ct, &data) && !contains(&ct, identity.as_bytes()));
        }
    }

    // The keyring directory alone, next to another token with the same
    // label, PIN and key label: the files do not open.
    let other = HsmEnv::new();
    other.init();
    std::fs::remove_dir_all(other.env.path("keys")).unwrap();
    common::files::copy_dir(&h.env.path("keys"), &other.env.path("keys"));
    std::fs::copy(h.env.path("m1.sealed"), other.env.path("m1.sealed")).unwrap();
    let e = other.fail(&["--pin-file", "pin", "open", "m1.sealed"]);
    assert!(e.contains(&format!("epochs/{id}.hsm does not open")), "{e}");
    // And without any token at all.
    other.hsm.remove_tokens();
    let e = other.fail(&["--pin-file", "pin", "open", "m1.sealed"]);
    assert!(e.contains(&format!("no token labelled `{TOKEN}`")), "{e}");

    // A passphrase does not open an HSM keyring: the error says what does.
    let e = h.fail(&["--passphrase-file", "pw", "keys", "passwd"]);
    assert!(
        e.contains("--new-token-key") && e.contains("--to-passphrase"),
        "{e}"
    );
}

#[test]
fn wrong_pin_and_absent_token_are_refused_with_the_fix() {
    let h = HsmEnv::new();
    // Refused before anything is written: no keyring directory.
    let e = h.fail(&[
        "keys",
        "init",
        "--token",
        TOKEN,
        "--token-module",
        MODULE,
        "--pin-file",
        "badpin",
    ]);
    assert!(e.contains(&format!("wrong PIN for token `{TOKEN}`")), "{e}");
    assert!(e.contains("--pin-file"), "{e}");
    assert!(!h.env.path("keys").exists());
    let e = h.fail(&[
        "keys",
        "init",
        "--token",
        "no-such-token",
        "--token-module",
        MODULE,
        "--pin-file",
        "pin",
    ]);
    assert!(e.contains("no token labelled `no-such-token`"), "{e}");
    assert!(!h.env.path("keys").exists());
    let e = h.fail(&[
        "keys",
        "init",
        "--token",
        TOKEN,
        "--token-module",
        "/nonexistent/pkcs11.so",
        "--pin-file",
        "pin",
    ]);
    assert!(e.contains("/nonexistent/pkcs11.so"), "{e}");

    h.init();
    let sealed = h.seal(&message("pin test"), "m1");
    assert!(!sealed.is_empty());
    let e = h.fail(&["--pin-file", "badpin", "open", "m1.sealed"]);
    assert!(e.contains(&format!("wrong PIN for token `{TOKEN}`")), "{e}");
    let e = h.fail(&["--pin-file", "badpin", "keys", "rotate"]);
    assert!(e.contains("wrong PIN"), "{e}");
    // No PIN file and no terminal: an error naming the options, no hang.
    let e = h.fail(&["open", "m1.sealed"]);
    assert!(
        e.contains("--pin-file") && e.contains("WRIT_PIN_FILE"),
        "{e}"
    );

    // `writ serve` with the IMAP proxy refuses to start, in one line.
    let config = h.env.path("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ndir = {:?}\n[imap]\ntls_cert = \"/nonexistent\"\ntls_key = \"/nonexistent\"\n\
             [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{}\"\n\
             [provider.imap]\naddress = \"127.0.0.1:1\"\nsecurity = \"plain\"\n",
            h.env.path("keys").display().to_string(),
            free_port()
        ),
    )
    .unwrap();
    let badpin = h.env.path("badpin").display().to_string();
    let out = serve_with_token(&config, &h.hsm, &["--pin-file", &badpin]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("wrong PIN for token"), "{log}");
    assert!(!log.contains("0000-wrong"), "{log}");

    h.hsm.remove_tokens();
    let e = h.fail(&["--pin-file", "pin", "open", "m1.sealed"]);
    assert!(e.contains(&format!("no token labelled `{TOKEN}`")), "{e}");
    assert!(e.contains("pkcs11-tool"), "{e}");
    let pin = h.env.path("pin").display().to_string();
    let out = serve_with_token(&config, &h.hsm, &["--pin-file", &pin]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains(&format!("no token labelled `{TOKEN}`")),
        "{log}"
    );
    assert!(!log.contains(PIN), "{log}");
}

/// `writ serve` run to its start-up failure, seeing `hsm`.
fn serve_with_token(config: &Path, hsm: &SoftHsm, args: &[&str]) -> Output {
    std::process::Command::new(common::writ::WRIT)
        .env("SOFTHSM2_CONF", hsm.conf())
        .env_remove("WRIT_PASSPHRASE_FILE")
        .env_remove("WRIT_PIN_FILE")
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("serve")
        .current_dir(config.parent().unwrap())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn rotate_and_rewrap_keep_old_and_new_mail_open() {
    let h = HsmEnv::new();
    h.init();
    let first = message("before rotation");
    h.seal(&first, "m1");
    // Rotation needs the PIN (the new epoch is encrypted on the token).
    let e = h.fail(&["keys", "rotate"]);
    assert!(e.contains("--pin-file"), "{e}");
    let text = h.ok_text(&["--pin-file", "pin", "keys", "rotate"]);
    assert!(text.contains("is now active"), "{text}");
    let ids = h.epoch_ids();
    assert_eq!(ids.len(), 2);
    assert!(h.env.path(&format!("keys/epochs/{}.hsm", ids[1])).exists());
    let second = message("after rotation");
    let sealed = h.seal(&second, "m2");
    assert!(String::from_utf8_lossy(&sealed).contains(&format!("key={}", ids[1])));
    assert_eq!(h.open("m1"), first);
    assert_eq!(h.open("m2"), second);

    // Two epoch files swapped, or one altered: named, nothing opens.
    let path = |id: &str| h.env.path(&format!("keys/epochs/{id}.hsm"));
    let (a, b) = (
        std::fs::read(path(&ids[0])).unwrap(),
        std::fs::read(path(&ids[1])).unwrap(),
    );
    std::fs::write(path(&ids[0]), &b).unwrap();
    std::fs::write(path(&ids[1]), &a).unwrap();
    let e = h.fail(&["--pin-file", "pin", "open", "m1.sealed"]);
    assert!(
        e.contains(&format!(
            "epochs/{}.hsm does not open with its token key",
            ids[0]
        )),
        "{e}"
    );
    let mut altered = String::from_utf8(a.clone()).unwrap();
    let at = altered.find("ciphertext: ").unwrap() + 12;
    let flipped = if &altered[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    altered.replace_range(at..at + 1, flipped);
    std::fs::write(path(&ids[0]), altered).unwrap();
    std::fs::write(path(&ids[1]), &b).unwrap();
    let e = h.fail(&["--pin-file", "pin", "open", "m1.sealed"]);
    assert!(
        e.contains(&format!("epochs/{}.hsm does not open", ids[0])),
        "{e}"
    );
    std::fs::write(path(&ids[0]), &a).unwrap();
    assert_eq!(h.open("m1"), first);

    // passwd's counterpart: every epoch under a new token key.
    let before: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| std::fs::read(h.env.path(&format!("keys/epochs/{id}.hsm"))).unwrap())
        .collect();
    let text = h.ok_text(&[
        "--pin-file",
        "pin",
        "keys",
        "passwd",
        "--new-token-key",
        "writ-keyring-2",
    ]);
    assert!(text.contains("2 epoch files re-encrypted"), "{text}");
    for (id, old) in ids.iter().zip(&before) {
        let now = std::fs::read(h.env.path(&format!("keys/epochs/{id}.hsm"))).unwrap();
        assert_ne!(&now, old);
        assert!(String::from_utf8_lossy(&now).contains("key: writ-keyring-2"));
    }
    let keyring = std::fs::read_to_string(h.env.path("keys/keyring.toml")).unwrap();
    assert!(
        keyring.contains("key_label = \"writ-keyring-2\""),
        "{keyring}"
    );
    assert_eq!(h.open("m1"), first);
    assert_eq!(h.open("m2"), second);
    // What an interrupted re-wrap can leave: one file still under the old
    // key, keyring.toml naming the old key. Each file names its key, so
    // the keyring still opens, and running it again finishes the job.
    let rewrapped = std::fs::read(path(&ids[1])).unwrap();
    std::fs::write(path(&ids[1]), &before[1]).unwrap();
    std::fs::write(
        h.env.path("keys/keyring.toml"),
        keyring.replace("writ-keyring-2", "writ-keyring"),
    )
    .unwrap();
    assert_eq!(h.open("m1"), first);
    assert_eq!(h.open("m2"), second);
    h.ok(&[
        "--pin-file",
        "pin",
        "keys",
        "passwd",
        "--new-token-key",
        "writ-keyring-2",
    ]);
    assert_ne!(std::fs::read(path(&ids[1])).unwrap(), before[1]);
    assert_ne!(
        std::fs::read(path(&ids[1])).unwrap(),
        rewrapped,
        "a fresh IV each time"
    );
    assert_eq!(h.open("m2"), second);
    h.ok(&["--pin-file", "pin", "keys", "rotate"]);
    let third = message("under the new key");
    h.seal(&third, "m3");
    assert_eq!(h.open("m3"), third);

    // Back to a passphrase, then onto the token again: mail keeps opening.
    h.ok(&[
        "--pin-file",
        "pin",
        "keys",
        "passwd",
        "--to-passphrase",
        "--new-passphrase-file",
        "pw2",
        "--work-factor",
        "10",
    ]);
    assert!(h.env.path("keys/master.age").exists());
    for id in h.epoch_ids() {
        assert!(!h.env.path(&format!("keys/epochs/{id}.hsm")).exists());
        assert!(h.env.path(&format!("keys/epochs/{id}.age")).exists());
    }
    for (name, m) in [("m1", &first), ("m2", &second), ("m3", &third)] {
        let opened = h.ok(&[
            "--passphrase-file",
            "pw2",
            "open",
            &format!("{name}.sealed"),
        ]);
        assert_eq!(&opened, m);
    }
    h.ok(&[
        "--passphrase-file",
        "pw2",
        "--pin-file",
        "pin",
        "keys",
        "passwd",
        "--to-token",
        TOKEN,
        "--token-module",
        MODULE,
    ]);
    assert!(!h.env.path("keys/master.age").exists());
    for (name, m) in [("m1", &first), ("m2", &second), ("m3", &third)] {
        assert_eq!(&h.open(name), m);
    }
    // Every step is in the audit log, which verifies.
    let audit = h.ok_text(&["audit", "show"]);
    for action in [
        "keys.passwd.new-token-key",
        "keys.passwd.to-passphrase",
        "keys.passwd.to-token",
    ] {
        assert!(audit.contains(action), "{audit}");
    }
    h.ok(&["audit", "verify"]);
}

/// Several processes on one token at once (gateways sharing an HSM): each
/// unlock succeeds while a rotation runs beside them.
#[test]
fn concurrent_unlocks_and_a_rotation_share_the_token() {
    let h = HsmEnv::new();
    h.init();
    let original = message("many at once");
    h.seal(&original, "m1");
    std::thread::scope(|scope| {
        let opens: Vec<_> = (0..4).map(|_| scope.spawn(|| h.open("m1"))).collect();
        let rotate = scope.spawn(|| h.ok_text(&["--pin-file", "pin", "keys", "rotate"]));
        for open in opens {
            assert_eq!(open.join().unwrap(), original);
        }
        assert!(rotate.join().unwrap().contains("is now active"));
    });
    assert_eq!(h.epoch_ids().len(), 2);
    let second = message("after the crowd");
    h.seal(&second, "m2");
    assert_eq!(h.open("m2"), second);
    assert_eq!(h.open("m1"), original);
}

#[test]
fn disclosure_and_escrow_work_with_an_hsm_keyring() {
    let h = HsmEnv::new();
    let (escrow_id, escrow_recipient) = common::writ::age_keygen(h.env.dir(), "escrow");
    h.ok_text(&[
        "keys",
        "init",
        "--token",
        TOKEN,
        "--token-module",
        MODULE,
        "--pin-file",
        "pin",
        "--escrow-recipient",
        &escrow_recipient,
    ]);
    let original = message("for the court");
    let sealed = h.seal(&original, "m1");

    // Disclosure unlocks the keyring on the token.
    let text = h.ok_text(&[
        "--pin-file",
        "pin",
        "disclose",
        "--case",
        "LG-HSM-1",
        "--out",
        "bundle",
        "--from-file",
        "m1.sealed",
    ]);
    assert!(text.starts_with("disclosed 1 message(s)"), "{text}");
    let plain = std::fs::read(h.env.path("bundle/plaintext/0001.eml")).unwrap();
    assert_eq!(plain, original);
    h.ok(&[
        "disclose",
        "verify",
        "--public-key",
        "keys/audit.pub",
        "bundle",
    ]);

    // The escrow identity opens it without the keyring or the token.
    h.hsm.remove_tokens();
    let opened = h.ok(&[
        "escrow",
        "open",
        "--escrow-identity",
        &escrow_id.display().to_string(),
        "m1.sealed",
    ]);
    assert_eq!(opened, original);
    assert!(!sealed.is_empty());
}

#[test]
fn serve_on_an_hsm_keyring_seals_at_the_relay_and_opens_in_the_proxy() {
    let h = HsmEnv::new();
    h.init();
    let p = provider();
    let user = p.new_user("hsm-serve");
    let tls = test_tls("writ HSM test CA");
    let imaps = free_port();
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.keys_dir = Some(h.env.path("keys"));
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {cert:?}\ntls_key = {key:?}\n\
         [[imap.listeners]]\nkind = \"imaps\"\nlisten = \"127.0.0.1:{imaps}\"\n\n\
         [provider.imap]\naddress = \"{upstream}\"\nsecurity = \"plain\"\n",
        cert = tls.cert.display().to_string(),
        key = tls.key.display().to_string(),
        upstream = p.imap_addr(),
    );
    cfg.unlock = true;
    cfg.serve_env = vec![
        ("SOFTHSM2_CONF".into(), h.hsm.conf().display().to_string()),
        (
            "WRIT_PIN_FILE".into(),
            h.env.path("pin").display().to_string(),
        ),
    ];
    let writ = Writ::start(&cfg);
    let log = writ.log();
    assert!(!log.contains(PIN), "{log}");

    let marker = unique("hsm-relay");
    let original = short_message(&user.address, &marker);
    common::smtp::send(
        writ.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &original,
    )
    .expect("relay accepts");
    let stored = p.wait_for_messages(&user, "INBOX", 1, Duration::from_secs(30));
    assert!(contains(&stored[0], b"X-Writ: v=1"));
    assert!(!contains(&stored[0], marker.as_bytes()), "plaintext stored");

    let fetch = |n: usize| {
        python::ok(
            FETCH,
            [
                imaps.to_string(),
                tls.ca.display().to_string(),
                user.name.clone(),
                user.password.clone(),
                n.to_string(),
            ],
        )
    };
    let out = fetch(1);
    assert!(out.contains(&format!("Subject: {marker}")), "{out}");
    assert!(out.contains(&format!("body {marker}")), "{out}");

    // Rotate on the token, SIGHUP: the reload reads the PIN file again and
    // unlocks the new epoch; new mail is sealed to it and opens, old mail
    // still opens.
    h.ok(&["--pin-file", "pin", "keys", "rotate"]);
    let new_epoch = h.epoch_ids().pop().unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &writ.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    common::mail::wait_until("the keyring reload", || {
        writ.log().contains("SIGHUP: keyring reloaded")
    });
    assert!(writ.log().contains(&new_epoch), "{}", writ.log());
    let marker2 = unique("hsm-after-rotate");
    common::smtp::send(
        writ.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &short_message(&user.address, &marker2),
    )
    .expect("relay accepts");
    let stored = p.wait_for_messages(&user, "INBOX", 2, Duration::from_secs(30));
    assert!(contains(&stored[1], format!("key={new_epoch}").as_bytes()));
    assert!(
        !contains(&stored[1], marker2.as_bytes()),
        "plaintext stored"
    );
    let out = fetch(2);
    assert!(out.contains(&format!("body {marker2}")), "{out}");
    assert!(fetch(1).contains(&format!("body {marker}")));
    assert!(!writ.log().contains(PIN));
}

const FETCH: &str = r#"
import imaplib, ssl, sys
port, ca, user, pw, n = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ctx)
c.login(user, pw)
c.select('INBOX')
typ, data = c.fetch(n, '(BODY.PEEK[])')
assert typ == 'OK', data
sys.stdout.buffer.write(data[0][1])
"#;
