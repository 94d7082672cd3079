//! Entry points of the envelope's fuzz targets (`fuzz/fuzz_targets/
//! summary.rs`, `sealed.rs`, `armor.rs`) and of the bounded property test
//! that runs the same code on stable in every `cargo test`
//! (`tests/envelope_fuzz.rs`): the readers of outside bytes — the
//! summary's JSON and its conversion, the sealed container (detection,
//! opening, reading the summary) and armor decoding — given anything.
//!
//! Whatever comes in, a reader must not panic, must not overflow the stack
//! and must not return a summary past the writer's caps or inconsistent
//! with what it opened. The checks below are assertions: a fuzzer reports
//! them as crashes.
//!
//! [`forge`] builds a sealed message the way an attacker can (the epoch
//! recipient is public): any summary bytes and any payload, encrypted to a
//! recipient. Tests use it to reach the JSON reader through the real
//! decryption path.

use std::io::{Cursor, Write};
use std::sync::OnceLock;

use super::summary::{MAX_DEPTH, MAX_MESSAGE_SIZE, MAX_PARTS, Part, Summary};
use super::{Keys, detect, open, open_summary, open_with_summary, read_summary, view};

/// The epoch id forged messages name in their marker.
pub const EPOCH: &str = "0123456789abcdef";

struct Fixture {
    identities: Vec<age::x25519::Identity>,
    /// A real sealed message of a small multipart M.
    sealed: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let identity = age::x25519::Identity::generate();
        let sealer = super::Sealer::new(EPOCH, vec![identity.to_public()]);
        let m = b"From: a@example.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n--b--\r\n";
        let mut sealed = Vec::new();
        // A fixed message and a fresh key: sealing cannot fail here.
        let _ = sealer.seal(&m[..], &mut sealed);
        Fixture {
            identities: vec![identity],
            sealed,
        }
    })
}

/// The recipient the fixture's identity opens: what an attacker knows.
pub fn recipient() -> age::x25519::Recipient {
    fixture().identities[0].to_public()
}

/// `data` age-encrypted to `recipient`, in armor (LF line endings, as age
/// writes it). Encryption to a valid recipient into memory cannot fail;
/// should it, the result is empty (and opens as damaged).
pub fn encrypt_armored(recipient: &age::x25519::Recipient, data: &[u8]) -> Vec<u8> {
    let run = || -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))?;
        let armored =
            age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)?;
        let mut w = encryptor.wrap_output(armored)?;
        w.write_all(data)?;
        Ok(w.finish()?.finish()?)
    };
    run().unwrap_or_default()
}

/// A sealed message (format v1, marker `v=<version>`, epoch `epoch`)
/// whose part 1 is `summary_json` and whose payload is `m`, both encrypted
/// to `recipient`: what anyone holding the public recipient can send.
pub fn forge(
    recipient: &age::x25519::Recipient,
    version: u32,
    epoch: &str,
    summary_json: &[u8],
    m: &[u8],
) -> Vec<u8> {
    let boundary = "=_writ_00000000000000000000000000000000";
    let mut out = format!(
        "X-Writ: v={version}; key={epoch}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"{}\";\r\n boundary=\"{boundary}\"\r\n\r\nforged\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
        super::SEALED_PROTOCOL,
        super::SEALED_PROTOCOL,
    )
    .into_bytes();
    out.extend(encrypt_armored(recipient, summary_json));
    out.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream; name=\"message.age\"\r\n\r\n")
            .as_bytes(),
    );
    out.extend(encrypt_armored(recipient, m));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// What every reader of a [`Summary`] does with one, and the caps a
/// summary that a reader accepted must respect.
fn use_summary(s: &Summary) {
    let mut depth_of: Vec<(&Part, usize)> = vec![(&s.root, 1)];
    let mut count = 0usize;
    while let Some((p, depth)) = depth_of.pop() {
        count += 1;
        assert!(depth <= MAX_DEPTH, "a summary deeper than the cap");
        assert!(p.body_offset.saturating_add(p.body_size) <= s.size);
        depth_of.extend(p.parts.iter().map(|c| (c, depth + 1)));
    }
    assert!(count <= MAX_PARTS, "a summary with more parts than the cap");
    assert!(s.size <= MAX_MESSAGE_SIZE && s.bare_lf <= s.size);
    let _ = view::rfc822_size(s);
    let _ = view::body_structure_bytes(&s.root, true);
    let _ = view::body_structure_bytes(&s.root, false);
    let _ = view::envelope_bytes(s.root.header.as_deref().unwrap_or_default());
    let shifted = s.clone().with_prefix(b"Received: by x\r\nX-Bare: y\n");
    let _ = view::rfc822_size(&shifted);
    for path in [&[1][..], &[1, 1], &[2, 1, 3], &[u32::MAX]] {
        let _ = s.root.section(path);
    }
    let copy = s.clone();
    assert_eq!(&copy, s);
    // What was read writes back and reads again as itself.
    let json = serde_json::to_vec(s).unwrap_or_default();
    let again: Result<Summary, _> = serde_json::from_slice(&json);
    assert_eq!(again.ok().as_ref(), Some(s));
}

