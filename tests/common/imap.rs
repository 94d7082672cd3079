//! A small blocking IMAP4rev1 client for tests, on `std::net::TcpStream`.
//!
//! It speaks just enough IMAP to drive a real server (or writ's proxy):
//! tagged commands, synchronising literals in both directions, and responses
//! kept as raw bytes with literals split out, so tests can assert on exactly
//! what the server sent.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any single read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One logical response line: text pieces with the literals that follow them.
///
/// `text[i]` is the line text up to and including a literal announcement
/// `{N}\r\n`, and `literals[i]` the N bytes that followed it; the last text
/// piece ends with `\r\n` and has no literal. So `text.len() ==
/// literals.len() + 1`.
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    pub text: Vec<Vec<u8>>,
    pub literals: Vec<Vec<u8>>,
}

impl Line {
    /// The line as the server sent it, literals included.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, text) in self.text.iter().enumerate() {
            out.extend_from_slice(text);
            if let Some(literal) = self.literals.get(i) {
                out.extend_from_slice(literal);
            }
        }
        out
    }

    /// The text pieces joined, without literal contents (lossy UTF-8).
    pub fn text_only(&self) -> String {
        let joined: Vec<u8> = self.text.concat();
        String::from_utf8_lossy(&joined).into_owned()
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.raw()))
    }
}

