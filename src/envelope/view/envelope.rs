//! ENVELOPE: header fields read as Dovecot reads them, addresses parsed
//! as its message-address.c does.

use super::*;

fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A line without its line break (LF, and one CR before it).
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A field's name and value as Dovecot's header parser gives them: the
/// name precedes the first colon of the first line (trailing SP and HTAB
/// removed); the value follows it, without the whitespace after the colon
/// (but for one octet when the line holds nothing else), each
/// continuation line appended after an LF. `None` for a field whose first
/// line has no colon.
fn dovecot_field(raw: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let mut lines = raw.split_inclusive(|&b| b == b'\n');
    let first = strip_eol(lines.next()?);
    let colon = first.iter().position(|&b| b == b':')?;
    let mut name = &first[..colon];
    while let [rest @ .., last] = name
        && is_lwsp(*last)
    {
        name = rest;
    }
    let after = &first[colon + 1..];
    let skip = match after.iter().position(|&b| !is_lwsp(b)) {
        Some(p) => p,
        None => usize::from(!after.is_empty()),
    };
    let mut value = after[skip..].to_vec();
    for line in lines {
        value.push(b'\n');
        value.extend_from_slice(strip_eol(line));
    }
    Some((name, value))
}

/// A string without its line breaks, as Dovecot writes Date, In-Reply-To
/// and Message-ID: CR and LF dropped, a space put in where the next line
/// would otherwise run into the previous one.
fn without_line_breaks(v: Vec<u8>) -> Vec<u8> {
    if !v.iter().any(|&b| b == b'\r' || b == b'\n') {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    for (i, &b) in v.iter().enumerate() {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        } else if v
            .get(i + 1)
            .is_some_and(|&n| !matches!(n, b' ' | b'\t' | b'\r' | b'\n' | 0))
        {
            out.push(b' ');
        }
    }
    out
}

/// A string field's value as Dovecot keeps it: NUL becomes U+FFFD.
fn nul_free(v: Vec<u8>) -> Vec<u8> {
    if !v.contains(&0) {
        return v;
    }
    let mut out = Vec::with_capacity(v.len() + 4);
    for b in v {
        if b == 0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// ENVELOPE of a message whose raw header block is `block` (lossy where
/// the header's 8-bit octets are not UTF-8: see [`envelope_bytes`]).
pub fn envelope(block: &[u8]) -> String {
    String::from_utf8_lossy(&envelope_bytes(block)).into_owned()
}

/// ENVELOPE of a message whose raw header block is `block`, octet for
/// octet as Dovecot sends it.
pub fn envelope_bytes(block: &[u8]) -> Vec<u8> {
    let mut strings: [Option<Vec<u8>>; 4] = Default::default();
    let mut lists: [Vec<Address>; 6] = Default::default();
    const STRINGS: [&str; 4] = ["date", "subject", "in-reply-to", "message-id"];
    const LISTS: [&str; 6] = ["from", "sender", "reply-to", "to", "cc", "bcc"];
    for f in header::fields(block) {
        let Some((name, value)) = dovecot_field(f.raw) else {
            continue;
        };
        if let Some(i) = STRINGS
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            strings[i] = Some(nul_free(value));
        } else if let Some(i) = LISTS
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            lists[i].extend(address_list(&value));
        }
    }
    let [date, subject, in_reply_to, message_id] = strings;
    let [from, sender, reply_to, to, cc, bcc] = lists;
    let [date, in_reply_to, message_id] =
        [date, in_reply_to, message_id].map(|v| v.map(without_line_breaks));
    let mut out = b"(".to_vec();
    nstring(&mut out, date.as_deref());
    out.push(b' ');
    match &subject {
        Some(s) => human(&mut out, s),
        None => out.extend_from_slice(b"NIL"),
    }
    let sender = if sender.is_empty() { &from } else { &sender };
    let reply_to = if reply_to.is_empty() {
        &from
    } else {
        &reply_to
    };
    for list in [&from, sender, reply_to, &to, &cc, &bcc] {
        out.push(b' ');
        write_addresses(&mut out, list);
    }
    out.push(b' ');
    nstring(&mut out, in_reply_to.as_deref());
    out.push(b' ');
    nstring(&mut out, message_id.as_deref());
    out.push(b')');
    out
}

/// One element of an ENVELOPE address list: an address, or the start
/// (`mailbox` is the group's name, `host` is NIL) or end (all NIL) of a
/// group, as RFC 3501 §7.4.2 writes groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Address {
    name: Option<Vec<u8>>,
    route: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
}

pub(super) fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        match &a.name {
            Some(n) => human(out, n),
            None => out.extend_from_slice(b"NIL"),
        }
        out.push(b' ');
        nstring(out, a.route.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// An address list parsed as Dovecot's `message-address.c` parses one for
/// ENVELOPE (missing parts filled in as `MISSING_MAILBOX`,
/// `MISSING_DOMAIN`, `SYNTAX_ERROR`, `INVALID_ROUTE`).
struct AddressParser<'a> {
    lex: Lexer<'a>,
    out: Vec<Address>,
    addr: Address,
    invalid: bool,
    /// The last local part read (what a lone word is, in `addr_spec`).
    word: Vec<u8>,
}

