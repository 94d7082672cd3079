//! `writ keys ...` end to end: the binary in a temp dir, real files.
//!
//! Every bad input must give a one-line error naming the problem, a
//! non-zero exit, and leave every byte, mtime and mode under keys/ as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use common::cli::{Env, KEYS_INIT};
use common::writ::WRIT;

const AGE: &str = "/usr/bin/age";

#[derive(Debug, Clone, PartialEq)]
struct Row {
    active: bool,
    id: String,
    state: String,
    recipient: String,
}

impl Env {
    fn list(&self) -> Vec<Row> {
        parse_rows(&self.ok_text(&["keys", "list"]))
    }

    fn export(&self, id: &str, pw: &str) -> String {
        let out = self.run(&["keys", "export-identity", id, "--passphrase-file", pw]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "export failed: {stderr}");
        assert!(stderr.contains("warning"), "no warning: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn epoch_file(&self, id: &str) -> PathBuf {
        self.path(&format!("keys/epochs/{id}.age"))
    }
}

fn identity(exported: &str) -> age::x25519::Identity {
    let line = exported.trim();
    assert!(line.starts_with("AGE-SECRET-KEY-1"), "not an identity");
    assert_eq!(exported.lines().count(), 1);
    age::x25519::Identity::from_str(line).unwrap()
}

#[test]
fn init_list_rotate_and_modes() {
    let env = Env::new();
    let out = env.init_keyring();
    let rows = env.list();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].active && rows[0].state == "active");
    assert!(out.contains(&rows[0].id) && out.contains(&rows[0].recipient));
    assert!(rows[0].recipient.starts_with("age1"));

    env.ok(&["keys", "rotate"]);
    let rows2 = env.list();
    assert_eq!(rows2.len(), 2);
    assert_eq!(rows2[0].id, rows[0].id);
    assert!(!rows2[0].active && rows2[0].state == "decrypt-only");
    assert!(rows2[1].active && rows2[1].state == "active");
    env.ok(&["keys", "rotate"]);
    let rows3 = env.list();
    assert_eq!(
        rows3.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
        ["decrypt-only", "decrypt-only", "active"]
    );

    for (path, (_, _, mode)) in env.snapshot() {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o777, want, "{}", path.display());
    }
    for row in &rows3 {
        assert!(env.epoch_file(&row.id).exists());
    }
}

#[test]
fn global_options_before_or_after_and_env() {
    let env = Env::new();
    env.ok(&[
        "--keys",
        "k2",
        "--passphrase-file",
        "pw",
        "keys",
        "init",
        "--work-factor",
        "10",
    ]);
    assert!(env.path("k2/keyring.toml").exists());
    let rows = env.list_in("k2");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows,
        parse_rows(&env.ok_text(&["--keys", "k2", "keys", "list"]))
    );
    assert!(!env.path("keys").exists());
    // WRIT_PASSPHRASE_FILE stands in for --passphrase-file.
    let out = Command::new(WRIT)
        .current_dir(env.dir())
        .env("WRIT_PASSPHRASE_FILE", "pw")
        .args(["keys", "export-identity", &rows[0].id, "--keys", "k2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = identity(std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(id.to_public().to_string(), rows[0].recipient);
}

impl Env {
    /// `keys list` of another keyring dir, the option after the subcommand.
    fn list_in(&self, dir: &str) -> Vec<Row> {
        parse_rows(&self.ok_text(&["keys", "list", "--keys", dir]))
    }
}

/// Parses `writ keys list` output.
fn parse_rows(out: &str) -> Vec<Row> {
    out.lines()
        .skip(1)
        .filter(|l| !l.starts_with("escrow:"))
        .map(|l| {
            let cols: Vec<&str> = l[2..].split_whitespace().collect();
            Row {
                active: l.starts_with('*'),
                id: cols[0].to_string(),
                state: cols[1].to_string(),
                recipient: cols[3].to_string(),
            }
        })
        .collect()
}

#[test]
fn export_identity_opens_with_reference_age() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    for row in env.list() {
        let exported = env.export(&row.id, "pw");
        let id = identity(&exported);
        assert_eq!(id.to_public().to_string(), row.recipient);

        // Encrypt to the epoch recipient, decrypt with the exported identity.
        let plaintext = format!("sealed under {}\n", row.id);
        let ct = age::encrypt(&id.to_public(), plaintext.as_bytes()).unwrap();
        assert_eq!(age::decrypt(&id, &ct).unwrap(), plaintext.as_bytes());

        if Path::new(AGE).exists() {
            let id_file = env.path("identity.txt");
            std::fs::write(&id_file, &exported).unwrap();
            std::fs::write(env.path("msg.txt"), &plaintext).unwrap();
            let enc = Command::new(AGE)
                .args(["-r", &row.recipient, "-o"])
                .arg(env.path("msg.age"))
                .arg(env.path("msg.txt"))
                .status()
                .unwrap();
            assert!(enc.success());
            let dec = Command::new(AGE)
                .arg("-d")
                .arg("-i")
                .arg(&id_file)
                .arg(env.path("msg.age"))
                .output()
                .unwrap();
            assert!(
                dec.status.success(),
                "{}",
                String::from_utf8_lossy(&dec.stderr)
            );
            assert_eq!(dec.stdout, plaintext.as_bytes());
        } else {
            eprintln!("note: {AGE} not installed; checked with the age crate only");
        }
    }
}

