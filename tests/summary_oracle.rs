//! The summary is enough to list a message: RFC822.SIZE, ENVELOPE, BODY
//! and BODYSTRUCTURE computed from the summary of a sealed message equal
//! what a real IMAP server (Dovecot) says about the plaintext original:
//! for the messages below and for every message of `tests/corpus/sections/`
//! (edge cases: malformed headers, truncated multiparts, boundaries in
//! odd places, bare LF, 8-bit and NUL bytes).

mod common;

use std::io::Cursor;
use std::path::Path;

use age::x25519::Identity;
use common::provider;
use writ::envelope::{Sealer, read_summary, view};

/// The value of one FETCH item in a raw response: a number, a quoted
/// string, NIL, or a parenthesised list (strings and literals respected).
fn fetch_item(raw: &[u8], name: &str) -> String {
    let needle = format!("{name} ");
    let text = String::from_utf8_lossy(raw).into_owned();
    let start = text
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + needle.len();
    let b = &text.as_bytes()[start..];
    let mut depth = 0i32;
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        let c = b[i];
        if quoted {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                quoted = false;
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return text[start..start + i + 1].to_string();
                    }
                    if depth < 0 {
                        return text[start..start + i].to_string();
                    }
                }
                b'{' => {
                    let close = i + b[i..].iter().position(|&x| x == b'}').unwrap();
                    let n: usize = std::str::from_utf8(&b[i + 1..close])
                        .unwrap()
                        .parse()
                        .unwrap();
                    i = close + 2 + n;
                    continue;
                }
                b' ' if depth == 0 => return text[start..start + i].to_string(),
                _ => {}
            }
        }
        i += 1;
    }
    text[start..].to_string()
}

const CORPUS: &[&[u8]] = &[
    b"From: Ann Example <ann@example.test>\r\nTo: bob@example.test, \"Carol, C.\" <carol@example.test>\r\nCc: team: dave@example.test, eve@example.test;\r\nSubject: plain text\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <1@example.test>\r\nIn-Reply-To: <0@example.test>\r\n\r\nHello Bob,\r\nthis is plain.\r\n",
    b"From: ann@example.test (Ann)\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\npreamble\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xc3\xa9</p>\r\n--alt--\r\nepilogue\r\n",
    b"From: a@example.test\r\nSubject: attachment\r\nContent-Type: multipart/mixed; boundary=mix\r\n\r\n--mix\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--mix\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-ID: <part1@example.test>\r\nContent-Description: the report\r\nContent-Language: en, de\r\nContent-Location: http://example.test/report.pdf\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nJVBERi0xLjQK\r\nJVBERi0xLjQK\r\n--mix--\r\n",
    b"From: a@example.test\r\nSubject: forwarded\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nforwarding\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.test\r\nTo: x@example.test\r\nSubject: inner subject\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\ninner text\r\n--inner--\r\n\r\n--outer--\r\n",
    b"From: a@example.test\r\nSubject: digest\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d\r\n\r\nSubject: two\r\n\r\nsecond\r\n--d--\r\n",
    b"From: a@example.test\nSubject: bare LF\nContent-Type: text/plain; format=flowed\n\nline one\nline two\n",
    b"Subject: no body\r\n\r\n",
    b"From: <>\r\nTo: undisclosed-recipients:;\r\nSubject: empty addresses\r\n\r\nx\r\n",
    b"From: a@example.test\r\nContent-Type: TEXT/Plain; CHARSET=\"ISO-8859-1\"; delsp=yes\r\nContent-Transfer-Encoding: 8bit\r\n\r\nx\r\n",
    b"From: a@example.test\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n\r\nPNG\r\n",
];

/// The messages of `tests/corpus/sections/`, by file name. A message with
/// a lone CR (CR not followed by LF) is left out: Dovecot's maildir turns
/// it into a line break when it saves the message, so Dovecot's answers are
/// about another message than M.
fn sections_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sections");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .filter(|(_, m)| !has_lone_cr(m))
        .collect();
    out.sort();
    assert!(out.len() >= 40, "corpus missing from {}", dir.display());
    out
}

