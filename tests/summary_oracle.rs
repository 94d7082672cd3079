//! The summary is enough to list a message: RFC822.SIZE, ENVELOPE, BODY
//! and BODYSTRUCTURE computed from the summary of a sealed message equal
//! what a real IMAP server (Dovecot) says about the plaintext original:
//! for the messages below and for every message of `tests/corpus/sections/`
//! (edge cases: malformed headers, truncated multiparts, boundaries in
//! odd places, bare LF, 8-bit and NUL bytes).

mod common;

use std::io::Cursor;

use age::x25519::Identity;
use common::corpus::{eml_files, has_lone_cr};
use common::provider;
use writ::envelope::{Sealer, Summary, read_summary, view};

/// The value of one FETCH item in a raw response, octet for octet: a
/// number, a quoted string, NIL, or a parenthesised list (strings and
/// literals respected).
fn fetch_item(raw: &[u8], name: &str) -> Vec<u8> {
    let needle = format!("{name} ");
    let start = raw
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(raw)))
        + needle.len();
    let b = &raw[start..];
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
                        return b[..=i].to_vec();
                    }
                    if depth < 0 {
                        return b[..i].to_vec();
                    }
                }
                b'{' => {
                    // `{n}` CRLF, then n octets.
                    let close = i + b[i..].iter().position(|&x| x == b'}').unwrap();
                    let n: usize = std::str::from_utf8(&b[i + 1..close])
                        .unwrap()
                        .parse()
                        .unwrap();
                    i = close + 3 + n;
                    continue;
                }
                b' ' if depth == 0 => return b[..i].to_vec(),
                _ => {}
            }
        }
        i += 1;
    }
    b.to_vec()
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
    let out: Vec<(String, Vec<u8>)> = eml_files("sections")
        .into_iter()
        .filter(|(_, m)| !has_lone_cr(m))
        .collect();
    assert!(out.len() >= 40, "corpus missing from tests/corpus/sections");
    out
}

/// The summary as a writer before revision 4 of the format wrote it:
/// without the raw MIME fields, through its JSON.
fn older_summary(summary: &Summary) -> Summary {
    let mut json = serde_json::to_value(summary).unwrap();
    for part in json["parts"].as_array_mut().unwrap() {
        part.as_object_mut().unwrap().remove("mime");
    }
    serde_json::from_value(json).unwrap()
}