#[test]
fn passwd_changes_only_master_age() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    let rows = env.list();
    let exported: Vec<String> = rows.iter().map(|r| env.export(&r.id, "pw")).collect();
    let before = env.snapshot();

    env.ok(&[
        "keys",
        "passwd",
        "--passphrase-file",
        "pw",
        "--new-passphrase-file",
        "pw2",
        "--work-factor",
        "10",
    ]);
    let after = env.snapshot();
    for (path, entry) in &before {
        if path.ends_with("master.age") {
            assert_ne!(entry.0, after[path].0, "master.age not rewritten");
        } else if path.ends_with("audit.log") || path.ends_with("audit.head") {
            // The audit log records the passwd (tests/cli_audit.rs).
        } else {
            assert_eq!(entry, &after[path], "{} changed", path.display());
        }
    }
    let err = env.fail_unchanged(&[
        "keys",
        "export-identity",
        &rows[0].id,
        "--passphrase-file",
        "pw",
    ]);
    assert_eq!(err, "writ: wrong passphrase for keys/master.age");
    for (row, old) in rows.iter().zip(&exported) {
        assert_eq!(&env.export(&row.id, "pw2"), old);
    }
}

#[test]
fn passwd_new_master_reencrypts_epoch_files() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    env.ok(&["keys", "rotate"]);
    let rows = env.list();
    let exported: Vec<String> = rows.iter().map(|r| env.export(&r.id, "pw")).collect();
    let epoch_bytes = |id: &str| std::fs::read(env.epoch_file(id)).unwrap();
    let before: Vec<Vec<u8>> = rows.iter().map(|r| epoch_bytes(&r.id)).collect();
    let toml_before = std::fs::read_to_string(env.path("keys/keyring.toml")).unwrap();

    let out = env.ok_text(&[
        "keys",
        "passwd",
        "--new-master",
        "--passphrase-file",
        "pw",
        "--new-passphrase-file",
        "pw2",
        "--work-factor",
        "10",
    ]);
    assert!(out.contains("3 epoch files re-encrypted"), "{out}");
    for (row, old) in rows.iter().zip(&before) {
        assert_ne!(
            &epoch_bytes(&row.id),
            old,
            "epoch {} not re-encrypted",
            row.id
        );
    }
    let toml_after = std::fs::read_to_string(env.path("keys/keyring.toml")).unwrap();
    assert_ne!(toml_before, toml_after, "master recipient not replaced");
    assert!(!toml_after.contains("next_master_recipient"));
    assert_eq!(env.list(), rows);
    for (row, old) in rows.iter().zip(&exported) {
        assert_eq!(&env.export(&row.id, "pw2"), old);
    }
    env.fail_unchanged(&[
        "keys",
        "export-identity",
        &rows[0].id,
        "--passphrase-file",
        "pw",
    ]);
    // Left-over temp files from the switch: none.
    assert!(env.snapshot().keys().all(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        !name.starts_with(".writ-")
    }));
    // Rotating after the switch encrypts to the new master.
    env.ok(&["keys", "rotate"]);
    let newest = env.list().pop().unwrap();
    identity(&env.export(&newest.id, "pw2"));
}

