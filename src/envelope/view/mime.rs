//! The MIME fields of one entity exactly as Dovecot 2.3 reads them, in
//! octets: its header parser (`message-header-parser.c`: a field's name is
//! what precedes the first colon, trailing SP and HTAB removed; its value
//! skips the whitespace after the colon and keeps folding line breaks as
//! LF), `message-parser.c` (which Content-Type makes a multipart, a
//! message/rfc822 part, and which boundary counts) and
//! `message-part-data.c` with `rfc822-parser.c` and `rfc2231-parser.c`
//! (what BODYSTRUCTURE shows).
//!
//! Own code, not `mail-parser`'s: the answers must equal Dovecot's octet
//! for octet, malformed fields included (a parameter list missing a `;`
//! drops the rest, a second Content-Disposition replaces a first one
//! without parameters, 8-bit octets pass through unconverted), which no
//! general parser does.
//!
//! Everything is bounded by the header block it is given (the scanner's
//! header cap); nothing recurses.

use super::lexer::{Lexer, NUL_REPLACEMENT, Step};

/// Longest boundary Dovecot honours: a longer one is cut to this many
/// octets (`BOUNDARY_STRING_MAX_LEN`).
pub const MAX_BOUNDARY: usize = 80;

/// Header names longer than this are no names to Dovecot (the whole line
/// is a value): RFC 5322's line length.
const MAX_NAME: usize = 1000;

/// One header field as Dovecot's parser gives it: the name (octets before
/// the first colon, trailing SP and HTAB removed) and the full value
/// (after the colon and the whitespace that follows it; continuation lines
/// joined with LF, CRs before line breaks dropped).
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Field {
    /// The name as a C string: up to its first NUL.
    fn c_name(&self) -> &[u8] {
        cstr(&self.name)
    }

    fn is(&self, want: &str) -> bool {
        self.c_name().eq_ignore_ascii_case(want.as_bytes())
    }
}

/// Up to the first NUL, as C string functions see `v`.
fn cstr(v: &[u8]) -> &[u8] {
    match v.iter().position(|&b| b == 0) {
        Some(p) => &v[..p],
        None => v,
    }
}

/// The content of one line: without its LF, and without the CR before it.
fn line_content(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    }
}

/// One physical line of a header block: as in M (with its line end), its
/// content (line end removed), and whether it continues the field before.
struct HeaderLine<'a> {
    line: &'a [u8],
    content: &'a [u8],
    continued: bool,
}

/// The lines of a header block, as Dovecot's header parser splits them
/// (a line beginning with a space or tab continues the field before,
/// except the first).
fn header_lines(block: &[u8]) -> impl Iterator<Item = HeaderLine<'_>> {
    let mut rest = block;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let content = line_content(line);
        let continued = !first && matches!(content.first(), Some(b' ' | b'\t'));
        first = false;
        Some(HeaderLine {
            line,
            content,
            continued,
        })
    })
}

/// Splits a header block (its blank line, if any, ends it) into fields as
/// Dovecot's header parser does.
pub fn fields(block: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for HeaderLine {
        line,
        content,
        continued,
    } in header_lines(block)
    {
        if continued {
            if let Some(f) = out.last_mut() {
                f.value.push(b'\n');
                f.value.extend_from_slice(content);
            }
            continue;
        }
        if content.is_empty() && line.ends_with(b"\n") {
            break;
        }
        let Some(colon) = content.iter().position(|&b| b == b':') else {
            out.push(Field {
                name: Vec::new(),
                value: content.to_vec(),
            });
            continue;
        };
        let mut value = &content[colon + 1..];
        let lwsp = value
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        value = if lwsp == value.len() && lwsp > 0 {
            &value[1..]
        } else {
            &value[lwsp..]
        };
        let mut name_end = colon;
        while name_end > 0 && matches!(content[name_end - 1], b' ' | b'\t') {
            name_end -= 1;
        }
        let (name, value) = if name_end > MAX_NAME {
            (Vec::new(), content.to_vec())
        } else {
            (content[..name_end].to_vec(), value.to_vec())
        };
        out.push(Field { name, value });
    }
    out
}

