//! Armor and transfer encodings, as streaming adapters.
//!
//! Writing is `stream` (writ's own age writer, CRLF armor) for both the
//! payload and the summary.
//!
//! Reading: providers re-encode parts (base64, quoted-printable), re-wrap
//! lines and change line endings. The opener therefore never relies on the
//! armor's exact layout: [`Dearmor`] skips to the BEGIN line, collects
//! base64 characters ignoring all whitespace, and stops at the END line.

use std::io::{self, Read};

use mail_parser::decoders::quoted_printable::quoted_printable_decode_char;

pub const BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
pub const END: &[u8] = b"-----END AGE ENCRYPTED FILE-----";

/// Base64 alphabet value of each byte; the markers below for the rest.
const B64_INVALID: u8 = 0xff;
const B64_SPACE: u8 = 0xfe;
const B64_PAD: u8 = 0xfd;

const B64_TABLE: [u8; 256] = {
    let mut t = [B64_INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = B64_SPACE;
    t[b'\t' as usize] = B64_SPACE;
    t[b'\r' as usize] = B64_SPACE;
    t[b'\n' as usize] = B64_SPACE;
    t[0x0b] = B64_SPACE;
    t[0x0c] = B64_SPACE;
    t[b'=' as usize] = B64_PAD;
    t
};

// Own code, not mail-parser's decoders: they take a whole buffer; this
// streams a part of any size through in bounded memory.
/// Incremental base64 decoding that ignores whitespace (and, in lenient
/// mode, any other non-alphabet byte, as RFC 2045 says for transfer
/// encoding). Decodes four characters at a time; [`B64::finish`] emits a
/// last incomplete group (at padding, or at the end of the input).
#[derive(Default)]
struct B64 {
    acc: u32,
    /// Characters held in `acc` (0..=3).
    held: u8,
    done: bool,
}

impl B64 {
    /// Decodes `input`, appending to `out`. In strict mode, returns the
    /// first byte that is neither alphabet, padding nor whitespace, or
    /// alphabet after padding.
    fn feed(&mut self, mut input: &[u8], strict: bool, out: &mut Vec<u8>) -> Result<(), u8> {
        out.reserve(input.len() / 4 * 3 + 3);
        while !input.is_empty() {
            let bulk = self.bulk(input, out);
            input = &input[bulk..];
            let Some((&c, rest)) = input.split_first() else {
                break;
            };
            input = rest;
            self.feed_one(c, strict, out)?;
        }
        Ok(())
    }

    /// Between groups, decodes the whole groups of characters before the
    /// next line break of `input` in one call (an armor line: 64
    /// characters) when they are all alphabet, and returns how many
    /// characters it took (0 otherwise: whitespace, padding and anything
    /// else are left to [`B64::feed_one`]). The same bytes out as
    /// one character at a time (the tests hold the two to each other).
    fn bulk(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        use base64::Engine;
        if self.held != 0 || self.done {
            return 0;
        }
        // Up to the line's end (memchr: vectorised); a run holding
        // anything but the alphabet fails to decode below and goes one
        // character at a time.
        let run = memchr::memchr2(b'\r', b'\n', input).unwrap_or(input.len());
        let whole = run - run % 4;
        if whole == 0 {
            return 0;
        }
        let at = out.len();
        out.resize(at + whole / 4 * 3, 0);
        match base64::engine::general_purpose::STANDARD_NO_PAD
            .decode_slice(&input[..whole], &mut out[at..])
        {
            Ok(n) if n == whole / 4 * 3 => whole,
            // Not the alphabet alone (spaces, padding, a stray byte):
            // one character at a time.
            _ => {
                out.truncate(at);
                0
            }
        }
    }

    /// One character through the state machine.
    fn feed_one(&mut self, c: u8, strict: bool, out: &mut Vec<u8>) -> Result<(), u8> {
        let v = B64_TABLE[usize::from(c)];
        if v < 64 {
            if self.done {
                // Data after padding: only acceptable when lenient.
                return if strict { Err(c) } else { Ok(()) };
            }
            self.acc = (self.acc << 6) | u32::from(v);
            self.held += 1;
            if self.held == 4 {
                let [_, a, b, c] = self.acc.to_be_bytes();
                out.extend_from_slice(&[a, b, c]);
                self.acc = 0;
                self.held = 0;
            }
        } else if v == B64_PAD {
            self.finish(out);
            self.done = true;
        } else if v != B64_SPACE && strict {
            return Err(c);
        }
        Ok(())
    }

    /// Emits the bytes of an incomplete last group.
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self.held {
            2 => out.push((self.acc >> 4) as u8),
            3 => out.extend_from_slice(&[(self.acc >> 10) as u8, (self.acc >> 2) as u8]),
            _ => {}
        }
        self.acc = 0;
        self.held = 0;
    }
}

