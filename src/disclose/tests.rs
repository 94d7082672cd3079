//! Library-level tests: disclose from stored messages, verify bundles.
//! (The command line is tested end to end in tests/cli_disclose.rs.)

use std::os::unix::fs::PermissionsExt;

use super::*;

const M1: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: one\r\nMessage-ID: <1@example.org>\r\n\r\nFirst body.\r\n";
const M2: &[u8] = b"From: a@example.org\nSubject: two, bare LF\n\nSecond body.\n";

struct Fixture {
    tmp: tempfile::TempDir,
    identity: age::x25519::Identity,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("keys")).unwrap();
        audit::create_key(&tmp.path().join("keys")).unwrap();
        Fixture {
            tmp,
            identity: age::x25519::Identity::generate(),
        }
    }

    fn keys_dir(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    fn seal(&self, m: &[u8]) -> Vec<u8> {
        let sealer = envelope::Sealer::new("0123456789abcdef", vec![self.identity.to_public()]);
        let mut out = Vec::new();
        sealer.seal(m, &mut out).unwrap();
        out
    }

    fn stored(&self, name: &str, bytes: Vec<u8>) -> Stored {
        Stored {
            source: Source::File {
                path: self.tmp.path().join(name),
            },
            ciphertext: bytes,
        }
    }

    fn request(&self, stored: &[Stored]) -> Request {
        let wanted = stored
            .iter()
            .map(|s| match &s.source {
                Source::File { path } => wanted_file(path, &s.ciphertext),
                Source::Provider { .. } => unreachable!(),
            })
            .collect();
        Request::new(
            "case 7",
            &audit::public_key(&self.keys_dir()).unwrap(),
            wanted,
        )
        .unwrap()
    }

    fn run(&self, stored: &[Stored], out: &Path) -> Result<Pending, DiscloseError> {
        let request = self.request(stored);
        let keys_dir = self.keys_dir();
        let d = Disclosure {
            request: &request,
            approvals: &[],
            operator: "tester",
            keys_dir: &keys_dir,
            out,
        };
        disclose(&d, stored, &vec![self.identity.clone()])
    }
}

#[test]
fn a_bundle_not_yet_kept_never_verifies() {
    // What a process killed before recording its disclosure leaves: no
    // signature, so no verifiable bundle.
    let f = Fixture::new();
    let stored = vec![f.stored("a.eml", f.seal(M1))];
    let out = f.tmp.path().join("bundle");
    let pending = f.run(&stored, &out).unwrap();
    assert!(!out.join(manifest::SIGNATURE_FILE).exists());
    assert!(manifest::verify(&out, None).is_err());
    pending.keep().unwrap();
    assert!(manifest::verify(&out, None).is_ok());
}

#[test]
fn round_trip_and_verify() {
    let f = Fixture::new();
    let stored = vec![f.stored("a.eml", f.seal(M1)), f.stored("b.eml", f.seal(M2))];
    let out = f.tmp.path().join("bundle");
    let pending = f.run(&stored, &out).unwrap();
    assert_eq!(pending.messages, 2);
    pending.keep().unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(std::fs::read(out.join("plaintext/0001.eml")).unwrap(), M1);
    assert_eq!(std::fs::read(out.join("plaintext/0002.eml")).unwrap(), M2);
    assert_eq!(
        std::fs::read(out.join("stored/0002.eml")).unwrap(),
        stored[1].ciphertext
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.case, "case 7");
    assert_eq!(manifest.operator, "tester");
    assert_eq!(
        manifest.messages[0].message_id.as_deref(),
        Some("<1@example.org>")
    );
    assert_eq!(manifest.messages[1].message_id, None);
    assert_eq!(manifest.messages[0].epoch, "0123456789abcdef");
    assert_eq!(manifest.messages[0].plaintext.sha256, sha256_hex(M1));
    assert_eq!(
        manifest.messages[1].stored.sha256,
        sha256_hex(&stored[1].ciphertext)
    );
    assert_eq!(
        manifest.messages[0].source,
        manifest::SourceEntry::File {
            name: "a.eml".into()
        }
    );

    let public = audit::public_key(&f.keys_dir()).unwrap();
    let v = verify(&out, Some(&public)).unwrap();
    assert_eq!((v.messages, v.files, v.key_given), (2, 7, true));
    assert!(!verify(&out, None).unwrap().key_given);
    // Another gateway's key does not verify it.
    let other = tempfile::tempdir().unwrap();
    audit::create_key(other.path()).unwrap();
    let e = verify(&out, Some(&audit::public_key(other.path()).unwrap())).unwrap_err();
    assert!(
        e.to_string().contains("manifest.json: the signature"),
        "{e}"
    );
}