/// Is this field one of the entity's MIME fields (Content-*, or the
/// MIME-Version that makes them count)?
pub fn is_mime_field(name: &[u8]) -> bool {
    let name = cstr(name);
    name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"Content-")
        || name.eq_ignore_ascii_case(b"MIME-Version")
}

fn lexer(v: &[u8]) -> Lexer<'_> {
    Lexer {
        data: v,
        pos: 0,
        last_comment: Vec::new(),
    }
}

/// `rfc822_parse_content_type`: `type/subtype` into `out`; `Err` when the
/// value is malformed (then `out` holds what Dovecot keeps: the type alone
/// when the value ends or breaks right after it, nothing otherwise).
fn parse_content_type(lex: &mut Lexer<'_>, out: &mut Vec<u8>) -> Step {
    if lex.skip_cfws() != Ok(true) {
        return Err(());
    }
    let (t, more) = lex.mime_token();
    out.extend_from_slice(&t);
    if more != Ok(true) || t.is_empty() {
        return Err(());
    }
    if !lex.at(b'/') {
        out.clear();
        return Err(());
    }
    lex.pos += 1;
    if lex.skip_cfws() != Ok(true) {
        out.clear();
        return Err(());
    }
    out.push(b'/');
    let (sub, more) = lex.mime_token();
    out.extend_from_slice(&sub);
    if more.is_err() || sub.is_empty() || (lex.more() && !lex.at(b';')) {
        out.clear();
        return Err(());
    }
    more
}

/// A parameter: name and value, in octets.
pub type Param = (Vec<u8>, Vec<u8>);

/// `rfc822_parse_content_param`: one `; name=value`. `Ok(None)` at the
/// end, `Err` for a syntax error.
fn content_param(lex: &mut Lexer<'_>) -> Result<Option<Param>, ()> {
    if !lex.more() {
        return Ok(None);
    }
    if !lex.at(b';') {
        return Err(());
    }
    lex.pos += 1;
    if lex.skip_cfws() != Ok(true) {
        return Err(());
    }
    let (key, more) = lex.mime_token();
    if more != Ok(true) || !lex.at(b'=') {
        return Err(());
    }
    lex.pos += 1;
    let mut value = Vec::new();
    let ret = match lex.skip_cfws() {
        Ok(true) if lex.at(b'"') => lex.quoted_string(&mut value),
        Ok(true) if lex.at(b'=') => {
            // Dovecot's workaround for `name==?utf-8?b?...?=`.
            while let Some(c) = lex.peek() {
                if matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                    break;
                }
                value.push(c);
                lex.pos += 1;
            }
            Ok(true)
        }
        Ok(true) => {
            let (v, more) = lex.mime_token();
            value = v;
            more
        }
        other => other,
    };
    ret?;
    Ok(Some((key, cstr(&value).to_vec())))
}

/// One RFC 2231 piece: `name*<index>[*]=value`.
struct Piece {
    key: Vec<u8>,
    value: Vec<u8>,
    index: u32,
    extended: bool,
}

/// The parameters after the value as Dovecot's `rfc2231_parse` reads them
/// before joining RFC 2231 pieces: in order, a malformed one skipped up to
/// the next `;` (what the summary stores, `docs/FORMAT.md` 12.3).
pub(super) fn raw_parameters(lex: &mut Lexer<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match content_param(lex) {
            Ok(None) => break,
            Ok(Some(kv)) => out.push(kv),
            Err(()) => {
                if !lex.more() {
                    break;
                }
                lex.pos += 1;
            }
        }
    }
    out
}

