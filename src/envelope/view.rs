//! What an IMAP server says about a message, computed from its summary
//! alone: RFC822.SIZE, ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2).
//!
//! The output is IMAP syntax, shaped like Dovecot's (the provider the tests
//! use as an oracle): sizes count line breaks as CRLF, text parts get a
//! default `charset`, a missing transfer encoding is "7bit".

use super::header::{self, RawField};
use super::summary::{Part, Summary};

/// RFC822.SIZE: octets of the message with every bare LF counted as CRLF.
pub fn rfc822_size(summary: &Summary) -> u64 {
    summary.size + summary.bare_lf
}

/// An IMAP string: quoted when it can be, a literal otherwise.
fn istring(out: &mut String, v: &[u8]) {
    let quotable = v.len() < 4096
        && v.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b.is_ascii());
    if quotable {
        out.push('"');
        for &b in v {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(b as char);
        }
        out.push('"');
    } else {
        out.push_str(&format!("{{{}}}\r\n", v.len()));
        out.push_str(&String::from_utf8_lossy(v));
    }
}

fn nstring(out: &mut String, v: Option<&[u8]>) {
    match v {
        Some(v) => istring(out, v),
        None => out.push_str("NIL"),
    }
}

fn sstring(out: &mut String, v: Option<&str>) {
    nstring(out, v.map(str::as_bytes));
}

/// The header value as Dovecot puts it in ENVELOPE: unfolded (line breaks
/// removed, folding whitespace kept), leading whitespace trimmed.
fn envelope_value(f: &RawField<'_>) -> Vec<u8> {
    f.value()
}

/// ENVELOPE of a message whose raw header block is `block`.
pub fn envelope(block: &[u8]) -> String {
    let fields = header::fields(block);
    let first = |name: &str| fields.iter().find(|f| f.is(name));
    let mut out = String::from("(");
    nstring(&mut out, first("date").map(envelope_value).as_deref());
    out.push(' ');
    nstring(&mut out, first("subject").map(envelope_value).as_deref());
    let addr = |name: &str| first(name).map(|f| f.value());
    let from = addr("from");
    let sender = addr("sender").or_else(|| from.clone());
    let reply_to = addr("reply-to").or_else(|| from.clone());
    for list in [from, sender, reply_to, addr("to"), addr("cc"), addr("bcc")] {
        out.push(' ');
        match list {
            Some(v) => address_list(&mut out, &v),
            None => out.push_str("NIL"),
        }
    }
    out.push(' ');
    nstring(
        &mut out,
        first("in-reply-to").map(envelope_value).as_deref(),
    );
    out.push(' ');
    nstring(&mut out, first("message-id").map(envelope_value).as_deref());
    out.push(')');
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Special(u8),
}

fn tokenize(v: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' && i + 1 < v.len() {
                        i += 1;
                    }
                    s.push(v[i]);
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted(s));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut s = Vec::new();
                while i < v.len() {
                    let c = v[i];
                    if c == b'\\' && i + 1 < v.len() {
                        s.push(v[i + 1]);
                        i += 2;
                        continue;
                    }
                    if c == b'(' {
                        depth += 1;
                        if depth > 1 {
                            s.push(c);
                        }
                    } else if c == b')' {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                        s.push(c);
                    } else {
                        s.push(c);
                    }
                    i += 1;
                }
                out.push(Token::Comment(s));
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' | b'[' | b']' => {
                out.push(Token::Special(c));
                i += 1;
            }
            _ => {
                let start = i;
                while i < v.len() && !b" \t\r\n\"(<>@,;:.[]".contains(&v[i]) {
                    i += 1;
                }
                out.push(Token::Word(v[start..i].to_vec()));
            }
        }
    }
    out
}

