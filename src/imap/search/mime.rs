//! The text of a message as Dovecot searches it: header lines as its
//! header parser delivers them, encoded-words decoded, bodies of text
//! parts with their transfer encoding undone and their charset converted,
//! everything in decomposed titlecase ([`super::text`]).
//!
//! `mail-parser` decodes base64 (up to where Dovecot stops) and the
//! escapes of quoted-printable; own code, each with its reason at its
//! top, splits encoded-words, undoes the Q encoding and quoted-printable
//! bodies, where `mail-parser` refuses what Dovecot keeps.

use mail_parser::decoders::quoted_printable::quoted_printable_decode_char;

use super::rfc822::Parser;
use super::text::{self, Charset};
use crate::envelope::summary::Part;

/// One header field as Dovecot's header parser (with
/// `MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE`) delivers it.
#[derive(Debug)]
pub struct Line<'a> {
    /// The name, whitespace before the colon trimmed; the whole line when
    /// it has no colon; empty for the empty line that ends the header.
    pub name: &'a [u8],
    /// Whitespace before the colon, the colon and one space or tab after.
    pub middle: &'a [u8],
    /// The value after `middle`, continuation lines appended without
    /// their line breaks (a tab starting one made a space).
    pub value: Vec<u8>,
    /// Did the field end with a line break?
    pub newline: bool,
    /// Is this the empty line that ends the header?
    pub eoh: bool,
}

fn is_lwsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The physical line at `pos`: its content (line break and one CR before
/// it removed), where the next one starts, and whether it had a line
/// break.
fn line_at(block: &[u8], pos: usize) -> (&[u8], usize, bool) {
    let rest = block.get(pos..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let end = if i > 0 && rest[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            (&rest[..end], pos + i + 1, true)
        }
        None => (rest, block.len(), false),
    }
}

/// The fields of a header block, in order, ending with the empty line if
/// the block has one.
pub fn header_lines(block: &[u8]) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let (content, next, newline) = line_at(block, pos);
        pos = next;
        if content.is_empty() && newline {
            out.push(Line {
                name: b"",
                middle: b"",
                value: Vec::new(),
                newline: true,
                eoh: true,
            });
            break;
        }
        let (name, middle, mut value) = match content.iter().position(|&b| b == b':') {
            None => (content, &b""[..], Vec::new()),
            Some(colon) => {
                let name_end = content[..colon]
                    .iter()
                    .rposition(|&c| !is_lwsp(c))
                    .map_or(0, |p| p + 1);
                let value_start =
                    colon + 1 + usize::from(content.get(colon + 1).is_some_and(|&c| is_lwsp(c)));
                let value_start = value_start.min(content.len());
                (
                    &content[..name_end],
                    &content[name_end..value_start],
                    content[value_start..].to_vec(),
                )
            }
        };
        let mut last_newline = newline;
        while last_newline && block.get(pos).is_some_and(|&c| is_lwsp(c)) {
            let (cont, next, nl) = line_at(block, pos);
            match cont.split_first() {
                Some((b'\t', rest)) => {
                    value.push(b' ');
                    value.extend_from_slice(rest);
                }
                _ => value.extend_from_slice(cont),
            }
            pos = next;
            last_newline = nl;
        }
        out.push(Line {
            name,
            middle,
            value,
            newline: last_newline,
            eoh: false,
        });
    }
    out
}

/// Appends a header value with its encoded-words (RFC 2047) decoded, in
/// decomposed titlecase, as `message_header_decode_utf8` does: only
/// whitespace between two encoded-words (or before the first) is
/// dropped; a broken encoded-word stays as it is; text in a charset writ
/// does not read is kept as UTF-8, not normalised (as Dovecot keeps text
/// in a charset it does not know).
pub fn decode_header(value: &[u8], out: &mut String) {
    let mut start = 0;
    let mut pos = 0;
    while pos + 1 < value.len() {
        if value[pos] != b'=' || value[pos + 1] != b'?' {
            pos += 1;
            continue;
        }
        let before = &value[start..pos];
        if !before.iter().all(|&c| is_space(c)) {
            text::fold_utf8(before, out);
        }
        pos += 2;
        match encoded_word(&value[pos..]) {
            None => start = pos - 2,
            Some((used, charset, bytes)) => {
                pos += used;
                if !bytes.is_empty() {
                    match charset {
                        c if text::is_utf8(c) => text::fold_utf8(&bytes, out),
                        c => match Charset::named(c) {
                            Some(cs) => cs.fold(&bytes, out),
                            None => text::valid_utf8(&bytes, out),
                        },
                    }
                }
                start = pos;
            }
        }
    }
    if start < value.len() {
        text::fold_utf8(&value[start..], out);
    }
}

