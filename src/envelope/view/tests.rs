//! ENVELOPE, BODYSTRUCTURE and sizes against hand-checked Dovecot answers.

use super::body_structure::merged_params;
use super::envelope::{address_list, write_addresses};
use super::*;

fn env_of(h: &str) -> String {
    envelope(h.as_bytes())
}

#[test]
fn envelope_defaults_sender_and_reply_to_to_from() {
    let e = env_of("From: Ann <ann@example.test>\r\nSubject: hi\r\n\r\n");
    assert_eq!(
        e,
        "(NIL \"hi\" ((\"Ann\" NIL \"ann\" \"example.test\")) ((\"Ann\" NIL \"ann\" \"example.test\")) ((\"Ann\" NIL \"ann\" \"example.test\")) NIL NIL NIL NIL NIL)"
    );
}

fn list_of(v: &[u8]) -> String {
    let mut out = Vec::new();
    write_addresses(&mut out, &address_list(v));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn groups_and_malformed_addresses_do_not_panic() {
    for v in [
        &b"a:b@c,d@e;"[..],
        b"<>",
        b"@",
        b",,,",
        b"\"unterminated",
        b"(((",
        b"a <b@c",
        b":;",
        b"x@",
        b"<@",
        b"<@a,@b",
        b"a <@a:",
        b"\\",
        b"(\\",
        b"\"\\",
        b"[",
        b"a@[b\\",
        b"a@[x",
        b"g: (c",
        b"a.",
        b"a. .b@c",
        b"\x00\"\x00\"(\x00)",
    ] {
        list_of(v);
    }
    assert_eq!(
        list_of(b"team: a@b.c, Bob <bob@d.e>;"),
        "((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"b.c\")(\"Bob\" NIL \"bob\" \"d.e\")(NIL NIL NIL NIL))"
    );
}

#[test]
fn addresses_as_dovecot_reads_them() {
    for (value, want) in [
        // Observed from Dovecot 2.3.19 (tests/summary_oracle.rs probes).
        (
            &b"Jo (comment) <j@x.test>, (only comment) k@x.test, l@x.test (Real Name)"[..],
            "((\"Jo\" NIL \"j\" \"x.test\")(NIL NIL \"k\" \"x.test\")(\"Real Name\" NIL \"l\" \"x.test\"))",
        ),
        (b"<>", "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))"),
        (
            b"x@y.test, a\0b@x.test, c@x.test",
            "((NIL NIL \"x\" \"y.test\")(NIL NIL \"a\" \"MISSING_DOMAIN\"))",
        ),
        (
            b"Name\0X <n@x.test>",
            "((NIL NIL \"Name\" \"MISSING_DOMAIN\"))",
        ),
        (
            b"\"Ann  Two\tTab\" <a@x.test>",
            "(({11}\r\nAnn Two Tab NIL \"a\" \"x.test\"))",
        ),
        (b"(c)", "NIL"),
    ] {
        assert_eq!(list_of(value), want, "{}", String::from_utf8_lossy(value));
    }
}

proptest::proptest! {
    #[test]
    fn any_header_or_message_gives_an_answer(
        value in proptest::collection::vec(
            proptest::sample::select(b" \t\r\n\0\"\\()<>@,;:.[]=*%'abcZ\xe9".to_vec()),
            0..60,
        ),
        name in proptest::sample::select(vec!["To", "Subject", "Date", "Content-Type"]),
    ) {
        let mut h = format!("{name}: ").into_bytes();
        h.extend_from_slice(&value);
        let e = envelope_bytes(&h);
        proptest::prop_assert!(e.starts_with(b"(") && e.ends_with(b")"));
        list_of(&value);
        let mut m = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n".to_vec();
        m.extend_from_slice(&h);
        m.extend_from_slice(b"\r\n\r\n--b--\r\n");
        let s = crate::envelope::scan::scan(&m, crate::envelope::scan::Limits::default());
        body_structure_bytes(&s.root, true);
    }
}

#[test]
fn message_part_sizes_count_the_line_break_dovecot_keeps() {
    use crate::envelope::scan::{Limits, scan};
    // The inner header is cut short by the delimiter line: Dovecot's
    // message/rfc822 body is `X: inner` CRLF (10 octets, 1 line).
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nX: inner\r\n--b--\r\n";
    let s = scan(m, Limits::default());
    let want = "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 10 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) 1) \"mixed\")";
    assert_eq!(body_structure(&s.root, false), want);
    // A summary written before `imap_body_eol` existed gives the same
    // answer here: the structure shows the header running past the
    // body.
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"imap_body_eol\":2"));
    let old: Summary = serde_json::from_str(&json.replace(",\"imap_body_eol\":2", "")).unwrap();
    assert_eq!(old.root.parts[0].imap_body_eol, 0);
    assert_eq!(body_structure(&old.root, false), want);
    // `--c--` right before `--b`: only the new field knows.
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--\r\n";
    let s = scan(m, Limits::default());
    assert!(body_structure(&s.root, false).contains("\"7bit\" 1 0) \"alternative\") 6)"));
}

