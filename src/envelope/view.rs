//! What an IMAP server says about a message, computed from its summary
//! alone: RFC822.SIZE, ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2).
//!
//! The output is IMAP syntax, shaped like Dovecot's (the provider the tests
//! use as an oracle, `tests/summary_oracle.rs`):
//!
//! - Sizes count line breaks as CRLF; text parts get a default `charset`; a
//!   missing transfer encoding is "7bit".
//! - Strings are quoted unless they hold CR, LF, 8-bit octets or more than
//!   four `"` and `\`: those are literals. The Subject and display names
//!   are cleaned up "for humans": whitespace runs (SP, HTAB, CR, LF) become
//!   one space, leading and trailing whitespace goes, and a string that
//!   needed any of that, or holds `"`, `\` or 8-bit octets, is a literal.
//! - ENVELOPE reads header fields as Dovecot does: a field's name is what
//!   precedes the first colon of its first line, trailing SP and HTAB
//!   removed (`Subject :` is a Subject); its value skips the whitespace
//!   after the colon (only one octet of it when the line holds nothing
//!   else) and keeps folding line breaks, which Date, In-Reply-To and
//!   Message-ID then drop and the Subject turns into a space (a folded
//!   Subject is thus a literal). Of the Date, Subject, In-Reply-To and
//!   Message-ID fields the *last* one counts; the address fields (From,
//!   Sender, Reply-To, To, Cc, Bcc) all count, their addresses joined in
//!   order, each value parsed as Dovecot's `message-address.c` parses it
//!   (`MISSING_MAILBOX`, `MISSING_DOMAIN`, display names from comments,
//!   loose dots). A NUL octet becomes U+FFFD. Sender and Reply-To default
//!   to From when they give no address.
//! - BODYSTRUCTURE: only message/rfc822 encapsulates (Dovecot 2.3 treats
//!   message/global as a leaf, whatever the summary holds below it); a
//!   multipart without parts is shown with one empty text/plain part, and
//!   a message/rfc822 part without an embedded message in the summary with
//!   an empty one; the transfer encoding and the disposition type are read
//!   as MIME tokens; RFC 2231 continuations are joined; a message that is
//!   plain 7-bit text gets Dovecot's canned, lowercase answer; the body of
//!   a message/rfc822 part includes the line break that Dovecot counts in
//!   it next to a delimiter line ([`Part::imap_body_eol`]; for a summary
//!   written before that field existed, the part of it that the structure
//!   shows).
//!
//! The `*_bytes` functions give the exact octets (8-bit header octets
//! pass through as they are in M); the `String` forms are the same, lossy
//! where those octets are not UTF-8.

use super::header;
use super::summary::{Part, Summary};

/// RFC822.SIZE: octets of the message with every bare LF counted as CRLF.
pub fn rfc822_size(summary: &Summary) -> u64 {
    summary.size + summary.bare_lf
}

/// The most `"` and `\\` a quoted string may hold; more make a literal
/// (Dovecot's choice: past that, a literal is shorter).
const QUOTED_MAX_ESCAPES: usize = 4;

fn literal(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", v.len()).as_bytes());
    out.extend_from_slice(v);
}