#[test]
fn dropped_pending_leaves_nothing() {
    let f = Fixture::new();
    let stored = vec![f.stored("a.eml", f.seal(M1))];
    let out = f.tmp.path().join("bundle");
    drop(f.run(&stored, &out).unwrap());
    assert!(!out.exists());
    // An empty directory given stays, emptied.
    std::fs::create_dir(&out).unwrap();
    drop(f.run(&stored, &out).unwrap());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn failures_leave_no_plaintext() {
    let f = Fixture::new();
    let out = f.tmp.path().join("bundle");
    // Not sealed: refused before anything is written.
    let stored = vec![
        f.stored("a.eml", f.seal(M1)),
        f.stored("b.eml", M2.to_vec()),
    ];
    let e = f.run(&stored, &out).unwrap_err();
    assert!(
        matches!(e, DiscloseError::NotSealed { index: 2, .. }),
        "{e}"
    );
    assert!(!out.exists());
    // Sealed to someone else: the first is opened, the second fails, both
    // are removed.
    let other = Fixture::new();
    let stored = vec![
        f.stored("a.eml", f.seal(M1)),
        f.stored("b.eml", other.seal(M2)),
    ];
    let e = f.run(&stored, &out).unwrap_err();
    assert!(matches!(e, DiscloseError::Open { index: 2, .. }), "{e}");
    assert!(!out.exists());
    // A damaged payload: one base64 character of its armor changed to
    // another (a flip near the end can land on bytes opening ignores).
    let mut damaged = f.seal(M2);
    let begin = b"-----BEGIN AGE ENCRYPTED FILE-----\r\n";
    let payload = damaged
        .windows(begin.len())
        .rposition(|w| w == begin)
        .expect("the payload's armor")
        + begin.len();
    let at = payload + 40;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    let stored = vec![f.stored("a.eml", f.seal(M1)), f.stored("b.eml", damaged)];
    assert!(f.run(&stored, &out).is_err());
    assert!(!out.exists());
    // A non-empty directory is refused.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x"), b"x").unwrap();
    let stored = vec![f.stored("a.eml", f.seal(M1))];
    let e = f.run(&stored, &out).unwrap_err();
    assert!(matches!(e, DiscloseError::OutNotEmpty { .. }), "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// A request (case "c", this `gateway`) for the message of ann's INBOX
/// with Message-ID `id`.
fn by_message_id(gateway: &[u8], id: &str) -> Request {
    Request::new(
        "c",
        gateway,
        vec![Wanted::MessageId {
            account: "ann".into(),
            mailbox: "INBOX".into(),
            message_id: id.into(),
        }],
    )
    .unwrap()
}

#[test]
fn stored_must_match_request() {
    let f = Fixture::new();
    let a = f.stored("a.eml", f.seal(M1));
    let b = f.stored("b.eml", f.seal(M2));
    let request = f.request(&[a.clone(), b.clone()]);
    check_stored(&request, &[a.clone(), b.clone()]).unwrap();
    assert!(matches!(
        check_stored(&request, &[b.clone(), a.clone()]),
        Err(DiscloseError::NotRequested { index: 1, .. })
    ));
    assert!(matches!(
        check_stored(&request, std::slice::from_ref(&a)),
        Err(DiscloseError::Count { .. })
    ));
    // Provider messages: by UID, and by Message-ID from the stored header.
    let fetched = |uid| Stored {
        source: Source::Provider {
            account: "ann".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 9,
            uid,
        },
        ciphertext: f.seal(M1),
    };
    let gateway = audit::public_key(&f.keys_dir()).unwrap();
    let by_uid = Request::new(
        "c",
        &gateway,
        vec![Wanted::Uid {
            account: "ann".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 9,
            uid: 5,
        }],
    )
    .unwrap();
    check_stored(&by_uid, &[fetched(5)]).unwrap();
    assert!(check_stored(&by_uid, &[fetched(6)]).is_err());
    // The same UID under another UIDVALIDITY is another message.
    let mut other_validity = fetched(5);
    if let Source::Provider { uidvalidity, .. } = &mut other_validity.source {
        *uidvalidity = 10;
    }
    assert!(check_stored(&by_uid, &[other_validity]).is_err());
    let by_id = |id: &str| by_message_id(&gateway, id);
    check_stored(&by_id("<1@example.org>"), &[fetched(5)]).unwrap();
    assert!(check_stored(&by_id("<2@example.org>"), &[fetched(5)]).is_err());
}

#[test]
fn verify_names_tampering() {
    let f = Fixture::new();
    let stored = vec![f.stored("a.eml", f.seal(M1)), f.stored("b.eml", f.seal(M2))];
    let out = f.tmp.path().join("bundle");
    f.run(&stored, &out).unwrap().keep().unwrap();
    let public = audit::public_key(&f.keys_dir()).unwrap();
    let check = |problem: &str, named: &str| {
        let e = verify(&out, Some(&public)).unwrap_err().to_string();
        assert!(
            e.contains(named) && e.contains(problem),
            "{named}: {problem}: {e}"
        );
    };
    let flip = |rel: &str| {
        let p = out.join(rel);
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(&p, &bytes).unwrap();
        move || {
            bytes[at] ^= 0x20;
            std::fs::write(&p, &bytes).unwrap();
        }
    };
    for rel in ["plaintext/0002.eml", "stored/0001.eml", "request.json"] {
        let mut undo = flip(rel);
        check("altered", rel);
        undo();
    }
    verify(&out, Some(&public)).unwrap();
    let mut undo = flip("manifest.json");
    check("signature", "manifest.json");
    undo();
    std::fs::rename(out.join("plaintext/0001.eml"), out.join("moved")).unwrap();
    check("missing", "plaintext/0001.eml");
    std::fs::rename(out.join("moved"), out.join("plaintext/0001.eml")).unwrap();
    std::fs::write(out.join("stored/0003.eml"), b"x").unwrap();
    check("not in the manifest", "stored/0003.eml");
    std::fs::remove_file(out.join("stored/0003.eml")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", out.join("link")).unwrap();
    check("not a regular file", "link");
    std::fs::remove_file(out.join("link")).unwrap();
    // An extra directory, even empty, is not in the manifest either.
    for extra in ["extra", "stored/more", "extra2/deeper"] {
        std::fs::create_dir_all(out.join(extra)).unwrap();
        let top = extra.split('/').next().unwrap();
        let named = if top == "stored" { extra } else { top };
        check("a directory not in the manifest", named);
        std::fs::remove_dir_all(out.join(if top == "stored" { extra } else { top })).unwrap();
    }
    verify(&out, Some(&public)).unwrap();
}

#[test]
fn verify_refuses_one_approval_key_listed_as_two_approvers() {
    // A gateway that counted one approver twice (a bug, or its operator
    // with the audit key): the bundle verifies only with approvals by
    // distinct keys, and `verify` says which key signed each approval.
    let f = Fixture::new();
    let stored = vec![f.stored("a.eml", f.seal(M1))];
    let request = f.request(&stored);
    let pw = secrecy::SecretString::from("approver".to_string());
    let mut keys = Vec::new();
    for name in ["legal", "dpo"] {
        let path = f.tmp.path().join(format!("{name}.key"));
        approval::create_key(&path, name, &pw, Some(2)).unwrap();
        keys.push(approval::load_key(&path, &pw).unwrap());
    }
    let used = |name: &str, key: &approval::ApprovalKey| quorum::Used {
        name: name.to_string(),
        given: quorum::Given {
            path: f.tmp.path().join(format!("{name}.approval")),
            bytes: approval::approve(key, &request).to_file(),
        },
    };
    let keys_dir = f.keys_dir();
    let bundle = |out: &Path, approvals: &[quorum::Used]| {
        let d = Disclosure {
            request: &request,
            approvals,
            operator: "tester",
            keys_dir: &keys_dir,
            out,
        };
        disclose(&d, &stored, &vec![f.identity.clone()])
            .unwrap()
            .keep()
            .unwrap();
    };

    let good = f.tmp.path().join("good");
    bundle(&good, &[used("legal", &keys[0]), used("dpo", &keys[1])]);
    let v = manifest::verify(&good, None).unwrap();
    let b64 = |k: &approval::ApprovalKey| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(k.public_key())
    };
    assert_eq!(
        v.approvers,
        [
            ("legal".to_string(), b64(&keys[0])),
            ("dpo".to_string(), b64(&keys[1]))
        ]
    );

    let twice = f.tmp.path().join("twice");
    bundle(&twice, &[used("legal", &keys[0]), used("dpo", &keys[0])]);
    let e = manifest::verify(&twice, None).unwrap_err().to_string();
    assert!(
        e.contains("approvals/2.json: is by the same approval key as approvals/1.json"),
        "{e}"
    );
}

#[test]
fn a_message_id_the_provider_put_outside_the_seal_discloses_nothing() {
    // Sealed message M2 (its own Message-ID none) given the requested
    // ID above its marker by whoever can write at the provider: the
    // stored header matches the request, the sealed message does not.
    let f = Fixture::new();
    let gateway = audit::public_key(&f.keys_dir()).unwrap();
    let request = |id: &str| by_message_id(&gateway, id);
    let fetched = |ciphertext: Vec<u8>| Stored {
        source: Source::Provider {
            account: "ann".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 9,
            uid: 5,
        },
        ciphertext,
    };
    let run = |request: &Request, stored: &[Stored], out: &Path| {
        let keys_dir = f.keys_dir();
        let d = Disclosure {
            request,
            approvals: &[],
            operator: "tester",
            keys_dir: &keys_dir,
            out,
        };
        disclose(&d, stored, &vec![f.identity.clone()])
    };
    let mut forged = b"Message-ID: <1@example.org>\r\n".to_vec();
    forged.extend(f.seal(M2));
    let wanted = request("<1@example.org>");
    let stored = [fetched(forged)];
    check_stored(&wanted, &stored).unwrap();
    let out = f.tmp.path().join("forged");
    let e = run(&wanted, &stored, &out).unwrap_err();
    assert!(matches!(e, DiscloseError::OtherInside { .. }), "{e}");
    assert!(!out.exists(), "a refused disclosure left its directory");

    // The genuine message: disclosed, and the bundle verifies.
    let out = f.tmp.path().join("genuine");
    run(&wanted, &[fetched(f.seal(M1))], &out)
        .unwrap()
        .keep()
        .unwrap();
    manifest::verify(&out, None).unwrap();
}
