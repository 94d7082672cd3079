//! `BINARY[<part>]` and `BINARY.SIZE[<part>]` (RFC 3516) of an opened
//! message: the section with its Content-Transfer-Encoding undone, byte
//! for byte as Dovecot 2.3 answers them for the message stored in
//! plaintext (`tests/imap_binary.rs` holds writ to that).
//!
//! What Dovecot does, and so writ:
//!
//! - A leaf part: base64 and quoted-printable decoded; `binary` as it is;
//!   7bit, 8bit or none with every bare LF made CRLF (NULs kept). A part
//!   that does not exist is the empty string.
//! - The whole message, a multipart part or a message/rfc822 part (its
//!   message): the section as `BODY[]` delimits it, each base64 or
//!   quoted-printable leaf inside with its body decoded and its
//!   Content-Transfer-Encoding field made `Content-Transfer-Encoding:
//!   binary`; NULs kept, bare LFs made CRLF outside `binary` leaves.
//! - The answer is a literal8 (`~{n}`) when anything was decoded or kept
//!   binary (base64, quoted-printable, `binary`) or it holds a NUL, and a
//!   literal otherwise; a `<partial>` takes its form from the whole.
//! - An unknown encoding refuses the section (`NO [UNKNOWN-CTE]`), a
//!   base64 or quoted-printable body that does not decode cleanly refuses
//!   it too (`NO [PARSE]`): the first such leaf inside the section, in
//!   message order. `BINARY.SIZE` of a part that exists looks at every
//!   leaf of the message (Dovecot sizes them all at once).
//!
//! Memory: the answer is at most twice the opened message (bare LFs made
//! CRLF), the same bound as `BODY[]` answers; no recursion (an explicit
//! stack over the summary, whose depth is capped).

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;

use imap_next::imap_types::core::Vec1;
use imap_next::imap_types::fetch::Part as PartNumber;

use super::{body_range, encapsulates, entity, header_range};
use crate::envelope::summary::{Part, Summary};
use crate::imap::search::mime::qp_decode;

/// Why a BINARY section is refused: the tagged NO's code and text, as
/// Dovecot writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An encoding writ (and Dovecot) does not know.
    UnknownCte,
    /// A base64 or quoted-printable body that does not decode.
    Invalid,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::UnknownCte => "UNKNOWN-CTE",
            Refusal::Invalid => "PARSE",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Refusal::UnknownCte => "Unknown Content-Transfer-Encoding",
            Refusal::Invalid => "Invalid data in MIME part",
        }
    }
}

/// A decoded section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    /// Sent as a literal8 (`~{n}`).
    pub literal8: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    /// 7bit, 8bit or none: line breaks made CRLF.
    Lines,
    Binary,
    Base64,
    QuotedPrintable,
    Unknown,
}

fn cte_of(p: &Part) -> Cte {
    let Some(value) = p.encoding.as_deref() else {
        return Cte::Lines;
    };
    let token = value
        .trim_start()
        .split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ';')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match token.as_str() {
        "" | "7bit" | "8bit" => Cte::Lines,
        "binary" => Cte::Binary,
        "base64" => Cte::Base64,
        "quoted-printable" => Cte::QuotedPrintable,
        _ => Cte::Unknown,
    }
}

/// `BINARY[path]` of M (empty `path`: the whole message).
pub fn binary_section(
    m: &[u8],
    summary: &Summary,
    path: &[NonZeroU32],
) -> Result<Decoded, Refusal> {
    let root = &summary.root;
    let (e, range) = match Vec1::try_from(path.to_vec()) {
        Err(_) => (root, 0..m.len()),
        Ok(p) => match entity(root, &PartNumber(p)) {
            None => {
                return Ok(Decoded {
                    bytes: Vec::new(),
                    literal8: false,
                });
            }
            Some(e) => (e, body_range(m, e)),
        },
    };
    let container = path.is_empty() || !e.parts.is_empty() && (e.is_multipart() || encapsulates(e));
    if container {
        convert(m, e, range)
    } else {
        leaf(m, e)
    }
}