fn has_lone_cr(m: &[u8]) -> bool {
    m.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && m.get(i + 1) != Some(&b'\n'))
}

/// What writ computes from the summary and what Dovecot says differ, item
/// by item: one line per difference.
fn compare(
    p: &common::Provider,
    user: &common::User,
    imap: &mut common::Imap,
    sealer: &Sealer,
    ids: &[Identity],
    name: &str,
    m: &[u8],
) -> Vec<String> {
    let uid = p.imap_append(user, "INBOX", m);
    imap.command("NOOP").expect_ok("noop");
    let r = imap
        .command(&format!(
            "UID FETCH {uid} (RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)"
        ))
        .expect_ok("fetch");
    let raw = r.raw();

    let mut sealed = Vec::new();
    sealer.seal(m, &mut sealed).unwrap();
    let summary = read_summary(Cursor::new(&sealed), ids).unwrap();
    let header = summary.root.header.clone().unwrap_or_default();

    let mut failures = Vec::new();
    for (item, ours) in [
        ("RFC822.SIZE", view::rfc822_size(&summary).to_string()),
        ("ENVELOPE", view::envelope(&header)),
        ("BODY", view::body_structure(&summary.root, false)),
        ("BODYSTRUCTURE", view::body_structure(&summary.root, true)),
    ] {
        let dovecot = fetch_item(&raw, item);
        if dovecot != ours {
            failures.push(format!(
                "{name} {item}\n  dovecot: {dovecot}\n  writ:    {ours}"
            ));
        }
    }
    failures
}

#[test]
fn summary_answers_like_dovecot_for_the_sections_corpus() {
    let p = provider();
    let user = p.new_user("oracle-corpus");
    let id = Identity::generate();
    let sealer = Sealer::new("0123456789abcdef", vec![id.to_public()]);
    let ids = vec![id];
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    let corpus = sections_corpus();
    let mut failures = Vec::new();
    for (name, m) in &corpus {
        failures.extend(compare(p, &user, &mut imap, &sealer, &ids, name, m));
    }
    assert!(
        failures.is_empty(),
        "{} differences from Dovecot over {} messages:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn summary_answers_like_dovecot_for_the_plaintext() {
    let p = provider();
    let user = p.new_user("oracle");
    let id = Identity::generate();
    let sealer = Sealer::new("0123456789abcdef", vec![id.to_public()]);
    let ids = vec![id];
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    for (n, m) in CORPUS.iter().enumerate() {
        let uid = p.imap_append(&user, "INBOX", m);
        imap.command("NOOP").expect_ok("noop");
        let r = imap
            .command(&format!(
                "UID FETCH {uid} (RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)"
            ))
            .expect_ok("fetch");
        let raw = r.raw();

        let mut sealed = Vec::new();
        sealer.seal(*m, &mut sealed).unwrap();
        let summary = read_summary(Cursor::new(&sealed), &ids).unwrap();
        let header = summary.root.header.clone().unwrap();

        let ctx = format!("message {n}:\n{}", String::from_utf8_lossy(m));
        assert_eq!(
            view::rfc822_size(&summary).to_string(),
            fetch_item(&raw, "RFC822.SIZE"),
            "RFC822.SIZE, {ctx}"
        );
        assert_eq!(
            view::envelope(&header),
            fetch_item(&raw, "ENVELOPE"),
            "ENVELOPE, {ctx}"
        );
        assert_eq!(
            view::body_structure(&summary.root, false),
            fetch_item(&raw, "BODY"),
            "BODY, {ctx}"
        );
        assert_eq!(
            view::body_structure(&summary.root, true),
            fetch_item(&raw, "BODYSTRUCTURE"),
            "BODYSTRUCTURE, {ctx}"
        );
    }
}
