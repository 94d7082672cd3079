//! Removes sender-written header fields named like the content scanner's
//! ([`SCANNER_FIELDS`]: `X-Spam`, `X-Spamd-Result`, `X-Spam-Action`) from a
//! message as it is spooled for scanning, as most MTAs do before adding
//! their own: on the scanned path those names are copied to the outer
//! header, where a sender's own "verdict" would stand next to writ's (or
//! alone, when the message goes unscanned) and mislead the provider's
//! rules.
//!
//! Invariants: sans-IO and streaming (chunks in, chunks out; the state
//! between chunks is at most [`MAX_NAME`] bytes of a field name); only the
//! header (up to the first empty line) is touched, and in it only whole
//! fields with those names, with their folded continuation lines; every
//! other byte passes unchanged and in order. A name is compared with its
//! trailing blanks removed (`X-Spam : No` is `X-Spam`), case-insensitively.
//! Linear in the message's size.

use super::scanner::SCANNER_FIELDS;

/// Longest field-name prefix held to decide (64 bytes, well past the
/// longest scanner field name): a longer name is not one of them and
/// passes through.
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// At the start of a header line.
    LineStart,
    /// Reading a field name (held in `name`).
    Name,
    /// Inside a field that passes.
    Keep,
    /// Inside a field that is removed.
    Drop,
    /// Past the header: everything passes.
    Body,
}

/// The streaming filter; one per message.
#[derive(Debug)]
pub struct SenderFieldFilter {
    state: State,
    name: Vec<u8>,
    /// The last field seen is removed (its continuation lines too).
    dropping: bool,
}

impl Default for SenderFieldFilter {
    fn default() -> Self {
        SenderFieldFilter {
            state: State::LineStart,
            name: Vec::with_capacity(MAX_NAME),
            dropping: false,
        }
    }
}

fn is_scanner_field(name: &[u8]) -> bool {
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    let name = &name[..end];
    SCANNER_FIELDS
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

impl SenderFieldFilter {
    /// Appends to `out` what of `chunk` is kept.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for (i, &b) in chunk.iter().enumerate() {
            match self.state {
                State::Body => {
                    out.extend_from_slice(&chunk[i..]);
                    return;
                }
                State::LineStart => match b {
                    b' ' | b'\t' => {
                        if self.dropping {
                            self.state = State::Drop;
                        } else {
                            out.push(b);
                            self.state = State::Keep;
                        }
                    }
                    b'\r' | b'\n' => {
                        // The empty line: the header ends.
                        out.push(b);
                        self.state = State::Body;
                    }
                    _ => {
                        self.name.clear();
                        self.name.push(b);
                        self.state = State::Name;
                    }
                },
                State::Name => {
                    if b == b':' {
                        self.dropping = is_scanner_field(&self.name);
                        if self.dropping {
                            self.state = State::Drop;
                        } else {
                            out.extend_from_slice(&self.name);
                            out.push(b);
                            self.state = State::Keep;
                        }
                        self.name.clear();
                    } else if b == b'\n' || self.name.len() >= MAX_NAME {
                        // Not a field of theirs (no colon, or too long a name).
                        out.extend_from_slice(&self.name);
                        out.push(b);
                        self.name.clear();
                        self.dropping = false;
                        self.state = if b == b'\n' {
                            State::LineStart
                        } else {
                            State::Keep
                        };
                    } else {
                        self.name.push(b);
                    }
                }
                State::Keep => {
                    out.push(b);
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
                State::Drop => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
            }
        }
    }

    /// The end of the message: whatever is still held (a name with no
    /// colon before the data ended) goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Name {
            out.extend_from_slice(&self.name);
            self.name.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_in_chunks(msg: &[u8], size: usize) -> Vec<u8> {
        let mut f = SenderFieldFilter::default();
        let mut out = Vec::new();
        for c in msg.chunks(size) {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn scanner_fields_and_their_folds_are_removed_from_the_header_only() {
        let msg = b"X-Spam-Action: no action\r\nFrom: a@b\r\nX-SPAMD-RESULT: default: False\r\n [0 / 15]\r\n\tmore\r\nx-spam : No\r\nSubject: s\r\n folded\r\nX-Spam-Flag: YES\r\n\r\nX-Spam: body line\r\n";
        let want =
            b"From: a@b\r\nSubject: s\r\n folded\r\nX-Spam-Flag: YES\r\n\r\nX-Spam: body line\r\n";
        for size in [1, 2, 3, 7, 64, msg.len()] {
            assert_eq!(
                String::from_utf8_lossy(&filter_in_chunks(msg, size)),
                String::from_utf8_lossy(want),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn other_bytes_pass_unchanged() {
        let long_name = format!("{}: v\r\n", "X".repeat(200));
        for msg in [
            &b"From: a\r\n\r\nbody"[..],
            b"no header at all\r\n\r\nX-Spam: Yes\r\n",
            b"From: a\nX-Spam-Action: x\n\nbody\n",
            b"",
            b"Subject",
            long_name.as_bytes(),
        ] {
            let out = filter_in_chunks(msg, 5);
            let expected: &[u8] = if msg.starts_with(b"From: a\n") {
                b"From: a\n\nbody\n"
            } else {
                msg
            };
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(msg));
        }
    }
}
