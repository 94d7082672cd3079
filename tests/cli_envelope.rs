//! `writ seal` and `writ open` end to end, and interop with the reference
//! `age` CLI: the payload of a sealed message decrypts with `age -d` and an
//! identity exported by writ, or an `age-keygen` identity configured as an
//! extra recipient.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

struct Env {
    tmp: tempfile::TempDir,
}

const MESSAGE: &[u8] = b"From: ann@example.test\r\nTo: bob@example.test\r\nSubject: quarterly figures\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRevenue is up. \xc3\xa9\r\nbare LF line\nlast line without break";

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pw"), "correct horse\n").unwrap();
        std::fs::write(tmp.path().join("bad"), "wrong\n").unwrap();
        std::fs::write(tmp.path().join("m.eml"), MESSAGE).unwrap();
        let env = Env { tmp };
        env.ok(
            &[
                "keys",
                "init",
                "--work-factor",
                "10",
                "--passphrase-file",
                "pw",
            ],
            None,
        );
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(WRIT)
            .current_dir(self.tmp.path())
            .env_remove("WRIT_PASSPHRASE_FILE")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "writ {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs writ expecting failure: returns the one-line error.
    fn fails(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let before = snapshot(&self.path("keys"));
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "writ {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("writ: "), "{err}");
        assert_eq!(before, snapshot(&self.path("keys")), "keys/ changed");
        err
    }

    fn epoch(&self) -> String {
        let list = String::from_utf8(self.ok(&["keys", "list"], None)).unwrap();
        list.lines()
            .find(|l| l.starts_with('*'))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    }
}

/// Every file under `dir` with its bytes and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let meta = std::fs::metadata(&p).unwrap();
                out.insert(
                    p.clone(),
                    (std::fs::read(&p).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

/// The payload armor (part 2) of a sealed message, as a person would cut it out.
fn payload_armor(sealed: &[u8]) -> String {
    let s = String::from_utf8(sealed.to_vec()).unwrap();
    let start = s.rfind("-----BEGIN AGE ENCRYPTED FILE-----").unwrap();
    let end = s.rfind("-----END AGE ENCRYPTED FILE-----").unwrap();
    format!("{}-----END AGE ENCRYPTED FILE-----\n", &s[start..end])
}

fn age_decrypt(identity_file: &Path, armor: &str) -> Vec<u8> {
    let mut child = Command::new("age")
        .args(["-d", "-i"])
        .arg(identity_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the reference age CLI (scripts/install-deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(armor.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn seal_and_open_round_trip_from_file_and_stdin() {
    let env = Env::new();
    let sealed = env.ok(&["seal", "m.eml"], None);
    let text = String::from_utf8_lossy(&sealed);
    assert!(text.starts_with(&format!("X-Writ: v=1; key={}\r\n", env.epoch())));
    assert!(!text.contains("quarterly") && !text.contains("Revenue"));
    std::fs::write(env.path("sealed.eml"), &sealed).unwrap();
    let opened = env.ok(&["--passphrase-file", "pw", "open", "sealed.eml"], None);
    assert_eq!(opened, MESSAGE);
    // stdin to stdout, and the global option after the subcommand.
    let sealed2 = env.ok(&["seal"], Some(MESSAGE));
    let opened2 = env.ok(&["open", "--passphrase-file", "pw", "-"], Some(&sealed2));
    assert_eq!(opened2, MESSAGE);
    // Sealing again changes nothing.
    assert_eq!(env.ok(&["seal"], Some(&sealed)), sealed);
    // The summary is readable JSON with the size of M.
    let summary = env.ok(
        &["--passphrase-file", "pw", "open", "--summary", "sealed.eml"],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(v["size"], MESSAGE.len());
}

#[test]
fn payload_opens_with_the_reference_age_cli_and_an_exported_identity() {
    let env = Env::new();
    let epoch = env.epoch();
    let sealed = env.ok(&["seal", "m.eml"], None);
    let identity = env.ok(
        &["--passphrase-file", "pw", "keys", "export-identity", &epoch],
        None,
    );
    std::fs::write(env.path("identity.txt"), &identity).unwrap();
    assert_eq!(
        age_decrypt(&env.path("identity.txt"), &payload_armor(&sealed)),
        MESSAGE
    );
}

#[test]
fn extra_recipient_from_age_keygen_opens_with_age() {
    let env = Env::new();
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(env.path("kg.txt"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let kg = std::fs::read_to_string(env.path("kg.txt")).unwrap();
    let recipient = kg
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    std::fs::write(
        env.path("writ.toml"),
        format!("[seal]\nextra_recipients = [\"{recipient}\"]\n"),
    )
    .unwrap();
    let sealed = env.ok(&["--config", "writ.toml", "seal", "m.eml"], None);
    assert_eq!(
        age_decrypt(&env.path("kg.txt"), &payload_armor(&sealed)),
        MESSAGE
    );
    // Without the extra recipient, that identity cannot open it.
    let plain_sealed = env.ok(&["seal", "m.eml"], None);
    let mut child = Command::new("age")
        .args(["-d", "-i"])
        .arg(env.path("kg.txt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload_armor(&plain_sealed).as_bytes())
        .unwrap();
    assert!(!child.wait_with_output().unwrap().status.success());
}

#[test]
fn open_with_the_wrong_passphrase_fails_cleanly() {
    let env = Env::new();
    let sealed = env.ok(&["seal", "m.eml"], None);
    let err = env.fails(&["--passphrase-file", "bad", "open"], Some(&sealed));
    assert!(err.contains("passphrase"), "{err}");
}

#[test]
fn open_under_an_unknown_epoch_names_it() {
    let env = Env::new();
    let other = Env::new();
    let sealed = other.ok(&["seal", "m.eml"], None);
    let err = env.fails(&["--passphrase-file", "pw", "open"], Some(&sealed));
    assert!(
        err.contains(&other.epoch()) && err.contains("epoch"),
        "{err}"
    );
}

#[test]
fn open_of_damaged_armor_says_damaged() {
    let env = Env::new();
    let sealed = env.ok(&["seal", "m.eml"], None);
    let mut text = String::from_utf8(sealed).unwrap();
    // Replace a run of base64 in the payload with characters armor never has.
    let at = text.rfind("-----END AGE").unwrap() - 40;
    text.replace_range(at..at + 4, "!!!!");
    let err = env.fails(&["--passphrase-file", "pw", "open"], Some(text.as_bytes()));
    assert!(err.contains("damaged"), "{err}");
    // Truncated in the middle of the payload.
    let cut = &text.as_bytes()[..text.len() - 300];
    let err = env.fails(&["--passphrase-file", "pw", "open"], Some(cut));
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn open_of_a_plain_message_says_not_sealed() {
    let env = Env::new();
    let err = env.fails(&["--passphrase-file", "pw", "open", "m.eml"], None);
    assert!(err.contains("not sealed"), "{err}");
}

#[test]
fn seal_and_open_without_a_keyring_fail_cleanly() {
    let env = Env::new();
    let err = env.fails(&["--keys", "nowhere", "seal", "m.eml"], None);
    assert!(
        err.contains("no keyring") && err.contains("writ keys init"),
        "{err}"
    );
    let sealed = env.ok(&["seal", "m.eml"], None);
    let err = env.fails(
        &["--keys", "nowhere", "--passphrase-file", "pw", "open"],
        Some(&sealed),
    );
    assert!(err.contains("no keyring"), "{err}");
    let err = env.fails(&["seal", "missing.eml"], None);
    assert!(err.contains("missing.eml"), "{err}");
}
