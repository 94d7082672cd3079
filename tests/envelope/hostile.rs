//! Hostile summaries: what anyone holding the public epoch recipient can
//! send (docs/FORMAT.md 12.5 caps; the readers refuse, never crash).

use super::*;
use writ::envelope::fuzz::forge;
use writ::envelope::summary::{MAX_DEPTH, MAX_MESSAGE_SIZE, MAX_PARTS, Part};
use writ::envelope::view;

const M: &[u8] = b"Subject: x\r\n\r\nhello\r\n";

/// One entity's JSON; `n` = (header_offset, header_size, body_size,
/// body_lines).
fn part(parent: Option<usize>, ty: &str, n: (u64, u64, u64, u64)) -> String {
    let parent = parent.map_or(String::new(), |p| format!(",\"parent\":{p}"));
    format!(
        "{{\"type\":\"{ty}\",\"subtype\":\"x\",\"content_type_present\":true,\"params\":[],\"header_offset\":{},\"header_size\":{},\"body_offset\":{},\"body_size\":{},\"body_lines\":{},\"body_bare_lf\":0{parent}}}",
        n.0,
        n.1,
        n.0.wrapping_add(n.1),
        n.2,
        n.3
    )
}

fn summary(version: &str, size: u64, bare_lf: u64, parts: &[String]) -> Vec<u8> {
    format!(
        "{{{version}\"size\":{size},\"bare_lf\":{bare_lf},\"parts\":[{}]}}",
        parts.join(",")
    )
    .into_bytes()
}

/// Multiparts nested `depth` deep, each the only child of the one above.
fn chain(depth: usize) -> Vec<u8> {
    let parts: Vec<String> = (0..depth)
        .map(|i| part(i.checked_sub(1), "multipart", (0, 0, 0, 0)))
        .collect();
    summary("\"version\":1,", M.len() as u64, 0, &parts)
}

/// Every reader of a forged message: none may panic or overflow the
/// stack; returns what reading the summary gave.
fn read_everything(summary_json: &[u8]) -> Result<envelope::Summary, EnvelopeError> {
    let id = Identity::generate();
    let ids = vec![id.clone()];
    let stored = forge(&id.to_public(), 1, EPOCH, summary_json, M);
    let summary = read_summary(Cursor::new(&stored), &ids);
    // Part 1 as IMAP fetches it (the armor is found by its BEGIN line).
    let part1 = envelope::open_summary(&stored, None, EPOCH, &ids);
    assert_eq!(summary.is_ok(), part1.is_ok());
    let mut out = Vec::new();
    let opened = open(Cursor::new(&stored), &ids, &mut out);
    if let Ok(s) = &summary {
        let _ = view::rfc822_size(s);
        let _ = view::body_structure_bytes(&s.root, true);
        let _ = s.clone();
        assert!(opened.is_ok());
    } else {
        // The whole message is undecryptable, not just its listing.
        assert!(opened.is_err(), "open ignored a malformed summary");
    }
    summary
}

#[test]
fn nesting_past_the_writers_cap_is_refused_without_a_crash() {
    // At the cap: accepted.
    let s = read_everything(&chain(MAX_DEPTH)).expect("100 deep is the writer's cap");
    let mut depth = 1;
    let mut p = &s.root;
    while let Some(c) = p.parts.first() {
        p = c;
        depth += 1;
    }
    assert_eq!(depth, MAX_DEPTH);
    // Past it, up to what once overflowed debug (1,000) and release
    // (3,500-20,000) stacks, through every reader.
    for depth in [MAX_DEPTH + 1, 1_000, 5_000] {
        let err = read_everything(&chain(depth)).unwrap_err();
        assert!(matches!(err, EnvelopeError::Summary(_)), "{depth}: {err}");
        assert!(err.to_string().contains("cap"), "{err}");
    }
    // And far beyond (one reader: decrypting 15 MB thrice is slow in
    // debug, and every reader shares this code).
    let id = Identity::generate();
    let stored = forge(&id.to_public(), 1, EPOCH, &chain(100_000), M);
    let err = read_summary(Cursor::new(&stored), &vec![id]).unwrap_err();
    assert!(matches!(err, EnvelopeError::Summary(_)), "{err}");
    assert!(err.to_string().contains("cap"), "{err}");
}

#[test]
fn more_entities_than_the_writers_cap_are_refused() {
    let flat = |n: usize| {
        let parts: Vec<String> = (0..n)
            .map(|i| part((i > 0).then_some(0), "multipart", (0, 0, 0, 0)))
            .collect();
        summary("\"version\":1,", M.len() as u64, 0, &parts)
    };
    let s = read_everything(&flat(MAX_PARTS)).expect("10,000 is the writer's cap");
    assert_eq!(s.root.parts.len(), MAX_PARTS - 1);
    let err = read_everything(&flat(MAX_PARTS + 1)).unwrap_err();
    assert!(matches!(err, EnvelopeError::Summary(_)), "{err}");
}

