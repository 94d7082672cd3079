//! Library tests of the keyring (the CLI tests live in tests/cli_keys.rs).

use std::path::Path;

use secrecy::SecretString;

use super::*;

const WF: Option<u8> = Some(4);

fn pass(s: &str) -> SecretString {
    SecretString::from(s)
}

fn new_keyring(dir: &Path) -> Keyring {
    Keyring::init(dir, &pass("old"), None, WF).unwrap()
}

#[test]
fn epoch_id_is_16_hex_of_sha256() {
    let r: age::x25519::Recipient =
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
            .parse()
            .unwrap();
    let id = epoch_id(&r);
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let full = ring::digest::digest(&ring::digest::SHA256, r.to_string().as_bytes());
    let hex: String = full.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(id, hex[..16]);
}

#[test]
fn init_load_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let escrow = age::x25519::Identity::generate().to_public();
    let k = Keyring::init(dir.path(), &pass("old"), Some(escrow.clone()), WF).unwrap();
    let loaded = Keyring::load(dir.path()).unwrap();
    assert_eq!(loaded.epochs(), k.epochs());
    assert_eq!(loaded.escrow(), Some(&escrow));
    let active = loaded.active().unwrap().clone();
    assert_eq!(active.state, EpochState::Active);
    assert_eq!(active.id, epoch_id(&active.recipient));
    assert_eq!(
        loaded.seal_recipients().unwrap(),
        vec![active.recipient.clone(), escrow]
    );
    let unlocked = loaded.unlock(&pass("old")).unwrap();
    let identity = unlocked.identity(&active.id).unwrap();
    assert_eq!(identity.to_public(), active.recipient);
    assert_eq!(unlocked.identities().count(), 1);
    assert!(!format!("{unlocked:?}").contains("AGE-SECRET-KEY"));
    assert!(matches!(
        loaded.unlock(&pass("nope")),
        Err(KeyError::WrongPassphrase { .. })
    ));
}

#[test]
fn init_refuses_existing_and_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    new_keyring(dir.path());
    let e = Keyring::init(dir.path(), &pass("x"), None, WF).unwrap_err();
    assert!(matches!(e, KeyError::AlreadyExists { .. }), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.age"), b"x").unwrap();
    let e = Keyring::init(dir.path(), &pass("x"), None, WF).unwrap_err();
    assert!(matches!(e, KeyError::Leftover { .. }), "{e}");
    assert_eq!(std::fs::read(dir.path().join("master.age")).unwrap(), b"x");

    let e = Keyring::init(dir.path(), &pass(""), None, WF).unwrap_err();
    assert!(matches!(e, KeyError::Passphrase(_)), "{e}");
    let e = Keyring::init(dir.path(), &pass("x"), None, Some(60)).unwrap_err();
    assert!(matches!(e, KeyError::WorkFactor(60)), "{e}");
}

#[test]
fn missing_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let e = Keyring::load(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, KeyError::NoKeyring { .. }));
    assert!(
        e.to_string().contains("nope/ (run `writ keys init`)"),
        "{e}"
    );
}

#[test]
fn rotate_keeps_old_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = new_keyring(dir.path());
    let first = k.active().unwrap().id.clone();
    let second = k.rotate().unwrap().id.clone();
    assert_ne!(first, second);
    let k2 = Keyring::load(dir.path()).unwrap();
    assert_eq!(k2.epochs().len(), 2);
    assert_eq!(k2.epoch(&first).unwrap().state, EpochState::DecryptOnly);
    assert_eq!(k2.active().unwrap().id, second);
    let unlocked = k2.unlock(&pass("old")).unwrap();
    assert!(unlocked.identity(&first).is_some() && unlocked.identity(&second).is_some());
    assert!(matches!(
        k2.epoch("0000000000000000"),
        Err(KeyError::UnknownEpoch { .. })
    ));
}

