//! `[notify]`: `writ disclose request` and `writ disclose` tell the listed
//! people by mail through the provider (the local Postfix/Dovecot), and the
//! notices carry no case reference, no message content, no passphrase.
//! Off by default: without `[notify]` nothing is sent.

mod common;

use std::time::Duration;

use common::cli::Env;
use common::mail::{DELIVERY_TIMEOUT, contains, unique};
use common::provider;

/// A keyring, one sealed message `s1.eml` whose Subject and body carry
/// `marker`, and a config naming `to` for notices through the provider,
/// `enabled = true` if `enabled`, else left at its default.
fn env_with(marker: &str, to: &str, enabled: bool) -> Env {
    let env = Env::new();
    env.init_keyring();
    let original = format!(
        "From: ann@example.org\r\nTo: bob@example.org\r\nSubject: {marker} subject\r\n\
         Message-ID: <{marker}@example.org>\r\n\r\nThe body says {marker}.\r\n"
    );
    std::fs::write(env.path("m1.eml"), original).unwrap();
    let sealed = env.ok(&["seal", "m1.eml"]).stdout;
    std::fs::write(env.path("s1.eml"), sealed).unwrap();
    let mut config = format!(
        "[provider.smtp]\naddress = \"{}\"\nsecurity = \"plain\"\ntimeout_secs = 30\n\n",
        provider().smtp_addr()
    );
    config.push_str(&format!(
        "[notify]\nfrom = \"writ@example.test\"\nto = [\"{to}\"]\n"
    ));
    if enabled {
        config.push_str("enabled = true\n");
    }
    std::fs::create_dir_all(env.path("config")).unwrap();
    std::fs::write(env.path("config/writ.toml"), config).unwrap();
    env
}

#[test]
fn a_request_and_a_disclosure_are_notified_without_case_or_content() {
    let p = provider();
    let user = p.new_user("dpo");
    let marker = unique("confidential");
    let case = unique("CASE");
    let env = env_with(&marker, &user.address, true);

    let request = env.ok_text(&[
        "disclose",
        "request",
        "--case",
        &case,
        "--from-file",
        "s1.eml",
    ]);
    let json: serde_json::Value = serde_json::from_str(&request).unwrap();
    assert_eq!(json["case"], case.as_str());
    let first = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let notice = String::from_utf8_lossy(&first[0]).into_owned();
    assert!(notice.contains("awaits approval"), "{notice}");
    // No 64-hex-digit digest: the request's is an unsalted hash of things the
    // provider knows or can guess (case, account, mailbox, UIDs).
    assert!(!has_sha256_hex(&notice), "{notice}");

    let printed = env.ok_text(&[
        "disclose",
        "--case",
        &case,
        "--out",
        "bundle",
        "--passphrase-file",
        "pw",
        "--from-file",
        "s1.eml",
    ]);
    let both = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    let done = String::from_utf8_lossy(&both[1]).into_owned();
    assert!(done.contains("disclosed 1 message(s)"), "{done}");
    assert!(done.contains("nobody (quorum 0)"), "{done}");
    // The manifest hash in the notice is the one `writ disclose` printed
    // (it covers hashes of the opened mail: nothing the provider can guess).
    let manifest = printed
        .split("manifest sha256 ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("no manifest hash in {printed}"));
    assert_eq!(manifest.len(), 64, "{printed}");
    // The 64 hex digits after `label`.
    let hash_after = |text: &str, label: &str| {
        text.split(label)
            .nth(1)
            .map(|t| t.trim_start().chars().take(64).collect::<String>())
            .unwrap_or_default()
    };
    assert_eq!(hash_after(&done, "Manifest SHA-256:"), manifest, "{done}");
    assert!(!done.contains("Request digest"), "{done}");

    for notice in [&first[0], &both[1]] {
        for secret in [marker.as_str(), case.as_str(), "correct horse battery"] {
            assert!(
                !contains(notice, secret.as_bytes()),
                "a notice names {secret:?}:\n{}",
                String::from_utf8_lossy(notice)
            );
        }
    }
}

#[test]
fn notify_is_off_unless_enabled() {
    let p = provider();
    let user = p.new_user("nobody");
    let env = env_with(&unique("quiet"), &user.address, false);
    env.ok(&[
        "disclose",
        "request",
        "--case",
        "C-1",
        "--from-file",
        "s1.eml",
    ]);
    env.ok(&[
        "disclose",
        "--case",
        "C-1",
        "--out",
        "bundle",
        "--passphrase-file",
        "pw",
        "--from-file",
        "s1.eml",
    ]);
    // A marker mail sent after both, through the same Postfix: it is the
    // only mail there.
    let marker = unique("after");
    p.smtp_send(
        "x@example.org",
        &[&user.address],
        format!("Subject: {marker}\r\n\r\n{marker}\r\n").as_bytes(),
    )
    .unwrap();
    let stored = p.wait_for_messages(&user, "INBOX", 1, Duration::from_secs(60));
    assert!(contains(&stored[0], marker.as_bytes()), "a notice was sent");
    assert_eq!(p.imap_fetch_all(&user, "INBOX").len(), 1);
}

/// Does `text` hold a run of 64 hex digits (a SHA-256 written out)?
fn has_sha256_hex(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 64 {
            return true;
        }
    }
    false
}
