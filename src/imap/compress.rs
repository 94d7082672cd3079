//! COMPRESS=DEFLATE (RFC 4978) on writ's side of the client connection:
//! raw DEFLATE (no zlib header) both ways, sans-IO. The provider's
//! connection is never compressed (writ must read it).
//!
//! The DEFLATE work is flate2's with its pure-Rust backend (miniz_oxide):
//! a well-kept crate already in the build (mail-auth uses it), streaming,
//! with the sync flush RFC 4978 needs; no own compression code.
//!
//! - Outbound: each batch of responses is compressed and sync-flushed
//!   ([`Deflate::deflate`]), so the client never waits for data writ holds.
//! - Inbound: compressed bytes are kept as they come ([`Deflate::push`],
//!   at most one read's worth while any is left) and inflated on demand,
//!   [`INFLATE_STEP`] octets at a time ([`Deflate::inflate`]), only while
//!   the session takes input: memory stays bounded whatever the ratio,
//!   and every cap of [`super::intake`] (command text, literals, pre-login
//!   limits) applies to the inflated bytes as to plain ones.
//! - A decompression bomb: over the connection, the inflated bytes may not
//!   exceed [`MAX_INFLATE_RATIO`] times the compressed bytes plus one
//!   largest command (`imap.max_literal_size` + 64 KiB of command text).
//!   Past that the client is told [`BOMB_BYE`] and the connection closed:
//!   a few KB that expand to GBs cost writ at most that much inflating.
//! - A corrupt stream, or data after its end: [`CORRUPT_BYE`], closed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflated octets handed to the session per step (and held at once).
pub const INFLATE_STEP: usize = 64 * 1024;
/// Inflated octets allowed per compressed octet over a connection, beyond
/// one largest command. IMAP traffic, even repetitive text, stays far
/// below it; an all-zero stream reaches about 1,000.
pub const MAX_INFLATE_RATIO: u64 = 100;

/// What a client whose input expands past the cap is told.
pub const BOMB_BYE: &str =
    "Compressed input expands too far (over 100 times its size beyond one command): closing";
/// What a client whose compressed stream does not inflate is told.
pub const CORRUPT_BYE: &str = "Corrupt DEFLATE stream from the client: closing";

/// Why inflating stopped for good (the text of the BYE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

pub struct Deflate {
    out: Compress,
    inp: Decompress,
    /// Compressed octets received, not inflated yet.
    pending: Vec<u8>,
    /// The last step filled its output: the inflater may hold more.
    maybe_more: bool,
    /// The client ended its stream (a final block).
    ended: bool,
    /// The last step took no input and gave no output: wait for more.
    stalled: bool,
    /// Inflated octets allowed beyond the ratio.
    allowance: u64,
}

impl Deflate {
    /// `max_literal_size`: `imap.max_literal_size` (one largest command is
    /// allowed beyond the ratio).
    pub fn new(max_literal_size: u32) -> Deflate {
        Deflate {
            out: Compress::new(Compression::default(), false),
            inp: Decompress::new(false),
            pending: Vec::new(),
            maybe_more: false,
            ended: false,
            stalled: false,
            allowance: u64::from(max_literal_size) + super::intake::MAX_COMMAND_TEXT as u64,
        }
    }

    /// Responses for the client, compressed and sync-flushed.
    pub fn deflate(&mut self, bytes: &[u8]) -> Vec<u8> {
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        let mut input = bytes;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.out.total_in();
            // Compressing into a Vec with room: only a full buffer stops it.
            let _ = self.out.compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.out.total_in() - before) as usize;
            input = &input[used..];
            // Done when all input is in and the flush fit (room left over).
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// Compressed bytes from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.stalled = false;
    }

    /// More inflated bytes may come without reading the client.
    pub fn has_pending(&self) -> bool {
        (!self.pending.is_empty() && !self.stalled) || self.maybe_more
    }

    /// Up to [`INFLATE_STEP`] inflated octets (empty: more input needed).
    pub fn inflate(&mut self) -> Result<Vec<u8>, Refused> {
        if self.ended {
            return if self.pending.is_empty() {
                Ok(Vec::new())
            } else {
                Err(Refused(CORRUPT_BYE))
            };
        }
        let mut out = Vec::with_capacity(INFLATE_STEP);
        let before = self.inp.total_in();
        let status = self
            .inp
            .decompress_vec(&self.pending, &mut out, FlushDecompress::Sync)
            .map_err(|_| Refused(CORRUPT_BYE))?;
        let used = (self.inp.total_in() - before) as usize;
        self.pending.drain(..used);
        self.maybe_more = out.len() == out.capacity();
        self.stalled = used == 0 && out.is_empty();
        if status == Status::StreamEnd {
            self.ended = true;
        }
        let limit = self
            .inp
            .total_in()
            .saturating_mul(MAX_INFLATE_RATIO)
            .saturating_add(self.allowance);
        if self.inp.total_out() > limit {
            return Err(Refused(BOMB_BYE));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::DeflateEncoder;
    use std::io::Write;

    fn compress(bytes: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        e.flush().unwrap();
        e.get_ref().clone()
    }

    fn drain(d: &mut Deflate) -> Result<Vec<u8>, Refused> {
        let mut all = Vec::new();
        while d.has_pending() {
            let step = d.inflate()?;
            assert!(step.len() <= INFLATE_STEP);
            if step.is_empty() && !d.has_pending() {
                break;
            }
            all.extend(step);
        }
        Ok(all)
    }

    #[test]
    fn round_trip_in_small_steps() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("a{i} NOOP\r\n").into_bytes())
            .collect();
        let mut server = Deflate::new(1024);
        // The client's side, as a client would compress.
        let wire = compress(&text);
        let mut got = Vec::new();
        for chunk in wire.chunks(1000) {
            server.push(chunk);
            got.extend(drain(&mut server).unwrap());
        }
        assert_eq!(got, text);
        // writ's side reads back with a raw inflater, batch by batch.
        let mut client = Decompress::new(false);
        for batch in [&b"* OK one\r\n"[..], b"", b"a1 OK done\r\n"] {
            let wire = server.deflate(batch);
            let mut out = Vec::with_capacity(1024);
            client
                .decompress_vec(&wire, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, batch, "each batch is readable at once (sync flush)");
        }
    }

    #[test]
    fn a_bomb_is_refused_within_the_cap() {
        let bomb = compress(&vec![b'A'; 20 * 1024 * 1024]);
        assert!(bomb.len() < 40 * 1024, "{}", bomb.len());
        let mut d = Deflate::new(0);
        d.push(&bomb);
        let mut inflated = 0u64;
        let refused = loop {
            match d.inflate() {
                Ok(step) => inflated += step.len() as u64,
                Err(r) => break r,
            }
        };
        assert_eq!(refused, Refused(BOMB_BYE));
        assert!(
            inflated <= d.inp.total_in() * MAX_INFLATE_RATIO + 64 * 1024,
            "{inflated}"
        );
    }

    #[test]
    fn garbage_is_refused() {
        let mut d = Deflate::new(1024);
        d.push(b"\xff\xff\xff\xff not deflate at all");
        assert_eq!(d.inflate(), Err(Refused(CORRUPT_BYE)));
    }
}