#[test]
fn passwd_plain_and_new_master() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = new_keyring(dir.path());
    k.rotate().unwrap();
    let epoch_file = |id: &str| std::fs::read(dir.path().join("epochs").join(format!("{id}.age")));
    let ids: Vec<String> = k.epochs().iter().map(|e| e.id.clone()).collect();
    let before: Vec<_> = ids.iter().map(|id| epoch_file(id).unwrap()).collect();

    k.passwd(&pass("old"), &pass("new"), false, WF).unwrap();
    let after: Vec<_> = ids.iter().map(|id| epoch_file(id).unwrap()).collect();
    assert_eq!(before, after, "plain passwd must not touch epoch files");
    assert!(matches!(
        k.unlock(&pass("old")),
        Err(KeyError::WrongPassphrase { .. })
    ));
    k.unlock(&pass("new")).unwrap();

    let master_before = k.master_recipient().unwrap().clone();
    k.passwd(&pass("new"), &pass("newer"), true, WF).unwrap();
    let k = Keyring::load(dir.path()).unwrap();
    assert_ne!(k.master_recipient(), Some(&master_before));
    for (id, old) in ids.iter().zip(&after) {
        assert_ne!(&epoch_file(id).unwrap(), old);
    }
    let unlocked = k.unlock(&pass("newer")).unwrap();
    for e in k.epochs() {
        assert_eq!(unlocked.identity(&e.id).unwrap().to_public(), e.recipient);
    }
    assert!(k.unlock(&pass("new")).is_err());
}

#[test]
fn every_crash_state_of_new_master_unlocks() {
    for last_step in 1..=5u8 {
        let dir = tempfile::tempdir().unwrap();
        let mut k = new_keyring(dir.path());
        k.rotate().unwrap();
        let fresh = Keyring::load(dir.path()).unwrap();
        let master = fresh.unlock_master(&pass("old")).unwrap();
        let unlocked = fresh.unlock(&pass("old")).unwrap();
        fresh
            .switch_master(&master, &unlocked, &pass("new"), WF, last_step)
            .unwrap();
        // Before step 3 the old passphrase opens everything, from it on the
        // new one does.
        let good = if last_step < 3 { "old" } else { "new" };
        let k = Keyring::load(dir.path()).unwrap();
        let u = k
            .unlock(&pass(good))
            .unwrap_or_else(|e| panic!("step {last_step}: {e}"));
        assert_eq!(u.identities().count(), 2);
        // A rotate in the crash state must stay openable after completing.
        let mut k2 = k.clone();
        k2.rotate().unwrap();
        k2.passwd(&pass(good), &pass("final"), true, WF).unwrap();
        let k3 = Keyring::load(dir.path()).unwrap();
        assert_eq!(k3.unlock(&pass("final")).unwrap().identities().count(), 3);
    }
}

#[test]
fn swapped_truncated_missing_epoch_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = new_keyring(dir.path());
    k.rotate().unwrap();
    let ids: Vec<String> = k.epochs().iter().map(|e| e.id.clone()).collect();
    let path = |id: &str| dir.path().join("epochs").join(format!("{id}.age"));
    let original = std::fs::read(path(&ids[1])).unwrap();

    std::fs::copy(path(&ids[0]), path(&ids[1])).unwrap();
    let e = k.unlock(&pass("old")).unwrap_err();
    assert!(matches!(e, KeyError::Swapped { .. }), "{e}");
    assert!(e.to_string().contains(&ids[1]), "{e}");

    std::fs::write(path(&ids[1]), &original[..original.len() - 10]).unwrap();
    let e = k.unlock(&pass("old")).unwrap_err();
    assert!(matches!(e, KeyError::Damaged { .. }), "{e}");

    std::fs::remove_file(path(&ids[1])).unwrap();
    let e = k.unlock(&pass("old")).unwrap_err();
    assert!(matches!(e, KeyError::Missing { .. }), "{e}");
}