/// The rest of `rfc2231_parse`: RFC 2231 pieces (`name*<n>[*]`) joined
/// into one parameter (`name`, or `name*` with the unencoded pieces' `%`
/// escaped) after the other parameters, in name order; pieces with a
/// missing index left as they are. As BODYSTRUCTURE lists them.
pub fn merge_parameters(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    // Dovecot reuses one record: a bare `name*` keeps the last index.
    let mut index = 0u32;
    for (key, value) in raw {
        let Some(star) = key.iter().position(|&b| b == b'*') else {
            out.push((key, value));
            continue;
        };
        let mut p = star;
        if p + 1 < key.len() {
            p += 1;
            index = 0;
            while let Some(d) = key.get(p).filter(|d| d.is_ascii_digit()) {
                index = index.wrapping_mul(10).wrapping_add(u32::from(d - b'0'));
                p += 1;
            }
        }
        let extended = key.get(p) == Some(&b'*');
        if extended {
            p += 1;
        }
        if p == key.len() {
            pieces.push(Piece {
                key: key[..star].to_vec(),
                value,
                index,
                extended,
            });
        } else {
            out.push((key, value));
        }
    }
    pieces.sort_by(|a, b| a.key.cmp(&b.key).then(a.index.cmp(&b.index)));
    let mut i = 0;
    while i < pieces.len() {
        let mut j = i;
        let mut complete = true;
        let mut any_extended = false;
        let mut next_index = 0u32;
        while j < pieces.len() && pieces[j].key.eq_ignore_ascii_case(&pieces[i].key) {
            complete &= pieces[j].index == next_index;
            any_extended |= pieces[j].extended;
            next_index = next_index.wrapping_add(1);
            j += 1;
        }
        let group = &pieces[i..j];
        if complete {
            let mut value = Vec::new();
            if any_extended && !group[0].extended {
                value.extend_from_slice(b"''");
            }
            for p in group {
                if any_extended && !p.extended {
                    for &b in &p.value {
                        if b == b'%' {
                            value.extend_from_slice(b"%25");
                        } else {
                            value.push(b);
                        }
                    }
                } else {
                    value.extend_from_slice(&p.value);
                }
            }
            let mut key = group[0].key.clone();
            if any_extended {
                key.push(b'*');
            }
            out.push((key, value));
        } else {
            for p in group {
                let mut key = p.key.clone();
                key.extend_from_slice(format!("*{}", p.index).as_bytes());
                if p.extended {
                    key.push(b'*');
                }
                out.push((key, p.value.clone()));
            }
        }
        i = j;
    }
    out
}

/// `rfc2231_parse`: the parameters after the value, pieces joined.
pub(super) fn parameters(lex: &mut Lexer<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    merge_parameters(raw_parameters(lex))
}

/// What Dovecot's message parser makes of an entity's first Content-Type
/// field: the flags that decide its structure, and its boundary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Structure {
    pub multipart: bool,
    pub digest: bool,
    pub rfc822: bool,
    /// The boundary (without `--`, cut to [`MAX_BOUNDARY`] octets) of a
    /// multipart; it may be empty.
    pub boundary: Option<Vec<u8>>,
}

/// `message-parser.c`'s `parse_content_type` over a Content-Type value.
pub fn structure(value: &[u8]) -> Structure {
    let mut lex = lexer(value);
    let _ = lex.skip_cfws();
    let mut ct = Vec::new();
    let ret = parse_content_type(&mut lex, &mut ct);
    let ct = cstr(&ct);
    let mut s = Structure::default();
    if ct.eq_ignore_ascii_case(b"message/rfc822") {
        s.rfc822 = true;
    } else if ct.len() >= 10 && ct[..10].eq_ignore_ascii_case(b"multipart/") {
        s.multipart = true;
        s.digest = ct[10..].eq_ignore_ascii_case(b"digest");
    }
    if ret.is_err() || !s.multipart {
        return s;
    }
    s.boundary = parameters(&mut lex)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"boundary"))
        .map(|(_, v)| v[..v.len().min(MAX_BOUNDARY)].to_vec());
    s
}

/// The first Content-Type field's value in a header block, if any.
pub fn content_type_value(block: &[u8]) -> Option<Vec<u8>> {
    fields(block)
        .into_iter()
        .find(|f| f.is("Content-Type"))
        .map(|f| f.value)
}

