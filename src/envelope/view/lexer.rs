//! RFC 5322 tokens of a field value, as Dovecot's rfc822-parser.c reads
//! them: shared by ENVELOPE's addresses and BODYSTRUCTURE's MIME fields.

/// What a NUL octet becomes inside quoted strings, comments and domain
/// literals (Dovecot's replacement).
pub(super) const NUL_REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// RFC 5322 `atext`, plus every 8-bit octet (as Dovecot's parser has it).
pub(super) fn is_atext(b: u8) -> bool {
    b >= 0x80 || b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Result of a parsing step, Dovecot's convention: `Err` for a syntax error,
/// `Ok(false)` when the input ended, `Ok(true)` when more follows.
pub(super) type Step = Result<bool, ()>;

/// An RFC 5322 tokenizer over one field value: whitespace and comments
/// skipped (the last comment kept: it names an address written
/// `a@b (Name)`), words, quoted strings, domains. It follows Dovecot's
/// `rfc822-parser.c` where real-world headers are malformed.
pub(super) struct Lexer<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) last_comment: Vec<u8>,
}

impl Lexer<'_> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    pub(super) fn at(&self, b: u8) -> bool {
        self.peek() == Some(b)
    }

    /// A MIME token (RFC 2045, `.` allowed) at the position, and then
    /// whitespace and comments skipped: `Ok(false)` at the end.
    pub(super) fn mime_token(&mut self) -> (Vec<u8>, Step) {
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

    pub(super) fn more(&self) -> bool {
        self.pos < self.data.len()
    }

    pub(super) fn skip_comment(&mut self) -> Step {
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
    pub(super) fn skip_cfws(&mut self) -> Step {
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

    pub(super) fn atom(&mut self, out: &mut Vec<u8>) -> Step {
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
    pub(super) fn loose_dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
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

    pub(super) fn dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
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

    pub(super) fn quoted_string(&mut self, out: &mut Vec<u8>) -> Step {
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

    pub(super) fn atom_or_dot(&mut self, out: &mut Vec<u8>) -> Step {
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
    pub(super) fn phrase(&mut self, out: &mut Vec<u8>) -> Step {
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

    pub(super) fn domain_literal(&mut self, out: &mut Vec<u8>) -> Step {
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
    pub(super) fn domain(&mut self, out: &mut Vec<u8>) -> Step {
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
