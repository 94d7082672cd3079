//! The sealed-message format end to end, without a network: byte-exact
//! round trips over generated and malformed messages, idempotence, and
//! opening after the re-encodings providers are known to apply.

use std::io::Cursor;

use age::x25519::Identity;
use proptest::prelude::*;
use writ::envelope::{self, EnvelopeError, Sealed, Sealer, detect, open, read_summary};

const EPOCH: &str = "0123456789abcdef";

fn keys() -> (Sealer, Vec<Identity>) {
    let id = Identity::generate();
    let sealer = Sealer::new(EPOCH, vec![id.to_public()]);
    (sealer, vec![id])
}

fn seal(sealer: &Sealer, m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal(m, &mut out).expect("seal");
    out
}

fn open_bytes(ids: &Vec<Identity>, sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    open(Cursor::new(sealed), ids, &mut out)?;
    Ok(out)
}

fn roundtrip(m: &[u8]) {
    let (sealer, ids) = keys();
    let sealed = seal(&sealer, m);
    assert!(detect(&sealed[..sealed.len().min(4096)]).is_some() || detect(&sealed).is_some());
    let opened = open_bytes(&ids, &sealed).expect("open");
    assert_eq!(opened, m, "open(seal(m)) != m");
    let summary = read_summary(Cursor::new(&sealed), &ids).expect("summary");
    assert_eq!(summary.size, m.len() as u64);
}

#[test]
fn empty_input() {
    roundtrip(b"");
}

#[test]
fn header_only_without_blank_line() {
    roundtrip(b"Subject: no body\r\nFrom: a@example.test");
    roundtrip(b"Subject: no body\r\n");
}

#[test]
fn bare_lf_cr_alone_nul_and_8bit() {
    roundtrip(b"Subject: lf\nFrom: a@b\n\nbody\nline\n");
    roundtrip(b"Subject: cr\rFrom: a@b\r\r\rbody\r");
    roundtrip(b"Subject: \x00nul\r\nX-8: \xe9\xff\r\n\r\n\x00\x01\xfe\xff body\r\n");
}

#[test]
fn lines_over_998_octets() {
    let mut m = b"Subject: ".to_vec();
    m.extend(std::iter::repeat_n(b'a', 5000));
    m.extend_from_slice(b"\r\nX-Long: ");
    m.extend(std::iter::repeat_n(b'b', 3000));
    m.extend_from_slice(b"\r\n\r\n");
    m.extend(std::iter::repeat_n(b'c', 100_000));
    roundtrip(&m);
    // A too-long unprotected field stays inside only.
    let (sealer, _) = keys();
    let sealed = seal(&sealer, &m);
    assert!(!sealed.windows(100).any(|w| w.iter().all(|&b| b == b'b')));
}