#[test]
fn multipart_without_parts_and_message_global() {
    use crate::envelope::scan::{Limits, scan};
    let m = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nA\r\n--x--\r\n";
    let s = scan(m, Limits::default());
    assert_eq!(
        body_structure(&s.root, true),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL)"
    );
    let m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/global\r\n\r\nSubject: g\r\n\r\nG\r\n--x--\r\n";
    let s = scan(m, Limits::default());
    assert!(
        s.root.parts[0].parts.is_empty(),
        "a leaf to IMAP servers, and to the summary since revision 4"
    );
    assert_eq!(
        body_structure(&s.root, false),
        "((\"message\" \"global\" NIL NIL NIL \"7bit\" 15) \"mixed\")"
    );
}

#[test]
fn rfc2231_continuations_are_joined() {
    let p = |v: &[(&str, &str)]| {
        let v: Vec<(String, String)> = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        merged_params(&v)
            .into_iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        p(&[("name*1", "b"), ("x", "1"), ("name*0", "a")]),
        "x=1 name=ab"
    );
    assert_eq!(
        p(&[("t*0*", "utf-8''%41"), ("t*1", "%")]),
        "t*=utf-8''%41%25"
    );
    assert_eq!(p(&[("t*0", "a"), ("t*2", "c")]), "t*0=a t*2=c");
    assert_eq!(p(&[("n*", "utf-8''x"), ("n*x", "y")]), "n*x=y n*=utf-8''x");
    // Index overflow wraps, as in Dovecot; no panic.
    assert_eq!(p(&[("n*99999999999", "v")]), "n*1215752191=v");
}

#[test]
fn envelope_fields_as_dovecot_reads_them() {
    // The last Subject counts (a name followed by spaces is still the
    // name); address fields add up; empty Sender and Reply-To default
    // to From.
    let e = env_of(
        "Subject: a\r\nSubject : b\r\nTo: one@x.test\r\nReply-To:\r\nFrom: f@x.test\r\nto: two@x.test,\r\n  three@x.test\r\n\r\n",
    );
    assert_eq!(
        e,
        "(NIL \"b\" ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"one\" \"x.test\")(NIL NIL \"two\" \"x.test\")(NIL NIL \"three\" \"x.test\")) NIL NIL NIL NIL)"
    );
    // Whitespace: one octet skipped after the colon of a blank value,
    // folding kept in strings, collapsed in the Subject.
    let e = env_of(
        "Date: a  \r\n b\r\nMessage-ID:   \r\nIn-Reply-To: \t<i>  \r\nSubject: fold\r\n  ed\r\n\r\n",
    );
    assert_eq!(
        e,
        "(\"a   b\" {7}\r\nfold ed NIL NIL NIL NIL NIL NIL \"<i>  \" \"  \")"
    );
    // NUL in a string is U+FFFD; more than four quoted-specials make a
    // literal.
    let e = envelope_bytes(b"Subject: nul\0in\r\nMessage-ID: \"a\" \"b\" \"c\"\r\n\r\n");
    assert_eq!(
        e,
        "(NIL {8}\r\nnul\u{FFFD}in NIL NIL NIL NIL NIL NIL NIL {11}\r\n\"a\" \"b\" \"c\")"
            .as_bytes()
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Summaries written before the raw MIME fields existed (revision 3 and
/// older) still give an answer from their parsed fields; new ones give
/// M's octets.
#[test]
fn raw_mime_fields_give_octets_and_older_summaries_still_answer() {
    use crate::envelope::scan::{Limits, scan};
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=\"r\xe9sum\xe9.pdf\"\r\n\r\nx\r\n--b--\r\n";
    let s = scan(m, Limits::default());
    let new = body_structure_bytes(&s.root, true);
    assert!(
        contains(&new, b"{10}\r\nr\xe9sum\xe9"),
        "{}",
        String::from_utf8_lossy(&new)
    );
    let mut old = s.root.clone();
    old.mime = None;
    for p in &mut old.parts {
        p.mime = None;
    }
    let legacy = body_structure_bytes(&old, true);
    assert!(
        contains(&legacy, "{12}\r\nrésumé".as_bytes()),
        "{}",
        String::from_utf8_lossy(&legacy)
    );
}

/// The raw MIME fields of all entities together stay within
/// `MAX_MIME_FIELDS`: past it, entities go without.
#[test]
fn raw_mime_fields_have_a_budget() {
    use crate::envelope::scan::{Limits, scan};
    use crate::envelope::summary::MAX_MIME_FIELDS;
    let mut m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    let description = "d".repeat(60_000);
    for _ in 0..40 {
        m.extend_from_slice(
            format!("--b\r\nContent-Description: {description}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"--b--\r\n");
    let s = scan(&m, Limits::default());
    let kept: usize = s
        .root
        .parts
        .iter()
        .filter_map(|p| p.mime.as_ref())
        .map(Vec::len)
        .sum();
    assert!(kept <= MAX_MIME_FIELDS);
    assert!(s.root.parts.first().is_some_and(|p| p.mime.is_some()));
    assert!(s.root.parts.last().is_some_and(|p| p.mime.is_none()));
    // Without its raw fields a part is still shown, from the parsed ones.
    let bs = String::from_utf8_lossy(&body_structure_bytes(&s.root, true)).into_owned();
    assert_eq!(bs.matches(description.as_str()).count(), 40);
}
