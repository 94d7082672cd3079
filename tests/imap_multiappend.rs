//! MULTIAPPEND (RFC 3502) through writ: each message sealed as a single
//! APPEND's, one command at the provider (all or none appended), Dovecot's
//! answers as the oracle; and its caps (messages, octets) answered while
//! the session and others go on.

mod common;

use std::net::SocketAddr;

use common::imap::{Imap, Response};
use common::imap_proxy::ImapProxy;
use common::provider;

/// `imap.max_literal_size` of the test proxy: also the most octets of
/// messages one MULTIAPPEND may carry in all.
const MAX_LITERAL: usize = 20_000;

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &ImapProxy::plain(upstream),
        &format!("max_literal_size = {MAX_LITERAL}\n"),
    )
}

/// One message of a MULTIAPPEND: flags and date as IMAP text (may be
/// empty), its bytes, and whether its literal is non-synchronising.
struct Message<'a> {
    flags: &'a str,
    date: &'a str,
    bytes: Vec<u8>,
    non_sync: bool,
}

impl Message<'_> {
    fn head(&self) -> String {
        let mut head = String::new();
        for part in [self.flags, self.date] {
            if !part.is_empty() {
                head.push(' ');
                head.push_str(part);
            }
        }
        let plus = if self.non_sync { "+" } else { "" };
        format!("{head} {{{}{plus}}}\r\n", self.bytes.len())
    }
}

/// Sends `APPEND mailbox` with `messages`, waiting for the continuation
/// of each synchronising literal; returns the tagged response (early if
/// the server answers instead of continuing).
fn multiappend(imap: &mut Imap, mailbox: &str, messages: &[Message<'_>]) -> Response {
    let tag = imap.tag();
    imap.write_raw(format!("{tag} APPEND {mailbox}").as_bytes())
        .unwrap();
    for m in messages {
        imap.write_raw(m.head().as_bytes()).unwrap();
        if !m.non_sync {
            let line = imap.read_line().expect("continuation");
            if !line.text[0].starts_with(b"+") {
                assert!(line.text[0].starts_with(tag.as_bytes()), "{line:?}");
                let status = line
                    .text_only()
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .to_owned();
                return Response {
                    untagged: Vec::new(),
                    tagged: line,
                    status,
                };
            }
        }
        imap.write_raw(&m.bytes).unwrap();
    }
    imap.write_raw(b"\r\n").unwrap();
    imap.read_response(&tag).expect("tagged answer")
}

fn message(i: usize, body: &str) -> Vec<u8> {
    format!(
        "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: part {i} secret\r\n\
         Message-ID: <multi{i}@example.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn three() -> Vec<Message<'static>> {
    vec![
        Message {
            flags: "(\\Seen)",
            date: "\"01-Feb-2026 10:00:00 +0100\"",
            bytes: message(1, "the first secret body"),
            non_sync: false,
        },
        Message {
            flags: "(\\Flagged $Work)",
            date: "\"29-Feb-2024 00:00:01 +0000\"",
            bytes: message(2, "the second secret body"),
            non_sync: false,
        },
        Message {
            flags: "",
            date: "\"03-Mar-2026 23:59:59 -0500\"",
            bytes: message(3, "the third secret body"),
            non_sync: true,
        },
    ]
}

/// The `[APPENDUID v set]` code of a tagged OK, with the UIDVALIDITY
/// replaced by what STATUS says it is (so two users compare).
fn append_uid_set(response: &Response) -> String {
    let text = response.tagged.text_only();
    let start = text.find("[APPENDUID ").expect("APPENDUID") + "[APPENDUID ".len();
    let end = start + text[start..].find(']').unwrap();
    let mut words = text[start..end].split_whitespace();
    let _validity = words.next().unwrap();
    words.next().unwrap().to_owned()
}

#[test]
fn three_messages_land_sealed_in_one_command_and_read_back_as_dovecot_reads_them() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let sealed = p.new_user("multi-sealed");
    let plain = p.new_user("multi-plain");
    let mut writ = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    let mut direct = p.imap(&plain);
    let caps = writ.command("CAPABILITY").expect_ok("CAPABILITY");
    assert!(caps.text().contains(" MULTIAPPEND"), "{caps:?}");

    let through_writ = multiappend(&mut writ, "INBOX", &three()).expect_ok("MULTIAPPEND via writ");
    let at_dovecot =
        multiappend(&mut direct, "INBOX", &three()).expect_ok("MULTIAPPEND at Dovecot");
    assert_eq!(append_uid_set(&through_writ), append_uid_set(&at_dovecot));
    assert_eq!(append_uid_set(&through_writ), "1:3");

    // Through writ: the bytes as sent, with the flags and dates given, as
    // Dovecot answers for the plaintext copies.
    writ.select("INBOX").expect_ok("SELECT");
    direct.select("INBOX").expect_ok("SELECT");
    let fetch = "UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])";
    let got = writ.command(fetch).expect_ok("FETCH via writ");
    let want = direct.command(fetch).expect_ok("FETCH at Dovecot");
    let raw = |r: &Response| -> Vec<Vec<u8>> { r.untagged.iter().map(|l| l.raw()).collect() };
    assert_eq!(raw(&got), raw(&want));
    let bodies = got.fetch_literals("BODY[]");
    assert_eq!(bodies.len(), 3);
    for ((_, body), sent) in bodies.iter().zip(three()) {
        assert_eq!(body, &sent.bytes);
    }
    // At the provider: three sealed messages, each opening to what was sent.
    let stored = p.imap_fetch_all(&sealed, "INBOX");
    assert_eq!(stored.len(), 3);
    for (i, (stored, sent)) in stored.iter().zip(three()).enumerate() {
        let text = String::from_utf8_lossy(stored);
        assert!(text.contains("X-Writ: v=1"), "message {i}: {text}");
        assert!(
            !text.contains("secret"),
            "plaintext reached the provider: {text}"
        );
        assert_eq!(proxy.writ.test_keys().open(stored), sent.bytes);
    }
}

#[test]
fn a_multiappend_the_provider_refuses_appends_nothing() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let sealed = p.new_user("multi-refused");
    let plain = p.new_user("multi-refused-plain");
    let mut writ = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    let mut direct = p.imap(&plain);
    let got = multiappend(&mut writ, "Nowhere", &three());
    let want = multiappend(&mut direct, "Nowhere", &three());
    assert_eq!(got.status, "NO", "{got:?}");
    // Dovecot's answer without its timings.
    let answer = |r: &Response| {
        let text = r.tagged.text_only();
        let text = text.split_once(' ').unwrap().1.to_owned();
        text.split(" (").next().unwrap().to_owned()
    };
    assert_eq!(answer(&got), answer(&want));
    assert!(got.tagged.text_only().contains("[TRYCREATE]"), "{got:?}");
    assert!(p.imap_fetch_all(&sealed, "INBOX").is_empty());
    // The session goes on.
    writ.command("NOOP")
        .expect_ok("NOOP after a refused MULTIAPPEND");
}

