//! FROM, TO, CC and BCC match an address field as Dovecot rewrites it
//! before searching: parsed (`message_address_parse` with missing parts
//! filled in as `MISSING_MAILBOX` / `MISSING_DOMAIN`, broken angle
//! addresses as `SYNTAX_ERROR`) and written back
//! (`message_address_write`): `"Display Name" <local@domain>` with the
//! name quoted when it is not one atom, comments dropped (or made the
//! name of a bare address), groups as `name: a, b;`. So `FROM "<joe@"`
//! matches a bare `joe@example.com`, and whitespace runs inside names
//! count as one space.

use super::rfc822::{Parser, Step, is_atext};

#[derive(Default)]
struct Address {
    name: Option<Vec<u8>>,
    route: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    domain: Option<Vec<u8>>,
    invalid: bool,
}

struct Ctx<'a> {
    p: Parser<'a>,
    list: Vec<Address>,
    addr: Address,
    /// What the last local part parse read, even when it failed.
    scratch: Vec<u8>,
}

/// The field value `value` (unfolded) as Dovecot writes its addresses.
pub fn normalize(value: &[u8]) -> Vec<u8> {
    let mut ctx = Ctx {
        p: Parser::new(value),
        list: Vec::new(),
        addr: Address::default(),
        scratch: Vec::new(),
    };
    ctx.p.last_comment = Some(Vec::new());
    if matches!(ctx.p.skip_lwsp(), Ok(true)) {
        ctx.address_list();
    }
    write(&ctx.list)
}

