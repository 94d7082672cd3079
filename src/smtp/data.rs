//! The DATA phase (RFC 5321 §4.1.1.4, §4.5.2): the client's bytes in, the
//! message out, dot-unstuffed, until the `CRLF . CRLF` that ends it. Pure:
//! the connection shell feeds it whatever arrives and acts on its verdict
//! ([`crate::smtp::session::Session::message_received`]).
//!
//! Invariants (SMTP smuggling, CVE-2023-51764/5/6):
//!
//! - Only CRLF ends a line. A bare LF anywhere is recorded
//!   ([`DataFlags::bare_lf`]) and the message refused.
//! - A lone `.` line whose line break before or after is a bare LF
//!   (`LF . LF`, `LF . CRLF`, `CRLF . LF`) ends the data *as refused*
//!   ([`DataFlags::bare_newline_end`]): the session then refuses the message
//!   and closes the connection, so no byte after it is ever read as a
//!   command (as Postfix's `smtpd_forbid_bare_newline`). A broken client
//!   gets a clear refusal instead of a timeout.
//! - A lone CR is content: `CR . CR LF`, `CRLF . CR x` never end the data.
//!   But a lone CR next to a line's dot (`CR .`, and `CRLF . CR` with
//!   no LF after it) is recorded ([`DataFlags::bare_cr_dot`]) and the
//!   message refused: a next hop that took a lone CR for a line break
//!   would read a dot line there, an end of data (SMTP smuggling with a
//!   bare CR), and writ hands plaintext and already sealed messages on
//!   as they came.
//! - Past the size limit the data is counted and dropped
//!   ([`DataFlags::too_large`], 552 at the end, the session goes on); past
//!   twice the limit the decoder gives up ([`DataFlags::runaway`]): the
//!   session replies 552 and closes, so an endless DATA cannot hold a
//!   session slot for ever.

/// What was wrong with a complete message, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataFlags {
    /// A line ended in a bare LF somewhere in the message.
    pub bare_lf: bool,
    /// The data ended with a `.` line next to a bare LF: the connection
    /// must close (nothing after it is a command).
    pub bare_newline_end: bool,
    pub nul: bool,
    /// A lone CR right before a line's dot, or right after a dot line's
    /// dot (`CR .`, `CRLF . CR x`).
    pub bare_cr_dot: bool,
    pub eight_bit: bool,
    /// More than the limit (after unstuffing): the rest was dropped.
    pub too_large: bool,
    /// More than twice the limit without an end: the decoder stopped.
    pub runaway: bool,
}

impl DataFlags {
    /// Nothing to refuse the message for (8-bit data is fine).
    pub fn acceptable(&self) -> bool {
        !(self.bare_lf
            || self.bare_newline_end
            || self.nul
            || self.bare_cr_dot
            || self.too_large
            || self.runaway)
    }
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
    /// The line break that started the current line was a bare LF.
    after_bare_lf: bool,
    size: u64,
    max: u64,
    /// Input octets read past `max` of output, then the decoder gives up.
    seen: u64,
    pub flags: DataFlags,
}

