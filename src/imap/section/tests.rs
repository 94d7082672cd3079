use std::num::NonZeroU32;

use imap_next::imap_types::core::{AString, Vec1};
use imap_next::imap_types::fetch::{Part as PartNumber, Section};
use proptest::prelude::*;

use super::*;
use crate::envelope::scan::{Limits, scan};

fn num(path: &[u32]) -> PartNumber {
    let v: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
    PartNumber(Vec1::try_from(v).unwrap())
}

fn names(list: &[&'static str]) -> Vec1<AString<'static>> {
    let v: Vec<AString<'static>> = list
        .iter()
        .map(|n| AString::try_from(*n).unwrap())
        .collect();
    Vec1::try_from(v).unwrap()
}

/// The section's bytes over `m`, as a vector.
fn get(m: &[u8], section: Option<Section<'_>>) -> Vec<u8> {
    let s = scan(m, Limits::default());
    section_bytes(m, &s, section.as_ref()).into_vec(m)
}

fn part(m: &[u8], path: &[u32]) -> Vec<u8> {
    get(m, Some(Section::Part(num(path))))
}

fn mime(m: &[u8], path: &[u32]) -> Vec<u8> {
    get(m, Some(Section::Mime(num(path))))
}

const MIXED: &[u8] = b"From: a@example.test\r\nContent-Type: multipart/mixed; boundary=out\r\n\r\npre\r\n--out\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n--alt\r\n\r\nplain\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--alt--\r\n--out\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n\r\ninner one\r\n--in\r\n\r\ninner two\r\n--in--\r\n--out\r\nContent-Type: message/rfc822\r\n\r\nSubject: leaf\r\n\r\nleaf body\r\n--out--\r\nepilogue\r\n";

#[test]
fn whole_message_header_and_text() {
    let m = b"Subject: a\r\nFrom: x\r\n\r\nbody\r\n";
    assert_eq!(get(m, None), m.to_vec());
    assert_eq!(
        get(m, Some(Section::Header(None))),
        b"Subject: a\r\nFrom: x\r\n\r\n"
    );
    assert_eq!(get(m, Some(Section::Text(None))), b"body\r\n");
    let s = scan(m, Limits::default());
    // Clean CRLF text is a range of M: no copy.
    assert_eq!(section_bytes(m, &s, None), SectionBytes::InM(0..m.len()));
}

#[test]
fn single_part_message_is_its_own_part_one() {
    let m = b"Subject: a\r\n\r\nbody\r\n";
    assert_eq!(part(m, &[1]), b"body\r\n");
    assert_eq!(mime(m, &[1]), b"Subject: a\r\n\r\n");
    assert_eq!(part(m, &[2]), b"");
    assert_eq!(part(m, &[1, 1]), b"");
    assert_eq!(get(m, Some(Section::Header(Some(num(&[1]))))), b"");
    assert_eq!(get(m, Some(Section::Text(Some(num(&[1]))))), b"");
}

#[test]
fn nested_multiparts_and_messages() {
    let m = MIXED;
    assert_eq!(part(m, &[1, 1]), b"plain");
    assert_eq!(part(m, &[1, 2]), b"<p>html</p>");
    assert_eq!(mime(m, &[1, 2]), b"Content-Type: text/html\r\n\r\n");
    // `--alt--` right before `--out` keeps its line break (as in Dovecot).
    assert_eq!(
        part(m, &[1]),
        b"--alt\r\n\r\nplain\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--alt--\r\n"
    );
    // Part 2 is a message/rfc822: its numbers address the inner parts.
    assert_eq!(part(m, &[2, 1]), b"inner one");
    assert_eq!(part(m, &[2, 2]), b"inner two");
    assert_eq!(part(m, &[2, 3]), b"");
    assert_eq!(mime(m, &[2]), b"Content-Type: message/rfc822\r\n\r\n");
    assert_eq!(
        get(m, Some(Section::Header(Some(num(&[2]))))),
        b"Subject: inner\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n"
    );
    // An inner single-part message is its own part 1; its MIME header is
    // its message header.
    assert_eq!(part(m, &[3, 1]), b"leaf body");
    assert_eq!(mime(m, &[3, 1]), b"Subject: leaf\r\n\r\n");
    assert_eq!(get(m, Some(Section::Text(Some(num(&[3]))))), b"leaf body");
    assert_eq!(part(m, &[3]), b"Subject: leaf\r\n\r\nleaf body");
    // HEADER of a part that is not a message is empty.
    assert_eq!(get(m, Some(Section::Header(Some(num(&[1, 1]))))), b"");
    assert_eq!(part(m, &[4]), b"");
    assert_eq!(part(m, &[3, 1, 1]), b"");
}

#[test]
fn header_fields_select_and_exclude() {
    let m = MIXED;
    let f = |n: Option<&[u32]>, list: &[&'static str], not: bool| {
        let number = n.map(num);
        let section = if not {
            Section::HeaderFieldsNot(number, names(list))
        } else {
            Section::HeaderFields(number, names(list))
        };
        get(m, Some(section))
    };
    assert_eq!(
        f(None, &["FROM", "x-absent"], false),
        b"From: a@example.test\r\n\r\n"
    );
    assert_eq!(
        f(None, &["from"], true),
        b"Content-Type: multipart/mixed; boundary=out\r\n\r\n"
    );
    assert_eq!(f(Some(&[3]), &["subject"], false), b"Subject: leaf\r\n\r\n");
    assert_eq!(f(Some(&[3]), &["subject"], true), b"\r\n");
    assert_eq!(f(Some(&[1]), &["subject"], false), b"");
}

#[test]
fn bare_lf_and_nul_are_converted() {
    let m = b"Subject: a\nX: \0\n\nline\nmore";
    assert_eq!(get(m, None), b"Subject: a\r\nX: \x80\r\n\r\nline\r\nmore");
    assert_eq!(get(m, Some(Section::Text(None))), b"line\r\nmore");
    let s = scan(m, Limits::default());
    let whole = section_bytes(m, &s, None);
    // Partial offsets count in the converted bytes.
    let p = partial(whole, 10, NonZeroU32::new(3).unwrap());
    assert_eq!(p.into_vec(m), b"\r\nX");
}

#[test]
fn header_only_and_empty_messages() {
    let m = b"Subject: a\r\nFrom: x";
    assert_eq!(get(m, Some(Section::Header(None))), m.to_vec());
    assert_eq!(get(m, Some(Section::Text(None))), b"");
    assert_eq!(part(m, &[1]), b"");
    assert_eq!(
        get(m, Some(Section::HeaderFields(None, names(&["from"])))),
        b"From: x\r\n"
    );
    assert_eq!(
        get(m, Some(Section::HeaderFieldsNot(None, names(&["subject"])))),
        b"From: x"
    );
    for m in [&b""[..], b"\r\n", b"\n", b"x"] {
        let s = scan(m, Limits::default());
        for section in all_sections() {
            let _ = section_bytes(m, &s, section.as_ref());
        }
    }
}

#[test]
fn a_header_cut_short_by_a_boundary() {
    let m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nX: cut\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nX: inner\r\nY: only\r\n--x\r\n\r\nafter\r\n\r\nZ: z\r\n--x--\r\n";
    assert_eq!(mime(m, &[1]), b"X: cut");
    assert_eq!(part(m, &[1]), b"");
    // The message/rfc822 part keeps the line break its inner header lost.
    assert_eq!(part(m, &[2]), b"X: inner\r\nY: only\r\n");
    assert_eq!(
        get(m, Some(Section::Header(Some(num(&[2]))))),
        b"X: inner\r\nY: only"
    );
    // The header filter reads on to the next empty line.
    assert_eq!(
        get(
            m,
            Some(Section::HeaderFieldsNot(Some(num(&[2])), names(&["x"])))
        ),
        b"Y: only\r\n--x\r\n\r\n"
    );
    assert_eq!(part(m, &[3]), b"after\r\n\r\nZ: z");
}

#[test]
fn an_empty_line_right_before_a_boundary_goes_with_the_boundary() {
    let m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n--x--\r\n";
    assert_eq!(mime(m, &[1]), b"Content-Type: text/plain\r\n");
    assert_eq!(mime(m, &[2]), b"Content-Type: message/rfc822\r\n");
    assert_eq!(part(m, &[2]), b"");
    // The inner message starts at the line break its part's header lost,
    // and the header filter reads it as the empty line.
    assert_eq!(
        get(
            m,
            Some(Section::HeaderFields(Some(num(&[2])), names(&["a"])))
        ),
        b"\r\n"
    );
    assert_eq!(get(m, Some(Section::Header(Some(num(&[2]))))), b"");
}

#[test]
fn partial_ranges() {
    let m = b"Subject: a\r\n\r\n0123456789";
    let s = scan(m, Limits::default());
    let text = || section_bytes(m, &s, Some(&Section::Text(None)));
    let n = |x| NonZeroU32::new(x).unwrap();
    assert_eq!(partial(text(), 0, n(4)).into_vec(m), b"0123");
    assert_eq!(partial(text(), 8, n(100)).into_vec(m), b"89");
    assert_eq!(partial(text(), 10, n(1)).into_vec(m), b"");
    assert_eq!(partial(text(), u32::MAX, n(u32::MAX)).into_vec(m), b"");
    assert_eq!(partial(text(), 3, n(2)), SectionBytes::InM(17..19));
    let owned = SectionBytes::Owned(b"abcdef".to_vec());
    assert_eq!(
        partial(owned, 2, n(3)),
        SectionBytes::Owned(b"cde".to_vec())
    );
}

#[test]
fn header_section_from_the_summary_alone() {
    for m in [
        MIXED,
        b"Subject: a\nFrom: x\n\nbody\n",
        b"Subject: a\r\nFrom: x\r\n",
        // The summary keeps a last header line without a line break too.
        b"Subject: a\r\nFrom: x",
        b"A: \0\r\n\r\n",
    ] {
        let s = scan(m, Limits::default());
        for section in [
            Section::Header(None),
            Section::HeaderFields(None, names(&["subject", "FROM", "nope"])),
            Section::HeaderFieldsNot(None, names(&["subject"])),
        ] {
            assert_eq!(
                header_section(&s, Some(&section)),
                Some(section_bytes(m, &s, Some(&section)).into_vec(m)),
                "{section:?} of {:?}",
                String::from_utf8_lossy(m)
            );
        }
        assert_eq!(header_section(&s, Some(&Section::Text(None))), None);
        assert_eq!(header_section(&s, None), None);
    }
}

fn all_sections() -> Vec<Option<Section<'static>>> {
    let mut out = vec![
        None,
        Some(Section::Header(None)),
        Some(Section::Text(None)),
        Some(Section::HeaderFields(None, names(&["a", "b"]))),
        Some(Section::HeaderFieldsNot(None, names(&["a"]))),
    ];
    for path in [
        &[1][..],
        &[2],
        &[1, 1],
        &[1, 2],
        &[2, 1],
        &[1, 1, 1],
        &[3, 1, 2],
    ] {
        let n = num(path);
        out.push(Some(Section::Part(n.clone())));
        out.push(Some(Section::Mime(n.clone())));
        out.push(Some(Section::Header(Some(n.clone()))));
        out.push(Some(Section::Text(Some(n.clone()))));
        out.push(Some(Section::HeaderFields(Some(n.clone()), names(&["a"]))));
        out.push(Some(Section::HeaderFieldsNot(Some(n), names(&["a"]))));
    }
    out
}

/// Messages built from MIME-ish lines, so that structure is likely.
fn mime_ish() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(b"Content-Type: multipart/mixed; boundary=b".to_vec()),
        Just(b"Content-Type: message/rfc822".to_vec()),
        Just(b"--b".to_vec()),
        Just(b"--b--".to_vec()),
        Just(b"".to_vec()),
        Just(b" folded".to_vec()),
        Just(b"A: x".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    let eol = prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b""[..])];
    proptest::collection::vec((line, eol), 0..24).prop_map(|lines| {
        let mut m = Vec::new();
        for (l, e) in lines {
            m.extend_from_slice(&l);
            m.extend_from_slice(e);
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No input panics; ranges stay inside M; output has no bare LF and no
    /// NUL; and a summary of another message is harmless.
    #[test]
    fn never_panics_and_output_is_wire_ready(m in mime_ish(), other in mime_ish()) {
        let own = scan(&m, Limits::default());
        let foreign = scan(&other, Limits::default());
        for s in [&own, &foreign] {
            for section in all_sections() {
                let b = section_bytes(&m, s, section.as_ref());
                if let SectionBytes::InM(r) = &b {
                    prop_assert!(r.end <= m.len() && r.start <= r.end);
                }
                let bytes = b.bytes(&m);
                prop_assert!(!bytes.contains(&0));
                for (i, &c) in bytes.iter().enumerate() {
                    if c == b'\n' {
                        prop_assert!(i > 0 && bytes[i - 1] == b'\r');
                    }
                }
                let p = partial(b.clone(), 1, NonZeroU32::new(3).unwrap());
                prop_assert!(p.len() <= 3);
                if let Some(h) = header_section(s, section.as_ref())
                    && std::ptr::eq(s, &own)
                {
                    prop_assert_eq!(h, b.into_vec(&m));
                }
            }
        }
    }
}