/// A section decoded, or why not.
type Answer = Result<Arc<Decoded>, Refusal>;

/// The BINARY sections of one message that one FETCH asked for, each
/// decoded once however often it is named (a FETCH naming a large
/// section many times costs one decoding, not one per name).
#[derive(Debug, Default)]
pub struct Memo {
    sections: Vec<(Vec<NonZeroU32>, Answer)>,
    /// Whether every leaf of the message decodes (for BINARY.SIZE).
    whole: Option<Result<(), Refusal>>,
}

impl Memo {
    /// [`binary_section`], decoded at most once per section.
    pub fn section(
        &mut self,
        m: &[u8],
        summary: &Summary,
        path: &[NonZeroU32],
    ) -> Result<Arc<Decoded>, Refusal> {
        if let Some((_, known)) = self.sections.iter().find(|(p, _)| p == path) {
            return known.clone();
        }
        let decoded = binary_section(m, summary, path).map(Arc::new);
        self.sections.push((path.to_vec(), decoded.clone()));
        decoded
    }

    /// `BINARY.SIZE[path]`: the size of [`binary_section`]'s answer,
    /// refused as Dovecot refuses it (any leaf of the message that does
    /// not decode, when the part exists).
    pub fn size(
        &mut self,
        m: &[u8],
        summary: &Summary,
        path: &[NonZeroU32],
    ) -> Result<usize, Refusal> {
        let exists = match Vec1::try_from(path.to_vec()) {
            Err(_) => true,
            Ok(p) => entity(&summary.root, &PartNumber(p)).is_some(),
        };
        if exists {
            let whole = *self
                .whole
                .get_or_insert_with(|| first_refusal(m, &summary.root));
            whole?;
        }
        self.section(m, summary, path).map(|d| d.bytes.len())
    }
}

/// The leaves below `top` (itself if it is one), in message order.
fn leaves(top: &Part) -> Vec<&Part> {
    let mut out = Vec::new();
    let mut stack = vec![top];
    while let Some(p) = stack.pop() {
        if p.parts.is_empty() {
            out.push(p);
        } else {
            stack.extend(p.parts.iter().rev());
        }
    }
    out
}

fn first_refusal(m: &[u8], top: &Part) -> Result<(), Refusal> {
    for l in leaves(top) {
        decode_body(m, l)?;
    }
    Ok(())
}

fn leaf(m: &[u8], e: &Part) -> Result<Decoded, Refusal> {
    let (bytes, cte) = decode_body(m, e)?;
    let literal8 = cte != Cte::Lines || bytes.contains(&0);
    Ok(Decoded { bytes, literal8 })
}

/// The leaf's body with its encoding undone.
fn decode_body(m: &[u8], e: &Part) -> Result<(Vec<u8>, Cte), Refusal> {
    let body = m.get(body_range(m, e)).unwrap_or_default();
    let cte = cte_of(e);
    let bytes = match cte {
        Cte::Lines => {
            let mut out = Vec::with_capacity(body.len());
            crlf(body, &mut out);
            out
        }
        Cte::Binary => body.to_vec(),
        Cte::Base64 => base64(body).ok_or(Refusal::Invalid)?,
        Cte::QuotedPrintable => {
            if !clean_qp(body) {
                return Err(Refusal::Invalid);
            }
            let mut out = Vec::with_capacity(body.len());
            qp_decode(body, &mut out);
            out
        }
        Cte::Unknown => return Err(Refusal::UnknownCte),
    };
    Ok((bytes, cte))
}