impl DataDecoder {
    /// `max`: the largest message (after unstuffing) to keep; beyond it the
    /// data is consumed and dropped, and `flags.too_large` is set. Beyond
    /// `2 * max` octets of input without an end, [`DataDecoder::feed`]
    /// stops with `flags.runaway`.
    pub fn new(max: u64) -> DataDecoder {
        DataDecoder {
            state: State::LineStart,
            after_bare_lf: false,
            size: 0,
            max,
            seen: 0,
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

    /// Message bytes in the middle of a line (no CR, no LF among them),
    /// all at once: what [`DataDecoder::emit`] does to each, in bulk.
    fn emit_span(&mut self, out: &mut Vec<u8>, span: &[u8]) {
        let before = self.size;
        self.size += span.len() as u64;
        let keep = usize::try_from(self.max.saturating_sub(before))
            .unwrap_or(usize::MAX)
            .min(span.len());
        if keep < span.len() {
            self.flags.too_large = true;
        }
        let kept = &span[..keep];
        if !self.flags.nul && memchr::memchr(0, kept).is_some() {
            self.flags.nul = true;
        }
        // An OR over the span (vectorised), not a search that stops early.
        if !self.flags.eight_bit && kept.iter().fold(0u8, |acc, &b| acc | b) >= 0x80 {
            self.flags.eight_bit = true;
        }
        out.extend_from_slice(kept);
    }

    /// Decodes `input`, appending message bytes to `out`. Returns
    /// `Some(n)` when the data phase is over after `n` input bytes (the end
    /// marker, or [`DataFlags::runaway`]; what follows belongs to the next
    /// command, if the session goes on), `None` when more data is needed.
    ///
    /// The bytes between line breaks go through in bulk (a search for the
    /// next CR or LF, one copy); line starts and breaks take the
    /// byte-at-a-time state machine, so every rule above applies as before
    /// (the tests compare it with the plain state machine on every
    /// input and cut).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let room = (self.max.saturating_mul(2)).saturating_sub(self.seen);
        // Input bytes this call may look at before the runaway cap.
        let limit = usize::try_from(room).unwrap_or(usize::MAX).min(input.len());
        let mut i = 0;
        while i < input.len() {
            if i >= limit {
                self.flags.runaway = true;
                return Some(i);
            }
            let b = input[i];
            if self.state == State::Mid || (self.state == State::LineStart && b != b'.') {
                let end = memchr::memchr2(b'\r', b'\n', &input[i..limit]).map_or(limit, |n| i + n);
                if end > i {
                    self.emit_span(out, &input[i..end]);
                    self.seen += (end - i) as u64;
                    self.state = State::Mid;
                    i = end;
                    continue;
                }
            }
            self.seen += 1;
            if let Some(end) = self.step(out, b) {
                return Some(i + end);
            }
            i += 1;
        }
        None
    }

    /// One byte through the state machine; `Some(1)` when it ends the
    /// data phase.
    fn step(&mut self, out: &mut Vec<u8>, b: u8) -> Option<usize> {
        match self.state {
            State::LineStart if b == b'.' => self.state = State::Dot,
            State::LineStart | State::Mid => self.mid(out, b),
            State::Dot => match b {
                b'\r' => self.state = State::DotCr,
                b'\n' => {
                    self.flags.bare_lf = true;
                    self.flags.bare_newline_end = true;
                    return Some(1);
                }
                // A stuffed dot: drop the first one.
                _ => self.mid(out, b),
            },
            State::DotCr => {
                if b == b'\n' {
                    self.flags.bare_newline_end |= self.after_bare_lf;
                    self.state = State::LineStart;
                    return Some(1);
                }
                // ".\r" then something else: the dot was stuffing, the
                // CR is content (next to a line's dot: refused).
                self.flags.bare_cr_dot = true;
                self.state = State::Cr;
                self.after_cr(out, b);
            }
            State::Cr => self.after_cr(out, b),
        }
        None
    }

    fn line_start(&mut self, bare_lf: bool) {
        self.state = State::LineStart;
        self.after_bare_lf = bare_lf;
    }

    fn mid(&mut self, out: &mut Vec<u8>, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.flags.bare_lf = true;
                self.emit(out, b);
                self.line_start(true);
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
                self.line_start(false);
            }
            b'\r' => self.state = State::Cr,
            _ => {
                self.flags.bare_cr_dot |= b == b'.';
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
    /// Appends `input` to `out`, a dot doubled at the start of every
    /// line (line by line: a search for each LF, one copy per line).
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        out.reserve(input.len() + 1);
        if self.at_line_start && input[0] == b'.' {
            out.push(b'.');
        }
        let mut rest = input;
        while let Some(n) = memchr::memchr(b'\n', rest) {
            out.extend_from_slice(&rest[..=n]);
            rest = &rest[n + 1..];
            if rest.first() == Some(&b'.') {
                out.push(b'.');
            }
        }
        out.extend_from_slice(rest);
        self.at_line_start = last == b'\n';
        self.last = Some(last);
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

    /// Every shape a smuggler uses to end DATA early, followed by a
    /// second transaction.
    const SMUGGLED: &[u8] = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\n";

    #[test]
    fn bare_newline_ends_stop_the_data_and_are_flagged_for_closing() {
        for end in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n"] {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(end);
            let at = input.len();
            input.extend_from_slice(SMUGGLED);
            let (_, got, flags) = decode(&input);
            assert_eq!(got, Some(at), "{end:?}");
            assert!(flags.bare_newline_end && flags.bare_lf, "{end:?}");
            assert!(!flags.acceptable());
        }
        // At the very start of the data too.
        let (_, got, flags) = decode(b".\nMAIL FROM:<e@x>\r\n");
        assert_eq!(got, Some(2));
        assert!(flags.bare_newline_end);
    }

    #[test]
    fn lone_cr_shapes_are_content_not_an_end() {
        for end in [&b"\r.\r\n"[..], b"\r\n.\r", b"\r.\r", b"\r.\n"] {
            let mut input = b"body".to_vec();
            input.extend_from_slice(end);
            input.extend_from_slice(SMUGGLED);
            let mut d = DataDecoder::new(1 << 20);
            let mut out = Vec::new();
            let got = d.feed(&input, &mut out);
            // The only end is the real CRLF . CRLF at the very end.
            assert_eq!(got, Some(input.len()), "{end:?}");
            assert!(!d.flags.bare_newline_end, "{end:?}");
            assert!(
                out.windows(10).any(|w| w == b"MAIL FROM:"),
                "{end:?}: the smuggled commands are message content"
            );
        }
    }

    #[test]
    fn a_proper_end_after_a_bare_lf_line_keeps_the_session() {
        let (_, end, flags) = decode(b"a\nb\r\n.\r\nQUIT\r\n");
        assert_eq!(end, Some(8));
        assert!(flags.bare_lf && !flags.bare_newline_end);
    }

    #[test]
    fn runaway_data_stops_at_twice_the_limit() {
        let mut d = DataDecoder::new(10);
        let mut out = Vec::new();
        assert_eq!(d.feed(&[b'x'; 15], &mut out), None);
        assert!(d.flags.too_large && !d.flags.runaway);
        assert_eq!(d.feed(&[b'x'; 15], &mut out), Some(5));
        assert!(d.flags.runaway);
        assert_eq!(out.len(), 10);
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

    /// The decoder as it was before its bulk path: one byte at a time
    /// through the state machine. The bulk decoder must agree with it on
    /// everything (message, end, flags, size) for every input and cut.
    struct Reference {
        state: State,
        after_bare_lf: bool,
        size: u64,
        max: u64,
        seen: u64,
        flags: DataFlags,
    }

    impl Reference {
        fn new(max: u64) -> Reference {
            Reference {
                state: State::LineStart,
                after_bare_lf: false,
                size: 0,
                max,
                seen: 0,
                flags: DataFlags::default(),
            }
        }

        fn emit(&mut self, out: &mut Vec<u8>, b: u8) {
            self.size += 1;
            if self.size > self.max {
                self.flags.too_large = true;
                return;
            }
            self.flags.nul |= b == 0;
            self.flags.eight_bit |= b >= 0x80;
            out.push(b);
        }

        fn mid(&mut self, out: &mut Vec<u8>, b: u8) {
            match b {
                b'\r' => self.state = State::Cr,
                b'\n' => {
                    self.flags.bare_lf = true;
                    self.emit(out, b);
                    self.state = State::LineStart;
                    self.after_bare_lf = true;
                }
                _ => {
                    self.emit(out, b);
                    self.state = State::Mid;
                }
            }
        }

        fn after_cr(&mut self, out: &mut Vec<u8>, b: u8) {
            self.emit(out, b'\r');
            match b {
                b'\n' => {
                    self.emit(out, b);
                    self.state = State::LineStart;
                    self.after_bare_lf = false;
                }
                b'\r' => self.state = State::Cr,
                _ => {
                    self.flags.bare_cr_dot |= b == b'.';
                    self.emit(out, b);
                    self.state = State::Mid;
                }
            }
        }

        fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
            let room = (self.max.saturating_mul(2)).saturating_sub(self.seen);
            for (i, &b) in input.iter().enumerate() {
                if i as u64 >= room {
                    self.flags.runaway = true;
                    return Some(i);
                }
                self.seen += 1;
                match self.state {
                    State::LineStart if b == b'.' => self.state = State::Dot,
                    State::LineStart | State::Mid => self.mid(out, b),
                    State::Dot => match b {
                        b'\r' => self.state = State::DotCr,
                        b'\n' => {
                            self.flags.bare_lf = true;
                            self.flags.bare_newline_end = true;
                            return Some(i + 1);
                        }
                        _ => self.mid(out, b),
                    },
                    State::DotCr => {
                        if b == b'\n' {
                            self.flags.bare_newline_end |= self.after_bare_lf;
                            self.state = State::LineStart;
                            return Some(i + 1);
                        }
                        self.flags.bare_cr_dot = true;
                        self.state = State::Cr;
                        self.after_cr(out, b);
                    }
                    State::Cr => self.after_cr(out, b),
                }
            }
            None
        }
    }

    /// A small deterministic generator (xorshift64*): the cases are the
    /// same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Input made mostly of the bytes the decoder cares about: dots, CR,
    /// LF, NUL, 8-bit, and runs of plain text.
    fn tricky_input(rng: &mut Rng) -> Vec<u8> {
        let len = rng.below(300) as usize;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            match rng.below(10) {
                0 => v.extend_from_slice(b"\r\n"),
                1 => v.push(b'.'),
                2 => v.push(b'\r'),
                3 => v.push(b'\n'),
                4 => v.extend_from_slice(b"\r\n.\r\n"),
                5 => v.push(if rng.below(2) == 0 { 0 } else { 0xe9 }),
                _ => {
                    let run = rng.below(40) as usize;
                    v.extend(std::iter::repeat_n(b'a' + rng.below(26) as u8, run));
                }
            }
        }
        v
    }