/// A Content-Type as `message-part-data.c` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub media_type: Vec<u8>,
    /// Empty when the value has no `/`.
    pub subtype: Vec<u8>,
    /// The parameters as written (RFC 2231 pieces apart); none when the
    /// value did not parse. [`merge_parameters`] gives BODYSTRUCTURE's.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// Did the value parse (type, `/`, subtype, then only parameters)?
    pub parsed: bool,
}

/// Parses a Content-Type value as `message-part-data.c` does.
pub fn content_type(value: &[u8]) -> ContentType {
    let mut lex = lexer(value);
    let _ = lex.skip_cfws();
    let mut ct = Vec::new();
    let ret = parse_content_type(&mut lex, &mut ct);
    let ct = cstr(&ct).to_vec();
    let (media_type, subtype) = match ct.iter().position(|&b| b == b'/') {
        Some(p) => (ct[..p].to_vec(), ct[p + 1..].to_vec()),
        None => (ct, Vec::new()),
    };
    let params = if ret.is_ok() {
        raw_parameters(&mut lex)
    } else {
        Vec::new()
    };
    ContentType {
        media_type,
        subtype,
        params,
        parsed: ret.is_ok(),
    }
}

/// A Content-Disposition as Dovecot keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub kind: Vec<u8>,
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An entity's MIME data as BODYSTRUCTURE shows it (Dovecot's
/// `message_part_data`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MimeData {
    pub content_type: Option<ContentType>,
    pub encoding: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    pub md5: Option<Vec<u8>>,
    pub location: Option<Vec<u8>>,
    pub language: Option<Vec<Vec<u8>>>,
    pub disposition: Option<Disposition>,
}

/// `message_header_strdup`: the value with NUL turned into U+FFFD.
fn strdup(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        if b == 0 {
            out.extend_from_slice(NUL_REPLACEMENT);
        } else {
            out.push(b);
        }
    }
    out
}

fn transfer_encoding(v: &[u8]) -> Option<Vec<u8>> {
    let mut lex = lexer(v);
    let _ = lex.skip_cfws();
    let (token, more) = lex.mime_token();
    let end = match more {
        Ok(false) => true,
        Ok(true) => lex.skip_cfws() == Ok(false),
        Err(()) => false,
    };
    (end && !token.is_empty()).then_some(token)
}

fn language(v: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut lex = lexer(v);
    let mut langs = Vec::new();
    let _ = lex.skip_cfws();
    loop {
        let mut tag = Vec::new();
        if lex.atom(&mut tag).is_err() {
            break;
        }
        langs.push(cstr(&tag).to_vec());
        if !lex.at(b',') {
            break;
        }
        lex.pos += 1;
        let _ = lex.skip_cfws();
    }
    (!langs.is_empty()).then_some(langs)
}

fn disposition(v: &[u8]) -> Option<Disposition> {
    let mut lex = lexer(v);
    let _ = lex.skip_cfws();
    let (kind, more) = lex.mime_token();
    more.ok()?;
    Some(Disposition {
        kind,
        params: parameters(&mut lex),
    })
}

/// The MIME data of an entity from its header block (or from its MIME
/// fields alone). `is_mime`: the entity is a body part of a multipart
/// (always MIME to Dovecot); otherwise (a message, embedded or not) its
/// Content-* fields count only next to a MIME-Version or a Content-Type
/// field.
pub fn mime_data(block: &[u8], is_mime: bool) -> MimeData {
    let mut d = MimeData::default();
    let mut mime = is_mime;
    for f in fields(block) {
        let name = f.c_name();
        if name.eq_ignore_ascii_case(b"MIME-Version") {
            mime = true;
        }
        if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"Content-") {
            continue;
        }
        let rest = &name[8..];
        let is = |s: &str| rest.eq_ignore_ascii_case(s.as_bytes());
        let v = &f.value;
        if is("Type") {
            mime = true;
            if d.content_type.is_none() {
                d.content_type = Some(content_type(v));
            }
        } else if is("Transfer-Encoding") {
            if d.encoding.is_none() {
                d.encoding = transfer_encoding(v);
            }
        } else if is("ID") {
            d.id.get_or_insert_with(|| strdup(v));
        } else if is("MD5") {
            d.md5.get_or_insert_with(|| strdup(v));
        } else if is("Description") {
            d.description.get_or_insert_with(|| strdup(v));
        } else if is("Location") {
            d.location.get_or_insert_with(|| strdup(v));
        } else if is("Language") {
            if d.language.is_none() {
                d.language = language(v);
            }
        } else if is("Disposition")
            && d.disposition.as_ref().is_none_or(|d| d.params.is_empty())
            && let Some(disp) = disposition(v)
        {
            d.disposition = Some(disp);
        }
    }
    if !mime {
        return MimeData::default();
    }
    d
}