#[test]
fn wrong_passphrase() {
    let env = Env::new();
    env.init_keyring();
    let id = env.list()[0].id.clone();
    let want = "writ: wrong passphrase for keys/master.age";
    let e = env.fail_unchanged(&["keys", "export-identity", &id, "--passphrase-file", "bad"]);
    assert_eq!(e, want);
    for extra in [&[][..], &["--new-master"][..]] {
        let mut args = vec![
            "keys",
            "passwd",
            "--passphrase-file",
            "bad",
            "--new-passphrase-file",
            "pw2",
        ];
        args.extend_from_slice(extra);
        assert_eq!(env.fail_unchanged(&args), want);
    }
}

#[test]
fn missing_keyring() {
    let env = Env::new();
    let want = "writ: no keyring in keys/ (run `writ keys init`)";
    for args in [
        &["keys", "list"][..],
        &["keys", "rotate"],
        &[
            "keys",
            "export-identity",
            "0123456789abcdef",
            "--passphrase-file",
            "pw",
        ],
        &[
            "keys",
            "passwd",
            "--passphrase-file",
            "pw",
            "--new-passphrase-file",
            "pw2",
        ],
        &["check-config"],
    ] {
        assert_eq!(env.fail(args), want, "{args:?}");
    }
    assert!(
        !env.path("keys").exists(),
        "a failing command created keys/"
    );
    let e = env.fail(&["--keys", "elsewhere", "keys", "list"]);
    assert_eq!(e, "writ: no keyring in elsewhere/ (run `writ keys init`)");
}

#[test]
fn corrupt_keyring_toml() {
    let env = Env::new();
    env.init_keyring();
    let id = env.list()[0].id.clone();
    let path = env.path("keys/keyring.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    for (bad, want) in [
        ("this is = = not toml\n".to_string(), "line 1"),
        (
            good.replace("state = \"active\"", "state = 7"),
            "epoch.0.state",
        ),
        (
            good.replace("master_recipient", "master_recipeint"),
            "master_recipeint",
        ),
        (
            good.replacen("recipient = \"age1", "recipient = \"age2", 1),
            "not an age X25519 recipient",
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        for args in [
            &["keys", "list"][..],
            &["keys", "rotate"],
            &["keys", "export-identity", &id, "--passphrase-file", "pw"],
            &[
                "keys",
                "passwd",
                "--passphrase-file",
                "pw",
                "--new-passphrase-file",
                "pw2",
            ],
        ] {
            let e = env.fail_unchanged(args);
            assert!(e.starts_with("writ: keys/keyring.toml: "), "{e}");
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}

#[test]
fn truncated_key_files() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    let rows = env.list();
    let victim = env.epoch_file(&rows[0].id);
    let bytes = std::fs::read(&victim).unwrap();
    let want = format!(
        "writ: keys/epochs/{}.age is truncated or damaged (restore it from a backup)",
        rows[0].id
    );
    for len in [0, 40, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&victim, &bytes[..len]).unwrap();
        for args in [
            &[
                "keys",
                "export-identity",
                &rows[0].id,
                "--passphrase-file",
                "pw",
            ][..],
            &[
                "keys",
                "export-identity",
                &rows[1].id,
                "--passphrase-file",
                "pw",
            ],
            &[
                "keys",
                "passwd",
                "--new-master",
                "--passphrase-file",
                "pw",
                "--new-passphrase-file",
                "pw2",
            ],
        ] {
            assert_eq!(env.fail_unchanged(args), want, "len {len} {args:?}");
        }
    }
    std::fs::write(&victim, &bytes).unwrap();

    let master = env.path("keys/master.age");
    let bytes = std::fs::read(&master).unwrap();
    std::fs::write(&master, &bytes[..bytes.len() - 5]).unwrap();
    let e = env.fail_unchanged(&[
        "keys",
        "export-identity",
        &rows[0].id,
        "--passphrase-file",
        "pw",
    ]);
    assert_eq!(
        e,
        "writ: keys/master.age is truncated or damaged (restore it from a backup)"
    );

    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&master, &bytes).unwrap();
    let e = env.fail_unchanged(&[
        "keys",
        "export-identity",
        &rows[1].id,
        "--passphrase-file",
        "pw",
    ]);
    assert!(
        e.contains(&format!("keys/epochs/{}.age is missing", rows[0].id)),
        "{e}"
    );
}