/// A container section: its bytes with each encoded leaf decoded.
fn convert(m: &[u8], top: &Part, range: Range<usize>) -> Result<Decoded, Refusal> {
    let mut out = Vec::with_capacity(range.len());
    let mut literal8 = false;
    let mut at = range.start;
    for l in leaves(top) {
        let (decoded, cte) = decode_body(m, l)?;
        if cte == Cte::Lines {
            continue;
        }
        literal8 = true;
        let header = header_range(m, l);
        let body = body_range(m, l);
        if header.start < at || body.end > range.end {
            continue;
        }
        crlf(m.get(at..header.start).unwrap_or_default(), &mut out);
        if cte == Cte::Binary {
            crlf(m.get(header.clone()).unwrap_or_default(), &mut out);
        } else {
            binary_header(m.get(header.clone()).unwrap_or_default(), &mut out);
        }
        // What lies between the header and the body (nothing, or a line
        // break the header lost to a boundary).
        crlf(m.get(header.end..body.start).unwrap_or_default(), &mut out);
        out.extend_from_slice(&decoded);
        at = body.end;
    }
    crlf(m.get(at..range.end).unwrap_or_default(), &mut out);
    literal8 |= out.contains(&0);
    Ok(Decoded {
        bytes: out,
        literal8,
    })
}

/// Bytes with every bare LF made CRLF.
fn crlf(s: &[u8], out: &mut Vec<u8>) {
    let mut prev = 0u8;
    for &b in s {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
}

/// A leaf's header with its Content-Transfer-Encoding field (with its
/// continuation lines) made `Content-Transfer-Encoding: binary`.
fn binary_header(header: &[u8], out: &mut Vec<u8>) {
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation && skipping {
            continue;
        }
        skipping = false;
        let name = line
            .split(|&b| b == b':')
            .next()
            .filter(|_| line.contains(&b':'))
            .map(|n| n.trim_ascii_end());
        if !continuation
            && name.is_some_and(|n| n.eq_ignore_ascii_case(b"content-transfer-encoding"))
        {
            out.extend_from_slice(b"Content-Transfer-Encoding: binary\r\n");
            skipping = true;
            continue;
        }
        crlf(line, out);
    }
}

/// base64 as Dovecot's decoder accepts it for BINARY: whitespace skipped,
/// anything else outside the alphabet refused, padding only at the end
/// and complete groups only (Dovecot answers `NO [PARSE]` otherwise).
fn base64(body: &[u8]) -> Option<Vec<u8>> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    let pad = text.iter().rev().take_while(|&&c| c == b'=').count();
    let data = text.get(..text.len() - pad)?;
    if pad > 2
        || !text.len().is_multiple_of(4)
        || !data
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'))
    {
        return None;
    }
    if text.is_empty() {
        return Some(Vec::new());
    }
    mail_parser::decoders::base64::base64_decode(&text)
}

/// Is every `=` of a quoted-printable body an escape of two hex digits or
/// a soft line break (whitespace allowed before the line break)?
fn clean_qp(body: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = body
        .get(i..)
        .and_then(|s| s.iter().position(|&b| b == b'='))
    {
        let at = i + off + 1;
        let rest = body.get(at..).unwrap_or_default();
        let hex = rest.len() >= 2 && rest[0].is_ascii_hexdigit() && rest[1].is_ascii_hexdigit();
        let ws = rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        let after = rest.get(ws..).unwrap_or_default();
        let soft = after.is_empty() || after.starts_with(b"\n") || after.starts_with(b"\r\n");
        if !hex && !soft {
            return false;
        }
        i = at;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_refused_where_dovecot_refuses_it() {
        assert_eq!(base64(b"QU JD\r\nRA==").as_deref(), Some(&b"ABCD"[..]));
        for bad in [
            &b"QUJD==="[..],
            b"QUJD!",
            b"QQ==QkM=",
            b"QUJD\r\n=\r\n",
            b"QUJD-_",
        ] {
            assert_eq!(base64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn broken_quoted_printable_escapes_are_refused() {
        assert!(clean_qp(b"Caf=C3=A9 soft=\r\nbreak\r\nline two=20\r\n"));
        assert!(!clean_qp(b"100%=ZZ off=\r\nx=4\r\n"));
    }
}
