//! Body sections of an opened message: `BODY[<section>]<<partial>>`
//! (RFC 3501 §6.4.5), answered over the plaintext message M with the help
//! of its [`Summary`], byte for byte as Dovecot answers them for M stored in
//! plaintext. `tests/section_oracle.rs` holds writ to that against a real
//! Dovecot.
//!
//! The `RFC822*` items are sections too (RFC 3501 §6.4.5): `RFC822` is
//! `BODY[]`, `RFC822.HEADER` is `BODY.PEEK[HEADER]`, `RFC822.TEXT` is
//! `BODY[TEXT]`.
//!
//! What Dovecot does, and so writ:
//!
//! - Every line break goes out as CRLF (a bare LF gets its CR) and every
//!   NUL as 0x80: IMAP literals carry neither bare LFs nor NULs. Offsets of
//!   `<partial>` count in those converted bytes.
//! - Numbers address parts as RFC 3501 says: the parts of a multipart; for
//!   a message/rfc822 part, the parts of the message inside (which, when
//!   not multipart, is its own part 1); for anything else, part 1 is the
//!   entity itself. Only `message/rfc822` encapsulates (not
//!   `message/global`: Dovecot 2.3 treats it as a leaf).
//! - A part that does not exist, and `HEADER`/`TEXT`/`HEADER.FIELDS` of a
//!   part that is not message/rfc822, are the empty string.
//! - `N.MIME` of a message/rfc822 part's inner non-multipart message (and
//!   `1.MIME` of a single-part message) is that message's header.
//! - Line breaks next to boundary lines, where Dovecot's MIME parser
//!   departs from RFC 2046's "the line break before a boundary belongs to
//!   the boundary": a header directly followed by a boundary line (a part
//!   without body, or a header cut short by the boundary) loses its last
//!   line break to the boundary, and the entities enclosing it count that
//!   line break in their bodies; and a boundary line directly followed by
//!   another one (`--inner--` then `--outer`) keeps its own line break, so
//!   the bodies of the multipart `inner` and of what encloses it below
//!   `outer` end with it.
//! - `HEADER.FIELDS` of the message itself ends with the fields and an
//!   empty line; when the message has no empty line (a header-only
//!   message), Dovecot ends it with one CRLF all the same, which ends a last
//!   line that had no line break, or else serves as the empty line. That is
//!   Dovecot's answer from its cache of header fields, where the fields
//!   clients ask for soon are (uncached, Dovecot adds an empty line after
//!   such a last line too). `HEADER.FIELDS.NOT`, and both forms for a
//!   message inside a message/rfc822 part, end with an empty line only if
//!   the header has one.
//! - `HEADER.FIELDS(.NOT)` of a message inside a message/rfc822 part reads
//!   that message's header up to the first empty line, even past a
//!   boundary that cut the header short (Dovecot's header filter does not
//!   stop at boundaries).

pub mod binary;
mod fields;

use std::num::NonZeroU32;
use std::ops::Range;

use imap_next::imap_types::core::{AString, Vec1};
use imap_next::imap_types::fetch::{Part as PartNumber, Section};

use crate::envelope::summary::{Part, Summary};
use fields::Keep;

/// The bytes of a body section: a range of M when M's bytes go out as they
/// are (no copy), or bytes of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionBytes {
    /// These bytes of M, unchanged. Always within M.
    InM(Range<usize>),
    /// Bytes that are no range of M: line breaks made CRLF, NULs made
    /// 0x80, header fields selected.
    Owned(Vec<u8>),
}

impl SectionBytes {
    /// The empty string (what a nonexistent part is).
    pub fn empty() -> SectionBytes {
        SectionBytes::Owned(Vec::new())
    }