/// A transfer decoding applied to a part's body by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    Identity,
    Base64,
    QuotedPrintable,
}

impl TransferEncoding {
    pub fn from_header(value: Option<&str>) -> TransferEncoding {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "base64" => TransferEncoding::Base64,
            Some(v) if v == "quoted-printable" => TransferEncoding::QuotedPrintable,
            _ => TransferEncoding::Identity,
        }
    }
}

/// Undoes a transfer encoding as bytes stream through (`mail-parser`
/// decodes each quoted-printable escape).
pub struct TransferDecoder<R: Read> {
    inner: R,
    enc: TransferEncoding,
    b64: B64,
    /// Quoted-printable: bytes held back while an `=` escape is incomplete.
    qp_hold: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl<R: Read> TransferDecoder<R> {
    pub fn new(inner: R, enc: TransferEncoding) -> Self {
        TransferDecoder {
            inner,
            enc,
            b64: B64::default(),
            qp_hold: Vec::new(),
            out: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    fn qp(&mut self, input: &[u8]) {
        self.qp_hold.extend_from_slice(input);
        let data = std::mem::take(&mut self.qp_hold);
        let mut i = 0;
        while i < data.len() {
            let c = data[i];
            if c != b'=' {
                self.out.push(c);
                i += 1;
                continue;
            }
            let rest = &data[i + 1..];
            if rest.len() < 2 && !self.eof {
                // Wait for the rest of the escape.
                self.qp_hold = data[i..].to_vec();
                return;
            }
            match rest {
                [b'\r', b'\n', ..] => i += 3,
                [b'\n', ..] => i += 2,
                [h, l, ..] if let Some(byte) = quoted_printable_decode_char(*h, *l) => {
                    self.out.push(byte);
                    i += 3;
                }
                _ => {
                    // Not an escape: RFC 2045 suggests keeping it literally.
                    self.out.push(c);
                    i += 1;
                }
            }
        }
    }
}

impl<R: Read> Read for TransferDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
            }
            let input = &chunk[..n];
            match self.enc {
                TransferEncoding::Identity => self.out.extend_from_slice(input),
                TransferEncoding::Base64 => {
                    // Lenient: never fails.
                    let _ = self.b64.feed(input, false, &mut self.out);
                    if self.eof {
                        self.b64.finish(&mut self.out);
                    }
                }
                TransferEncoding::QuotedPrintable => self.qp(input),
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Extracts the binary age file from ASCII armor, tolerating any
/// whitespace changes. Errors name what is wrong with the armor.
pub struct Dearmor<R: Read> {
    inner: R,
    state: DearmorState,
    /// Bytes seen while looking for the BEGIN line (bounded).
    window: Vec<u8>,
    b64: B64,
    /// Bytes of the END marker matched so far.
    end_seen: usize,
    out: Vec<u8>,
    pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DearmorState {
    SeekBegin,
    Body,
    Done,
}

fn damaged(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("armor {what}"))
}

impl<R: Read> Dearmor<R> {
    pub fn new(inner: R) -> Self {
        Dearmor {
            inner,
            state: DearmorState::SeekBegin,
            window: Vec::new(),
            b64: B64::default(),
            end_seen: 0,
            out: Vec::new(),
            pos: 0,
        }
    }

    fn feed(&mut self, input: &[u8]) -> io::Result<()> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                DearmorState::SeekBegin => {
                    self.window.push(input[i]);
                    i += 1;
                    if self.window.ends_with(BEGIN) {
                        self.state = DearmorState::Body;
                        self.window.clear();
                    } else if self.window.len() > 64 * 1024 {
                        return Err(damaged("has no BEGIN line"));
                    }
                }
                DearmorState::Body if self.end_seen == 0 => {
                    // Everything up to a '-' is armor body: decode it in bulk.
                    let rest = &input[i..];
                    let run = rest.iter().position(|&c| c == b'-').unwrap_or(rest.len());
                    if let Err(c) = self.b64.feed(&rest[..run], true, &mut self.out) {
                        return Err(damaged(&format!(
                            "contains a byte that is not base64 (0x{c:02x})"
                        )));
                    }
                    i += run;
                    if run < rest.len() {
                        self.b64.finish(&mut self.out);
                        self.end_seen = 1;
                        i += 1;
                    }
                }
                DearmorState::Body => {
                    // Inside the END marker; whitespace is not allowed
                    // within it, but a re-encoder may not touch it.
                    let c = input[i];
                    i += 1;
                    if END.get(self.end_seen) == Some(&c) {
                        self.end_seen += 1;
                        if self.end_seen == END.len() {
                            self.state = DearmorState::Done;
                        }
                    } else {
                        return Err(damaged("has a damaged END line"));
                    }
                }
                DearmorState::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Dearmor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.state == DearmorState::Done {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Err(match self.state {
                    DearmorState::SeekBegin => damaged("has no BEGIN line"),
                    _ => damaged("has no END line (truncated?)"),
                });
            }
            self.feed(&chunk[..n])?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn dearmor_ignores_whitespace_changes() {
        let armored = b"junk\r\n-----BEGIN AGE ENCRYPTED FILE-----\r\naGVs\n  bG8g\r\n\td29y bGQ=\r\n-----END AGE ENCRYPTED FILE-----\r\n";
        assert_eq!(
            read_all(Dearmor::new(&armored[..])).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn dearmor_reports_truncation_and_damage() {
        let cut = b"-----BEGIN AGE ENCRYPTED FILE-----\naGVs";
        let err = read_all(Dearmor::new(&cut[..])).unwrap_err();
        assert!(err.to_string().contains("no END line"), "{err}");
        let bad = b"-----BEGIN AGE ENCRYPTED FILE-----\naG*s\n-----END AGE ENCRYPTED FILE-----";
        let err = read_all(Dearmor::new(&bad[..])).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        let err = read_all(Dearmor::new(&b"nothing here"[..])).unwrap_err();
        assert!(err.to_string().contains("no BEGIN"), "{err}");
    }

    #[test]
    fn base64_decodes_the_same_however_the_input_is_cut() {
        for (text, want) in [
            (&b"aGVsbG8gd29ybGQ=\r\n"[..], &b"hello world"[..]),
            (b"aGVs bG8=", b"hello"),
            (b"aGVsbG8", b"hello"),
            (b"aA==", b"h"),
        ] {
            for cut in 0..=text.len() {
                let mut b = B64::default();
                let mut out = Vec::new();
                b.feed(&text[..cut], true, &mut out).unwrap();
                b.feed(&text[cut..], true, &mut out).unwrap();
                b.finish(&mut out);
                assert_eq!(out, want, "{text:?} cut at {cut}");
            }
        }
        let mut b = B64::default();
        assert_eq!(b.feed(b"aA==aA", true, &mut Vec::new()), Err(b'a'));
        let mut b = B64::default();
        assert_eq!(b.feed(b"a*", true, &mut Vec::new()), Err(b'*'));
    }

    #[test]
    fn base64_with_whitespace_anywhere_and_any_cuts_decodes_as_base64_does() {
        use base64::Engine;
        let mut x: u32 = 0x2545_f491;
        let mut next = |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|_| next(256) as u8).collect();
            let clean = base64::prelude::BASE64_STANDARD.encode(&data).into_bytes();
            // Whitespace at random places (inside groups too), then the
            // text fed in random pieces.
            let mut text = Vec::new();
            for &c in &clean {
                if next(5) == 0 {
                    text.extend_from_slice(&b" \t\r\n"[..next(4) as usize + 1]);
                }
                text.push(c);
            }
            let mut b = B64::default();
            let mut out = Vec::new();
            let mut rest = &text[..];
            while !rest.is_empty() {
                let n = (next(9) as usize).min(rest.len());
                b.feed(&rest[..n], true, &mut out).unwrap();
                rest = &rest[n..];
            }
            b.finish(&mut out);
            assert_eq!(out, data, "{len}: {:?}", String::from_utf8_lossy(&text));
        }
        // Alphabet after padding: refused when strict, skipped otherwise.
        let mut out = Vec::new();
        assert_eq!(
            B64::default().feed(b"aA==aGVsbG8g", true, &mut out),
            Err(b'a')
        );
        let mut b = B64::default();
        let mut out = Vec::new();
        b.feed(b"aA==aGVsbG8g", false, &mut out).unwrap();
        b.finish(&mut out);
        assert_eq!(out, b"h");
    }

    /// `input` one character at a time through the state machine: the
    /// oracle of the bulk path.
    fn one_at_a_time(input: &[u8], strict: bool) -> (Result<(), u8>, Vec<u8>) {
        let mut b = B64::default();
        let mut out = Vec::new();
        let r = input
            .iter()
            .try_for_each(|&c| b.feed_one(c, strict, &mut out));
        b.finish(&mut out);
        (r, out)
    }

    #[test]
    fn the_bulk_path_agrees_with_one_character_at_a_time() {
        use base64::Engine;
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data[..1000]);
        // Armor lines, lines of odd widths, CRLF, bare LF, spaces, padding,
        // data after padding, stray bytes.
        for width in [64, 76, 63, 5, 1] {
            let mut t = Vec::new();
            for line in encoded.as_bytes().chunks(width) {
                t.extend_from_slice(line);
                t.extend_from_slice(if width % 2 == 0 { b"\r\n" } else { b"\n" });
            }
            texts.push(t);
        }
        texts.push(b"aGVs bG8gd29y\tbGQ=\r\n".to_vec());
        texts.push(b"aGVsbG8=aGVsbG8gd29ybGQ=".to_vec());
        texts.push(b"aGVsbG8gd2*9ybGQ".to_vec());
        texts.push(b"aGVsbG8gd29ybGQ-----END".to_vec());
        texts.push(b"aGV".to_vec());
        for text in &texts {
            for strict in [true, false] {
                let (want_r, want) = one_at_a_time(text, strict);
                for cut in [0, 1, 3, 4, 17, 64, 65, 66, text.len()] {
                    let cut = cut.min(text.len());
                    let mut b = B64::default();
                    let mut out = Vec::new();
                    let r = b
                        .feed(&text[..cut], strict, &mut out)
                        .and_then(|()| b.feed(&text[cut..], strict, &mut out));
                    if r.is_ok() {
                        b.finish(&mut out);
                        assert_eq!(
                            out,
                            want,
                            "{:?} cut at {cut}",
                            String::from_utf8_lossy(text)
                        );
                    }
                    assert_eq!(
                        r,
                        want_r,
                        "{:?} cut at {cut}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
        let (r, out) = one_at_a_time(texts[0].as_slice(), true);
        assert_eq!((r, out.as_slice()), (Ok(()), &data[..1000]));
    }

    #[test]
    fn transfer_decoders() {
        let qp = b"a=3Db=\r\nc=\nd=zz";
        let out = read_all(TransferDecoder::new(
            &qp[..],
            TransferEncoding::QuotedPrintable,
        ));
        assert_eq!(out.unwrap(), b"a=bcd=zz");
        let b64 = b"aGVs\r\nbG8=\r\n";
        let out = read_all(TransferDecoder::new(&b64[..], TransferEncoding::Base64));
        assert_eq!(out.unwrap(), b"hello");
    }
}
