//! Header blocks as raw bytes: splitting into fields, field names,
//! unfolding, and MIME parameter parsing (RFC 2045, RFC 2231 continuations
//! are kept as separate parameters, as IMAP servers report them).
//!
//! Everything here works on bytes that may be malformed: bare LF, CR alone,
//! 8-bit, NUL. Nothing panics; what cannot be parsed is reported as absent.

/// Finds the end of the header block: the offset just after the blank line
/// that separates header and body (CRLF CRLF, LF LF, or mixed). `None` when
/// the data holds no blank line (header only, or not yet complete).
pub fn header_end(data: &[u8]) -> Option<usize> {
    if data.starts_with(b"\r\n") {
        return Some(2);
    }
    if data.starts_with(b"\n") {
        return Some(1);
    }
    let mut i = 0;
    while let Some(p) = data[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let rest = &data[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

/// One header field as it appears in the block: `raw` is the whole field
/// including folded continuation lines and its final line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    pub raw: &'a [u8],
}

impl<'a> RawField<'a> {
    /// The field name, if the first line has the form `name:`. Names are
    /// printable ASCII other than colon (RFC 5322 ftext); surrounding
    /// whitespace before the colon is tolerated, as real parsers do.
    pub fn name(&self) -> Option<&'a [u8]> {
        let colon = self.raw.iter().position(|&b| b == b':')?;
        let name = trim_end(&self.raw[..colon]);
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return None;
        }
        Some(name)
    }

    /// Does this field's name equal `want`, ignoring ASCII case?
    pub fn is(&self, want: &str) -> bool {
        self.name()
            .is_some_and(|n| n.eq_ignore_ascii_case(want.as_bytes()))
    }

    /// The value after the colon, unfolded: line endings removed (folding
    /// whitespace is kept, as RFC 5322 unfolding says), leading whitespace
    /// trimmed.
    pub fn value(&self) -> Vec<u8> {
        let Some(colon) = self.raw.iter().position(|&b| b == b':') else {
            return Vec::new();
        };
        let v: Vec<u8> = self.raw[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        trim(&v).to_vec()
    }
}

/// Splits a header block (with or without its terminating blank line) into
/// fields. A line starting with space or tab continues the previous field.
/// The blank line itself is not a field.
pub fn fields(block: &[u8]) -> Vec<RawField<'_>> {
    let mut out: Vec<RawField<'_>> = Vec::new();
    let mut start = 0;
    let mut field_start: Option<usize> = None;
    while start < block.len() {
        let end = match block[start..].iter().position(|&b| b == b'\n') {
            Some(p) => start + p + 1,
            None => block.len(),
        };
        let line = &block[start..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = field_start {
                out.push(RawField {
                    raw: &block[s..start],
                });
            }
            field_start = Some(start);
        } else if field_start.is_none() {
            field_start = Some(start);
        }
        start = end;
    }
    if let Some(s) = field_start {
        out.push(RawField {
            raw: &block[s..start],
        });
    }
    out
}

/// The first field called `name` (ASCII case-insensitive), unfolded.
pub fn first_value(block: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(block)
        .into_iter()
        .find(|f| f.is(name))
        .map(|f| f.value())
}

pub fn trim(b: &[u8]) -> &[u8] {
    trim_end(trim_start(b))
}

pub fn trim_start(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[s..]
}

pub fn trim_end(b: &[u8]) -> &[u8] {
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &b[..e]
}

/// A MIME value with parameters, as in Content-Type and
/// Content-Disposition: `main; name=value; name="quoted value"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParamValue {
    /// The part before the first `;`, trimmed, comments removed.
    pub value: String,
    /// Parameters in order, names as written, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ParamValue {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Text for the summary: UTF-8 as is, other bytes mapped one to one onto
/// U+0080..U+00FF (Latin-1), so that no byte is silently dropped.
pub fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

/// Removes RFC 5322 comments `( ... )` outside quoted strings.
fn strip_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for &c in v {
        if escaped {
            if depth == 0 {
                out.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            b'\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Parses `value; a=b; c="d e"`. Malformed parameters (no `=`, empty name)
/// are skipped; an unterminated quote runs to the end of the value.
pub fn parse_params(raw: &[u8]) -> ParamValue {
    let v = strip_comments(raw);
    let mut parts = split_unquoted(&v, b';').into_iter();
    let value = parts.next().map(|p| text(trim(p))).unwrap_or_default();
    let mut params = Vec::new();
    for p in parts {
        let p = trim(p);
        let Some(eq) = p.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = trim(&p[..eq]);
        if name.is_empty() {
            continue;
        }
        let val = trim(&p[eq + 1..]);
        params.push((text(name), text(&unquote(val))));
    }
    ParamValue { value, params }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(v: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &c) in v.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if c == sep && !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out
}

/// Removes surrounding double quotes and backslash escapes.
pub fn unquote(v: &[u8]) -> Vec<u8> {
    if v.first() != Some(&b'"') {
        return v.to_vec();
    }
    let inner = &v[1..];
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &c in inner {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_finds_blank_line_in_every_line_ending_style() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(header_end(b"A: b\n\r\nbody"), Some(7));
        assert_eq!(header_end(b"\r\nbody"), Some(2));
        assert_eq!(header_end(b"A: b\r\n"), None);
        assert_eq!(header_end(b""), None);
    }

    #[test]
    fn fields_keep_folding_and_order() {
        let block = b"Subject: a\r\n b\r\nTo: x\r\n\r\n";
        let f = fields(block);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(f[0].value(), b"a b");
        assert!(f[1].is("to"));
    }

    #[test]
    fn params_are_unquoted_and_lowercased() {
        let p = parse_params(b"multipart/mixed; BOUNDARY=\"a b;c\" (comment); charset=utf-8");
        assert_eq!(p.value, "multipart/mixed");
        assert_eq!(p.param("boundary"), Some("a b;c"));
        assert_eq!(p.params[0].0, "BOUNDARY");
        assert_eq!(p.param("charset"), Some("utf-8"));
    }

    #[test]
    fn malformed_params_do_not_panic() {
        for raw in [
            &b";;;="[..],
            b"\"",
            b"a; =b; c",
            b"(((",
            b"x; y=\"unterminated",
        ] {
            let _ = parse_params(raw);
        }
        assert_eq!(
            parse_params(b"x; y=\"unterminated").param("y"),
            Some("unterminated")
        );
    }
}
