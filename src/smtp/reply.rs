//! SMTP replies: writ's own, and the provider's mirrored to the client.

use std::fmt::Write as _;

/// A reply: code and text lines (enhanced status code included in the
/// text, as it goes on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// One-line reply; `text` should start with the enhanced status code.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `2xx`, `3xx`, ... for metrics.
    pub fn class(&self) -> &'static str {
        match self.code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "error",
        }
    }

    /// Wire form: `250-first\r\n250 last\r\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map_or("", String::as_str);
            // Never let a provider's text inject extra lines.
            let text: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let _ = write!(out, "{}{sep}{text}\r\n", self.code);
        }
        out
    }
}

/// Most lines in one provider reply (100; an EHLO reply has about 15):
/// more is a malformed reply.
pub const MAX_REPLY_LINES: usize = 100;

/// Most text in one provider reply (64 KiB, summed over its lines): more
/// is a malformed reply.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Incremental parser for replies read line by line from the provider.
/// A reply past [`MAX_REPLY_LINES`] or [`MAX_REPLY_BYTES`] is
/// [`MalformedReply`]: the caller drops the provider connection and tells
/// the client 451 4.4.1, and nothing of it is mirrored.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
    bytes: usize,
}

/// A line from the provider that is not a reply line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider sent a malformed reply line")]
pub struct MalformedReply;

impl ReplyParser {
    /// Feeds one line (without CRLF). Returns the reply when it is complete.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, MalformedReply> {
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(MalformedReply);
        }
        let code = (u16::from(line[0] - b'0')) * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if !(200..600).contains(&code) {
            return Err(MalformedReply);
        }
        if self.code.is_some_and(|c| c != code) {
            return Err(MalformedReply);
        }
        self.code = Some(code);
        self.bytes += line.len();
        if self.lines.len() >= MAX_REPLY_LINES || self.bytes > MAX_REPLY_BYTES {
            return Err(MalformedReply);
        }
        let sep = line.get(3).copied();
        let text = line.get(4..).unwrap_or(b"");
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        match sep {
            Some(b'-') => Ok(None),
            Some(b' ') | None => {
                let lines = std::mem::take(&mut self.lines);
                self.code = None;
                self.bytes = 0;
                Ok(Some(Reply { code, lines }))
            }
            _ => Err(MalformedReply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_round_trip() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-mx.example").unwrap(), None);
        assert_eq!(p.line(b"250-PIPELINING").unwrap(), None);
        let r = p.line(b"250 SIZE 100").unwrap().unwrap();
        assert_eq!(r.lines, ["mx.example", "PIPELINING", "SIZE 100"]);
        assert_eq!(
            r.render(),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        assert_eq!(p.line(b"354").unwrap().unwrap().code, 354);
    }

    #[test]
    fn malformed_replies() {
        let mut p = ReplyParser::default();
        for bad in [&b"hello"[..], b"25", b"999 x", b"250x"] {
            assert!(p.line(bad).is_err());
        }
        let mut p = ReplyParser::default();
        p.line(b"250-a").unwrap();
        assert!(p.line(b"550 b").is_err());
    }

    #[test]
    fn replies_past_the_line_or_size_cap_are_malformed() {
        let mut p = ReplyParser::default();
        for _ in 0..MAX_REPLY_LINES - 1 {
            assert_eq!(p.line(b"250-x").unwrap(), None);
        }
        assert_eq!(p.line(b"250 last").unwrap().unwrap().lines.len(), 100);
        for _ in 0..MAX_REPLY_LINES {
            assert_eq!(p.line(b"250-x").unwrap(), None);
        }
        assert!(p.line(b"250 one too many").is_err());
        let mut p = ReplyParser::default();
        let long = [b"250-".as_slice(), &[b'x'; 30_000]].concat();
        p.line(&long).unwrap();
        p.line(&long).unwrap();
        assert!(p.line(&long).is_err());
    }

    #[test]
    fn render_strips_injected_lines() {
        let r = Reply::new(250, "ok\r\n250 injected");
        assert_eq!(r.render(), "250 ok250 injected\r\n");
    }
}