// Own code, not mail-parser's `decode_rfc2047`: with it 37 of the search
// oracle's 1012 searches differ from Dovecot (broken words, CJK charsets).
/// `charset?e?text?=` after an `=?`: the bytes used, the charset and the
/// decoded text.
fn encoded_word(data: &[u8]) -> Option<(usize, &str, Vec<u8>)> {
    let mut marks = data
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'?')
        .map(|(i, _)| i);
    let (q0, q1, q2) = (marks.next()?, marks.next()?, marks.next()?);
    if data.get(q2 + 1) != Some(&b'=') {
        return None;
    }
    let charset = std::str::from_utf8(&data[..q0]).unwrap_or("");
    let encoded = &data[q1 + 1..q2];
    let mut bytes = Vec::new();
    match data.get(q0 + 1) {
        Some(b'q' | b'Q') => q_decode(encoded, &mut bytes),
        Some(b'b' | b'B') => base64_decode(encoded, &mut bytes),
        _ => return None,
    }
    Some((q2 + 2, charset, bytes))
}

// Own code, not mail-parser's `decode_quoted_printable_word`: it refuses
// a word with a broken `=`, which Dovecot keeps as written.
/// The Q encoding of RFC 2047: `_` is a space, `=XX` a byte, anything
/// else (a broken `=`) as it is.
fn q_decode(src: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < src.len() => match quoted_printable_decode_char(src[i + 1], src[i + 2])
            {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'='),
            },
            b'=' => {
                out.extend_from_slice(&src[i..]);
                return;
            }
            c => out.push(c),
        }
        i += 1;
    }
}

/// base64 as Dovecot undoes it: whitespace skipped, bytes given out as
/// soon as their bits are in, decoding stopped for good by padding or by a
/// byte outside the alphabet. `mail-parser` decodes what comes before the
/// stop (it would refuse the whole text at a byte outside the alphabet
/// and read on after padding: search oracle, 24-base64-edge.eml).
fn base64_decode(src: &[u8], out: &mut Vec<u8>) {
    let stop = src
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/') || is_space(c)))
        .unwrap_or(src.len());
    // Only the alphabet and whitespace before the stop: never refused.
    if let Some(decoded) = mail_parser::decoders::base64::base64_decode(&src[..stop]) {
        out.extend_from_slice(&decoded);
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

// Own code, not mail-parser's `quoted_printable_decode`: it refuses a body
// with a broken escape, which Dovecot keeps as it is (search oracle,
// 02-latin1-qp.eml: 24 of 1012 searches differ with it).
/// Quoted-printable as Dovecot's `qp-decoder` undoes it: soft line
/// breaks removed, whitespace before a line break dropped (runs of it
/// kept to 77 bytes), line breaks made CRLF, a broken escape kept as it
/// is; what is pending at the end (trailing whitespace, a lone `=`) is
/// lost.
pub(in crate::imap) fn qp_decode(src: &[u8], out: &mut Vec<u8>) {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Text,
        Whitespace,
        Equals,
        EqualsWhitespace,
        Hex2(u8),
        Cr,
        SoftCr,
    }
    const MAX_WS: usize = 76;
    let mut state = S::Text;
    let mut ws: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        match state {
            S::Text if c > b'=' => {
                // Nothing to undo up to the next special byte.
                let run = src[i..]
                    .iter()
                    .position(|&b| b <= b'=')
                    .unwrap_or(src.len() - i);
                out.extend_from_slice(&src[i..i + run]);
                i += run;
                continue;
            }
            S::Text => match c {
                b'=' => state = S::Equals,
                b'\r' => state = S::Cr,
                b'\n' => out.extend_from_slice(b"\r\n"),
                b' ' | b'\t' => {
                    ws.push(c);
                    state = S::Whitespace;
                }
                _ => out.push(c),
            },
            S::Whitespace | S::EqualsWhitespace if is_lwsp(c) => {
                if ws.len() <= MAX_WS {
                    ws.push(c);
                }
            }
            S::Whitespace => match c {
                b'\r' => state = S::Cr,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    ws.clear();
                }
                _ => {
                    out.append(&mut ws);
                    state = S::Text;
                    continue;
                }
            },
            S::Equals => match c {
                _ if c.is_ascii_hexdigit() => state = S::Hex2(c),
                b' ' | b'\t' => {
                    ws.push(c);
                    state = S::EqualsWhitespace;
                }
                b'\r' => state = S::SoftCr,
                b'\n' => state = S::Text,
                _ => {
                    out.push(b'=');
                    state = S::Text;
                    continue;
                }
            },
            S::Hex2(h) => {
                match quoted_printable_decode_char(h, c) {
                    Some(byte) => out.push(byte),
                    None => {
                        out.extend_from_slice(&[b'=', h]);
                        state = S::Text;
                        continue;
                    }
                }
                state = S::Text;
            }
            S::EqualsWhitespace => match c {
                b'\r' => state = S::SoftCr,
                b'\n' => {
                    ws.clear();
                    state = S::Text;
                }
                _ => {
                    out.push(b'=');
                    out.append(&mut ws);
                    state = S::Text;
                    continue;
                }
            },
            S::Cr | S::SoftCr => {
                if c == b'\n' {
                    ws.clear();
                    if state == S::Cr {
                        out.extend_from_slice(b"\r\n");
                    }
                } else {
                    if state == S::SoftCr {
                        out.push(b'=');
                    }
                    out.append(&mut ws);
                    out.push(b'\r');
                    state = S::Text;
                    continue;
                }
                state = S::Text;
            }
        }
        i += 1;
    }
}

