//! The RFC 822 tokens Dovecot's searches read (atoms, quoted strings,
//! comments, phrases, domains, MIME tokens), parsed the way its
//! `rfc822-parser` does, so that addresses, dates and Content-Type values
//! come out as Dovecot sees them. Return values follow that parser: `Err`
//! for broken syntax, `Ok(false)` at the end of the input, `Ok(true)` with
//! more input left.

/// Is `c` RFC 5322 atext? Bytes of 0x80 and above are, as in Dovecot.
pub fn is_atext(c: u8) -> bool {
    c >= 0x80 || c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

/// atext that is no MIME tspecial (`/`, `=`, `?` are atext, not token).
fn is_token(c: u8) -> bool {
    is_atext(c) && !matches!(c, b'/' | b'=' | b'?')
}

pub type Step = Result<bool, ()>;

pub struct Parser<'a> {
    data: &'a [u8],
    pub pos: usize,
    /// The text of the last comment skipped, when asked to keep it.
    pub last_comment: Option<Vec<u8>>,
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8]) -> Parser<'a> {
        Parser {
            data,
            pos: 0,
            last_comment: None,
        }
    }

    /// The byte at the cursor (0 at the end, as the C string would have).
    pub fn peek(&self) -> u8 {
        self.data.get(self.pos).copied().unwrap_or(0)
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn more(&self) -> Step {
        Ok(!self.at_end())
    }

    fn slice(&self, from: usize) -> &'a [u8] {
        self.data.get(from..self.pos).unwrap_or_default()
    }

    fn skip_comment(&mut self) -> Step {
        if let Some(c) = self.last_comment.as_mut() {
            c.clear();
        }
        self.pos += 1;
        let mut start = self.pos;
        let mut level = 1;
        while self.pos < self.data.len() {
            match self.peek() {
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        let text = self.slice(start);
                        if let Some(c) = self.last_comment.as_mut() {
                            c.extend_from_slice(text);
                        }
                        self.pos += 1;
                        return self.more();
                    }
                }
                b'\\' => {
                    let text = self.slice(start);
                    if let Some(c) = self.last_comment.as_mut() {
                        c.extend_from_slice(text);
                    }
                    start = self.pos + 1;
                    self.pos += 1;
                    if self.at_end() {
                        return Err(());
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    /// Skips whitespace (line breaks included) and comments.
    pub fn skip_lwsp(&mut self) -> Step {
        while !self.at_end() {
            match self.peek() {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    self.skip_comment()?;
                }
                _ => break,
            }
        }
        self.more()
    }

    /// `1*atext`, then whitespace and comments.
    pub fn atom(&mut self, out: &mut Vec<u8>) -> Step {
        if !is_atext(self.peek()) || self.at_end() {
            return Err(());
        }
        let start = self.pos;
        while !self.at_end() && is_atext(self.peek()) {
            self.pos += 1;
        }
        out.extend_from_slice(self.slice(start));
        if self.at_end() {
            return Ok(false);
        }
        self.skip_lwsp()
    }

    /// `atom *("." atom)`, whitespace allowed around the dots.
    pub fn dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
        if self.at_end() || !is_atext(self.peek()) {
            return Err(());
        }
        let mut start = self.pos;
        self.pos += 1;
        while !self.at_end() {
            if is_atext(self.peek()) {
                self.pos += 1;
                continue;
            }
            out.extend_from_slice(self.slice(start));
            if !self.skip_lwsp()? {
                return Ok(false);
            }
            if self.peek() != b'.' {
                return Ok(true);
            }
            self.pos += 1;
            out.push(b'.');
            if !self.skip_lwsp()? {
                return Ok(false);
            }
            start = self.pos;
        }
        out.extend_from_slice(self.slice(start));
        Ok(false)
    }

    /// A MIME token (dots allowed), possibly empty, then whitespace.
    pub fn mime_token(&mut self, out: &mut Vec<u8>) -> Step {
        let start = self.pos;
        while !self.at_end() && (is_token(self.peek()) || self.peek() == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(self.slice(start));
        if self.at_end() {
            return Ok(false);
        }
        self.skip_lwsp()
    }

    /// `"..."` without the quotes and escapes; line breaks inside dropped.
    pub fn quoted_string(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        let mut start = self.pos;
        while !self.at_end() {
            match self.peek() {
                b'"' => {
                    out.extend_from_slice(self.slice(start));
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    let mut text = self.slice(start);
                    if let Some(t) = text.strip_suffix(b"\r") {
                        text = t;
                    }
                    out.extend_from_slice(text);
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    if self.at_end() {
                        return Err(());
                    }
                    let text = self.data.get(start..self.pos - 1).unwrap_or_default();
                    out.extend_from_slice(text);
                    start = self.pos;
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    fn atom_or_dot(&mut self, out: &mut Vec<u8>) -> Step {
        let start = self.pos;
        while !self.at_end() && (is_atext(self.peek()) || self.peek() == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(self.slice(start));
        if self.at_end() {
            return Ok(false);
        }
        self.skip_lwsp()
    }

    /// Words (atoms, dots, quoted strings) joined by single spaces.
    pub fn phrase(&mut self, out: &mut Vec<u8>) -> Step {
        if self.at_end() {
            return Ok(false);
        }
        if self.peek() == b'.' {
            return Err(());
        }
        loop {
            let more = if self.peek() == b'"' {
                self.quoted_string(out)?
            } else {
                self.atom_or_dot(out)?
            };
            if !more {
                return Ok(false);
            }
            let c = self.peek();
            if !is_atext(c) && c != b'"' && c != b'.' {
                break;
            }
            out.push(b' ');
        }
        self.skip_lwsp()
    }

    /// `@domain` (the cursor on the `@`): a dot-atom or a `[literal]`.
    pub fn domain(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        if !self.skip_lwsp()? {
            return Err(());
        }
        if self.peek() != b'[' {
            return self.dot_atom(out);
        }
        let start = self.pos;
        while !self.at_end() {
            match self.peek() {
                b'\\' => {
                    self.pos += 1;
                    if self.at_end() {
                        break;
                    }
                }
                b']' => {
                    self.pos += 1;
                    out.extend_from_slice(self.slice(start));
                    return self.skip_lwsp();
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(())
    }

    /// `type/subtype` as far as it goes.
    pub fn content_type(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.skip_lwsp()? || !self.mime_token(out)? || self.peek() != b'/' {
            return Err(());
        }
        self.pos += 1;
        if !self.skip_lwsp()? {
            return Err(());
        }
        out.push(b'/');
        self.mime_token(out)
    }

    /// `; name=value` parameters up to the first that does not parse.
    pub fn params(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while !self.at_end() && self.peek() == b';' {
            self.pos += 1;
            if !matches!(self.skip_lwsp(), Ok(true)) {
                break;
            }
            let mut key = Vec::new();
            if !matches!(self.mime_token(&mut key), Ok(true)) || self.peek() != b'=' {
                break;
            }
            self.pos += 1;
            let mut value = Vec::new();
            let ok = match self.skip_lwsp() {
                Ok(true) if self.peek() == b'"' => self.quoted_string(&mut value).is_ok(),
                Ok(true) => self.mime_token(&mut value).is_ok(),
                _ => true,
            };
            out.push((key, value));
            if !ok {
                break;
            }
        }
        out
    }
}