/// Joins words of a display name with single spaces, dots kept.
fn phrase(tokens: &[Token]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut prev_dot = false;
    for t in tokens {
        match t {
            Token::Word(w) | Token::Quoted(w) => {
                if !out.is_empty() && !prev_dot {
                    out.push(b' ');
                }
                out.extend_from_slice(w);
                prev_dot = false;
            }
            Token::Special(b'.') => {
                out.push(b'.');
                prev_dot = true;
            }
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `local@domain` from tokens (dots joined without spaces).
fn addr_spec(tokens: &[Token]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let at = tokens.iter().position(|t| *t == Token::Special(b'@'));
    let join = |ts: &[Token]| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for t in ts {
            match t {
                Token::Word(w) => out.extend_from_slice(w),
                Token::Quoted(w) => {
                    out.push(b'"');
                    out.extend_from_slice(w);
                    out.push(b'"');
                }
                Token::Special(c @ (b'.' | b'[' | b']')) => out.push(*c),
                _ => {}
            }
        }
        (!out.is_empty()).then_some(out)
    };
    match at {
        Some(p) => (join(&tokens[..p]), join(&tokens[p + 1..])),
        None => (join(tokens), None),
    }
}

fn address(
    out: &mut String,
    name: Option<&[u8]>,
    route: Option<&[u8]>,
    mailbox: Option<&[u8]>,
    host: Option<&[u8]>,
) {
    out.push('(');
    nstring(out, name);
    out.push(' ');
    nstring(out, route);
    out.push(' ');
    nstring(out, mailbox);
    out.push(' ');
    nstring(out, host);
    out.push(')');
}

/// One mailbox (`name <a@b>`, `a@b (comment)`, `a@b`) as an IMAP address.
fn mailbox(out: &mut String, tokens: &[Token]) {
    if let Some(lt) = tokens.iter().position(|t| *t == Token::Special(b'<')) {
        let name = phrase(&tokens[..lt]);
        let gt = tokens[lt..]
            .iter()
            .position(|t| *t == Token::Special(b'>'))
            .map_or(tokens.len(), |p| lt + p);
        let mut inner = &tokens[lt + 1..gt];
        let mut route = None;
        if let Some(colon) = inner.iter().position(|t| *t == Token::Special(b':')) {
            let (r, _) = addr_spec(&inner[..colon]);
            // Rebuild the route as written: "@a,@b".
            let mut rs = Vec::new();
            for t in &inner[..colon] {
                match t {
                    Token::Word(w) => rs.extend_from_slice(w),
                    Token::Special(c) => rs.push(*c),
                    _ => {}
                }
            }
            route = r.map(|_| rs);
            inner = &inner[colon + 1..];
        }
        let (local, host) = addr_spec(inner);
        let missing_mailbox = b"MISSING_MAILBOX".to_vec();
        let missing_domain = b"MISSING_DOMAIN".to_vec();
        address(
            out,
            name.as_deref(),
            route.as_deref(),
            Some(local.as_deref().unwrap_or(&missing_mailbox)),
            Some(host.as_deref().unwrap_or(&missing_domain)),
        );
    } else {
        let comment = tokens.iter().rev().find_map(|t| match t {
            Token::Comment(c) => Some(c.clone()),
            _ => None,
        });
        let (local, host) = addr_spec(tokens);
        let missing_mailbox = b"MISSING_MAILBOX".to_vec();
        let missing_domain = b"MISSING_DOMAIN".to_vec();
        address(
            out,
            comment.as_deref(),
            None,
            Some(local.as_deref().unwrap_or(&missing_mailbox)),
            Some(host.as_deref().unwrap_or(&missing_domain)),
        );
    }
}

/// An address list, groups included, or NIL when it holds no address.
fn address_list(out: &mut String, value: &[u8]) {
    let tokens = tokenize(value);
    let mut items = String::new();
    let mut i = 0;
    let mut in_group = false;
    while i < tokens.len() {
        // One element: up to ',' or ';' (or ':' opening a group), outside <>.
        let mut j = i;
        let mut angle = false;
        let mut end_tok = None;
        while j < tokens.len() {
            match tokens[j] {
                Token::Special(b'<') => angle = true,
                Token::Special(b'>') => angle = false,
                Token::Special(c @ (b',' | b';')) if !angle => {
                    end_tok = Some(c);
                    break;
                }
                Token::Special(b':') if !angle && !in_group => {
                    end_tok = Some(b':');
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let elem = &tokens[i..j];
        match end_tok {
            Some(b':') => {
                let name = phrase(elem).unwrap_or_default();
                address(&mut items, None, None, Some(&name), None);
                in_group = true;
            }
            _ => {
                if elem.iter().any(|t| !matches!(t, Token::Comment(_))) {
                    mailbox(&mut items, elem);
                }
                if end_tok == Some(b';') && in_group {
                    address(&mut items, None, None, None, None);
                    in_group = false;
                }
            }
        }
        i = j + 1;
    }
    if in_group {
        address(&mut items, None, None, None, None);
    }
    if items.is_empty() {
        out.push_str("NIL");
    } else {
        out.push('(');
        out.push_str(&items);
        out.push(')');
    }
}

fn params(out: &mut String, params: &[(String, String)], default_charset: bool) {
    if params.is_empty() && !default_charset {
        out.push_str("NIL");
        return;
    }
    out.push('(');
    let mut first = true;
    let mut seen_charset = false;
    for (n, v) in params {
        if !first {
            out.push(' ');
        }
        first = false;
        seen_charset |= n.eq_ignore_ascii_case("charset");
        istring(out, n.as_bytes());
        out.push(' ');
        istring(out, v.as_bytes());
    }
    if default_charset && !seen_charset {
        if !first {
            out.push(' ');
        }
        out.push_str("\"charset\" \"us-ascii\"");
    }
    out.push(')');
}

fn extension(out: &mut String, part: &Part) {
    out.push(' ');
    match &part.disposition {
        Some(d) => {
            out.push('(');
            istring(out, d.kind.as_bytes());
            out.push(' ');
            params(out, &d.params, false);
            out.push(')');
        }
        None => out.push_str("NIL"),
    }
    out.push(' ');
    match &part.language {
        Some(l) if !l.is_empty() => {
            out.push('(');
            for (i, tag) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                istring(out, tag.as_bytes());
            }
            out.push(')');
        }
        _ => out.push_str("NIL"),
    }
    out.push(' ');
    sstring(out, part.location.as_deref());
}

/// BODYSTRUCTURE (with extension data) or BODY (without) of a part.
pub fn body_structure(part: &Part, extended: bool) -> String {
    let mut out = String::new();
    write_part(&mut out, part, extended);
    out
}

fn write_part(out: &mut String, part: &Part, extended: bool) {
    out.push('(');
    if part.is_multipart() && !part.parts.is_empty() {
        for child in &part.parts {
            write_part(out, child, extended);
        }
        out.push(' ');
        istring(out, part.subtype.as_bytes());
        if extended {
            out.push(' ');
            params(out, &part.params, false);
            extension(out, part);
        }
        out.push(')');
        return;
    }
    let text = part.media_type.eq_ignore_ascii_case("text");
    istring(out, part.media_type.as_bytes());
    out.push(' ');
    istring(out, part.subtype.as_bytes());
    out.push(' ');
    params(out, &part.params, text);
    out.push(' ');
    sstring(out, part.id.as_deref());
    out.push(' ');
    sstring(out, part.description.as_deref());
    out.push(' ');
    match &part.encoding {
        Some(e) => istring(out, e.as_bytes()),
        None => out.push_str("\"7bit\""),
    }
    out.push_str(&format!(" {}", part.body_size + part.body_bare_lf));
    if text {
        out.push_str(&format!(" {}", part.body_lines));
    } else if part.is_message()
        && let Some(inner) = part.parts.first()
    {
        out.push(' ');
        out.push_str(&envelope(inner.header.as_deref().unwrap_or(b"")));
        out.push(' ');
        write_part(out, inner, extended);
        out.push_str(&format!(" {}", part.body_lines));
    }
    if extended {
        out.push(' ');
        sstring(out, part.md5.as_deref());
        extension(out, part);
    }
    out.push(')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(h: &str) -> String {
        envelope(h.as_bytes())
    }

    #[test]
    fn envelope_defaults_sender_and_reply_to_to_from() {
        let e = env_of("From: Ann <ann@example.test>\r\nSubject: hi\r\n\r\n");
        assert_eq!(
            e,
            "(NIL \"hi\" ((\"Ann\" NIL \"ann\" \"example.test\")) ((\"Ann\" NIL \"ann\" \"example.test\")) ((\"Ann\" NIL \"ann\" \"example.test\")) NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn groups_and_malformed_addresses_do_not_panic() {
        for v in [
            "a:b@c,d@e;",
            "<>",
            "@",
            ",,,",
            "\"unterminated",
            "(((",
            "a <b@c",
            ":;",
            "x@",
        ] {
            let mut s = String::new();
            address_list(&mut s, v.as_bytes());
        }
        let mut s = String::new();
        address_list(&mut s, b"team: a@b.c, Bob <bob@d.e>;");
        assert_eq!(
            s,
            "((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"b.c\")(\"Bob\" NIL \"bob\" \"d.e\")(NIL NIL NIL NIL))"
        );
    }
}
