//! Telling a mailbox job's sealed copies apart: each carries a token in
//! its marker, `X-Writ: v=1; key=<epoch>; copy=<batch>.<uid>` (FORMAT.md,
//! "Copy tokens"), where `<batch>` is 16 random lowercase hex digits drawn
//! once per batch and `<uid>` the UID of the original it copies.
//!
//! Invariants:
//! - A token names exactly one APPEND: a batch id is never reused, an
//!   original occurs once in a batch. So one token, at most one copy.
//! - Nothing here decides that a message is a copy of an original: the
//!   token only says which original to compare it with; the mover keeps
//!   or removes a copy only after opening it and comparing what it opens
//!   to with the original's hash.
//! - Readers ignore the parameter (FORMAT.md section 9: unknown names are
//!   ignored); opening drops the marker, so the token never reaches M.

use ring::rand::{SecureRandom, SystemRandom};

use crate::envelope::header;

/// The marker parameter that carries the token.
pub const PARAM: &str = "copy";

/// A fresh batch id: 16 random lowercase hex digits; `None` if the system
/// random source fails.
pub fn batch_id() -> Option<String> {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(crate::hash::hex(&bytes))
}

/// The token of the copy of original `uid` in batch `batch`.
pub fn token(batch: &str, uid: u32) -> String {
    format!("{batch}.{uid}")
}

/// Adds `; copy=<token>` to the marker line starting at `at` in `sealed`
/// (where the sealer wrote `X-Writ: v=1; key=...` CRLF). False, and
/// nothing changed, if there is no marker line there.
pub fn mark(sealed: &mut Vec<u8>, at: usize, token: &str) -> bool {
    let Some(rest) = sealed.get(at..) else {
        return false;
    };
    if !rest.starts_with(b"X-Writ:") {
        return false;
    }
    // The marker line is short: look no further than one line may be.
    let Some(eol) = rest
        .iter()
        .take(998)
        .zip(rest.iter().skip(1))
        .position(|(&a, &b)| a == b'\r' && b == b'\n')
    else {
        return false;
    };
    let insert = format!("; {PARAM}={token}");
    sealed.splice(at + eol..at + eol, insert.into_bytes());
    true
}

/// The token in the first `X-Writ` field of a header block, if any.
pub fn token_of(header_block: &[u8]) -> Option<String> {
    let fields = header::fields(header_block);
    let marker = fields.iter().find(|f| f.is("x-writ"))?;
    let value = marker.value();
    let text = std::str::from_utf8(&value).ok()?;
    text.split(';').find_map(|item| {
        let (k, v) = item.split_once('=')?;
        let v = v.trim();
        let valid = !v.is_empty()
            && v.len() <= 40
            && v.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'.' || b.is_ascii_digit());
        (k.trim().eq_ignore_ascii_case(PARAM) && valid).then(|| v.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_copy_is_still_sealed_under_the_same_epoch_and_names_its_token() {
        let mut sealed = b"Received: x\r\nX-Writ: v=1; key=0123456789abcdef\r\nFrom: a\r\n\
            Content-Type: multipart/encrypted;\r\n protocol=\"application/vnd.writ.sealed\";\r\n \
            boundary=\"b\"\r\n\r\n"
            .to_vec();
        let batch = batch_id().unwrap();
        assert_eq!(batch.len(), 16);
        let t = token(&batch, 42);
        assert!(mark(&mut sealed, 13, &t));
        let head = String::from_utf8(sealed.clone()).unwrap();
        assert!(
            head.contains(&format!(
                "X-Writ: v=1; key=0123456789abcdef; copy={t}\r\nFrom: a"
            )),
            "{head}"
        );
        assert_eq!(token_of(&sealed), Some(t));
        let detected = crate::envelope::detect(&sealed).unwrap();
        assert_eq!(detected.epoch, "0123456789abcdef");
    }

    #[test]
    fn no_marker_line_there_no_change() {
        let mut m = b"From: a\r\nX-Writ: v=1; key=0123456789abcdef\r\n\r\n".to_vec();
        let before = m.clone();
        assert!(!mark(&mut m, 0, "ab.1"));
        assert!(!mark(&mut m, 500, "ab.1"));
        assert_eq!(m, before);
        assert_eq!(token_of(&m), None);
    }

    #[test]
    fn tokens_are_read_leniently_and_garbage_is_not_a_token() {
        let h = b"X-Writ: v=1;\r\n key=0123456789abcdef;  COPY=00AB.7 \r\n\r\n";
        assert_eq!(token_of(h), Some("00ab.7".into()));
        let h = b"X-Writ: v=1; key=0123456789abcdef; copy=\"x y\"\r\n\r\n";
        assert_eq!(token_of(h), None);
        assert_ne!(batch_id(), batch_id());
    }
}