/// How Dovecot decodes a part's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    Identity,
    QuotedPrintable,
    Base64,
    /// An encoding Dovecot does not know: the body is not searched.
    Unknown,
}

fn parse_cte(value: &[u8]) -> Cte {
    let mut p = Parser::new(value);
    let _ = p.skip_lwsp();
    let mut token = Vec::new();
    let _ = p.mime_token(&mut token);
    match token.to_ascii_lowercase().as_slice() {
        b"7bit" | b"8bit" | b"binary" => Cte::Identity,
        b"base64" => Cte::Base64,
        b"quoted-printable" => Cte::QuotedPrintable,
        _ => Cte::Unknown,
    }
}

/// `type/subtype` and the charset parameter of a Content-Type value (the
/// charset only when the type parsed).
fn parse_content_type(value: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut p = Parser::new(value);
    let _ = p.skip_lwsp();
    let mut ct = Vec::new();
    if p.content_type(&mut ct).is_err() {
        return (ct, None);
    }
    let charset = p
        .params()
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"charset"))
        .map(|(_, v)| v);
    (ct, charset)
}

fn clamp(m: &[u8], offset: u64, size: u64) -> &[u8] {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    &m[start..start.saturating_add(size).min(m.len())]
}

/// Appends one header line as a TEXT search reads it: name, middle,
/// decoded value, CRLF.
fn push_line(line: &Line<'_>, out: &mut String) {
    text::fold_utf8(line.name, out);
    out.push_str(&String::from_utf8_lossy(line.middle));
    decode_header(&line.value, out);
    if line.newline {
        out.push_str("\r\n");
    }
}

/// The searchable text of every entity of M, one string per entity
/// (matches do not span entities): its header when `headers` (TEXT), then
/// its own body when that is text (`text/*` or `message/*`, the type
/// read from the last Content-Type field, as Dovecot's searcher reads
/// it) in a known transfer encoding. Multiparts and message/rfc822 parts
/// have no body of their own: their parts do.
pub fn entity_texts(m: &[u8], root: &Part, headers: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(part) = stack.pop() {
        out.push(entity_text(m, part, headers));
        if is_container(part) {
            stack.extend(part.parts.iter().rev());
        }
    }
    out
}

/// Does this entity hold others (a multipart, or a message/rfc822 part:
/// Dovecot 2.3 reads message/global as a leaf)?
fn is_container(part: &Part) -> bool {
    !part.parts.is_empty()
        && (part.is_multipart()
            || (part.media_type.eq_ignore_ascii_case("message")
                && part.subtype.eq_ignore_ascii_case("rfc822")))
}

