//! The DATA phase (RFC 5321 §4.1.1.4, §4.5.2): the client's bytes in, the
//! message out, dot-unstuffed, until the `CRLF . CRLF` that ends it.
//!
//! Only CRLF ends a line. A bare LF is recorded (and the message refused
//! by the session): accepting `LF . LF` or `LF . CRLF` as an end is what
//! SMTP smuggling exploits. `.` followed by bare LF at a line start still
//! ends the data, so that a broken client gets a clear refusal instead of
//! a timeout.

/// What was wrong with a complete message, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataFlags {
    pub bare_lf: bool,
    pub nul: bool,
    pub eight_bit: bool,
    pub too_large: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Dot,
    DotCr,
    Mid,
    Cr,
}

/// Incremental DATA decoder.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    size: u64,
    max: u64,
    pub flags: DataFlags,
}

impl DataDecoder {
    /// `max`: the largest message (after unstuffing) to keep; beyond it the
    /// data is consumed and dropped, and `flags.too_large` is set.
    pub fn new(max: u64) -> DataDecoder {
        DataDecoder {
            state: State::LineStart,
            size: 0,
            max,
            flags: DataFlags::default(),
        }
    }

    /// Octets of the message so far (counted even past the limit).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn emit(&mut self, out: &mut Vec<u8>, b: u8) {
        self.size += 1;
        if self.size > self.max {
            self.flags.too_large = true;
            return;
        }
        if b == 0 {
            self.flags.nul = true;
        }
        if b >= 0x80 {
            self.flags.eight_bit = true;
        }
        out.push(b);
    }

    /// Decodes `input`, appending message bytes to `out`. Returns
    /// `Some(n)` when the end marker was found after `n` input bytes (the
    /// rest belongs to the next command), `None` when more data is needed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::LineStart if b == b'.' => self.state = State::Dot,
                State::LineStart | State::Mid => self.mid(out, b),
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => {
                        self.flags.bare_lf = true;
                        return Some(i + 1);
                    }
                    // A stuffed dot: drop the first one.
                    _ => self.mid(out, b),
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Some(i + 1);
                    }
                    // ".\r" then something else: the dot was stuffing, the
                    // CR is content.
                    self.state = State::Cr;
                    self.after_cr(out, b);
                }
                State::Cr => self.after_cr(out, b),
            }
        }
        None
    }

    fn mid(&mut self, out: &mut Vec<u8>, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.flags.bare_lf = true;
                self.emit(out, b);
                self.state = State::LineStart;
            }
            _ => {
                self.emit(out, b);
                self.state = State::Mid;
            }
        }
    }

    /// The byte after a CR held back.
    fn after_cr(&mut self, out: &mut Vec<u8>, b: u8) {
        self.emit(out, b'\r');
        match b {
            b'\n' => {
                self.emit(out, b);
                self.state = State::LineStart;
            }
            b'\r' => self.state = State::Cr,
            _ => {
                self.emit(out, b);
                self.state = State::Mid;
            }
        }
    }
}

/// Dot-stuffs a message for sending, ensuring it ends with CRLF, and adds
/// the end marker. Streaming: carries line-start state across chunks.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    last: Option<u8>,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last: None,
        }
    }
}

impl DotStuffer {
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.last = Some(b);
        }
    }

    /// The end marker, preceded by CRLF if the message did not end with one.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !matches!(self.last, None | Some(b'\n')) {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Vec<u8>, Option<usize>, DataFlags) {
        let mut d = DataDecoder::new(1 << 20);
        let mut out = Vec::new();
        let end = d.feed(input, &mut out);
        (out, end, d.flags)
    }

    #[test]
    fn unstuffs_and_finds_the_end() {
        let (out, end, flags) = decode(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(end, Some(32));
        assert_eq!(flags, DataFlags::default());
    }

    #[test]
    fn chunking_is_invisible() {
        let input = b"a\r\n..b\r\n.x\r\r\n.\r\n";
        let (whole, _, _) = decode(input);
        for size in 1..5 {
            let mut d = DataDecoder::new(1 << 20);
            let mut out = Vec::new();
            let mut ended = false;
            for c in input.chunks(size) {
                if d.feed(c, &mut out).is_some() {
                    ended = true;
                }
            }
            assert!(ended);
            assert_eq!(out, whole, "chunk size {size}");
        }
        assert_eq!(whole, b"a\r\n.b\r\nx\r\r\n");
    }

    #[test]
    fn smuggling_shapes_are_not_an_end() {
        // LF . CRLF and CRLF . LF must not end the data silently.
        let (_, end, flags) = decode(b"a\n.\r\nMAIL FROM:<evil@x>\r\n");
        assert!(flags.bare_lf);
        assert_eq!(end, Some(5), "ends, but flagged: the message is refused");
        let (_, _, flags) = decode(b"a\r\n.\nb\r\n.\r\n");
        assert!(flags.bare_lf);
    }

    #[test]
    fn flags_nul_8bit_and_size() {
        let (_, _, f) = decode(b"\x00\xe9\r\n.\r\n");
        assert!(f.nul && f.eight_bit && !f.too_large);
        let mut d = DataDecoder::new(4);
        let mut out = Vec::new();
        assert!(d.feed(b"123456\r\n.\r\n", &mut out).is_some());
        assert!(d.flags.too_large);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn stuffer_inverts_decoder() {
        let m = b".a\r\n..b\r\nc\r\n.";
        let mut s = DotStuffer::default();
        let mut wire = Vec::new();
        s.stuff(m, &mut wire);
        s.finish(&mut wire);
        let (out, end, _) = decode(&wire);
        assert_eq!(end, Some(wire.len()));
        let mut want = m.to_vec();
        want.extend_from_slice(b"\r\n");
        assert_eq!(out, want);
    }
}