#[test]
fn numbers_that_overflow_or_leave_the_message_are_refused() {
    let len = M.len() as u64;
    let root = |n| part(None, "text", n);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "size u64::MAX",
            summary("\"version\":1,", u64::MAX, 0, &[root((0, 0, 0, 0))]),
        ),
        (
            "size and bare_lf u64::MAX",
            summary("\"version\":1,", u64::MAX, u64::MAX, &[root((0, 0, 0, 0))]),
        ),
        (
            "size past the cap",
            summary(
                "\"version\":1,",
                MAX_MESSAGE_SIZE + 1,
                0,
                &[root((0, 0, 0, 0))],
            ),
        ),
        (
            "bare_lf above size",
            summary("\"version\":1,", len, len + 1, &[root((0, 12, 9, 1))]),
        ),
        (
            "body past M",
            summary("\"version\":1,", len, 0, &[root((0, 12, len, 1))]),
        ),
        (
            "header_offset + header_size wraps",
            summary("\"version\":1,", len, 0, &[root((u64::MAX, 2, 0, 0))]),
        ),
        (
            "body_offset + body_size wraps",
            summary("\"version\":1,", len, 0, &[root((0, 12, u64::MAX, 0))]),
        ),
        (
            "more lines than octets",
            summary("\"version\":1,", len, 0, &[root((0, 12, 9, 10))]),
        ),
        (
            "child before its parent's body",
            summary(
                "\"version\":1,",
                len,
                0,
                &[
                    part(None, "multipart", (0, 12, 9, 1)),
                    part(Some(0), "text", (3, 1, 0, 0)),
                ],
            ),
        ),
        (
            "siblings over the same octets (a search would decode them once each)",
            summary(
                "\"version\":1,",
                len,
                0,
                &[
                    part(None, "multipart", (0, 14, 7, 1)),
                    part(Some(0), "text", (14, 0, 7, 1)),
                    part(Some(0), "text", (14, 0, 7, 1)),
                ],
            ),
        ),
        (
            "child past the end of its parent's body",
            summary(
                "\"version\":1,",
                len,
                0,
                &[
                    part(None, "multipart", (0, 14, 3, 1)),
                    part(Some(0), "text", (14, 0, 7, 1)),
                ],
            ),
        ),
        (
            "not in pre-order",
            summary(
                "\"version\":1,",
                len,
                0,
                &[
                    part(None, "multipart", (0, 0, 0, 0)),
                    part(Some(0), "multipart", (0, 0, 0, 0)),
                    part(Some(1), "text", (0, 0, 0, 0)),
                    part(Some(0), "multipart", (0, 0, 0, 0)),
                    part(Some(1), "text", (0, 0, 0, 0)),
                ],
            ),
        ),
    ];
    for (what, json) in cases {
        let err = read_everything(&json).unwrap_err();
        assert!(matches!(err, EnvelopeError::Summary(_)), "{what}: {err}");
    }
    // And the body's true numbers are fine, and so are children side by
    // side inside their parent.
    read_everything(&summary("\"version\":1,", len, 0, &[root((0, 14, 7, 1))])).unwrap();
    read_everything(&summary(
        "\"version\":1,",
        len,
        0,
        &[
            part(None, "multipart", (0, 14, 7, 1)),
            part(Some(0), "text", (14, 0, 3, 1)),
            part(Some(0), "text", (17, 0, 4, 1)),
        ],
    ))
    .unwrap();
}

#[test]
fn unknown_or_missing_versions_and_mandatory_fields_are_refused() {
    let len = M.len() as u64;
    let root = part(None, "text", (0, 14, 7, 1));
    for version in [
        "\"version\":2,",
        "",
        "\"version\":\"1\",",
        "\"version\":null,",
    ] {
        let err =
            read_everything(&summary(version, len, 0, std::slice::from_ref(&root))).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::UnsupportedVersion(_)),
            "{version}: {err}"
        );
    }
    for json in [
        format!("{{\"version\":1,\"bare_lf\":0,\"parts\":[{root}]}}"),
        format!("{{\"version\":1,\"size\":{len},\"parts\":[{root}]}}"),
        format!("{{\"version\":1,\"size\":{len},\"bare_lf\":0}}"),
        format!(
            "{{\"version\":1,\"size\":{len},\"bare_lf\":0,\"parts\":[{}]}}",
            root.replace("\"body_size\":7,", "")
        ),
        format!(
            "{{\"version\":1,\"size\":{len},\"bare_lf\":0,\"parts\":[{}]}}",
            root.replace("\"type\":\"text\",", "")
        ),
    ] {
        let err = read_everything(json.as_bytes()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Summary(_)), "{json}: {err}");
    }
}