#[test]
fn swapped_epoch_files() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    let rows = env.list();
    std::fs::copy(env.epoch_file(&rows[1].id), env.epoch_file(&rows[0].id)).unwrap();
    let want = format!(
        "writ: keys/epochs/{}.age holds the key of another epoch (swapped file?)",
        rows[0].id
    );
    for args in [
        &[
            "keys",
            "export-identity",
            &rows[0].id,
            "--passphrase-file",
            "pw",
        ][..],
        &[
            "keys",
            "export-identity",
            &rows[1].id,
            "--passphrase-file",
            "pw",
        ],
        &[
            "keys",
            "passwd",
            "--new-master",
            "--passphrase-file",
            "pw",
            "--new-passphrase-file",
            "pw2",
        ],
    ] {
        assert_eq!(env.fail_unchanged(args), want, "{args:?}");
    }
}

#[test]
fn epoch_file_from_another_keyring() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&[
        "--keys",
        "other",
        "--passphrase-file",
        "pw",
        "keys",
        "init",
        "--work-factor",
        "10",
    ]);
    let id = env.list()[0].id.clone();
    let other = env.list_in("other")[0].id.clone();
    std::fs::copy(
        env.path(&format!("other/epochs/{other}.age")),
        env.epoch_file(&id),
    )
    .unwrap();
    let e = env.fail_unchanged(&["keys", "export-identity", &id, "--passphrase-file", "pw"]);
    assert!(
        e.contains(&format!(
            "keys/epochs/{id}.age is not encrypted to this keyring's master key"
        )),
        "{e}"
    );

    // Same passphrase, but the master key of the other keyring.
    std::fs::copy(env.path("other/master.age"), env.path("keys/master.age")).unwrap();
    let e = env.fail_unchanged(&["keys", "export-identity", &id, "--passphrase-file", "pw"]);
    assert!(
        e.contains("keys/master.age holds a master key that keyring.toml does not name"),
        "{e}"
    );
}

#[test]
fn unknown_epoch() {
    let env = Env::new();
    env.init_keyring();
    let e = env.fail_unchanged(&[
        "keys",
        "export-identity",
        "0123456789abcdef",
        "--passphrase-file",
        "pw",
    ]);
    assert_eq!(
        e,
        "writ: unknown epoch 0123456789abcdef (see `writ keys list`)"
    );
    // Known before any passphrase is needed.
    let e = env.fail_unchanged(&["keys", "export-identity", "nope"]);
    assert!(e.contains("unknown epoch nope"), "{e}");
}