/// An IMAP string as Dovecot writes one: quoted when it can be, a literal
/// otherwise.
fn istring(out: &mut Vec<u8>, v: &[u8]) {
    let escapes = v.iter().filter(|&&b| b == b'"' || b == b'\\').count();
    let needs_literal = escapes > QUOTED_MAX_ESCAPES
        || v.iter()
            .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80);
    if needs_literal {
        literal(out, v);
        return;
    }
    out.push(b'"');
    for &b in v {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn nstring(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => istring(out, v),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn sstring(out: &mut Vec<u8>, v: Option<&str>) {
    nstring(out, v.map(str::as_bytes));
}

/// A string for people to read (Subject, display names), as Dovecot
/// writes it: whitespace runs become one space and the ends are trimmed;
/// unless nothing needed changing (and nothing needs escaping), the result
/// is a literal.
fn human(out: &mut Vec<u8>, v: &[u8]) {
    let mut clean = Vec::with_capacity(v.len());
    let mut modified = false;
    let mut last_space = true;
    for &b in v {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if b != b' ' || last_space {
                    modified = true;
                }
                if !last_space {
                    clean.push(b' ');
                }
                last_space = true;
            }
            0 => {
                modified = true;
                clean.push(0x80);
                last_space = false;
            }
            _ => {
                if b == b'"' || b == b'\\' || b >= 0x80 {
                    modified = true;
                }
                clean.push(b);
                last_space = false;
            }
        }
    }
    if last_space && clean.last() == Some(&b' ') {
        clean.pop();
        modified = true;
    }
    if !modified {
        out.push(b'"');
        out.extend_from_slice(v);
        out.push(b'"');
    } else if clean.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else {
        literal(out, &clean);
    }
}

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
struct Address {
    name: Option<Vec<u8>>,
    route: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
}

fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
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