#[test]
fn an_unknown_format_version_makes_the_whole_message_undecryptable() {
    let (sealer, ids) = keys();
    let sealed = seal(&sealer, &sample());
    let text = String::from_utf8(sealed).unwrap();
    let v2 = text
        .replacen("X-Writ: v=1;", "X-Writ: v=2;", 1)
        .into_bytes();
    let marker = detect(&v2).expect("detection recognises every version");
    assert_eq!(marker.version, 2);
    let unsupported = |r: Result<_, EnvelopeError>| {
        assert!(matches!(r, Err(EnvelopeError::UnsupportedVersion(_))))
    };
    unsupported(read_summary(Cursor::new(&v2), &ids).map(drop));
    unsupported(open_bytes(&ids, &v2).map(drop));
    unsupported(envelope::open_summary_of(&v2, None, &marker, &ids).map(drop));
    unsupported(marker.supported());
    // The same message at v=1 opens through every path.
    let v1 = text.into_bytes();
    let marker = detect(&v1).unwrap();
    envelope::open_summary_of(&v1, None, &marker, &ids).unwrap();
}

#[test]
fn a_payload_whose_length_disagrees_with_the_summary_is_damaged() {
    let id = Identity::generate();
    let ids = vec![id.clone()];
    let m = sample();
    let s = writ::envelope::scan::scan(&m, envelope::Limits::default());
    let json = serde_json::to_vec(&s).unwrap();
    let mut longer = m.clone();
    longer.extend_from_slice(b"appended after sealing\r\n");
    for payload in [&longer[..], &m[..m.len() - 1], b""] {
        let stored = forge(&id.to_public(), 1, EPOCH, &json, payload);
        let err = open_bytes(&ids, &stored).unwrap_err();
        assert!(matches!(err, EnvelopeError::Damaged(_)), "{err}");
        assert!(err.to_string().contains("summary says"), "{err}");
        let err = envelope::open_with_summary(Cursor::new(&stored), &ids, Vec::new()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Damaged(_)), "{err}");
        // The listing alone cannot tell: the summary itself is fine.
        read_summary(Cursor::new(&stored), &ids).unwrap();
    }
    // A longer payload is refused before more than M's size is out.
    let stored = forge(&id.to_public(), 1, EPOCH, &json, &longer);
    let mut out = Vec::new();
    open(Cursor::new(&stored), &ids, &mut out).unwrap_err();
    assert!(out.len() <= m.len());
    // Agreeing: both the summary and M, in one pass.
    let stored = forge(&id.to_public(), 1, EPOCH, &json, &m);
    let mut out = Vec::new();
    let (opened, summary) =
        envelope::open_with_summary(Cursor::new(&stored), &ids, &mut out).unwrap();
    assert_eq!(out, m);
    assert_eq!(opened.size, m.len() as u64);
    assert_eq!(summary, s);
}

#[test]
fn trees_built_in_code_are_walked_and_dropped_without_recursion() {
    // Far deeper than any summary a reader accepts: the BODYSTRUCTURE
    // writer, Clone, PartialEq, Debug and Drop must not recurse.
    let depth = 100_000;
    let mut root = Part::default();
    for _ in 0..depth {
        let mut parent = Part::default();
        parent.media_type = "multipart".into();
        parent.subtype = "mixed".into();
        parent.parts.push(root);
        root = parent;
    }
    let out = view::body_structure_bytes(&root, true);
    // One per multipart and the innermost entity.
    assert_eq!(out.iter().filter(|&&b| b == b'(').count(), depth + 1);
    let copy = root.clone();
    assert!(copy == root);
    assert!(format!("{copy:?}").len() > depth);
    drop(copy);
    drop(root);
    // A message/rfc822 chain goes through the ENVELOPE path too.
    let mut root = Part::default();
    for _ in 0..depth {
        let mut parent = Part::default();
        parent.media_type = "message".into();
        parent.subtype = "rfc822".into();
        parent.content_type_present = true;
        parent.parts.push(root);
        root = parent;
    }
    let out = view::body_structure_bytes(&root, false);
    assert!(out.len() > depth * 10);
}

/// `raw` (an age file's bytes, perhaps not a valid one) in age's armor.
fn armored(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w =
        age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor).unwrap();
    w.write_all(raw).unwrap();
    w.finish().unwrap()
}

/// `stored` with its `which`-th armored block (0: the summary, 1: the
/// payload) replaced by `block`.
fn with_block(stored: &[u8], which: usize, block: &[u8]) -> Vec<u8> {
    const BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
    const END: &[u8] = b"-----END AGE ENCRYPTED FILE-----";
    let find = |from: usize, what: &[u8]| {
        from + stored[from..]
            .windows(what.len())
            .position(|w| w == what)
            .unwrap()
    };
    let mut at = 0;
    for _ in 0..which {
        at = find(at, END) + END.len();
    }
    let begin = find(at, BEGIN);
    let end = find(begin, END) + END.len();
    [&stored[..begin], block, &stored[end..]].concat()
}