    /// The bytes, given the M they were computed from.
    pub fn bytes<'a>(&'a self, m: &'a [u8]) -> &'a [u8] {
        match self {
            SectionBytes::InM(r) => m.get(r.clone()).unwrap_or_default(),
            SectionBytes::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SectionBytes::InM(r) => r.len(),
            SectionBytes::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as a vector of their own.
    pub fn into_vec(self, m: &[u8]) -> Vec<u8> {
        match self {
            SectionBytes::InM(r) => m.get(r).unwrap_or_default().to_vec(),
            SectionBytes::Owned(v) => v,
        }
    }
}

/// The body section `section` of M (`None`: `BODY[]`, the whole message),
/// whose summary is `summary`. Apply a `<partial>` with [`partial`].
pub fn section_bytes(m: &[u8], summary: &Summary, section: Option<&Section<'_>>) -> SectionBytes {
    let root = &summary.root;
    let answer = match section {
        None => Some(wire(m, 0..m.len())),
        Some(Section::Part(number)) => entity(root, number).map(|e| wire(m, body_range(m, e))),
        Some(Section::Mime(number)) => entity(root, number).map(|e| wire(m, header_range(m, e))),
        Some(Section::Header(number)) => {
            message(root, number.as_ref()).map(|e| wire(m, header_range(m, e)))
        }
        Some(Section::Text(number)) => {
            message(root, number.as_ref()).map(|e| wire(m, body_range(m, e)))
        }
        Some(Section::HeaderFields(number, names)) => {
            header_fields(m, root, number.as_ref(), names, Keep::Named)
        }
        Some(Section::HeaderFieldsNot(number, names)) => {
            header_fields(m, root, number.as_ref(), names, Keep::AllBut)
        }
    };
    answer.unwrap_or_else(SectionBytes::empty)
}

/// `<origin.length>` of a section: at most `length` octets from octet
/// `origin` on; the empty string when `origin` is at or past the end.
pub fn partial(bytes: SectionBytes, origin: u32, length: NonZeroU32) -> SectionBytes {
    let origin = usize::try_from(origin).unwrap_or(usize::MAX);
    let length = usize::try_from(length.get()).unwrap_or(usize::MAX);
    match bytes {
        SectionBytes::InM(r) => {
            let start = r.start.saturating_add(origin).min(r.end);
            let end = start.saturating_add(length).min(r.end);
            SectionBytes::InM(start..end)
        }
        SectionBytes::Owned(mut v) => {
            let start = origin.min(v.len());
            let end = start.saturating_add(length).min(v.len());
            v.truncate(end);
            v.drain(..start);
            SectionBytes::Owned(v)
        }
    }
}

/// `HEADER`, `HEADER.FIELDS (...)` or `HEADER.FIELDS.NOT (...)` of the
/// message itself from the summary's copy of its header, without the
/// payload: what [`section_bytes`] would answer. `None` for any other
/// section, and when the summary lacks the complete header (over the
/// sealer's cap, or a last header line without a line break).
pub fn header_section(summary: &Summary, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let root = &summary.root;
    let header = root.header.as_deref()?;
    if root.header_truncated || u64::try_from(header.len()).ok()? != root.header_size {
        return None;
    }
    match section? {
        Section::Header(None) => Some(wire(header, 0..header.len()).into_vec(header)),
        Section::HeaderFields(None, names) => {
            Some(fields::filter(header, &name_list(names), Keep::Named, true))
        }
        Section::HeaderFieldsNot(None, names) => Some(fields::filter(
            header,
            &name_list(names),
            Keep::AllBut,
            false,
        )),
        _ => None,
    }
}

fn name_list<'a>(names: &'a Vec1<AString<'_>>) -> Vec<&'a [u8]> {
    names.as_ref().iter().map(|n| n.as_ref()).collect()
}

fn header_fields(
    m: &[u8],
    root: &Part,
    number: Option<&PartNumber>,
    names: &Vec1<AString<'_>>,
    keep: Keep,
) -> Option<SectionBytes> {
    let start = match number {
        None => 0,
        Some(number) => {
            let e = entity(root, number)?;
            if !is_rfc822(e) || e.parts.is_empty() {
                return None;
            }
            // Dovecot places the inner message right after the part's
            // header as it delimits it: when that header lost its last line
            // break to a boundary, the inner message starts at that line
            // break.
            header_range(m, e).end
        }
    };
    // The filter reads up to the first empty line, wherever that is.
    let data = m.get(start..)?;
    let top = number.is_none() && keep == Keep::Named;
    Some(SectionBytes::Owned(fields::filter(
        data,
        &name_list(names),
        keep,
        top,
    )))
}

/// Does this entity encapsulate a message (its numbers address the parts
/// of the message inside)? Only message/rfc822, as in Dovecot 2.3.
fn is_rfc822(p: &Part) -> bool {
    p.media_type.eq_ignore_ascii_case("message") && p.subtype.eq_ignore_ascii_case("rfc822")
}

/// Does a number below this entity address the parts of an embedded
/// message? Not for a message/rfc822 part the writer did not descend into
/// (a cap, `Part::opaque`): Dovecot, whose caps are the same, shows it as
/// a leaf.
fn encapsulates(p: &Part) -> bool {
    is_rfc822(p) && !(p.opaque && p.parts.is_empty())
}

/// The entity a part number addresses, as Dovecot finds it.
fn entity<'s>(root: &'s Part, number: &PartNumber) -> Option<&'s Part> {
    let path: &[NonZeroU32] = number.0.as_ref();
    let mut part = root;
    for (i, n) in path.iter().enumerate() {
        let more = i + 1 < path.len();
        let index = usize::try_from(n.get() - 1).ok()?;
        if part.is_multipart() {
            part = part.parts.get(index)?;
        } else if index != 0 || (more && !encapsulates(part)) {
            // A leaf has one part, itself; only a message goes deeper.
            return None;
        }
        if more && encapsulates(part) {
            part = part.parts.first()?;
        }
    }
    Some(part)
}