/// What writ computes from the summary and what Dovecot says differ, item
/// by item: one line per difference.
fn compare(
    p: &common::Provider,
    user: &common::User,
    imap: &mut common::Imap,
    keys: &(Sealer, Vec<Identity>),
    name: &str,
    m: &[u8],
    without_mime_fields: bool,
) -> Vec<String> {
    let uid = p.imap_append(user, "INBOX", m);
    imap.command("NOOP").expect_ok("noop");
    let r = imap
        .command(&format!(
            "UID FETCH {uid} (RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)"
        ))
        .expect_ok("fetch");
    let raw = r.raw();

    let (sealer, ids) = keys;
    let mut sealed = Vec::new();
    sealer.seal(m, &mut sealed).unwrap();
    let mut summary = read_summary(Cursor::new(&sealed), ids).unwrap();
    if without_mime_fields {
        summary = older_summary(&summary);
    }
    let header = summary.root.header.clone().unwrap_or_default();

    let mut failures = Vec::new();
    for (item, ours) in [
        (
            "RFC822.SIZE",
            view::rfc822_size(&summary).to_string().into_bytes(),
        ),
        ("ENVELOPE", view::envelope_bytes(&header)),
        ("BODY", view::body_structure_bytes(&summary.root, false)),
        (
            "BODYSTRUCTURE",
            view::body_structure_bytes(&summary.root, true),
        ),
    ] {
        let dovecot = fetch_item(&raw, item);
        if dovecot != ours {
            failures.push(format!(
                "{name} {item}\n  dovecot: {}\n  writ:    {}",
                String::from_utf8_lossy(&dovecot),
                String::from_utf8_lossy(&ours)
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
    let keys = (
        Sealer::new("0123456789abcdef", vec![id.to_public()]),
        vec![id],
    );
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    let corpus = sections_corpus();
    let mut failures = Vec::new();
    for (name, m) in &corpus {
        failures.extend(compare(p, &user, &mut imap, &keys, name, m, false));
    }
    assert!(
        failures.is_empty(),
        "{} differences from Dovecot over {} messages:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

/// Header fields as Dovecot reads them for ENVELOPE: repeated fields,
/// names with whitespace before the colon, whitespace and folding, NUL,
/// 8-bit, quoting.
const ENVELOPE_HEADERS: &[&[u8]] = &[
    b"Subject: first\r\nSubject: second\r\n",
    b"Subject : spaced\r\n",
    b"Subject\t: tab\r\nTo : sp@x.test\r\nTo:t2@x.test\r\n",
    b"From: f1@x.test\r\nFrom: f2@x.test\r\nSender: s1@x.test\r\nSender: s2@x.test\r\nReply-To: r1@x.test\r\nReply-To: r2@x.test\r\nCc: c1@x.test\r\nCc: c2@x.test\r\nBcc: b1@x.test\r\nbcc: b2@x.test\r\nDate: d1\r\nDate: d2\r\nMessage-ID: <m1>\r\nMessage-ID: <m2>\r\nIn-Reply-To: <i1>\r\nIn-Reply-To: <i2>\r\n",
    b"From: f1@x.test\r\nFrom:\r\nTo: g: a@x.test;\r\nTo: b@x.test\r\nTo:\r\n",
    b"Subject: nul\0in\r\nFrom: a\0b@x.test\r\n",
    b"Subject: caf\xe9 latin1\r\nFrom: \"Ren\xe9\" <r@x.test>\r\n",
    b"Subject: x\r\nsubject: y\r\nSUBJECT: z\r\n",
    b"Subject:\r\nSubject: second\r\n",
    b"Subject: second\r\nSubject:\r\n",
    b"Sender: s@x.test\r\n",
    b"Reply-To: a@x.test\r\nFrom: f@x.test\r\nReply-To: \r\n",
    b"Subject: a  b\r\n",
    b"Subject: a\tb\r\n",
    b"Subject: say \"hi\" \\ back\r\n",
    b"Subject:    lead and trail   \r\n",
    b"Subject: fold\r\n  ed\r\n\tagain\r\n",
    b"Reply-To: \r\nSender:\r\nFrom: f@x.test\r\n",
    b"Reply-To: <>\r\nFrom: f@x.test\r\n",
    b"Date: d\\\"q\r\nIn-Reply-To: \t<i>  \r\nSubject: \"\r\n",
    b"Subject: \r\n \r\n",
    b"Date:\r\nMessage-ID:   \r\n",
    b"Date: a\r\n  b\r\n\tc\r\nMessage-ID: \r\n <m@x>\r\nIn-Reply-To:   \r\n  \r\n",
    b"Subject: real\r\nSubject\r\nTo\r\nFrom: f@x.test\r\n",
    b"Subject:    \r\n  real\r\nDate: a  \r\n b\r\n",
    b"Message-ID: \"a\" \"b\" \"c\"\r\nIn-Reply-To: \\\\\\\\\\\r\nDate: \xc3\xa9t\xc3\xa9\r\n",
];

/// Address field values, parsed as Dovecot's message-address.c does.
const ADDRESSES: &[&[u8]] = &[
    b"a@b.test",
    b"\"a b\"@x.test",
    b"\"quoted name\" <q@x.test>",
    b"Jo Smith",
    b"jo",
    b"\"jo\"",
    b"<a@b.test>",
    b"Name <a@b.test> trailing",
    b"a@b.test garbage",
    b"<@r1.test,@r2.test:a@b.test>",
    b"<@r1.test a@b.test>",
    b"Name <@r1.test:>",
    b"a@[1.2.3.4]",
    b"a@[1.2\\].3]",
    b"a . b @ c . test",
    b"a..b@c.test",
    b".a@c.test",
    b"a.@c.test",
    b"a@c..test",
    b"group: ;",
    b"group:;, x@y.test",
    b"g: a@b.test, c@d.test; h: e@f.test;",
    b"g: a@b.test",
    b"g: a@b.test,",
    b"\"\" <a@b.test>",
    b"=?utf-8?q?J=C3=B6rg?= <j@x.test>",
    b"Mr. Smith <s@x.test>",
    b"Mr . Smith <s@x.test>",
    b"a@b.test, , c@d.test",
    b"a@b.test,",
    b",a@b.test",
    b"a@b.test (comment (nested) here)",
    b"a@b.test (unterminated",
    b"(c1) a@b.test (c2)",
    b"a(c)@b.test",
    b"a@b(c).test",
    b"Name (c) <a@b.test> (d)",
    b"\"a\\\"b\" <x@y.test>",
    b"a\\b@c.test",
    b"@b.test",
    b"a@",
    b"<a@>",
    b"< a @ b . test >",
    b"<a@b.test",
    b"Name <a@b.test",
    b"undisclosed-recipients:;",
    b"\"Last, First\" <lf@x.test>",
    b"Last, First <lf@x.test>",
    b"a@b.test; c@d.test",
    b"a@b.test c@d.test",
    b"<a@b.test> <c@d.test>",
    b"g:a@b.test;x@y.test",
    b"\xc3\xa9t\xc3\xa9 <u@x.test>",
    b"\"\xe9\" <l@x.test>",
    b"Name\t\t<t@x.test>",
    b"\"  spaced   name  \" <s@x.test>",
    b"a@b.test (  spaced   comment  )",
    b"a:b:c@d.test;",
    b":;",
    b".g: a@b.test;",
    b"x@y.test,\r\n\t z@w.test",
    b"Jo (comment) <j@x.test>, (only comment) k@x.test, l@x.test (Real Name)",
    b"x@y.test, a\0b@x.test, c@x.test",
    b"Name\0X <n@x.test>",
];

/// MIME fields of a single-part message, as Dovecot shows them in
/// BODYSTRUCTURE: transfer encodings, parameters (RFC 2231 continuations),
/// dispositions, the plain 7-bit shortcut, cases.
const MIME_HEADERS: &[&[u8]] = &[
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: BASE64\r\n",
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64 (comment)\r\n",
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable; foo\r\n",
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: \"base64\"\r\n",
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: bin ary\r\n",
    b"MIME-Version: 1.0\r\nContent-Transfer-Encoding:\r\n",
    b"Content-Type: text/plain; name*0=a; name*1=b\r\n",
    b"Content-Type: text/plain; name*=utf-8''a%20b\r\n",
    b"Content-Type: text/plain; name*0=a; name*1=b; x*0*=utf-8''%41; x*1=%; y*1=z\r\n",
    b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*0=\"long \"; filename*1=\"name.pdf\"\r\n",
    b"Content-Type: application/pdf\r\nContent-Disposition: attach ment\r\n",
    b"Content-Type: application/pdf\r\nContent-Disposition: \"quoted\"\r\n",
    b"Content-Type: text / html\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: text\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: text/\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: /plain\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: text/plain charset=x\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: bad\r\nContent-Type: text/plain\r\n",
    b"MIME-Version: 1.0\r\nContent-Type:\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: (comment) text (c)\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: t\xc3\xabxt/plain; a=b\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: text/pl@in\r\n",
    b"Content-Type: Text/Plain\r\n",
    b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n",
    b"Content-Type: Text/Plain; format=flowed\r\n",
    b"Content-Type: Text/Plain\r\nContent-Transfer-Encoding: 7BIT\r\n",
    b"Content-Type: Text/Plain\r\nContent-Transfer-Encoding: 8bit\r\n",
    b"Content-Type: Text/Plain\r\nContent-ID: <a@b>\r\n",
    b"Content-Type: Text/Plain\r\nContent-Language: en\r\n",
    b"Content-Type: Text/Plain; charset*0=us-ascii\r\n",
    b"Content-Type: Text/Plain; charset=utf-8\r\n",
    b"Content-Type: text/plain\r\nContent-Description: a\"b\"c\"d\"e\"f\r\n",
    b"Content-Type: text/plain\r\nContent-Description: caf\xc3\xa9\r\n",
    b"Content-Type: text/plain\r\nContent-Description: two  spaces\r\n\tfolded\r\n",
];

/// Messages with the structures around delimiter lines where Dovecot
/// keeps a line break in a message/rfc822 part (`Part::imap_body_eol`).
const STRUCTURES: &[&[u8]] = &[
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n--b--\r\n",
    b"--b\r\n\r\n--b\r\n--b--",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\nepi\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\nContent-Type: text/plain\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c--\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c--x\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\n--b--\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--c--\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--bxyz\r\n--b--\r\n",
    b"--b\r\nContent-Type: message/global\r\n\r\nSubject: g\r\n--b--\r\n",
];

/// Whole messages: header-only ones ending without a line break, inner
/// headers cut short by a delimiter line, epilogues.
const MESSAGES: &[&[u8]] = &[
    b"Subject: a\r\n b",
    b"Subject: a\r\nTo: x@y.test\r\n ",
    b"To: a@b.test,\r\n c@d.test",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: cut\r\nTo: a@b.test\r\n--b--\r\n",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: cut\r\n folded\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: cut\r\nTo: a@b.test\n--b--",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: eof\r\nTo: a@b.test",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: d1\r\n--d\r\n\r\n--d--\r\n--b--\r\n",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y.test\r\n\r\nbody\r\n--b--\r\n--b\r\n\r\nafter close\r\n",
    b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5DQo=\r\n\r\n--b--\r\n",
];

/// Messages at Dovecot's caps, which are the writer's (100 levels of
/// nesting, 10,000 entities): what it stops descending into, and where
/// the lines past the entity cap go.
fn at_the_caps() -> Vec<(String, Vec<u8>)> {
    let mut deep_multipart = Vec::new();
    for i in 0..120 {
        deep_multipart.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    deep_multipart.extend_from_slice(b"\r\ninnermost\r\n");
    let mut deep_rfc822 = b"Subject: top\r\n".to_vec();
    for i in 0..120 {
        deep_rfc822.extend_from_slice(
            format!("Content-Type: message/rfc822\r\n\r\nSubject: level {i}\r\n").as_bytes(),
        );
    }
    deep_rfc822.extend_from_slice(b"\r\nbody\r\n");
    let mut many_parts = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for i in 0..10_005 {
        many_parts.extend_from_slice(format!("--b\r\n\r\n{i}\r\n").as_bytes());
    }
    many_parts.extend_from_slice(b"--b--\r\n");
    let mut many_messages = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for i in 0..5_000 {
        many_messages.extend_from_slice(
            format!("--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: {i}\r\n\r\nx\r\n")
                .as_bytes(),
        );
    }
    many_messages.extend_from_slice(b"--b--\r\n");
    vec![
        ("cap: 120 nested multiparts".into(), deep_multipart),
        ("cap: 120 nested messages".into(), deep_rfc822),
        ("cap: 10,005 parts".into(), many_parts),
        ("cap: 5,000 message/rfc822 parts".into(), many_messages),
    ]
}

/// The inline corpus and the generated cases, by name.
fn generated() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = CORPUS
        .iter()
        .enumerate()
        .map(|(n, m)| (format!("corpus {n}"), m.to_vec()))
        .collect();
    for (n, h) in ENVELOPE_HEADERS.iter().enumerate() {
        let mut m = h.to_vec();
        m.extend_from_slice(b"\r\nx\r\n");
        out.push((format!("envelope {n}"), m));
    }
    for (n, a) in ADDRESSES.iter().enumerate() {
        let mut m = b"From: f@x.test\r\nTo: ".to_vec();
        m.extend_from_slice(a);
        m.extend_from_slice(b"\r\nSubject: s\r\n\r\nx\r\n");
        out.push((format!("address {n}"), m));
    }
    for (n, h) in MIME_HEADERS.iter().enumerate() {
        let mut m = b"From: f@x.test\r\n".to_vec();
        m.extend_from_slice(h);
        m.extend_from_slice(b"\r\nx\r\n");
        out.push((format!("mime {n}"), m));
    }
    for (n, m) in MESSAGES.iter().enumerate() {
        out.push((format!("message {n}"), m.to_vec()));
    }
    out.extend(at_the_caps());
    for (n, body) in STRUCTURES.iter().enumerate() {
        let mut m = b"From: f@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        m.extend_from_slice(body);
        out.push((format!("structure {n}"), m));
    }
    out
}

/// Messages sealed before the summary kept raw MIME fields (revision 3
/// and older, already at providers) still list as Dovecot lists them when
/// their MIME fields are well formed.
#[test]
fn older_summaries_answer_like_dovecot_for_well_formed_mail() {
    let p = provider();
    let user = p.new_user("oracle-older");
    let id = Identity::generate();
    let keys = (
        Sealer::new("0123456789abcdef", vec![id.to_public()]),
        vec![id],
    );
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    let mut failures = Vec::new();
    for (n, m) in CORPUS.iter().enumerate() {
        let name = format!("corpus {n}, older summary");
        failures.extend(compare(p, &user, &mut imap, &keys, &name, m, true));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn summary_answers_like_dovecot_for_the_plaintext() {
    let p = provider();
    let user = p.new_user("oracle");
    let id = Identity::generate();
    let keys = (
        Sealer::new("0123456789abcdef", vec![id.to_public()]),
        vec![id],
    );
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    let messages = generated();
    let mut failures = Vec::new();
    for (name, m) in &messages {
        failures.extend(compare(p, &user, &mut imap, &keys, name, m, false));
    }
    assert!(
        failures.is_empty(),
        "{} differences from Dovecot over {} messages:\n{}",
        failures.len(),
        messages.len(),
        failures.join("\n")
    );
}