/// The summary's decoded form: `data` as the summary JSON (what part 1
/// holds once decrypted). Returns whether it was accepted.
pub fn summary_json(data: &[u8]) -> bool {
    match serde_json::from_slice::<Summary>(data) {
        Ok(s) => {
            use_summary(&s);
            true
        }
        Err(_) => false,
    }
}

/// The same JSON reached the way an attacker delivers it: encrypted to
/// the public recipient, in a forged sealed message whose payload is
/// `m`, through every reader of a stored message.
pub fn sealed_summary(summary: &[u8], m: &[u8]) {
    let stored = forge(&recipient(), 1, EPOCH, summary, m);
    stored_message(&stored);
}

/// The sealed container: `data` is a stored message. The first byte picks
/// the mode: 0 — `data` as it is; otherwise a real sealed message with
/// `data` written over it (each 3-byte group: position high, position
/// low, octet), or cut short at a position `data` chooses.
pub fn sealed(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 3 {
        0 => stored_message(data),
        1 => stored_message(&mutated(&f.sealed, data)),
        _ => {
            let cut = data.iter().fold(0usize, |n, &b| {
                n.wrapping_mul(31).wrapping_add(usize::from(b))
            });
            let stored = &f.sealed[..cut % (f.sealed.len() + 1)];
            stored_message(stored);
        }
    }
}

/// Every reader of a whole stored message, and the agreement between them.
fn stored_message(stored: &[u8]) {
    let f = fixture();
    let ids = &f.identities;
    let head_end = super::header::header_end(stored).unwrap_or(stored.len());
    let detected = detect(&stored[..head_end]);
    let _ = super::stored_prefix(&stored[..head_end]);
    let summary = read_summary(Cursor::new(stored), ids);
    if let Ok(s) = &summary {
        use_summary(s);
    }
    let mut m = Vec::new();
    let opened = open(Cursor::new(stored), ids, &mut m);
    let mut m2 = Vec::new();
    // `open` may succeed where this fails: when no summary precedes the
    // payload. Where this succeeds, what is served and what is listed
    // agree.
    if let Ok((o, s)) = open_with_summary(Cursor::new(stored), ids, &mut m2) {
        let prefix = super::stored_prefix(&stored[..head_end]);
        assert_eq!(o.size, prefix.len() as u64 + s.size);
        assert_eq!(m2.len() as u64, o.size);
        assert!(
            opened.is_ok(),
            "open failed where open_with_summary did not"
        );
        assert_eq!(summary.as_ref().ok(), Some(&s));
    }
    drop(opened);
    if let Some(d) = detected {
        let _ = super::open_summary_of(stored, None, &d, ids);
    }
}

/// Armor and transfer decoding: `data` is part 1's body as fetched, the
/// first byte picks its Content-Transfer-Encoding.
pub fn armor(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let cte = match mode % 4 {
        0 => None,
        1 => Some("base64"),
        2 => Some("quoted-printable"),
        _ => Some("7bit"),
    };
    let ids = &fixture().identities;
    if let Ok(s) = open_summary(data, cte, EPOCH, ids) {
        use_summary(&s);
    }
    // Unknown epochs are refused before anything is read.
    let none: Vec<age::x25519::Identity> = Vec::new();
    assert!(open_summary(data, cte, EPOCH, &none).is_err());
    let _ = none.identities(EPOCH);
}

/// `base` with bytes of `data` written over it: each 3-byte group of
/// `data` is (position high, position low, byte). Shared by every fuzz
/// entry point that mutates a real message.
pub fn mutated(base: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    if out.is_empty() {
        return out;
    }
    for g in data.chunks_exact(3) {
        let pos = (usize::from(g[0]) << 8 | usize::from(g[1])) * 7 % out.len();
        out[pos] = g[2];
    }
    out
}