impl Ctx<'_> {
    fn add(&mut self) {
        let a = std::mem::take(&mut self.addr);
        self.list.push(a);
    }

    fn add_fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
            self.addr.invalid = true;
        }
        if self.addr.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.addr.domain = Some(b"MISSING_DOMAIN".to_vec());
            self.addr.invalid = true;
        }
        self.add();
    }

    fn local_part(&mut self) -> Step {
        self.scratch.clear();
        let r = if self.p.peek() == b'"' {
            self.p.quoted_string(&mut self.scratch)
        } else {
            self.p.dot_atom(&mut self.scratch)
        };
        let more = r?;
        self.addr.mailbox = Some(self.scratch.clone());
        Ok(more)
    }

    fn domain(&mut self) -> Step {
        let mut s = Vec::new();
        let more = self.p.domain(&mut s)?;
        self.addr.domain = Some(s);
        Ok(more)
    }

    /// `@a,@b` before `:` in an angle address.
    fn domain_list(&mut self) -> Step {
        let mut s = Vec::new();
        loop {
            if self.p.at_end() {
                return Ok(false);
            }
            if self.p.peek() != b'@' {
                break;
            }
            if !s.is_empty() {
                s.push(b',');
            }
            s.push(b'@');
            if !self.p.domain(&mut s)? {
                return Ok(false);
            }
            while matches!(self.p.skip_lwsp(), Ok(true)) && self.p.peek() == b',' {
                self.p.pos += 1;
            }
        }
        self.addr.route = Some(s);
        Ok(true)
    }

    fn angle_addr(&mut self) -> Step {
        self.p.pos += 1;
        if !self.p.skip_lwsp()? {
            return Err(());
        }
        if self.p.peek() == b'@' {
            if matches!(self.domain_list(), Ok(true)) && self.p.peek() == b':' {
                self.p.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if self.p.at_end() {
                    return Err(());
                }
            }
            if !self.p.skip_lwsp()? {
                return Err(());
            }
        }
        if self.p.peek() != b'>' {
            if !self.local_part()? {
                return Err(());
            }
            if self.p.peek() == b'@' && !self.domain()? {
                return Err(());
            }
        }
        if self.p.peek() != b'>' {
            return Err(());
        }
        self.p.pos += 1;
        self.p.skip_lwsp()
    }

    fn name_addr(&mut self) -> Step {
        let mut s = Vec::new();
        if !matches!(self.p.phrase(&mut s), Ok(true)) || self.p.peek() != b'<' {
            return Err(());
        }
        self.addr.name = (!s.is_empty()).then_some(s);
        if self.angle_addr().is_err() {
            self.addr.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.addr.invalid = true;
        }
        Ok(!self.p.at_end())
    }

    fn addr_spec(&mut self) -> Step {
        if let Some(c) = self.p.last_comment.as_mut() {
            c.clear();
        }
        let quoted = self.p.peek() == b'"';
        let mut ret = self.local_part();
        if !matches!(ret, Ok(true)) {
            self.addr.invalid = true;
        }
        let mut had_domain = false;
        if !matches!(ret, Ok(false)) && !self.p.at_end() && self.p.peek() == b'@' {
            had_domain = true;
            let r2 = self.domain();
            if !matches!(r2, Ok(true)) {
                ret = r2;
            }
        }
        let comment = self.p.last_comment.clone().unwrap_or_default();
        if !comment.is_empty() {
            self.addr.name = Some(comment);
        } else if !had_domain {
            // A lone word is a mailbox; followed by more words, a name.
            let mut s = std::mem::take(&mut self.scratch);
            s.push(b' ');
            let before = s.len();
            let _ = self.p.phrase(&mut s);
            if s.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(s);
            } else if !quoted {
                self.addr.domain = Some(Vec::new());
            }
            self.addr.invalid = true;
            ret = Err(());
        }
        ret
    }

    fn mailbox(&mut self) -> Step {
        let start = self.p.pos;
        let mut ret = self.name_addr();
        if ret.is_err() {
            self.p.pos = start;
            ret = self.addr_spec();
            if self.addr.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.domain.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        if ret.is_err() {
            self.addr.invalid = true;
        }
        self.add_fixed();
        ret
    }

    fn group(&mut self) -> Step {
        let mut s = Vec::new();
        if !matches!(self.p.phrase(&mut s), Ok(true)) || self.p.peek() != b':' {
            return Err(());
        }
        self.p.pos += 1;
        let mut ret = self.p.skip_lwsp();
        self.addr.mailbox = Some(s);
        self.add();
        if matches!(ret, Ok(true)) && self.p.peek() != b';' {
            loop {
                let _ = self.mailbox();
                if self.p.at_end() || self.p.peek() != b',' {
                    break;
                }
                self.p.pos += 1;
                if !matches!(self.p.skip_lwsp(), Ok(true)) {
                    ret = Err(());
                    break;
                }
            }
        }
        if ret.is_ok() {
            if self.p.at_end() || self.p.peek() != b';' {
                ret = Err(());
            } else {
                self.p.pos += 1;
                ret = self.p.skip_lwsp();
            }
        }
        // The end of the group: an address with nothing in it.
        self.add();
        Ok(!matches!(ret, Ok(false)))
    }

    fn address_list(&mut self) {
        loop {
            let start = self.p.pos;
            let ret = match self.group() {
                Err(()) => {
                    self.p.pos = start;
                    self.addr = Address::default();
                    self.mailbox()
                }
                ok => ok,
            };
            if matches!(ret, Ok(false)) {
                break;
            }
            if self.p.at_end() || self.p.peek() != b',' {
                break;
            }
            self.p.pos += 1;
            match self.p.skip_lwsp() {
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

/// Quotes (and escapes `"`, `\` and `'`) a name or local part that is not
/// all atext (dots allowed in local parts).
fn maybe_escape(out: &mut Vec<u8>, s: &[u8], escape_dot: bool) {
    if s.iter().all(|&c| is_atext(c) || (!escape_dot && c == b'.')) {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &c in s {
        if matches!(c, b'"' | b'\\' | b'\'') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

fn has_encoded_word(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"=?")
}

fn write(list: &[Address]) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(first) = list.first() else {
        return out;
    };
    if first.mailbox.is_none() && first.domain.is_none() {
        out.extend_from_slice(b"<>");
        return out;
    }
    let mut first = true;
    let mut in_group = false;
    for a in list {
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        let Some(domain) = &a.domain else {
            if !in_group {
                match a.mailbox.as_deref() {
                    Some(m) if !m.is_empty() && has_encoded_word(m) => out.extend_from_slice(m),
                    Some(m) if !m.is_empty() => maybe_escape(&mut out, m, true),
                    _ => out.extend_from_slice(b"\"\""),
                }
                out.extend_from_slice(b": ");
                first = true;
            } else {
                if out.ends_with(b", ") {
                    out.truncate(out.len() - 2);
                } else if out.ends_with(b": ") {
                    out.truncate(out.len() - 1);
                }
                out.push(b';');
            }
            in_group = !in_group;
            continue;
        };
        let mailbox = a.mailbox.as_deref().unwrap_or_default();
        if let Some(name) = &a.name {
            if has_encoded_word(name) {
                out.extend_from_slice(name);
            } else {
                maybe_escape(&mut out, name, true);
            }
        }
        if a.route.is_some() || !mailbox.is_empty() || !domain.is_empty() {
            if a.name.as_ref().is_some_and(|n| !n.is_empty()) {
                out.push(b' ');
            }
            out.push(b'<');
            if let Some(route) = &a.route {
                out.extend_from_slice(route);
                out.push(b':');
            }
            if mailbox.is_empty() {
                out.extend_from_slice(b"\"\"");
            } else {
                maybe_escape(&mut out, mailbox, false);
            }
            if !domain.is_empty() {
                out.push(b'@');
                out.extend_from_slice(domain);
            }
            out.push(b'>');
        }
    }
    out
}

/// The local part of the first address of a field value (encoded-words
/// already decoded), as Dovecot's SORT FROM/TO/CC reads it
/// (`message_address_parse` filling in what is missing, then the first
/// address's mailbox; a group's name for a group); empty when there is
/// none.
pub fn first_mailbox(value: &[u8]) -> Vec<u8> {
    first(value).and_then(|a| a.mailbox).unwrap_or_default()
}

/// The first address of a raw field value as Dovecot's SORT=DISPLAY
/// reads it (`get_display_name`): its display name (still raw: the
/// caller decodes encoded-words) and, for when that is empty, its
/// mailbox, as `local@domain`, or the local part alone (a group's name);
/// `None` when the field holds no address.
pub fn first_display(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let a = first(value)?;
    let fallback = match (a.mailbox, a.domain) {
        (Some(mut m), Some(d)) => {
            m.push(b'@');
            m.extend_from_slice(&d);
            m
        }
        (Some(m), None) => m,
        (None, _) => Vec::new(),
    };
    Some((a.name.unwrap_or_default(), fallback))
}

/// The first address `message_address_parse` (missing parts filled in)
/// gives for `value`.
fn first(value: &[u8]) -> Option<Address> {
    let mut ctx = Ctx {
        p: Parser::new(value),
        list: Vec::new(),
        addr: Address::default(),
        scratch: Vec::new(),
    };
    ctx.p.last_comment = Some(Vec::new());
    if matches!(ctx.p.skip_lwsp(), Ok(true)) {
        ctx.address_list();
    }
    ctx.list.into_iter().next()
}
