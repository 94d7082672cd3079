//! Unit tests of the audit log.

use super::*;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    create_key(dir.path()).unwrap();
    dir
}

#[test]
fn append_and_verify() {
    let dir = setup();
    assert_eq!(verify(dir.path(), None).unwrap().records, 0);
    let e = append(dir.path(), "op", "keys.rotate", BTreeMap::new()).unwrap_err();
    assert!(matches!(e, AuditError::Missing { .. }), "{e}");
    assert!(check_writable(dir.path()).is_err());
    append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap();
    check_writable(dir.path()).unwrap();
    for i in 1..3 {
        let r = append(
            dir.path(),
            "op",
            "keys.rotate",
            params([("epoch", serde_json::json!(format!("e{i}")))]),
        )
        .unwrap();
        assert_eq!(r.seq, i + 1);
    }
    let e = append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap_err();
    assert!(matches!(e, AuditError::NotABeginning { .. }), "{e}");
    let v = verify(dir.path(), None).unwrap();
    assert_eq!(v.records, 3);
    check_noted_head(dir.path(), 3, &v.head).unwrap();
    assert!(check_noted_head(dir.path(), 3, GENESIS).is_err());
    let records = read(dir.path()).unwrap();
    assert_eq!(records[0].prev, GENESIS);
    assert_eq!(records[2].params["epoch"], "e2");
    assert!(!v.restarted);
}

/// Writes a log of signed records with these actions, and its head,
/// bypassing [`append`]'s rules (as an old writ, or a forger with the
/// key, could).
fn forge(dir: &Path, actions: &[&str]) {
    let pair = load_key(dir).unwrap();
    let mut prev = GENESIS.to_string();
    let mut log = String::new();
    for (i, action) in actions.iter().enumerate() {
        let record = Record {
            seq: i as u64 + 1,
            time: now_rfc3339(),
            operator: "op".into(),
            gateway: None,
            action: action.to_string(),
            params: BTreeMap::new(),
            prev: prev.clone(),
            sig: String::new(),
        };
        let line = signed_line(
            &pair,
            RECORD_DOMAIN,
            &serde_json::to_string(&record).unwrap(),
        );
        prev = sha256_hex(line.as_bytes());
        log.push_str(&line);
        log.push('\n');
    }
    std::fs::write(dir.join(LOG_FILE), log).unwrap();
    write_head(dir, &pair, actions.len() as u64, &prev).unwrap();
}

#[test]
fn a_chain_begins_with_the_keyrings_creation_and_only_once() {
    let dir = setup();
    forge(dir.path(), &["keys.init", "keys.rotate"]);
    verify(dir.path(), None).unwrap();
    forge(dir.path(), &["keys.rotate", "keys.rotate"]);
    let e = verify(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("line 1: is a keys.rotate record, not the keyring's creation"),
        "{e}"
    );
    forge(dir.path(), &["keys.init", "keys.rotate", "audit.init"]);
    let e = verify(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("line 3: audit.init in the middle"), "{e}");
    forge(dir.path(), &["audit.restart", "keys.rotate"]);
    assert!(verify(dir.path(), None).unwrap().restarted);
}

#[test]
fn another_key_fails() {
    let dir = setup();
    append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap();
    let other = tempfile::tempdir().unwrap();
    create_key(other.path()).unwrap();
    let e = verify(dir.path(), Some(&other.path().join(PUBLIC_FILE))).unwrap_err();
    assert!(matches!(e, AuditError::Broken { line: 1, .. }), "{e}");
}

#[test]
fn detached_signatures_are_domain_separated() {
    let dir = setup();
    let s = sign(dir.path(), Purpose::DisclosureManifest, b"manifest").unwrap();
    assert_eq!(s.public_key, public_key(dir.path()).unwrap());
    assert!(verify_signature(
        &s.public_key,
        Purpose::DisclosureManifest,
        b"manifest",
        &s.signature
    ));
    assert!(!verify_signature(
        &s.public_key,
        Purpose::DisclosureManifest,
        b"manifesT",
        &s.signature
    ));
    // Not a valid record signature over the same bytes.
    let mut msg = RECORD_DOMAIN.to_vec();
    msg.extend_from_slice(b"manifest");
    assert!(
        UnparsedPublicKey::new(&ED25519, &s.public_key)
            .verify(&msg, &s.signature)
            .is_err()
    );
}

#[test]
fn since_values() {
    assert!(parse_since("2026-05-01").is_ok());
    assert!(parse_since("2026-05-01T10:00:00Z").is_ok());
    for bad in ["2026-5-1", "yesterday", "2026-13-01", "2026-05-01T10:00"] {
        assert!(parse_since(bad).is_err(), "{bad}");
    }
}

#[test]
fn operator_order() {
    assert_eq!(operator(Some("a"), Some("b")), "a");
    assert_eq!(operator(None, Some("b")), "b");
    assert_eq!(operator(Some("a\nb"), None), "a?b");
}

#[test]
fn an_append_cut_short_is_removed_and_recorded_by_the_next() {
    let dir = setup();
    append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap();
    let path = dir.path().join(LOG_FILE);
    let whole = std::fs::read(&path).unwrap();
    // A crash (or a full disk) in the middle of the second record's write.
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"seq\":2,\"ti");
    std::fs::write(&path, &torn).unwrap();
    assert!(verify(dir.path(), None).is_err(), "verify names the cut");
    check_writable(dir.path()).unwrap();
    let r = append(
        dir.path(),
        "op",
        "keys.rotate",
        params([("epoch", serde_json::json!("e1"))]),
    )
    .unwrap();
    assert_eq!(r.seq, 3);
    let records = read(dir.path()).unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["keys.init", REPAIR, "keys.rotate"]);
    assert_eq!(records[1].params["cut_bytes"], 12);
    let v = verify(dir.path(), None).unwrap();
    assert_eq!(v.records, 3);
    check_noted_head(dir.path(), 3, &v.head).unwrap();
    assert!(std::fs::read(&path).unwrap().starts_with(&whole));
    // A cut record with no head, or a head the audit key did not sign:
    // nothing proves it was never complete, so nothing is repaired.
    for head in [
        None,
        Some(&b"{\"records\":1,\"last\":\"x\",\"sig\":\"AAAA\"}\n"[..]),
    ] {
        let dir = setup();
        append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap();
        append(dir.path(), "op", "keys.rotate", BTreeMap::new()).unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = std::fs::read(&path).unwrap();
        std::fs::write(&path, &log[..log.len() - 10]).unwrap();
        match head {
            None => std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap(),
            Some(forged) => std::fs::write(dir.path().join(HEAD_FILE), forged).unwrap(),
        }
        assert!(check_writable(dir.path()).is_err(), "{head:?}");
        let e = append(dir.path(), "op", "keys.rotate", BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }
    // A torn first record: the chain is empty, and begins again.
    let dir = setup();
    std::fs::write(dir.path().join(LOG_FILE), b"{\"seq\":1").unwrap();
    append(dir.path(), "op", "keys.init", BTreeMap::new()).unwrap();
    let actions: Vec<String> = read(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(actions, ["keys.init"]);
    verify(dir.path(), None).unwrap();
}