/// The complete response to one command.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// Untagged (`* ...`) and continuation lines, in order.
    pub untagged: Vec<Line>,
    /// The tagged completion line.
    pub tagged: Line,
    /// `OK`, `NO` or `BAD`.
    pub status: String,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }

    /// Everything the server sent for this command, byte for byte.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.untagged {
            out.extend_from_slice(&line.raw());
        }
        out.extend_from_slice(&self.tagged.raw());
        out
    }

    /// [`Response::raw`] as lossy UTF-8, for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw()).into_owned()
    }

    /// Panics with the full response unless the status is OK.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Response {
        assert!(self.is_ok(), "IMAP {what} failed:\n{}", self.text());
        self
    }

    /// The message count from an untagged `* N EXISTS`, if any (the last one).
    pub fn exists(&self) -> Option<u32> {
        self.untagged.iter().rev().find_map(|line| {
            let text = line.text_only();
            let rest = text.strip_prefix("* ")?;
            let (n, word) = rest.trim_end().split_once(' ')?;
            word.eq_ignore_ascii_case("EXISTS")
                .then(|| n.parse().ok())?
        })
    }

    /// The UID from an `[APPENDUID validity uid]` response code, if any.
    pub fn append_uid(&self) -> Option<u32> {
        let text = self.tagged.text_only().to_ascii_uppercase();
        let start = text.find("[APPENDUID ")? + "[APPENDUID ".len();
        let rest = &text[start..];
        let end = rest.find(']')?;
        rest[..end].split_whitespace().nth(1)?.parse().ok()
    }

    /// The value of `item` in an untagged `* STATUS` response, if any.
    pub fn status_item(&self, item: &str) -> Option<u32> {
        let item = item.to_ascii_uppercase();
        self.untagged.iter().find_map(|line| {
            let text = line.text_only().to_ascii_uppercase();
            if !text.starts_with("* STATUS ") {
                return None;
            }
            let open = text.rfind('(')?;
            let close = text.rfind(')')?;
            let fields: Vec<&str> = text.get(open + 1..close)?.split_whitespace().collect();
            fields
                .chunks(2)
                .find(|pair| pair[0] == item)
                .and_then(|pair| pair.get(1)?.parse().ok())
        })
    }

    /// `(uid, bytes)` of every untagged FETCH carrying a `BODY[]` (or
    /// `BODY[<section>]`, `BINARY[...]`, `RFC822`) literal, in response order.
    /// A FETCH without a UID item gets uid 0.
    pub fn fetch_literals(&self, item: &str) -> Vec<(u32, Vec<u8>)> {
        let item = item.to_ascii_uppercase();
        let mut out = Vec::new();
        for line in &self.untagged {
            let all_text = line.text_only().to_ascii_uppercase();
            if !all_text.starts_with("* ") || !all_text.contains(" FETCH (") {
                continue;
            }
            let uid = fetch_uid(&all_text).unwrap_or(0);
            for (i, text) in line.text.iter().enumerate() {
                let Some(literal) = line.literals.get(i) else {
                    break;
                };
                let text = String::from_utf8_lossy(text).to_ascii_uppercase();
                let before_literal = match text.rfind('{') {
                    Some(brace) => text[..brace].trim_end(),
                    None => continue,
                };
                if before_literal.ends_with(&item) {
                    out.push((uid, literal.clone()));
                }
            }
        }
        out
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

fn fetch_uid(upper_text: &str) -> Option<u32> {
    let open = upper_text.find(" FETCH (")? + " FETCH (".len();
    let items = &upper_text[open..];
    let mut words = items.split(|c: char| c.is_whitespace() || c == '(' || c == ')');
    while let Some(word) = words.next() {
        if word == "UID" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// IMAP quoted string. Panics on characters a quoted string cannot carry
/// (tests choose their mailbox names and passwords).
pub fn quote(s: &str) -> String {
    assert!(
        !s.contains(['\r', '\n', '\0']),
        "cannot IMAP-quote {s:?}; use a literal"
    );
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One IMAP connection.
pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    /// The server greeting line (`* OK ...`).
    pub greeting: Line,
}

impl Imap {
    /// Connects and reads the greeting (which must be `* OK` or `* PREAUTH`).
    pub fn connect(addr: SocketAddr) -> io::Result<Imap> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
            greeting: Line {
                text: Vec::new(),
                literals: Vec::new(),
            },
        };
        let greeting = imap.read_line()?;
        let text = greeting.text_only().to_ascii_uppercase();
        if !(text.starts_with("* OK") || text.starts_with("* PREAUTH")) {
            return Err(io::Error::other(format!(
                "unexpected IMAP greeting: {greeting:?}"
            )));
        }
        imap.greeting = greeting;
        Ok(imap)
    }

    /// Whether any of the server's bytes have arrived and wait unread
    /// (looked at without waiting for more).
    pub fn has_input(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let _ = self.writer.set_nonblocking(true);
        let mut one = [0u8; 1];
        let arrived = matches!(self.writer.peek(&mut one), Ok(n) if n > 0);
        let _ = self.writer.set_nonblocking(false);
        arrived
    }

    /// Connects and logs in, panicking on any failure.
    #[track_caller]
    pub fn login_to(addr: SocketAddr, user: &str, password: &str) -> Imap {
        let mut imap =
            Imap::connect(addr).unwrap_or_else(|e| panic!("IMAP connect to {addr} failed: {e}"));
        imap.login(user, password)
            .expect_ok(&format!("LOGIN {user}"));
        imap
    }

    /// `LOGIN user password` (quoted strings).
    pub fn login(&mut self, user: &str, password: &str) -> Response {
        self.command(&format!("LOGIN {} {}", quote(user), quote(password)))
    }

    /// `SELECT mailbox`.
    pub fn select(&mut self, mailbox: &str) -> Response {
        self.command(&format!("SELECT {}", quote(mailbox)))
    }

    /// `APPEND mailbox message` with a synchronising literal.
    pub fn append(&mut self, mailbox: &str, message: &[u8]) -> Response {
        self.command_with_literal(&format!("APPEND {}", quote(mailbox)), message, "")
    }

    /// `UID FETCH 1:* (UID BODY.PEEK[])` on the selected mailbox: the exact
    /// bytes of every message, by ascending UID.
    #[track_caller]
    pub fn fetch_all(&mut self) -> Vec<(u32, Vec<u8>)> {
        let response = self
            .command("UID FETCH 1:* (UID BODY.PEEK[])")
            .expect_ok("UID FETCH BODY.PEEK[]");
        let mut messages = response.fetch_literals("BODY[]");
        messages.sort_by_key(|(uid, _)| *uid);
        messages
    }

    /// Sends `TAG command` and reads until the tagged completion.
    ///
    /// Panics on I/O errors (tests cannot continue after them anyway); the
    /// server's NO/BAD answers come back as a [`Response`].
    #[track_caller]
    pub fn command(&mut self, command: &str) -> Response {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("IMAP {command:?}: {e}"))
    }

    /// Sends `TAG before {N}`, waits for the `+` continuation, sends the
    /// literal and then `after`, and reads until the tagged completion.
    /// If the server refuses the literal, its response is returned.
    #[track_caller]
    pub fn command_with_literal(&mut self, before: &str, literal: &[u8], after: &str) -> Response {
        self.try_command_with_literal(before, literal, after)
            .unwrap_or_else(|e| panic!("IMAP {before:?} with literal: {e}"))
    }

    /// [`Imap::command`] returning I/O errors instead of panicking.
    pub fn try_command(&mut self, command: &str) -> io::Result<Response> {
        let tag = self.tag();
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())?;
        self.read_response(&tag)
    }

    /// [`Imap::command_with_literal`] returning I/O errors instead of panicking.
    pub fn try_command_with_literal(
        &mut self,
        before: &str,
        literal: &[u8],
        after: &str,
    ) -> io::Result<Response> {
        let tag = self.tag();
        self.writer
            .write_all(format!("{tag} {before} {{{}}}\r\n", literal.len()).as_bytes())?;
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line()?;
            let first = line.text.first().map(Vec::as_slice).unwrap_or_default();
            if first.starts_with(b"+") {
                break;
            }
            if first.starts_with(format!("{tag} ").as_bytes()) {
                return finish(untagged, line);
            }
            untagged.push(line);
        }
        self.writer.write_all(literal)?;
        self.writer.write_all(format!("{after}\r\n").as_bytes())?;
        let mut response = self.read_response(&tag)?;
        untagged.append(&mut response.untagged);
        response.untagged = untagged;
        Ok(response)
    }

    /// `LOGOUT`, ignoring errors.
    pub fn logout(mut self) {
        let _ = self.try_command("LOGOUT");
    }

    /// Reads one untagged line (for IDLE and the like).
    pub fn read_line(&mut self) -> io::Result<Line> {
        let mut line = Line {
            text: Vec::new(),
            literals: Vec::new(),
        };
        loop {
            let mut text = Vec::new();
            let n = self.reader.read_until(b'\n', &mut text)?;
            if n == 0 || !text.ends_with(b"\n") {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed mid-response after {:?}",
                        String::from_utf8_lossy(&[line.raw(), text].concat())
                    ),
                ));
            }
            let literal_len = literal_announcement(&text);
            line.text.push(text);
            match literal_len {
                Some(len) => {
                    let mut literal = vec![0; len];
                    self.reader.read_exact(&mut literal)?;
                    line.literals.push(literal);
                }
                None => return Ok(line),
            }
        }
    }

    /// Writes raw bytes (for tests of odd client behaviour).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// A fresh tag, for use with [`Imap::write_raw`] and
    /// [`Imap::read_response`].
    pub fn tag(&mut self) -> String {
        let tag = format!("T{:04}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Reads lines until the one tagged `tag`.
    pub fn read_response(&mut self, tag: &str) -> io::Result<Response> {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.text[0].starts_with(prefix.as_bytes()) {
                return finish(untagged, line);
            }
            untagged.push(line);
        }
    }
}

fn finish(untagged: Vec<Line>, tagged: Line) -> io::Result<Response> {
    let text = tagged.text_only();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !matches!(status.as_str(), "OK" | "NO" | "BAD") {
        return Err(io::Error::other(format!(
            "malformed tagged response: {tagged:?}"
        )));
    }
    Ok(Response {
        untagged,
        tagged,
        status,
    })
}

/// `Some(N)` if the line ends with a literal announcement `{N}\r\n` (or
/// `{N+}` / `~{N}` forms).
pub fn literal_announcement(text: &[u8]) -> Option<usize> {
    let body = text
        .strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))?;
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