/// The raw MIME fields (Content-* and MIME-Version) of a header block,
/// each exactly as in M: what a summary keeps so that readers can compute
/// [`mime_data`] in octets.
pub fn raw_mime_fields(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for HeaderLine {
        line,
        content,
        continued,
    } in header_lines(block)
    {
        if !continued {
            if content.is_empty() && line.ends_with(b"\n") {
                break;
            }
            keep = fields(line).first().is_some_and(|f| is_mime_field(&f.name));
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &str) -> Vec<(String, String)> {
        let ct = content_type(v.as_bytes());
        merge_parameters(ct.params)
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn parameters_stop_where_dovecot_stops() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            params("text/plain; charset=utf-8 name=x"),
            vec![p("charset", "utf-8")]
        );
        assert_eq!(params("image/png; a=b c; d=\"open"), vec![p("a", "b")]);
        assert_eq!(params("image/png;; a=b;"), vec![]);
        assert_eq!(
            params("multipart/mixed; boundary*0=ab; boundary*1=cd"),
            vec![p("boundary", "abcd")]
        );
        assert!(!content_type(b"text/plain charset=x").parsed);
    }

    #[test]
    fn structure_follows_the_message_parser() {
        let s = structure(b"multipart/mixed; boundary=a b");
        assert!(s.multipart);
        assert_eq!(s.boundary.as_deref(), Some(&b"a"[..]));
        let s = structure(b"Multipart/Digest; boundary=\"\"");
        assert!(s.digest);
        assert_eq!(s.boundary.as_deref(), Some(&b""[..]));
        let long = format!("multipart/mixed; boundary={}", "x".repeat(100));
        assert_eq!(
            structure(long.as_bytes()).boundary.unwrap().len(),
            MAX_BOUNDARY
        );
        assert!(structure(b"MESSAGE/RFC822").rfc822);
        assert!(!structure(b"message/rfc822 x").rfc822);
        assert!(!structure(b"multipart/mixed boundary=b").multipart);
    }

    #[test]
    fn fields_and_mime_data_as_dovecot_reads_them() {
        let block = b"Content-ID: <a@b>  \r\nContent-Description:\r\n two\r\nContent-Disposition: inline\r\nContent-Disposition: attachment; filename=x\r\nX: y\r\n\r\nbody: no\r\n";
        let d = mime_data(block, true);
        assert_eq!(d.id.as_deref(), Some(&b"<a@b>  "[..]));
        assert_eq!(d.description.as_deref(), Some(&b"\n two"[..]));
        assert_eq!(d.disposition.unwrap().kind, b"attachment");
        // Without MIME-Version or Content-Type, a message's fields do not
        // count.
        let d = mime_data(b"Content-Transfer-Encoding: base64\r\n\r\n", false);
        assert_eq!(d, MimeData::default());
        let raw = raw_mime_fields(b"Subject: s\r\nContent-Type: a/b;\r\n c=d\r\nX: y\r\n z\r\nMIME-Version: 1.0\r\n\r\nContent-Type: no\r\n");
        assert_eq!(raw, b"Content-Type: a/b;\r\n c=d\r\nMIME-Version: 1.0\r\n");
    }
}