#[test]
fn ten_thousand_header_fields() {
    let mut m = Vec::new();
    for i in 0..5_000 {
        m.extend_from_slice(format!("X-Field-{i}: value {i}\r\nReceived: hop {i}\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: many\r\n\r\nbody\r\n");
    roundtrip(&m);
    let (sealer, _) = keys();
    let sealed = seal(&sealer, &m);
    // Every outer field goes outside, the last one too; the others stay
    // inside (FORMAT.md section 5, revision 3).
    assert!(sealed.windows(19).any(|w| w == b"Received: hop 4999\r"));
    assert!(!sealed.windows(8).any(|w| w == b"X-Field-"));
}

#[test]
fn multiparts_nested_1000_deep() {
    let mut m = Vec::new();
    for i in 0..1000 {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n")
                .as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\ndeep\r\n");
    for i in (0..1000).rev() {
        m.extend_from_slice(format!("--n{i}--\r\n").as_bytes());
    }
    roundtrip(&m);
    let (sealer, ids) = keys();
    let sealed = seal(&sealer, &m);
    let s = read_summary(Cursor::new(&sealed), &ids).unwrap();
    let mut depth = 0;
    let mut p = &s.root;
    while let Some(c) = p.parts.first() {
        p = c;
        depth += 1;
    }
    assert!(depth < 1000, "the scanner must cap nesting");
    assert!(p.opaque, "content past the cap is opaque");
}

#[test]
fn missing_and_duplicated_boundaries() {
    roundtrip(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nno close\r\n");
    roundtrip(b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter at all\r\n");
    roundtrip(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nno boundary param\r\n--x--\r\n");
    roundtrip(
        b"Content-Type: multipart/mixed; boundary=x; boundary=y\r\n\r\n--x\r\n\r\na\r\n--x\r\n--x\r\n\r\nb\r\n--x--\r\n--x--\r\n",
    );
}

#[test]
fn broken_encoded_words() {
    roundtrip(b"Subject: =?utf-8?B?broken===?= =?unknown?Q?x?= =?utf-8?Q?=ZZ?=\r\n\r\nx\r\n");
}

#[test]
fn subject_and_body_never_appear_outside() {
    let (sealer, _) = keys();
    let m = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: merger plans\r\nThread-Topic: merger plans\r\nContent-Type: text/plain\r\nX-Secret: kept\r\n\r\nThe body is secret.\r\n";
    let sealer = sealer.protect(["X-Secret".to_string()]);
    let sealed = seal(&sealer, m);
    let s = String::from_utf8_lossy(&sealed);
    assert!(!s.contains("merger"), "{s}");
    assert!(!s.contains("secret"));
    assert!(!s.contains("kept"));
    assert!(s.starts_with("X-Writ: v=1; key=0123456789abcdef\r\nFrom: a@example.test\r\nTo: b@example.test\r\nSubject: [...]\r\n"));
    // Every line of the sealed message ends in CRLF and is short.
    for line in sealed.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"));
        assert!(line.len() <= 1000);
    }
}

/// The outer header of a sealed message: its fields between the marker
/// and the writer's own Subject placeholder / MIME fields.
fn outer_fields(sealed: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(sealed);
    let head = &text[..text.find("\r\n\r\n").unwrap() + 2];
    let mut fields: Vec<String> = Vec::new();
    for line in head.split_inclusive("\r\n") {
        match fields.last_mut() {
            Some(f) if line.starts_with([' ', '\t']) => f.push_str(line),
            _ => fields.push(line.to_string()),
        }
    }
    fields
}

#[test]
fn only_routing_threading_and_list_fields_go_outside() {
    // A third-party message (Emacs VM's X-VM-v5-Data keeps the Subject
    // text) with the fields a provider needs and the fields it does not.
    let m = b"Received: from mx.example.test by mail.example.test; Fri, 27 Nov 2026 09:00:00 +0000\r\nX-VM-v5-Data: ([nil nil nil nil nil nil nil nil nil]\r\n\t[\"merger plans with Acme\" \"Friday\" \"ann@example.test\"])\r\nFrom: Ann <ann@example.test>\r\nTo: bob@example.test\r\nCc: carol@example.test\r\nBcc: dave@example.test\r\nSubject: merger plans with Acme\r\nDate: Fri, 27 Nov 2026 09:00:00 +0000\r\nMessage-ID: <1@example.test>\r\nIn-Reply-To: <0@example.test>\r\nReferences: <0@example.test>\r\nReply-To: ann@example.test\r\nSender: ann@example.test\r\nReturn-Path: <ann@example.test>\r\nDelivered-To: bob@example.test\r\nList-Id: <deals.example.test>\r\nlist-unsubscribe: <mailto:x@example.test>\r\nAuto-Submitted: no\r\nPrecedence: list\r\nDKIM-Signature: v=1; d=example.test\r\nARC-Seal: i=1; cv=none\r\nAuthentication-Results: mx.example.test; dkim=pass\r\nX-Mailer: MergerMail 1.0 (Acme deal edition)\r\nUser-Agent: VM 8.2 (merger plans)\r\nOrganization: Acme merger team\r\nX-Loop: deals\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nsecret body\r\n";
    let (sealer, ids) = keys();
    let sealed = seal(&sealer, m);
    let outer = outer_fields(&sealed);
    let names: Vec<&str> = outer.iter().map(|f| f.split(':').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "X-Writ",
            "Received",
            "From",
            "To",
            "Cc",
            "Bcc",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "Reply-To",
            "Sender",
            "Return-Path",
            "Delivered-To",
            "List-Id",
            "list-unsubscribe",
            "Auto-Submitted",
            "Precedence",
            "DKIM-Signature",
            "ARC-Seal",
            "Authentication-Results",
            "Subject",
            "MIME-Version",
            "Content-Type",
        ]
    );
    let text = String::from_utf8_lossy(&sealed);
    for leak in ["merger", "Acme", "MergerMail", "VM 8.2", "X-Loop", "secret"] {
        assert!(!text.contains(leak), "{leak} is outside");
    }
    // Opening stays byte-exact.
    assert_eq!(open_bytes(&ids, &sealed).unwrap(), m);

    // A deployment adds fields; protection still wins.
    let sealer = Sealer::new(EPOCH, vec![ids[0].to_public()])
        .allow_outside(["x-loop".to_string(), "Organization".to_string()])
        .protect(["Organization".to_string()]);
    let sealed = seal(&sealer, m);
    let outer = outer_fields(&sealed);
    assert!(outer.iter().any(|f| f == "X-Loop: deals\r\n"), "{outer:?}");
    assert!(!outer.iter().any(|f| f.starts_with("Organization")));
    assert_eq!(open_bytes(&ids, &sealed).unwrap(), m);

    // The configuration reaches the sealer every component builds.
    let config = writ::config::SealConfig {
        outer_fields: vec!["X-Loop".into()],
        ..Default::default()
    };
    let sealer = writ::keys::external_sealer(EPOCH.into(), vec![ids[0].to_public()], &config);
    let outer = outer_fields(&seal(&sealer, m));
    assert!(outer.iter().any(|f| f == "X-Loop: deals\r\n"), "{outer:?}");
    assert!(!outer.iter().any(|f| f.starts_with("X-Mailer")));
}

#[test]
fn sealing_a_sealed_message_returns_it_unchanged() {
    let (sealer, _) = keys();
    let sealed = seal(&sealer, b"Subject: x\r\n\r\nbody\r\n");
    let mut again = Vec::new();
    let outcome = sealer.seal(&sealed[..], &mut again).unwrap();
    assert!(matches!(outcome, Sealed::AlreadySealed { .. }));
    assert_eq!(again, sealed);
}

#[test]
fn only_trace_and_verdict_fields_above_the_marker_are_kept() {
    // The provider is not trusted: a Reply-To, From or Subject it puts
    // above the marker would change what the client takes for the
    // sealed message (its replies sent where the provider says). Opening
    // keeps trace and verdict fields only, in every reader.
    let (sealer, ids) = keys();
    let m = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n";
    let mut stored = b"Reply-To: thief@evil.test\r\nReceived: from provider\r\n by mx\r\n\
        Subject: urgent\r\nAuthentication-Results: mx; dkim=pass\r\n\
        From: ceo@example.test\r\nX-Spam: no\r\nARC-Seal: i=1\r\n"
        .to_vec();
    stored.extend(seal(&sealer, m));
    let kept: &[u8] = b"Received: from provider\r\n by mx\r\n\
        Authentication-Results: mx; dkim=pass\r\nX-Spam: no\r\nARC-Seal: i=1\r\n";
    let opened = open_bytes(&ids, &stored).unwrap();
    assert_eq!(opened, [kept, &m[..]].concat());
    let head_end = envelope::header::header_end(&stored).unwrap();
    assert_eq!(envelope::stored_prefix(&stored[..head_end]), kept);
    let summary = read_summary(Cursor::new(&stored), &ids)
        .unwrap()
        .with_prefix(kept);
    assert_eq!(summary.size, opened.len() as u64);
}

#[test]
fn fields_above_the_marker_are_prepended() {
    let (sealer, ids) = keys();
    let m = b"Subject: x\r\n\r\nbody\r\n";
    let mut stored =
        b"Received: from provider\r\n by mx; Fri, 27 Nov 2026\r\nX-Spam: no\r\n".to_vec();
    stored.extend(seal(&sealer, m));
    let opened = open_bytes(&ids, &stored).unwrap();
    let mut want =
        b"Received: from provider\r\n by mx; Fri, 27 Nov 2026\r\nX-Spam: no\r\n".to_vec();
    want.extend_from_slice(m);
    assert_eq!(opened, want);
}

fn sample() -> Vec<u8> {
    let mut m = b"From: a@example.test\r\nSubject: sample\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nh\xc3\xa9llo\r\n--zz\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    m.extend((0..200_000u32).map(|i| (i * 7 % 251) as u8));
    m.extend_from_slice(b"\r\n--zz--\r\n");
    m
}

/// Splits a sealed message into header and the two parts' bodies, and
/// rebuilds it with `f` applied to each part (the part header lines and
/// the body), as a provider that re-encodes would.
fn reencode_parts(sealed: &[u8], f: impl Fn(&[u8]) -> (String, Vec<u8>)) -> Vec<u8> {
    let text = sealed;
    let hdr_end = envelope::header::header_end(text).unwrap();
    let header = &text[..hdr_end];
    let ct = envelope::header::first_value(header, "content-type").unwrap();
    let params = envelope::header::parse_params(&ct);
    let delim = format!("--{}", params.param("boundary").unwrap());
    let body = &text[hdr_end..];
    let s = String::from_utf8(body.to_vec()).unwrap();
    let chunks: Vec<&str> = s.split(&delim).collect();
    // chunks: preamble, part1, part2, "--\r\n"
    let mut out = header.to_vec();
    out.extend_from_slice(chunks[0].as_bytes());
    for part in &chunks[1..3] {
        let part = part.strip_prefix("\r\n").unwrap();
        let (phead, pbody) = part.split_once("\r\n\r\n").unwrap();
        let pbody = pbody.strip_suffix("\r\n").unwrap();
        let (cte, encoded) = f(pbody.as_bytes());
        out.extend_from_slice(
            format!("{delim}\r\n{phead}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(&encoded);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{delim}--\r\n").as_bytes());
    out
}

#[test]
fn opens_after_parts_are_reencoded_as_base64() {
    use base64::Engine;
    let (sealer, ids) = keys();
    let m = sample();
    let sealed = seal(&sealer, &m);
    let stored = reencode_parts(&sealed, |b| {
        let enc = base64::engine::general_purpose::STANDARD.encode(b);
        let wrapped: Vec<u8> = enc
            .as_bytes()
            .chunks(76)
            .flat_map(|c| c.iter().copied().chain(*b"\r\n"))
            .collect();
        ("base64".into(), wrapped)
    });
    assert_ne!(stored, sealed);
    assert_eq!(open_bytes(&ids, &stored).unwrap(), m);
    assert_eq!(
        read_summary(Cursor::new(&stored), &ids).unwrap().size,
        m.len() as u64
    );
}

#[test]
fn opens_after_parts_are_reencoded_as_quoted_printable() {
    let (sealer, ids) = keys();
    let m = sample();
    let sealed = seal(&sealer, &m);
    let stored = reencode_parts(&sealed, |b| {
        // Encode '=' and every 'A' (to prove decoding happens), soft-wrap at 70.
        let mut out = Vec::new();
        let mut col = 0;
        for &c in b {
            let piece: Vec<u8> = match c {
                b'=' | b'A' => format!("={c:02X}").into_bytes(),
                _ => vec![c],
            };
            if c == b'\n' {
                col = 0;
            } else if col + piece.len() > 70 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            col += piece.len();
            out.extend(piece);
        }
        ("quoted-printable".into(), out)
    });
    assert_ne!(stored, sealed);
    assert_eq!(open_bytes(&ids, &stored).unwrap(), m);
}

#[test]
fn opens_after_headers_are_refolded() {
    let (sealer, ids) = keys();
    let m = sample();
    let sealed = seal(&sealer, &m);
    let hdr_end = envelope::header::header_end(&sealed).unwrap();
    let header = String::from_utf8(sealed[..hdr_end].to_vec()).unwrap();
    // Unfold everything, then fold at every "; " and space, as Exchange does.
    let unfolded = header.replace("\r\n ", " ").replace("\r\n\t", " ");
    let refolded = unfolded
        .replace("; ", ";\r\n\t")
        .replace("X-Writ: v=1;\r\n\t", "X-Writ:\r\n v=1;\r\n  ");
    let mut stored = refolded.into_bytes();
    stored.extend_from_slice(&sealed[hdr_end..]);
    assert_ne!(stored, sealed);
    assert!(detect(&stored).is_some());
    assert_eq!(open_bytes(&ids, &stored).unwrap(), m);
}

#[test]
fn opens_after_line_endings_change() {
    let (sealer, ids) = keys();
    let m = sample();
    let sealed = seal(&sealer, &m);
    // The container is ASCII: a store that keeps LF only turns every CRLF
    // into LF. M inside the payload is untouched by that.
    let stored: Vec<u8> = String::from_utf8(sealed)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    assert_eq!(open_bytes(&ids, &stored).unwrap(), m);
    assert_eq!(
        read_summary(Cursor::new(&stored), &ids).unwrap().size,
        m.len() as u64
    );
}

#[test]
fn damaged_armor_is_an_error_naming_the_damage() {
    let (sealer, ids) = keys();
    let sealed = seal(&sealer, &sample());
    let s = String::from_utf8(sealed).unwrap();
    // Flip a character in the payload armor.
    let pos = s.rfind("-----END AGE").unwrap() - 200;
    let mut damaged = s.clone().into_bytes();
    damaged[pos] = if damaged[pos] == b'A' { b'B' } else { b'A' };
    let err = open_bytes(&ids, &damaged).unwrap_err();
    assert!(matches!(err, EnvelopeError::Damaged(_)), "{err}");
    // Cut the armor short.
    let cut = &s.as_bytes()[..s.len() - 400];
    let err = open_bytes(&ids, cut).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    // A foreign key.
    let other = vec![Identity::generate()];
    let err = open_bytes(&other, s.as_bytes()).unwrap_err();
    assert!(matches!(err, EnvelopeError::NoMatchingKey), "{err}");
    // Not sealed at all.
    let err = open_bytes(&ids, b"Subject: plain\r\n\r\nx").unwrap_err();
    assert!(matches!(err, EnvelopeError::NotSealed), "{err}");
}

#[test]
fn large_message_spills_ciphertext_and_round_trips() {
    let id = Identity::generate();
    let sealer = Sealer::new(EPOCH, vec![id.to_public()]).spill_threshold(64 * 1024);
    let m = sample().repeat(10);
    let sealed = seal(&sealer, &m);
    assert_eq!(open_bytes(&vec![id], &sealed).unwrap(), m);
}

/// Generated messages: header fields, line endings, nested multiparts with
/// and without their boundaries, arbitrary bytes.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..])];
    let field = (
        prop_oneof![
            Just("Subject".to_string()),
            Just("From".to_string()),
            Just("Content-Type".to_string()),
            "[A-Za-z-]{1,12}",
        ],
        proptest::collection::vec(any::<u8>(), 0..40),
    );
    let fields = proptest::collection::vec((field, eol.clone()), 0..12);
    let body = proptest::collection::vec(any::<u8>(), 0..400);
    let parts = proptest::collection::vec(
        (
            proptest::collection::vec(any::<u8>(), 0..80),
            any::<bool>(),
            any::<bool>(),
        ),
        0..5,
    );
    (
        fields,
        any::<bool>(),
        eol,
        body,
        parts,
        "[a-z]{1,8}",
        0u8..4,
    )
        .prop_map(|(fields, blank, eol, body, parts, boundary, nest)| {
            let mut m = Vec::new();
            for ((name, value), e) in fields {
                m.extend_from_slice(name.as_bytes());
                m.extend_from_slice(b": ");
                m.extend_from_slice(&value);
                m.extend_from_slice(e);
            }
            if !parts.is_empty() {
                for n in 0..nest {
                    m.extend_from_slice(
                        format!("Content-Type: multipart/mixed; boundary={boundary}{n}").as_bytes(),
                    );
                    m.extend_from_slice(eol);
                    m.extend_from_slice(eol);
                    m.extend_from_slice(format!("--{boundary}{n}").as_bytes());
                    m.extend_from_slice(eol);
                }
                m.extend_from_slice(
                    format!("Content-Type: multipart/alternative; boundary={boundary}").as_bytes(),
                );
                m.extend_from_slice(eol);
            }
            if blank {
                m.extend_from_slice(eol);
            }
            m.extend_from_slice(&body);
            for (content, delimit, close) in parts {
                if delimit {
                    m.extend_from_slice(
                        format!("{}--{boundary}", std::str::from_utf8(eol).unwrap_or("\n"))
                            .as_bytes(),
                    );
                    m.extend_from_slice(eol);
                }
                m.extend_from_slice(&content);
                if close {
                    m.extend_from_slice(format!("--{boundary}--").as_bytes());
                }
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn open_of_seal_is_identity(m in message()) {
        let (sealer, ids) = keys();
        let sealed = seal(&sealer, &m);
        let opened = open_bytes(&ids, &sealed).expect("open");
        prop_assert_eq!(opened, m.clone());
        let summary = read_summary(Cursor::new(&sealed), &ids).expect("summary");
        prop_assert_eq!(summary.size, m.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_round_trip(m in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let (sealer, ids) = keys();
        let sealed = seal(&sealer, &m);
        prop_assert_eq!(open_bytes(&ids, &sealed).expect("open"), m);
    }

    #[test]
    fn opening_garbage_never_panics(m in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let ids = vec![Identity::generate()];
        let _ = open_bytes(&ids, &m);
        let _ = read_summary(Cursor::new(&m), &ids);
    }
}

// Hostile summaries, forged as anyone holding the public epoch recipient
// can: tests/envelope/hostile.rs.
#[path = "envelope/hostile.rs"]
mod hostile;