#[test]
fn init_over_existing_keyring() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    let e = env.fail_unchanged(KEYS_INIT);
    assert_eq!(e, "writ: keyring already exists in keys/");

    // A keys/ holding only a README (as in the repository) is fine.
    let env = Env::new();
    std::fs::create_dir(env.path("keys")).unwrap();
    std::fs::write(env.path("keys/README.md"), "readme\n").unwrap();
    env.init_keyring();
    assert_eq!(
        std::fs::read(env.path("keys/README.md")).unwrap(),
        b"readme\n"
    );

    // master.age without keyring.toml: never overwritten.
    let env = Env::new();
    std::fs::create_dir(env.path("keys")).unwrap();
    std::fs::write(env.path("keys/master.age"), "precious").unwrap();
    let e = env.fail_unchanged(KEYS_INIT);
    assert!(
        e.contains("keys/master.age exists but keyring.toml does not"),
        "{e}"
    );
}

#[test]
fn bad_passphrase_sources() {
    let env = Env::new();
    std::fs::write(env.path("empty"), "\n").unwrap();
    let e = env.fail(&[
        "keys",
        "init",
        "--work-factor",
        "10",
        "--passphrase-file",
        "empty",
    ]);
    assert!(
        e.contains("passphrase file empty: empty passphrase refused"),
        "{e}"
    );
    let e = env.fail(&["keys", "init", "--passphrase-file", "missing"]);
    assert!(e.starts_with("writ: passphrase file missing: "), "{e}");
    assert!(!env.path("keys").exists());

    env.init_keyring();
    let id = env.list()[0].id.clone();
    let e = env.fail_unchanged(&[
        "keys",
        "passwd",
        "--passphrase-file",
        "pw",
        "--new-passphrase-file",
        "empty",
    ]);
    assert!(e.contains("empty passphrase refused"), "{e}");

    // No file and no terminal to prompt on: an error, not a hang.
    if Path::new("/usr/bin/setsid").exists() {
        let out = Command::new("/usr/bin/setsid")
            .arg("-w")
            .arg(WRIT)
            .args(["keys", "export-identity", &id])
            .current_dir(env.dir())
            .env_remove("WRIT_PASSPHRASE_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no passphrase"), "{stderr}");
    }
}

#[test]
fn bad_arguments() {
    let env = Env::new();
    for args in [
        &[
            "keys",
            "init",
            "--escrow-recipient",
            "age1nope",
            "--passphrase-file",
            "pw",
        ][..],
        &[
            "keys",
            "init",
            "--work-factor",
            "0",
            "--passphrase-file",
            "pw",
        ],
        &[
            "keys",
            "init",
            "--work-factor",
            "40",
            "--passphrase-file",
            "pw",
        ],
    ] {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
    }
    assert!(!env.path("keys").exists());
}

#[test]
fn escrow_recipient() {
    let env = Env::new();
    let escrow = age::x25519::Identity::generate().to_public().to_string();
    let out = env.ok_text(&[
        "keys",
        "init",
        "--escrow-recipient",
        &escrow,
        "--work-factor",
        "10",
        "--passphrase-file",
        "pw",
    ]);
    assert!(out.contains(&escrow));
    let text = std::fs::read_to_string(env.path("keys/escrow.txt")).unwrap();
    assert!(text.lines().any(|l| l == escrow));
    assert!(
        env.ok_text(&["keys", "list"])
            .contains(&format!("escrow: {escrow}"))
    );
    let out = env.ok_text(&["check-config"]);
    assert!(
        out.contains("2 recipient(s): active epoch, escrow"),
        "{out}"
    );
    assert!(
        !out.contains("does not record the escrow recipient"),
        "{out}"
    );

    // A keyring.toml of before the record: both commands say that a lost
    // escrow.txt would go unnoticed until the next rewrite.
    let path = env.path("keys/keyring.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let old: String = toml
        .lines()
        .filter(|l| !l.starts_with("escrow_recipient"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old, toml);
    std::fs::write(&path, old).unwrap();
    for args in [&["keys", "list"][..], &["check-config"][..]] {
        let out = env.ok_text(args);
        assert!(
            out.contains("keyring.toml does not record the escrow recipient yet"),
            "{args:?}: {out}"
        );
    }
}
