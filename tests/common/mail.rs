//! Mail as the relay tests send and check it: unique markers to find a
//! message by, and what the provider stored, sealed, opened and compared
//! with the original.

use std::time::{Duration, Instant};

use super::writ::TestKeys;

/// How long a message sent through writ may take to reach the INBOX.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// `label` made unique to this run and moment: a Subject, body marker or
/// Message-ID that no other test's mail has.
pub fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos:x}", std::process::id())
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A message with a protected Subject, a body marker, 8-bit text, a line
/// starting with a dot, and the routing fields a provider needs.
pub fn message(from: &str, to: &str, subject: &str, marker: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: Sender <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <{message_id}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Hello,\r\n\
         the secret is {marker}.\r\n\
         .a line that starts with a dot\r\n\
         caf\u{e9} \u{1f512}\r\n"
    )
    .into_bytes()
}

/// Where the `X-Writ` marker field starts in a stored message.
#[track_caller]
pub fn marker_offset(stored: &[u8]) -> usize {
    if stored.starts_with(b"X-Writ:") {
        return 0;
    }
    stored
        .windows(9)
        .position(|w| w == b"\r\nX-Writ:")
        .map(|p| p + 2)
        .unwrap_or_else(|| {
            panic!(
                "no X-Writ field in the stored message:\n{}",
                String::from_utf8_lossy(stored)
            )
        })
}

/// The stored message is sealed (none of `secrets` readable, an X-Writ
/// marker) and opens to exactly: the fields the provider put above the
/// marker, then `original`. Returns the opened bytes.
#[track_caller]
pub fn assert_sealed_original(
    keys: &TestKeys,
    stored: &[u8],
    original: &[u8],
    secrets: &[&str],
) -> Vec<u8> {
    let text = String::from_utf8_lossy(stored);
    for s in secrets {
        assert!(
            !contains(stored, s.as_bytes()),
            "{s:?} is readable in the stored message:\n{text}"
        );
    }
    let at = marker_offset(stored);
    let opened = keys.open(stored);
    let mut expected = stored[..at].to_vec();
    expected.extend_from_slice(original);
    assert!(
        opened == expected,
        "opened message differs from provider fields + original:\n--- opened\n{}\n--- expected\n{}",
        String::from_utf8_lossy(&opened),
        String::from_utf8_lossy(&expected)
    );
    opened
}

/// A short plain message from `sender@elsewhere.test` to `to`, `marker` in
/// its Subject and body, with a unique Message-ID.
pub fn short_message(to: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: <sender@elsewhere.test>\r\nTo: <{to}>\r\nSubject: {marker}\r\n\
         Message-ID: <{}@elsewhere.test>\r\n\r\nbody {marker}\r\n",
        unique("id")
    )
    .into_bytes()
}

/// Polls `check` every 10 ms until it is true; panics with `what` after
/// 30 s.
#[track_caller]
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The Message-ID of a message as stored (sealed messages keep theirs
/// outside), trimmed; empty when it has none.
pub fn message_id(m: &[u8]) -> String {
    String::from_utf8_lossy(
        &::writ::envelope::header::first_value(m, "message-id").unwrap_or_default(),
    )
    .trim()
    .to_string()
}

/// One stored message: its bytes, FLAGS (sorted, without \Recent) and
/// INTERNALDATE.
pub type Stored = (Vec<u8>, String, String);

/// Every message of `mailbox`, straight from the provider's Dovecot, by
/// Message-ID, and how many there are.
pub fn stored_by_id(
    user: &super::provider::User,
    mailbox: &str,
) -> (std::collections::BTreeMap<String, Vec<Stored>>, usize) {
    let mut imap = super::provider::provider().imap(user);
    imap.select(mailbox).expect_ok("SELECT");
    let r = imap
        .command("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])")
        .expect_ok("FETCH");
    imap.logout();
    let mut out: std::collections::BTreeMap<String, Vec<Stored>> = Default::default();
    let mut n = 0;
    for line in &r.untagged {
        let text = line.text_only();
        let Some(body) = line.literals.first() else {
            continue;
        };
        n += 1;
        let mut flags: Vec<&str> = between(&text, "FLAGS (", ")")
            .split_whitespace()
            .filter(|f| *f != "\\Recent")
            .collect();
        flags.sort_unstable();
        let date = between(&text, "INTERNALDATE \"", "\"");
        out.entry(message_id(body)).or_default().push((
            body.clone(),
            flags.join(" "),
            date.to_string(),
        ));
    }
    (out, n)
}

/// The text between the first `open` and the next `close` ("" without
/// `open`; to the end without `close`).
pub fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let Some(start) = text.find(open).map(|i| i + open.len()) else {
        return "";
    };
    let rest = &text[start..];
    &rest[..rest.find(close).unwrap_or(rest.len())]
}