/// The message whose `HEADER`/`TEXT` a section names: M itself, or the
/// message inside a message/rfc822 part.
fn message<'s>(root: &'s Part, number: Option<&PartNumber>) -> Option<&'s Part> {
    match number {
        None => Some(root),
        Some(number) => {
            let e = entity(root, number)?;
            if is_rfc822(e) { e.parts.first() } else { None }
        }
    }
}

/// `offset..offset + size` within M.
fn clamp(m: &[u8], offset: u64, size: u64) -> Range<usize> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    start..start.saturating_add(size).min(m.len())
}

/// The entity's header as Dovecot delimits it. When a boundary line
/// follows the header directly (the entity has no body: its header was cut
/// short by the boundary, or ended by an empty line right before it), the
/// header's last line break belongs to the boundary.
fn header_range(m: &[u8], e: &Part) -> Range<usize> {
    let mut r = clamp(m, e.header_offset, e.header_size);
    let at_boundary =
        e.body_size == 0 && m.get(r.end..).is_some_and(|rest| rest.starts_with(b"--"));
    if at_boundary && r.end > r.start && m.get(r.end - 1) == Some(&b'\n') {
        r.end -= 1;
        if r.end > r.start && m.get(r.end - 1) == Some(&b'\r') {
            r.end -= 1;
        }
    }
    r
}

/// The entity's body as Dovecot delimits it. Two line breaks before a
/// boundary line that the summary leaves out (RFC 2046 gives them to the
/// boundary) are in it:
/// - one that a header inside it lost to the boundary (see
///   [`header_range`]): the entities between that header and the
///   multipart the boundary belongs to count it;
/// - one that ends a boundary line of this entity or of a multipart inside
///   it (`--inner--` right before `--outer`): Dovecot reads a boundary
///   line up to and including its line break.
fn body_range(m: &[u8], e: &Part) -> Range<usize> {
    let r = clamp(m, e.body_offset, e.body_size);
    let mut end = r.end;
    let mut boundaries: Vec<&str> = Vec::new();
    // The last line of the body belongs to the chain of last parts.
    let mut d = e;
    loop {
        if d.is_multipart()
            && let Some(b) = d.param("boundary")
        {
            boundaries.push(b);
        }
        let Some(last) = d.parts.last() else { break };
        end = end.max(clamp(m, last.header_offset, last.header_size).end);
        d = last;
    }
    let rest = m.get(end..).unwrap_or_default();
    let eol = if rest.starts_with(b"\r\n--") {
        2
    } else if rest.starts_with(b"\n--") {
        1
    } else {
        0
    };
    if eol > 0 {
        let before = m.get(..end).unwrap_or_default();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = before.get(line_start..).unwrap_or_default();
        let is_boundary_line = line
            .strip_prefix(b"--")
            .is_some_and(|l| boundaries.iter().any(|b| l.starts_with(b.as_bytes())));
        if is_boundary_line {
            end += eol;
        }
    }
    r.start..end.min(m.len())
}

/// A range of M as it goes out: as it is when it holds no bare LF and no
/// NUL, converted otherwise.
fn wire(m: &[u8], r: Range<usize>) -> SectionBytes {
    let Some(s) = m.get(r.clone()) else {
        return SectionBytes::empty();
    };
    let mut prev = 0u8;
    let ready = s.iter().all(|&b| {
        let ok = b != 0 && (b != b'\n' || prev == b'\r');
        prev = b;
        ok
    });
    if ready {
        return SectionBytes::InM(r);
    }
    let mut out = Vec::with_capacity(s.len() + s.len() / 32 + 2);
    let mut prev = 0u8;
    for &b in s {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(if b == 0 { 0x80 } else { b });
        prev = b;
    }
    SectionBytes::Owned(out)
}

#[cfg(test)]
mod tests;