/// What a NUL octet becomes inside quoted strings, comments and domain
/// literals (Dovecot's replacement).
const NUL_REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// RFC 5322 `atext`, plus every 8-bit octet (as Dovecot's parser has it).
fn is_atext(b: u8) -> bool {
    b >= 0x80 || b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Result of a parsing step, Dovecot's convention: `Err` for a syntax error,
/// `Ok(false)` when the input ended, `Ok(true)` when more follows.
type Step = Result<bool, ()>;

/// An RFC 5322 tokenizer over one field value: whitespace and comments
/// skipped (the last comment kept: it names an address written
/// `a@b (Name)`), words, quoted strings, domains. It follows Dovecot's
/// `rfc822-parser.c` where real-world headers are malformed.
struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    last_comment: Vec<u8>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn at(&self, b: u8) -> bool {
        self.peek() == Some(b)
    }

    /// A MIME token (RFC 2045, `.` allowed) at the position, and then
    /// whitespace and comments skipped: `Ok(false)` at the end.
    fn mime_token(&mut self) -> (Vec<u8>, Step) {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c == b'.' || (is_atext(c) && !b"/=?".contains(&c)))
        {
            self.pos += 1;
        }
        let token = self.data[start..self.pos].to_vec();
        let more = if self.more() {
            self.skip_cfws()
        } else {
            Ok(false)
        };
        (token, more)
    }

    fn more(&self) -> bool {
        self.pos < self.data.len()
    }

    fn skip_comment(&mut self) -> Step {
        self.last_comment.clear();
        let mut level = 1usize;
        self.pos += 1;
        let mut start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                0 => {
                    self.last_comment
                        .extend_from_slice(&self.data[start..self.pos]);
                    self.last_comment.extend_from_slice(NUL_REPLACEMENT);
                    start = self.pos + 1;
                }
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        self.last_comment
                            .extend_from_slice(&self.data[start..self.pos]);
                        self.pos += 1;
                        return Ok(self.more());
                    }
                }
                b'\n' => {
                    let mut piece = &self.data[start..self.pos];
                    piece = piece.strip_suffix(b"\r").unwrap_or(piece);
                    self.last_comment.extend_from_slice(piece);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(()),
                        Some(b'\r' | b'\n' | 0) => self.pos -= 1,
                        Some(_) => {
                            self.last_comment
                                .extend_from_slice(&self.data[start..self.pos - 1]);
                            start = self.pos;
                        }
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    /// Skips whitespace and comments.
    fn skip_cfws(&mut self) -> Step {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    self.skip_comment()?;
                }
                _ => break,
            }
        }
        Ok(self.more())
    }

    fn atom(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.peek().is_some_and(is_atext) {
            return Err(());
        }
        let start = self.pos;
        while self.peek().is_some_and(is_atext) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.more() {
            self.skip_cfws()
        } else {
            Ok(false)
        }
    }

    /// A local part's words and dots, dots anywhere (`a..b`, `.a`, `a.`),
    /// as Dovecot accepts them.
    fn loose_dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
        let mut r = Err(());
        loop {
            while self.at(b'.') {
                out.push(b'.');
                self.pos += 1;
                if !self.more() {
                    return Ok(false);
                }
                r = Ok(true);
            }
            if self.at(b'@') {
                break;
            }
            r = self.atom(out);
            if r != Ok(true) || !self.at(b'.') {
                break;
            }
        }
        r
    }

    fn dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.peek().is_some_and(is_atext) {
            return Err(());
        }
        let mut start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if is_atext(c) {
                self.pos += 1;
                continue;
            }
            if start == self.pos {
                return Err(());
            }
            out.extend_from_slice(&self.data[start..self.pos]);
            if !self.skip_cfws()? {
                return Ok(false);
            }
            if !self.at(b'.') {
                return Ok(true);
            }
            self.pos += 1;
            out.push(b'.');
            if !self.skip_cfws()? {
                return Err(());
            }
            start = self.pos;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        Ok(false)
    }

    fn quoted_string(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        let mut start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                0 => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    out.extend_from_slice(NUL_REPLACEMENT);
                    start = self.pos + 1;
                }
                b'"' => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    self.pos += 1;
                    return self.skip_cfws();
                }
                b'\n' => {
                    let mut piece = &self.data[start..self.pos];
                    piece = piece.strip_suffix(b"\r").unwrap_or(piece);
                    out.extend_from_slice(piece);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(()),
                        Some(b'\r' | b'\n' | 0) => self.pos -= 1,
                        Some(_) => {
                            out.extend_from_slice(&self.data[start..self.pos - 1]);
                            start = self.pos;
                        }
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    fn atom_or_dot(&mut self, out: &mut Vec<u8>) -> Step {
        let start = self.pos;
        while self.peek().is_some_and(|c| is_atext(c) || c == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.more() {
            self.skip_cfws()
        } else {
            Ok(false)
        }
    }

    /// A display name: words and dots, joined with single spaces.
    fn phrase(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.more() {
            return Ok(false);
        }
        if self.at(b'.') {
            return Err(());
        }
        loop {
            let more = if self.at(b'"') {
                self.quoted_string(out)?
            } else {
                self.atom_or_dot(out)?
            };
            if !more {
                return Ok(false);
            }
            match self.peek() {
                Some(c) if is_atext(c) || c == b'"' || c == b'.' => out.push(b' '),
                _ => break,
            }
        }
        self.skip_cfws()
    }

    fn domain_literal(&mut self, out: &mut Vec<u8>) -> Step {
        let mut start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            match c {
                0 => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    out.extend_from_slice(NUL_REPLACEMENT);
                    start = self.pos + 1;
                }
                b'[' => return Err(()),
                b']' => {
                    out.extend_from_slice(&self.data[start..=self.pos]);
                    self.pos += 1;
                    return self.skip_cfws();
                }
                b'\n' => {
                    let mut piece = &self.data[start..self.pos];
                    piece = piece.strip_suffix(b"\r").unwrap_or(piece);
                    out.extend_from_slice(piece);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(()),
                        Some(b'\r' | b'\n' | 0) => {
                            out.extend_from_slice(&self.data[start..self.pos]);
                            start = self.pos;
                            self.pos -= 1;
                        }
                        Some(_) => {}
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    /// `@` domain (at `@`).
    fn domain(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        if !self.skip_cfws()? {
            return Err(());
        }
        if self.at(b'[') {
            self.domain_literal(out)
        } else {
            self.dot_atom(out)
        }
    }
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
fn address_list(value: &[u8]) -> Vec<Address> {
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

/// Parameters as Dovecot lists them: RFC 2231 continuations (`name*0`,
/// `name*1*`, ...) joined into one `name` (or `name*`, then with the
/// unencoded pieces' `%` escaped) after the other parameters, in name
/// order; pieces with a missing index are left as they are.
fn merged_params(params: &[(String, String)]) -> Vec<(String, String)> {
    struct Piece<'a> {
        key: &'a str,
        value: &'a str,
        index: u32,
        extended: bool,
    }
    let mut out = Vec::new();
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    // Dovecot's parser keeps the last index for a bare `name*`.
    let mut index = 0u32;
    for (key, value) in params {
        let Some(star) = key.find('*') else {
            out.push((key.clone(), value.clone()));
            continue;
        };
        let mut rest = &key[star..];
        if rest.len() > 1 {
            rest = &rest[1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            index = rest.as_bytes()[..digits].iter().fold(0u32, |n, d| {
                n.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
            });
            rest = &rest[digits..];
        }
        let (extended, rest) = match rest.strip_prefix('*') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() {
            pieces.push(Piece {
                key: &key[..star],
                value,
                index,
                extended,
            });
        } else {
            out.push((key.clone(), value.clone()));
        }
    }
    pieces.sort_by(|a, b| a.key.cmp(b.key).then(a.index.cmp(&b.index)));
    let mut i = 0;
    while i < pieces.len() {
        let mut j = i;
        let mut complete = true;
        let mut any_extended = false;
        let mut next_index = 0u32;
        while j < pieces.len() && pieces[j].key.eq_ignore_ascii_case(pieces[i].key) {
            complete &= pieces[j].index == next_index;
            any_extended |= pieces[j].extended;
            next_index = next_index.wrapping_add(1);
            j += 1;
        }
        let group = &pieces[i..j];
        if !complete {
            for p in group {
                let star = if p.extended { "*" } else { "" };
                out.push((format!("{}*{}{star}", p.key, p.index), p.value.to_owned()));
            }
        } else {
            let mut value = String::new();
            if any_extended && !group[0].extended {
                value.push_str("''");
            }
            for p in group {
                if any_extended && !p.extended {
                    value.push_str(&p.value.replace('%', "%25"));
                } else {
                    value.push_str(p.value);
                }
            }
            let star = if any_extended { "*" } else { "" };
            out.push((format!("{}{star}", group[0].key), value));
        }
        i = j;
    }
    out
}

fn params(out: &mut Vec<u8>, params: &[(String, String)], default_charset: bool) {
    let params = &merged_params(params)[..];
    if params.is_empty() && !default_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut first = true;
    let mut seen_charset = false;
    for (n, v) in params {
        if !first {
            out.push(b' ');
        }
        first = false;
        seen_charset |= n.eq_ignore_ascii_case("charset");
        istring(out, n.as_bytes());
        out.push(b' ');
        istring(out, v.as_bytes());
    }
    if default_charset && !seen_charset {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

fn extension(out: &mut Vec<u8>, part: &Part) {
    out.push(b' ');
    match &part.disposition {
        Some(d) => {
            out.push(b'(');
            istring(out, &mime_token(d.kind.as_bytes()));
            out.push(b' ');
            params(out, &d.params, false);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match &part.language {
        Some(l) if !l.is_empty() => {
            out.push(b'(');
            for (i, tag) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                istring(out, tag.as_bytes());
            }
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    sstring(out, part.location.as_deref());
}

/// The MIME token at the start of `v` (after whitespace and comments), as
/// Dovecot reads a Content-Transfer-Encoding or a disposition type.
fn mime_token(v: &[u8]) -> Vec<u8> {
    let mut lex = Lexer {
        data: v,
        pos: 0,
        last_comment: Vec::new(),
    };
    let _ = lex.skip_cfws();
    lex.mime_token().0
}

/// Is `v` one MIME token, as Dovecot reads a type or subtype?
fn is_mime_token(v: &str) -> bool {
    let mut lex = Lexer {
        data: v.as_bytes(),
        pos: 0,
        last_comment: Vec::new(),
    };
    let (token, more) = lex.mime_token();
    !token.is_empty() && more == Ok(false)
}

/// Type, subtype and parameters as Dovecot shows them for a Content-Type
/// value that the summary's parser found unusable (the summary then holds
/// the default type and `content_type_value`). Dovecot shows a value cut
/// short after its first word as that word (`text` is `"text" ""`),
/// anything else it cannot parse as `"" ""`, and neither with parameters.
fn dovecot_content_type(v: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<(String, String)>) {
    let failed = |t: Vec<u8>| (t, Vec::new(), Vec::new());
    let mut lex = Lexer {
        data: v,
        pos: 0,
        last_comment: Vec::new(),
    };
    if lex.skip_cfws() != Ok(true) {
        return failed(Vec::new());
    }
    let (t, more) = lex.mime_token();
    if more != Ok(true) || t.is_empty() {
        return failed(t);
    }
    if !lex.at(b'/') {
        return failed(Vec::new());
    }
    lex.pos += 1;
    if lex.skip_cfws() != Ok(true) {
        return failed(Vec::new());
    }
    let (sub, more) = lex.mime_token();
    if more.is_err() || sub.is_empty() || (lex.more() && !lex.at(b';')) {
        return failed(Vec::new());
    }
    // Dovecot's parser takes what the summary's did not (8-bit words):
    // the parameters as the summary's parser reads them.
    (t, sub, header::parse_params(v).params)
}

/// The transfer encoding Dovecot reports for a Content-Transfer-Encoding
/// value: one MIME token and nothing else but whitespace and comments;
/// `None` (shown as "7bit") otherwise.
fn transfer_encoding(v: &str) -> Option<Vec<u8>> {
    let mut lex = Lexer {
        data: v.as_bytes(),
        pos: 0,
        last_comment: Vec::new(),
    };
    let _ = lex.skip_cfws();
    let (token, more) = lex.mime_token();
    (!token.is_empty() && more == Ok(false)).then_some(token)
}

/// Does this entity encapsulate a message? Only message/rfc822: Dovecot
/// 2.3 shows message/global as a leaf.
fn is_rfc822(part: &Part) -> bool {
    part.media_type.eq_ignore_ascii_case("message") && part.subtype.eq_ignore_ascii_case("rfc822")
}

/// Does the body, as Dovecot delimits it, include the line break after
/// `body_offset + body_size`? The summary says so ([`Part::imap_body_eol`]);
/// a summary from before that field shows one of the two cases: a header
/// inside the entity (of its last part, that part's last part, ...) that
/// runs past the end of the body, up to the delimiter line.
fn keeps_break(part: &Part) -> bool {
    if part.imap_body_eol > 0 {
        return true;
    }
    let end = part.body_offset.saturating_add(part.body_size);
    let mut d = part;
    while let Some(last) = d.parts.last() {
        if last.header_offset.saturating_add(last.header_size) > end {
            return true;
        }
        d = last;
    }
    false
}

/// BODYSTRUCTURE (with extension data) or BODY (without) of a part (lossy
/// where strings are not UTF-8: see [`body_structure_bytes`]).
pub fn body_structure(part: &Part, extended: bool) -> String {
    String::from_utf8_lossy(&body_structure_bytes(part, extended)).into_owned()
}

/// BODYSTRUCTURE (with extension data) or BODY (without) of a message
/// whose root entity is `root`, as octets.
pub fn body_structure_bytes(root: &Part, extended: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if is_plain_7bit(root) {
        // Dovecot's shortcut for the commonest message, which writes the
        // type in lowercase whatever M says.
        out.extend_from_slice(b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\"");
        let size = root.body_size.saturating_add(root.body_bare_lf);
        out.extend_from_slice(format!(" {size} {}", root.body_lines).as_bytes());
        if extended {
            out.extend_from_slice(b" NIL NIL NIL NIL");
        }
        out.push(b')');
        return out;
    }
    write_part(&mut out, root, extended);
    out
}

/// Is this message plain 7-bit text as Dovecot sees it: text/plain, no
/// parameter but `charset=us-ascii`, 7bit, and no other MIME field that
/// BODYSTRUCTURE shows?
fn is_plain_7bit(root: &Part) -> bool {
    let params = merged_params(&root.params);
    let params_ok = match &params[..] {
        [] => true,
        [(name, value)] => {
            name.eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("us-ascii")
        }
        _ => false,
    };
    let encoding_ok = match &root.encoding {
        None => true,
        Some(e) => transfer_encoding(e).is_none_or(|t| t.eq_ignore_ascii_case(b"7bit")),
    };
    root.media_type.eq_ignore_ascii_case("text")
        && root.subtype.eq_ignore_ascii_case("plain")
        && root.content_type_value.is_none()
        && root.parts.is_empty()
        && params_ok
        && encoding_ok
        && root.id.is_none()
        && root.description.is_none()
        && root.md5.is_none()
        && root.disposition.is_none()
        && root.language.as_ref().is_none_or(Vec::is_empty)
        && root.location.is_none()
}

/// What Dovecot writes for a multipart without parts (which MIME does not
/// allow): one empty text/plain part.
const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

fn write_part(out: &mut Vec<u8>, part: &Part, extended: bool) {
    out.push(b'(');
    if part.is_multipart() {
        if part.parts.is_empty() {
            out.extend_from_slice(if extended {
                EMPTY_BODYSTRUCTURE
            } else {
                EMPTY_BODY
            });
        }
        for child in &part.parts {
            write_part(out, child, extended);
        }
        out.push(b' ');
        istring(out, part.subtype.as_bytes());
        if extended {
            out.push(b' ');
            params(out, &part.params, false);
            extension(out, part);
        }
        out.push(b')');
        return;
    }
    let (media_type, subtype, type_params) = match &part.content_type_value {
        Some(v) => dovecot_content_type(v.as_bytes()),
        // Words the summary's parser takes but Dovecot's does not (`@`,
        // `"`, ...): Dovecot shows an empty type.
        None if !is_mime_token(&part.media_type) || !is_mime_token(&part.subtype) => {
            (Vec::new(), Vec::new(), Vec::new())
        }
        None => (
            part.media_type.as_bytes().to_vec(),
            part.subtype.as_bytes().to_vec(),
            part.params.clone(),
        ),
    };
    let text = media_type.eq_ignore_ascii_case(b"text");
    istring(out, &media_type);
    out.push(b' ');
    istring(out, &subtype);
    out.push(b' ');
    params(out, &type_params, text);
    out.push(b' ');
    sstring(out, part.id.as_deref());
    out.push(b' ');
    sstring(out, part.description.as_deref());
    out.push(b' ');
    match part.encoding.as_deref().and_then(transfer_encoding) {
        Some(e) => istring(out, &e),
        None => out.extend_from_slice(b"\"7bit\""),
    }
    let size = part.body_size.saturating_add(part.body_bare_lf);
    if text {
        out.extend_from_slice(format!(" {size} {}", part.body_lines).as_bytes());
    } else if is_rfc822(part) && part.content_type_value.is_none() {
        // A line break Dovecot counts in the body is two octets (CRLF)
        // and one line, whatever it is in M.
        let extra = u64::from(keeps_break(part));
        out.extend_from_slice(format!(" {} ", size.saturating_add(2 * extra)).as_bytes());
        match part.parts.first() {
            Some(inner) => {
                out.extend_from_slice(&envelope_bytes(inner.header.as_deref().unwrap_or(b"")));
                out.push(b' ');
                write_part(out, inner, extended);
            }
            None => {
                // No embedded message in the summary (the part's header
                // ran up to a delimiter line, or a cap was reached): an
                // empty one, as Dovecot shows a message/rfc822 part without
                // content.
                out.extend_from_slice(&envelope_bytes(b""));
                out.push(b' ');
                out.extend_from_slice(if extended {
                    EMPTY_BODYSTRUCTURE
                } else {
                    EMPTY_BODY
                });
            }
        }
        out.extend_from_slice(format!(" {}", part.body_lines.saturating_add(extra)).as_bytes());
    } else {
        out.extend_from_slice(format!(" {size}").as_bytes());
    }
    if extended {
        out.push(b' ');
        sstring(out, part.md5.as_deref());
        extension(out, part);
    }
    out.push(b')');
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

    fn list_of(v: &[u8]) -> String {
        let mut out = Vec::new();
        write_addresses(&mut out, &address_list(v));
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn groups_and_malformed_addresses_do_not_panic() {
        for v in [
            &b"a:b@c,d@e;"[..],
            b"<>",
            b"@",
            b",,,",
            b"\"unterminated",
            b"(((",
            b"a <b@c",
            b":;",
            b"x@",
            b"<@",
            b"<@a,@b",
            b"a <@a:",
            b"\\",
            b"(\\",
            b"\"\\",
            b"[",
            b"a@[b\\",
            b"a@[x",
            b"g: (c",
            b"a.",
            b"a. .b@c",
            b"\x00\"\x00\"(\x00)",
        ] {
            list_of(v);
        }
        assert_eq!(
            list_of(b"team: a@b.c, Bob <bob@d.e>;"),
            "((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"b.c\")(\"Bob\" NIL \"bob\" \"d.e\")(NIL NIL NIL NIL))"
        );
    }

    #[test]
    fn addresses_as_dovecot_reads_them() {
        for (value, want) in [
            // Observed from Dovecot 2.3.19 (tests/summary_oracle.rs probes).
            (
                &b"Jo (comment) <j@x.test>, (only comment) k@x.test, l@x.test (Real Name)"[..],
                "((\"Jo\" NIL \"j\" \"x.test\")(NIL NIL \"k\" \"x.test\")(\"Real Name\" NIL \"l\" \"x.test\"))",
            ),
            (b"<>", "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))"),
            (
                b"x@y.test, a\0b@x.test, c@x.test",
                "((NIL NIL \"x\" \"y.test\")(NIL NIL \"a\" \"MISSING_DOMAIN\"))",
            ),
            (
                b"Name\0X <n@x.test>",
                "((NIL NIL \"Name\" \"MISSING_DOMAIN\"))",
            ),
            (
                b"\"Ann  Two\tTab\" <a@x.test>",
                "(({11}\r\nAnn Two Tab NIL \"a\" \"x.test\"))",
            ),
            (b"(c)", "NIL"),
        ] {
            assert_eq!(list_of(value), want, "{}", String::from_utf8_lossy(value));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_or_message_gives_an_answer(
            value in proptest::collection::vec(
                proptest::sample::select(b" \t\r\n\0\"\\()<>@,;:.[]=*%'abcZ\xe9".to_vec()),
                0..60,
            ),
            name in proptest::sample::select(vec!["To", "Subject", "Date", "Content-Type"]),
        ) {
            let mut h = format!("{name}: ").into_bytes();
            h.extend_from_slice(&value);
            let e = envelope_bytes(&h);
            proptest::prop_assert!(e.starts_with(b"(") && e.ends_with(b")"));
            list_of(&value);
            let mut m = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n".to_vec();
            m.extend_from_slice(&h);
            m.extend_from_slice(b"\r\n\r\n--b--\r\n");
            let s = crate::envelope::scan::scan(&m, crate::envelope::scan::Limits::default());
            body_structure_bytes(&s.root, true);
        }
    }

    #[test]
    fn message_part_sizes_count_the_line_break_dovecot_keeps() {
        use crate::envelope::scan::{Limits, scan};
        // The inner header is cut short by the delimiter line: Dovecot's
        // message/rfc822 body is `X: inner` CRLF (10 octets, 1 line).
        let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nX: inner\r\n--b--\r\n";
        let s = scan(m, Limits::default());
        let want = "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 10 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) 1) \"mixed\")";
        assert_eq!(body_structure(&s.root, false), want);
        // A summary written before `imap_body_eol` existed gives the same
        // answer here: the structure shows the header running past the
        // body.
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"imap_body_eol\":2"));
        let old: Summary = serde_json::from_str(&json.replace(",\"imap_body_eol\":2", "")).unwrap();
        assert_eq!(old.root.parts[0].imap_body_eol, 0);
        assert_eq!(body_structure(&old.root, false), want);
        // `--c--` right before `--b`: only the new field knows.
        let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--\r\n";
        let s = scan(m, Limits::default());
        assert!(body_structure(&s.root, false).contains("\"7bit\" 1 0) \"alternative\") 6)"));
    }

    #[test]
    fn multipart_without_parts_and_message_global() {
        use crate::envelope::scan::{Limits, scan};
        let m = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nA\r\n--x--\r\n";
        let s = scan(m, Limits::default());
        assert_eq!(
            body_structure(&s.root, true),
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL)"
        );
        let m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/global\r\n\r\nSubject: g\r\n\r\nG\r\n--x--\r\n";
        let s = scan(m, Limits::default());
        assert_eq!(s.root.parts[0].parts.len(), 1, "the summary describes it");
        assert_eq!(
            body_structure(&s.root, false),
            "((\"message\" \"global\" NIL NIL NIL \"7bit\" 15) \"mixed\")"
        );
    }

    #[test]
    fn rfc2231_continuations_are_joined() {
        let p = |v: &[(&str, &str)]| {
            let v: Vec<(String, String)> = v
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            merged_params(&v)
                .into_iter()
                .map(|(a, b)| format!("{a}={b}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            p(&[("name*1", "b"), ("x", "1"), ("name*0", "a")]),
            "x=1 name=ab"
        );
        assert_eq!(
            p(&[("t*0*", "utf-8''%41"), ("t*1", "%")]),
            "t*=utf-8''%41%25"
        );
        assert_eq!(p(&[("t*0", "a"), ("t*2", "c")]), "t*0=a t*2=c");
        assert_eq!(p(&[("n*", "utf-8''x"), ("n*x", "y")]), "n*x=y n*=utf-8''x");
        // Index overflow wraps, as in Dovecot; no panic.
        assert_eq!(p(&[("n*99999999999", "v")]), "n*1215752191=v");
    }

    #[test]
    fn envelope_fields_as_dovecot_reads_them() {
        // The last Subject counts (a name followed by spaces is still the
        // name); address fields add up; empty Sender and Reply-To default
        // to From.
        let e = env_of(
            "Subject: a\r\nSubject : b\r\nTo: one@x.test\r\nReply-To:\r\nFrom: f@x.test\r\nto: two@x.test,\r\n  three@x.test\r\n\r\n",
        );
        assert_eq!(
            e,
            "(NIL \"b\" ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"f\" \"x.test\")) ((NIL NIL \"one\" \"x.test\")(NIL NIL \"two\" \"x.test\")(NIL NIL \"three\" \"x.test\")) NIL NIL NIL NIL)"
        );
        // Whitespace: one octet skipped after the colon of a blank value,
        // folding kept in strings, collapsed in the Subject.
        let e = env_of(
            "Date: a  \r\n b\r\nMessage-ID:   \r\nIn-Reply-To: \t<i>  \r\nSubject: fold\r\n  ed\r\n\r\n",
        );
        assert_eq!(
            e,
            "(\"a   b\" {7}\r\nfold ed NIL NIL NIL NIL NIL NIL \"<i>  \" \"  \")"
        );
        // NUL in a string is U+FFFD; more than four quoted-specials make a
        // literal.
        let e = envelope_bytes(b"Subject: nul\0in\r\nMessage-ID: \"a\" \"b\" \"c\"\r\n\r\n");
        assert_eq!(
            e,
            "(NIL {8}\r\nnul\u{FFFD}in NIL NIL NIL NIL NIL NIL NIL {11}\r\n\"a\" \"b\" \"c\")"
                .as_bytes()
        );
    }
}
