//! `writ disclose --account --mailbox --uid/--message-id` against the real
//! provider: exactly the named messages are fetched (read-only) and
//! opened into a bundle that `writ disclose verify` accepts.

mod common;

use std::process::Command;

use common::jobs::{Jobs, PLAIN};
use common::provider;
use common::writ::WRIT;

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.test\r\nSubject: case material {n}\r\n\
         Message-ID: <case-{n}@example.org>\r\n\r\nSecret body {n}.\r\n"
    )
    .into_bytes()
}

#[test]
fn discloses_exactly_the_named_messages_from_the_provider() {
    let p = provider();
    let user = p.new_user("case");
    let env = Jobs::with_config(p.imap_addr(), PLAIN, None);
    let keyring = writ::keys::Keyring::load(&env.keys.dir()).unwrap();
    let sealer = writ::keys::sealer(&keyring, &Default::default()).unwrap();
    let mut uids = Vec::new();
    for n in 0..4 {
        let mut sealed = Vec::new();
        sealer.seal(&message(n)[..], &mut sealed).unwrap();
        uids.push(p.imap_append(&user, "INBOX", &sealed));
    }
    let uid = uids[1].to_string();
    let status = p.imap_command(&user, "INBOX", "STATUS INBOX (UIDVALIDITY)");
    let text = status.text();
    let uidvalidity = text
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {text}"))
        .to_string();
    let disclose = |out: &str, uidvalidity: &str| {
        env.run_as(
            &user,
            &[
                "disclose",
                "--case",
                "LG-7",
                "--out",
                out,
                "--mailbox",
                "INBOX",
                "--uid",
                &uid,
                "--uidvalidity",
                uidvalidity,
                "--message-id",
                "<case-3@example.org>",
            ],
        )
    };
    // UIDs under another UIDVALIDITY name other messages: refused, nothing
    // fetched or disclosed.
    let other = (uidvalidity.parse::<u32>().unwrap() + 1).to_string();
    let out = disclose("elsewhere", &other);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the mailbox's UIDVALIDITY is {uidvalidity}, not {other} as the request says"
        )),
        "{err}"
    );
    assert!(
        !env.path("elsewhere").exists()
            || std::fs::read_dir(env.path("elsewhere"))
                .unwrap()
                .next()
                .is_none()
    );
    // A UID without the UIDVALIDITY is not a request.
    let out = env.run(&[
        "disclose",
        "request",
        "--case",
        "LG-7",
        "--account",
        &user.name,
        "--mailbox",
        "INBOX",
        "--uid",
        &uid,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--uid needs --uidvalidity"), "{err}");

    let out = disclose("bundle", &uidvalidity);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two plaintext files, the originals byte for byte; nothing else opened.
    let mut plain: Vec<Vec<u8>> = std::fs::read_dir(env.path("bundle/plaintext"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    plain.sort();
    assert_eq!(plain, vec![message(1), message(3)]);
    let manifest = std::fs::read_to_string(env.path("bundle/manifest.json")).unwrap();
    assert!(
        manifest.contains(&user.name) && manifest.contains("\"uid\": "),
        "{manifest}"
    );
    let request: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("bundle/request.json")).unwrap()).unwrap();
    assert_eq!(
        request["messages"][0]["uidvalidity"].to_string(),
        uidvalidity,
        "{request}"
    );
    let check = Command::new(WRIT)
        .args(["disclose", "verify"])
        .arg(env.path("bundle"))
        .arg("--public-key")
        .arg(env.keys.dir().join("audit.pub"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Read-only: no message got \Seen.
    let r = p.imap_command(&user, "INBOX", "UID FETCH 1:* (FLAGS)");
    assert!(!r.text().contains("\\Seen"), "{}", r.text());

    // A UID that is not there: nothing disclosed, no bundle left.
    let out = env.run_as(
        &user,
        &[
            "disclose",
            "--case",
            "LG-8",
            "--out",
            "none",
            "--mailbox",
            "INBOX",
            "--uid",
            "999",
            "--uidvalidity",
            &uidvalidity,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UID 999") && err.contains("nothing disclosed"),
        "{err}"
    );
    assert!(
        !env.path("none").exists()
            || std::fs::read_dir(env.path("none"))
                .unwrap()
                .next()
                .is_none()
    );
}