fn crlf_to_lf(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !b.windows(2).any(|w| w == b"\r\n") {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

fn entity_text(m: &[u8], part: &Part, headers: bool) -> String {
    let block = clamp(m, part.header_offset, part.header_size);
    let lines = header_lines(block);
    let mut out = String::new();
    let mut is_text = true;
    let mut cte = Cte::Identity;
    let mut charset: Option<Option<Vec<u8>>> = None;
    for line in &lines {
        if line.name.eq_ignore_ascii_case(b"Content-Type") {
            let (ct, cs) = parse_content_type(&line.value);
            let ct = ct.to_ascii_lowercase();
            is_text = ct.starts_with(b"text/") || ct.starts_with(b"message/");
            charset.get_or_insert(cs);
        } else if line.name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
            cte = parse_cte(&line.value);
        }
        if headers {
            push_line(line, &mut out);
        }
    }
    if is_container(part) || !is_text || cte == Cte::Unknown {
        return out;
    }
    // The body as Dovecot stores it by default (`mail_save_crlf = no`):
    // CRLF made LF.
    let raw = crlf_to_lf(clamp(m, part.body_offset, part.body_size));
    let mut decoded = Vec::new();
    let body: &[u8] = match cte {
        Cte::QuotedPrintable => {
            qp_decode(&raw, &mut decoded);
            &decoded
        }
        Cte::Base64 => {
            base64_decode(&raw, &mut decoded);
            &decoded
        }
        _ => &raw,
    };
    let charset = charset.flatten();
    let cs = charset
        .as_deref()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(Charset::named)
        .unwrap_or(Charset::Utf8);
    cs.fold(body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use mail_parser::decoders::base64::base64_decode as mail_parser_base64;
    use mail_parser::decoders::quoted_printable::quoted_printable_decode;
    use mail_parser::parsers::MessageStream;

    use super::*;

    /// Where writ's own decoders stay: `mail-parser` refuses (or reads on
    /// through) what Dovecot keeps (or stops at).
    #[test]
    fn mail_parser_refuses_what_dovecot_keeps() {
        // A broken escape in a quoted-printable body: kept as written.
        let mut ours = Vec::new();
        qp_decode(b"100%=ZZ off=\nfor you\n", &mut ours);
        assert_eq!(ours, b"100%=ZZ offfor you\r\n");
        assert_eq!(quoted_printable_decode(b"100%=ZZ off=\nfor you\n"), None);
        // A broken escape in a Q-encoded word: kept as written.
        let (_, charset, bytes) = encoded_word(b"utf-8?q?a=ZZb?=").unwrap();
        assert_eq!((charset, bytes.as_slice()), ("utf-8", &b"a=ZZb"[..]));
        assert_eq!(
            MessageStream::new(b"?utf-8?q?a=ZZb?=").decode_rfc2047(),
            None
        );
        // base64: Dovecot stops for good at a byte outside the alphabet
        // and at padding; mail-parser refuses the first, reads on after
        // the second. So mail-parser only decodes the part before the stop.
        let mut ours = Vec::new();
        base64_decode(b"QUJD!REVG", &mut ours);
        assert_eq!(ours, b"ABC");
        assert_eq!(mail_parser_base64(b"QUJD!REVG"), None);
        let mut ours = Vec::new();
        base64_decode(b"QQ==QkM=", &mut ours);
        assert_eq!(ours, b"A");
        assert_eq!(
            mail_parser_base64(b"QQ==QkM=").as_deref(),
            Some(&b"ABC"[..])
        );
    }

    #[test]
    fn base64_gives_out_a_last_incomplete_group() {
        for (encoded, decoded) in [
            (&b"QUJD REVG\r\nRw"[..], &b"ABCDEFG"[..]),
            (b"QUJDREVGR0g", b"ABCDEFGH"),
            (b"QUJDREVGR0hJ", b"ABCDEFGHI"),
            (b"QUJDR", b"ABC"),
            (b"", b""),
        ] {
            let mut out = Vec::new();
            base64_decode(encoded, &mut out);
            assert_eq!(out, decoded, "{}", String::from_utf8_lossy(encoded));
        }
    }
}