    #[test]
    fn a_lone_cr_next_to_a_lines_dot_is_flagged_and_nothing_else() {
        let flagged = |input: &[u8]| {
            let mut d = DataDecoder::new(1 << 20);
            let mut out = Vec::new();
            let end = d.feed(input, &mut out);
            (d.flags.bare_cr_dot, end.is_some())
        };
        for (input, ended) in [
            (&b"a\r.\r\n.\r\n"[..], true),
            (b"a\r\n.\rb\r\n.\r\n", true),
            (b"a\r\r.x\r\n", false),
            (b"\r.", false),
        ] {
            assert_eq!(flagged(input), (true, ended), "{input:?}");
        }
        for (input, ended) in [
            (&b"a\rb\r\n.\r\n"[..], true),
            (b"a.\r\nb.\rx", false),
            (b"x\r\n..y\r\n.\r\n", true),
            (b"x\r\n.\r\n", true),
        ] {
            assert_eq!(flagged(input), (false, ended), "{input:?}");
        }
    }

    #[test]
    fn the_bulk_decoder_agrees_with_the_byte_at_a_time_state_machine() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..4000 {
            let input = tricky_input(&mut rng);
            // Small limits too, for too_large and runaway inside a span.
            let max = match rng.below(3) {
                0 => rng.below(40),
                1 => rng.below(400),
                _ => 1 << 20,
            };
            let mut fast = DataDecoder::new(max);
            let mut slow = Reference::new(max);
            let (mut fast_out, mut slow_out) = (Vec::new(), Vec::new());
            let mut at = 0;
            while at < input.len() {
                let n = (1 + rng.below(64) as usize).min(input.len() - at);
                let piece = &input[at..at + n];
                let got = fast.feed(piece, &mut fast_out);
                let want = slow.feed(piece, &mut slow_out);
                assert_eq!(got, want, "case {case}: end, input {input:?} max {max}");
                if got.is_some() {
                    break;
                }
                at += n;
            }
            assert_eq!(fast_out, slow_out, "case {case}: message, input {input:?}");
            assert_eq!(
                fast.flags, slow.flags,
                "case {case}: flags, input {input:?}"
            );
            assert_eq!(fast.size(), slow.size, "case {case}: size");
        }
    }

    #[test]
    fn the_stuffer_doubles_exactly_the_dots_that_start_a_line_however_it_is_cut() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for case in 0..2000 {
            let input = tricky_input(&mut rng);
            // One byte at a time: the rule itself.
            let mut want = Vec::new();
            let mut at_line_start = true;
            for &b in &input {
                if at_line_start && b == b'.' {
                    want.push(b'.');
                }
                want.push(b);
                at_line_start = b == b'\n';
            }
            let mut stuffer = DotStuffer::default();
            let mut got = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let n = (1 + rng.below(50) as usize).min(input.len() - at);
                stuffer.stuff(&input[at..at + n], &mut got);
                at += n;
            }
            assert_eq!(got, want, "case {case}: input {input:?}");
            let mut end = Vec::new();
            stuffer.finish(&mut end);
            let ends_clean = input.last().is_none_or(|&b| b == b'\n');
            assert_eq!(end.len(), if ends_clean { 3 } else { 5 }, "case {case}");
        }
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