impl AddressParser<'_> {
    fn add(&mut self) {
        self.out.push(std::mem::take(&mut self.addr));
        self.invalid = false;
    }

    fn add_fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
        }
        if self.addr.host.as_ref().is_none_or(|h| h.is_empty()) {
            self.addr.host = Some(b"MISSING_DOMAIN".to_vec());
        }
        self.add();
    }

    fn local_part(&mut self) -> Step {
        let mut s = std::mem::take(&mut self.word);
        s.clear();
        let r = if self.lex.at(b'"') {
            self.lex.quoted_string(&mut s)
        } else {
            self.lex.loose_dot_atom(&mut s)
        };
        self.word = s;
        let r = r?;
        self.addr.mailbox = Some(self.word.clone());
        Ok(r)
    }

    fn domain(&mut self) -> Step {
        let mut s = Vec::new();
        let r = self.lex.domain(&mut s)?;
        self.addr.host = Some(s);
        Ok(r)
    }

    /// `@a,@b` before the `:` of an obsolete route. `Ok(false)` at the end.
    fn domain_list(&mut self) -> Step {
        let mut s = Vec::new();
        loop {
            if !self.lex.more() {
                return Ok(false);
            }
            if !self.lex.at(b'@') {
                break;
            }
            if !s.is_empty() {
                s.push(b',');
            }
            s.push(b'@');
            if !self.lex.domain(&mut s)? {
                return Ok(false);
            }
            while self.lex.skip_cfws().unwrap_or(false) && self.lex.at(b',') {
                self.lex.pos += 1;
            }
        }
        self.addr.route = Some(s);
        Ok(true)
    }

    /// `<` [route `:`] local-part [`@` domain] `>` (at `<`).
    fn angle_addr(&mut self) -> Step {
        self.lex.pos += 1;
        if !self.lex.skip_cfws()? {
            return Err(());
        }
        if self.lex.at(b'@') {
            if matches!(self.domain_list(), Ok(true)) && self.lex.at(b':') {
                self.lex.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if !self.lex.more() {
                    return Err(());
                }
            }
            if !self.lex.skip_cfws()? {
                return Err(());
            }
        }
        if !self.lex.at(b'>') {
            if !self.local_part()? {
                return Err(());
            }
            if self.lex.at(b'@') && !self.domain()? {
                return Err(());
            }
        }
        if !self.lex.at(b'>') {
            return Err(());
        }
        self.lex.pos += 1;
        self.lex.skip_cfws()
    }

    fn name_addr(&mut self) -> Step {
        let mut name = Vec::new();
        if !self.lex.phrase(&mut name)? || !self.lex.at(b'<') {
            return Err(());
        }
        self.addr.name = (!name.is_empty()).then_some(name);
        if self.angle_addr().is_err() {
            self.addr.host = Some(b"SYNTAX_ERROR".to_vec());
            self.invalid = true;
        }
        Ok(self.lex.more())
    }

    fn addr_spec(&mut self) -> Step {
        self.lex.last_comment.clear();
        let quoted = self.lex.at(b'"');
        let mut r = self.local_part();
        if !matches!(r, Ok(true)) {
            self.invalid = true;
        }
        let mut domain_tried = false;
        if r != Ok(false) && self.lex.at(b'@') {
            domain_tried = true;
            let r2 = self.domain();
            if r2 != Ok(true) {
                r = r2;
            }
        }
        if !self.lex.last_comment.is_empty() {
            self.addr.name = Some(self.lex.last_comment.clone());
        } else if !domain_tried {
            // A word without `@domain`: a mailbox if alone, but a display
            // name if more words follow.
            let mut s = self.word.clone();
            s.push(b' ');
            let before = s.len();
            let _ = self.lex.phrase(&mut s);
            if s.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(s);
            } else if !quoted {
                self.addr.host = Some(Vec::new());
            }
            self.invalid = true;
            r = Err(());
        }
        r
    }

    fn mailbox(&mut self) -> Step {
        let start = self.lex.pos;
        let mut r = self.name_addr();
        if r.is_err() {
            self.lex.pos = start;
            r = self.addr_spec();
            if self.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.host.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        self.add_fixed();
        r
    }

    fn group(&mut self) -> Step {
        let mut name = Vec::new();
        if !self.lex.phrase(&mut name)? || !self.lex.at(b':') {
            return Err(());
        }
        self.lex.pos += 1;
        let mut r = self.lex.skip_cfws();
        self.addr.mailbox = Some(name);
        self.add();
        if r == Ok(true) && !self.lex.at(b';') {
            loop {
                let _ = self.mailbox();
                if !self.lex.at(b',') {
                    break;
                }
                self.lex.pos += 1;
                if self.lex.skip_cfws() != Ok(true) {
                    r = Err(());
                    break;
                }
            }
        }
        if r.is_ok() {
            if self.lex.at(b';') {
                self.lex.pos += 1;
                r = self.lex.skip_cfws();
            } else {
                r = Err(());
            }
        }
        self.add();
        Ok(r != Ok(false))
    }

    fn address(&mut self) -> Step {
        let start = self.lex.pos;
        // A failed group attempt leaves nothing behind but the position.
        let r = self.group();
        if r.is_err() {
            self.lex.pos = start;
            return self.mailbox();
        }
        r
    }

    fn list(&mut self) {
        loop {
            if self.address() == Ok(false) {
                break;
            }
            if !self.lex.at(b',') {
                break;
            }
            self.lex.pos += 1;
            match self.lex.skip_cfws() {
                Ok(true) => {}
                Ok(false) => break,
                Err(()) => {
                    self.add_fixed();
                    break;
                }
            }
        }
    }
}

/// The addresses of one address field's value (empty when it holds none).
pub(super) fn address_list(value: &[u8]) -> Vec<Address> {
    let mut p = AddressParser {
        lex: Lexer {
            data: value,
            pos: 0,
            last_comment: Vec::new(),
        },
        out: Vec::new(),
        addr: Address::default(),
        invalid: false,
        word: Vec::new(),
    };
    if p.lex.skip_cfws() == Ok(true) {
        p.list();
    }
    p.out
}