#[test]
fn an_age_header_of_endless_stanzas_is_refused_at_its_cap() {
    // age's parser reads its header again from the start for each line:
    // a forged header of many empty stanzas of an unknown type (each
    // valid) would cost time quadratic in its length. Past the cap it is
    // damaged, before age sees it, in either part.
    let id = Identity::generate();
    let ids = vec![id.clone()];
    let json =
        serde_json::to_vec(&writ::envelope::scan::scan(M, envelope::Limits::default())).unwrap();
    let stored = forge(&id.to_public(), 1, EPOCH, &json, M);
    let mut endless = b"age-encryption.org/v1\n".to_vec();
    for _ in 0..envelope::MAX_AGE_HEADER_LINES {
        endless.extend_from_slice(b"-> a\n\n");
    }
    endless.extend_from_slice(b"--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    let capped = |e: &EnvelopeError| e.to_string().contains("age header is longer");
    let forged = with_block(&stored, 0, &armored(&endless));
    let e = read_summary(Cursor::new(&forged), &ids).unwrap_err();
    assert!(capped(&e), "{e}");
    let e = envelope::open_summary(&forged, None, EPOCH, &ids).unwrap_err();
    assert!(capped(&e), "{e}");
    let forged = with_block(&stored, 1, &armored(&endless));
    let e = open_bytes(&ids, &forged).unwrap_err();
    assert!(capped(&e), "{e}");
    // One byte-long line too many past the byte cap, too.
    let long = [
        &b"age-encryption.org/v1\n-> a "[..],
        &vec![b'b'; envelope::MAX_AGE_HEADER][..],
        b"\n\n--- AAAA\n",
    ]
    .concat();
    let forged = with_block(&stored, 0, &armored(&long));
    let e = read_summary(Cursor::new(&forged), &ids).unwrap_err();
    assert!(capped(&e), "{e}");
    // The genuine message still opens, through both parts.
    read_summary(Cursor::new(&stored), &ids).unwrap();
    assert_eq!(open_bytes(&ids, &stored).unwrap(), M);
}

#[test]
fn a_message_whose_summary_would_pass_the_readers_cap_is_sealed_with_a_lean_one() {
    // Eleven parts, each with a Content-Description of a million control
    // octets: JSON writes each as `\u0001`, so the full summary would be
    // about 66 MB, its armor past the readers' 64 MiB: a message sealed
    // so could never be opened. A lean summary is written instead.
    let (sealer, ids) = keys();
    let mut m = b"From: a@example.test\r\nSubject: lean\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        .to_vec();
    for n in 0..11 {
        m.extend_from_slice(
            b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: ",
        );
        m.extend(std::iter::repeat_n(1u8, 1_000_000));
        m.extend_from_slice(format!("\r\n\r\npart {n}\r\n").as_bytes());
    }
    m.extend_from_slice(b"--b--\r\n");
    let stored = seal(&sealer, &m);
    let summary = read_summary(Cursor::new(&stored), &ids).expect("readable");
    assert_eq!(summary.root.parts.len(), 11);
    for part in &summary.root.parts {
        assert_eq!(part.description, None);
        assert_eq!(
            part.param("charset"),
            Some("utf-8"),
            "short parameters stay"
        );
    }
    assert!(
        summary.root.header.is_some(),
        "the message's own header stays"
    );
    assert_eq!(open_bytes(&ids, &stored).unwrap(), m);
    let _ = view::body_structure_bytes(&summary.root, true);
    // The same through Content-Transfer-Encoding and an unparsable
    // Content-Type, which a lean summary keeps cut.
    for field in ["Content-Transfer-Encoding", "Content-Type"] {
        let mut m = b"Subject: lean\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            .to_vec();
        for n in 0..11 {
            m.extend_from_slice(format!("--b\r\n{field}: x").as_bytes());
            m.extend(std::iter::repeat_n(1u8, 1_000_000));
            m.extend_from_slice(format!("\r\n\r\npart {n}\r\n").as_bytes());
        }
        m.extend_from_slice(b"--b--\r\n");
        let stored = seal(&sealer, &m);
        let summary = read_summary(Cursor::new(&stored), &ids).expect(field);
        assert_eq!(summary.root.parts.len(), 11, "{field}");
        assert_eq!(open_bytes(&ids, &stored).unwrap(), m, "{field}");
    }
    // A message of ordinary size keeps every field.
    let small = b"Content-Type: text/plain\r\nContent-Description: kept\r\n\r\nx\r\n";
    let s = read_summary(Cursor::new(&seal(&sealer, small)), &ids).unwrap();
    assert_eq!(s.root.description.as_deref(), Some("kept"));
}
