//! `* LIST` and `* LSUB` answers passed to the client as the provider
//! wrote them. imap-types re-spells what it parses (Dovecot's `\UnMarked`
//! comes out `\Unmarked`), and those answers name mailboxes only, so writ
//! passes their bytes on instead of its re-encoding.
//!
//! [`ListTee`] splits the provider's stream into responses the way
//! imap-next's fragmentizer does (lines; a `{N}` at a line's end announces
//! N octets of literal data, after which the same response goes on) and
//! keeps the bytes of each response that begins `* LIST ` or `* LSUB `.
//! Each such response then reaches the session exactly once, in order:
//! parsed (`Data::List`, `Data::Lsub`) or refused by the parser (extended
//! data, [`super::passthrough`]); either way the session takes the oldest
//! kept bytes in its place ([`ListTee::take`]).
//!
//! Memory: other responses are not kept (literal data is skipped as it
//! comes, a line is looked at through its first 7 and last 24 octets); a
//! kept response is at most [`MAX_LIST_RESPONSE`] octets (a longer one is
//! passed typed, as before), and kept responses wait only until the
//! session has parsed what was read with them.

use std::collections::VecDeque;

/// Octets of one LIST or LSUB response kept to pass on as it is.
pub(super) const MAX_LIST_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(super) struct ListTee {
    /// Literal data still to skip (or keep).
    literal_left: u64,
    /// Inside a response, past its first line's start (after a literal).
    continuing: bool,
    /// Bytes of the current response's first line seen so far (up to 7),
    /// until it is known whether it is kept.
    start: Vec<u8>,
    /// `Some` while the current response is kept.
    kept: Option<Vec<u8>>,
    /// Too long to keep: passed typed.
    over: bool,
    /// The last octets of the current line.
    tail: Vec<u8>,
    /// Complete LIST/LSUB responses, oldest first (`None`: too long).
    ready: VecDeque<Option<Vec<u8>>>,
}

const PREFIXES: [&[u8]; 2] = [b"* LIST ", b"* LSUB "];

impl ListTee {
    /// Bytes from the provider, as they come.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.literal_left > 0 {
                let n = usize::try_from(self.literal_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.keep(&bytes[..n]);
                self.literal_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let (chunk, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(p) => (&bytes[..=p], true),
                None => (bytes, false),
            };
            bytes = &bytes[chunk.len()..];
            if !self.continuing && self.kept.is_none() && self.start.len() < 7 {
                let n = (7 - self.start.len()).min(chunk.len());
                self.start.extend_from_slice(&chunk[..n]);
                if self.start.len() == 7 || complete {
                    if PREFIXES.iter().any(|p| self.start.eq_ignore_ascii_case(p)) {
                        self.kept = Some(std::mem::take(&mut self.start));
                    }
                    // Marks the decision taken for this response.
                    self.continuing = true;
                }
                self.keep(&chunk[n..]);
            } else {
                self.keep(chunk);
            }
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > 24 {
                self.tail.drain(..self.tail.len() - 24);
            }
            if complete {
                match announcement(&self.tail) {
                    Some(n) => self.literal_left = n,
                    None => self.end_response(),
                }
                self.tail.clear();
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if let Some(kept) = &mut self.kept {
            if kept.len() + bytes.len() > MAX_LIST_RESPONSE {
                self.over = true;
                kept.clear();
            } else if !self.over {
                kept.extend_from_slice(bytes);
            }
        }
    }

    fn end_response(&mut self) {
        if let Some(kept) = self.kept.take() {
            self.ready.push_back((!self.over).then_some(kept));
        }
        self.over = false;
        self.continuing = false;
        self.start.clear();
    }

    /// The bytes of the oldest LIST or LSUB response not yet taken.
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front().flatten()
    }
}

/// `{N}` (or `{N+}`) at the end of a line, as imap-next reads it.
fn announcement(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u32>()
        .ok()
        .map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_list_responses_in_any_chunking_and_skips_the_rest() {
        let stream: &[u8] = b"* 1 FETCH (BODY[] {20}\r\n* LIST () \"/\" fake\r\n)\r\n\
            * LIST (\\UnMarked) \"/\" Trash\r\n\
            * STATUS Trash (MESSAGES 0)\r\n\
            * lsub () \"/\" {3}\r\na b\r\n\
            * LIST () \"/\" x (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
            a OK done\r\n";
        for n in [1, 2, 5, 7, 8, 1000] {
            let mut tee = ListTee::default();
            for c in stream.chunks(n) {
                tee.push(c);
            }
            assert_eq!(
                tee.take().as_deref(),
                Some(&b"* LIST (\\UnMarked) \"/\" Trash\r\n"[..]),
                "{n}"
            );
            assert_eq!(
                tee.take().as_deref(),
                Some(&b"* lsub () \"/\" {3}\r\na b\r\n"[..])
            );
            assert_eq!(
                tee.take().as_deref(),
                Some(&b"* LIST () \"/\" x (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"[..])
            );
            assert_eq!(tee.take(), None);
        }
    }

    #[test]
    fn a_response_too_long_to_keep_is_passed_typed() {
        let mut tee = ListTee::default();
        let name = "a".repeat(MAX_LIST_RESPONSE);
        tee.push(format!("* LIST () \"/\" {{{}}}\r\n{name}\r\n", name.len()).as_bytes());
        tee.push(b"* LIST () \"/\" b\r\n");
        assert_eq!(tee.ready.len(), 2);
        assert_eq!(tee.take(), None);
        assert_eq!(tee.take().as_deref(), Some(&b"* LIST () \"/\" b\r\n"[..]));
    }
}