#[test]
fn over_the_message_and_octet_caps_is_refused_and_sessions_go_on() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("multi-hostile");
    let other = p.new_user("multi-hostile-other");
    let mut writ = Imap::login_to(proxy.imap, &user.name, &user.password);
    let mut bystander = Imap::login_to(proxy.imap, &other.name, &other.password);

    // 1001 one-octet messages, all non-synchronising after the first.
    let mut many = vec![Message {
        flags: "",
        date: "",
        bytes: b"x".to_vec(),
        non_sync: false,
    }];
    many.extend((0..1000).map(|_| Message {
        flags: "",
        date: "",
        bytes: b"y".to_vec(),
        non_sync: true,
    }));
    let refused = multiappend(&mut writ, "INBOX", &many);
    assert_eq!(refused.status, "BAD", "{refused:?}");
    assert!(
        refused.tagged.text_only().contains("at most 1000"),
        "{refused:?}"
    );
    writ.command("NOOP").expect_ok("NOOP after the message cap");
    bystander.command("NOOP").expect_ok("another session");

    // Two messages that each fit the literal limit but not together; the
    // second is synchronising: no continuation, a BAD instead.
    let half = |non_sync| Message {
        flags: "",
        date: "",
        bytes: vec![b'z'; MAX_LITERAL / 2 + 100],
        non_sync,
    };
    for non_sync in [false, true] {
        let refused = multiappend(&mut writ, "INBOX", &[half(false), half(non_sync)]);
        assert_eq!(refused.status, "BAD", "{refused:?}");
        assert!(
            refused
                .tagged
                .text_only()
                .contains("exceed the literal size limit"),
            "{refused:?}"
        );
        writ.command("NOOP").expect_ok("NOOP after the octet cap");
    }
    bystander.command("NOOP").expect_ok("another session");
    // Nothing was appended; a MULTIAPPEND within the caps still works.
    assert!(p.imap_fetch_all(&user, "INBOX").is_empty());
    multiappend(&mut writ, "INBOX", &three()).expect_ok("MULTIAPPEND within the caps");
    assert_eq!(p.imap_fetch_all(&user, "INBOX").len(), 3);
}