#[test]
fn corrupt_keyring_toml() {
    let dir = tempfile::tempdir().unwrap();
    new_keyring(dir.path());
    let p = dir.path().join("keyring.toml");
    let good = std::fs::read_to_string(&p).unwrap();
    for (bad, want) in [
        (
            good.replace("state = \"active\"", "state = \"on\""),
            "epoch.0.state",
        ),
        (good.replace("[[epoch]]", "[[epoch]\n"), "line"),
        (good.replace("version = 1", "version = 2"), "version 2"),
        (good.replace("version = 1", "version = 3"), "version 3"),
        (format!("{good}extra = 1\n"), "extra"),
        (good.replacen("id = \"", "id = \"0", 1), "does not match"),
    ] {
        std::fs::write(&p, &bad).unwrap();
        let e = Keyring::load(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, KeyError::Invalid { .. }), "{msg}");
        assert!(
            msg.contains("keyring.toml: ") && msg.contains(want),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn escrow_file_validated() {
    let dir = tempfile::tempdir().unwrap();
    new_keyring(dir.path());
    std::fs::write(dir.path().join("escrow.txt"), "# c\nage1bad\n").unwrap();
    let e = Keyring::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("escrow.txt"), "{e}");
}

#[test]
fn a_lost_or_replaced_escrow_file_is_refused_once_keyring_toml_records_escrow() {
    let dir = tempfile::tempdir().unwrap();
    let escrow = age::x25519::Identity::generate().to_public();
    Keyring::init(dir.path(), &pass("p"), Some(escrow.clone()), WF).unwrap();
    let toml = std::fs::read_to_string(dir.path().join("keyring.toml")).unwrap();
    assert!(
        toml.contains(&format!("escrow_recipient = \"{escrow}\"")),
        "{toml}"
    );
    let escrow_txt = dir.path().join("escrow.txt");
    let kept = std::fs::read(&escrow_txt).unwrap();

    // Lost: refused by name, the fix in the message, instead of new mail
    // sealed without escrow.
    std::fs::remove_file(&escrow_txt).unwrap();
    let e = Keyring::load(dir.path()).unwrap_err();
    assert!(matches!(e, KeyError::EscrowMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("escrow.txt is missing") && msg.contains(&escrow.to_string()),
        "{msg}"
    );

    // Replaced by another recipient: refused too.
    let other = age::x25519::Identity::generate().to_public();
    std::fs::write(&escrow_txt, format!("{other}\n")).unwrap();
    let e = Keyring::load(dir.path()).unwrap_err();
    assert!(matches!(e, KeyError::EscrowMismatch { .. }), "{e}");

    std::fs::write(&escrow_txt, &kept).unwrap();
    assert_eq!(Keyring::load(dir.path()).unwrap().escrow(), Some(&escrow));
}

#[test]
fn a_keyring_toml_without_the_record_takes_escrow_txt_and_records_it_when_rewritten() {
    // Keyrings made before the record: escrow.txt alone, as before; the
    // next rewrite of keyring.toml (a rotation) records it.
    let dir = tempfile::tempdir().unwrap();
    let escrow = age::x25519::Identity::generate().to_public();
    Keyring::init(dir.path(), &pass("p"), Some(escrow.clone()), WF).unwrap();
    let path = dir.path().join("keyring.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let old: String = toml
        .lines()
        .filter(|l| !l.starts_with("escrow_recipient"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old, toml);
    assert!(!Keyring::load(dir.path()).unwrap().escrow_unrecorded());
    std::fs::write(&path, &old).unwrap();
    let mut k = Keyring::load(dir.path()).unwrap();
    assert_eq!(k.escrow(), Some(&escrow));
    assert!(k.escrow_unrecorded());
    k.rotate().unwrap();
    assert!(!Keyring::load(dir.path()).unwrap().escrow_unrecorded());
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains("escrow_recipient"), "{toml}");
    std::fs::remove_file(dir.path().join("escrow.txt")).unwrap();
    assert!(matches!(
        Keyring::load(dir.path()),
        Err(KeyError::EscrowMissing { .. })
    ));
}
