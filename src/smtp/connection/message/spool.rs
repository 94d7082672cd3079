//! The judged path's spool, sealed wherever it is kept: a message waiting
//! for the scanner and verification is the plaintext on the gateway, and
//! plaintext never touches disk (DESIGN, "Sealing is one pass"). So the
//! spool holds only ciphertext: the message in chunks of [`CHUNK`] octets,
//! each sealed with ChaCha20-Poly1305 under a key drawn at random for this
//! message, held only in memory, and gone with it (nonce: the chunk's
//! number). In memory up to `in_memory` octets, past that in an unnamed
//! temporary file (`tempfile::SpooledTempFile`).
//!
//! Invariants: written in order, then read back from the start, whole or
//! in part, any number of times ([`Spool::into_reader`]); what is read is
//! exactly what was written (a chunk that does not open, or a file shorter
//! than what was written, is an error, never other bytes). At most one
//! chunk of plaintext is held outside the spool at a time (the one being
//! filled, or the one being read).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tempfile::SpooledTempFile;

/// Plaintext octets per sealed chunk.
pub const CHUNK: usize = 64 * 1024;

/// Octets a sealed chunk adds (the Poly1305 tag).
const TAG: usize = 16;

/// A spool of one message, sealed under its own key.
pub struct Spool {
    file: SpooledTempFile,
    key: LessSafeKey,
    /// Plaintext of the chunk being filled (less than [`CHUNK`]).
    filling: Vec<u8>,
    /// Chunks sealed into `file` so far.
    chunks: u64,
    /// Plaintext octets written in all.
    len: u64,
}

fn nonce(chunk: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&chunk.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn damaged() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "the spool does not open")
}

impl Spool {
    /// An empty spool kept in memory up to `in_memory` octets, then in an
    /// unnamed file in `dir` (else the system's temporary directory).
    pub fn new(in_memory: usize, dir: Option<&Path>) -> io::Result<Spool> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| io::Error::other("no randomness for the spool's key"))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw)
            .map_err(|_| io::Error::other("the spool's key"))?;
        Ok(Spool {
            file: match dir {
                Some(dir) => tempfile::spooled_tempfile_in(in_memory, dir),
                None => tempfile::spooled_tempfile(in_memory),
            },
            key: LessSafeKey::new(key),
            filling: Vec::with_capacity(CHUNK),
            chunks: 0,
            len: 0,
        })
    }

    /// The spool is (now) a file: writes to it are file I/O.
    pub fn is_rolled(&self) -> bool {
        self.file.is_rolled()
    }

    /// Octets of ciphertext the spool holds or will after `more` more
    /// octets of plaintext (for the caller's memory-or-file decision).
    pub fn stored_after(&self, more: usize) -> usize {
        let plain = self.len as usize + more;
        plain + plain.div_ceil(CHUNK) * TAG
    }

    /// Appends `data`; each full chunk is sealed and stored.
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK - self.filling.len()).min(data.len());
            self.filling.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.filling.len() == CHUNK {
                self.seal_filling()?;
            }
        }
        Ok(())
    }

    /// Seals and stores the last, partial chunk: call once the message
    /// is all written.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.filling.is_empty() {
            return Ok(());
        }
        self.seal_filling()
    }

    fn seal_filling(&mut self) -> io::Result<()> {
        let mut chunk = std::mem::replace(&mut self.filling, Vec::with_capacity(CHUNK));
        self.key
            .seal_in_place_append_tag(nonce(self.chunks), Aad::empty(), &mut chunk)
            .map_err(|_| io::Error::other("cannot seal the spool"))?;
        self.file.write_all(&chunk)?;
        self.chunks += 1;
        Ok(())
    }

    /// A reader of the whole message from its start (sealing what
    /// [`Spool::finish`] would first); [`SpoolReader::into_spool`] gives
    /// the spool back to be read again.
    pub fn into_reader(mut self) -> io::Result<SpoolReader> {
        // Whatever is still being filled is sealed first (a no-op after
        // `finish`): nothing written is left out of what is read.
        self.finish()?;
        self.file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReader {
            spool: self,
            next: 0,
            opened: Vec::new(),
            at: 0,
        })
    }
}

/// Reads a [`Spool`] back, a chunk opened at a time.
pub struct SpoolReader {
    spool: Spool,
    /// The next chunk to open.
    next: u64,
    opened: Vec<u8>,
    /// How much of `opened` was read.
    at: usize,
}

impl SpoolReader {
    pub fn into_spool(self) -> Spool {
        self.spool
    }

    /// Opens the next chunk into `opened`; `false` at the end.
    fn open_next(&mut self) -> io::Result<bool> {
        let s = &mut self.spool;
        if self.next >= s.chunks {
            return Ok(false);
        }
        let before = self.next * CHUNK as u64;
        let plain = (s.len - before).min(CHUNK as u64) as usize;
        let mut chunk = std::mem::take(&mut self.opened);
        chunk.resize(plain + TAG, 0);
        s.file.read_exact(&mut chunk).map_err(|_| damaged())?;
        let opened = s
            .key
            .open_in_place(nonce(self.next), Aad::empty(), &mut chunk)
            .map_err(|_| damaged())?
            .len();
        chunk.truncate(opened);
        self.opened = chunk;
        self.at = 0;
        self.next += 1;
        Ok(true)
    }
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.opened.len() && !self.open_next()? {
            return Ok(0);
        }
        let n = (self.opened.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.opened[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the spool keeps, as it is kept.
    fn raw(spool: &mut Spool) -> Vec<u8> {
        let mut raw = Vec::new();
        spool.file.seek(SeekFrom::Start(0)).unwrap();
        spool.file.read_to_end(&mut raw).unwrap();
        raw
    }

    fn read_all(spool: Spool) -> (Spool, Vec<u8>) {
        let mut r = spool.into_reader().unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        (r.into_spool(), out)
    }

    #[test]
    fn what_is_read_back_is_what_was_written_in_any_pieces_twice() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let message: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut spool = Spool::new(1024, None).unwrap();
            for piece in message.chunks(1000) {
                spool.write_all(piece).unwrap();
            }
            spool.finish().unwrap();
            assert_eq!(spool.stored_after(0), raw(&mut spool).len());
            let (spool, first) = read_all(spool);
            assert_eq!(first, message, "{len}");
            let (_, second) = read_all(spool);
            assert_eq!(second, message, "{len}, read again");
        }
    }

    #[test]
    fn the_file_holds_no_plaintext_and_a_changed_byte_does_not_open() {
        let marker = b"a line of plaintext that must never be on disk\r\n";
        let mut spool = Spool::new(0, None).unwrap();
        for _ in 0..5000 {
            spool.write_all(marker).unwrap();
        }
        spool.finish().unwrap();
        assert!(spool.is_rolled(), "on disk");
        let raw = raw(&mut spool);
        assert!(raw.len() > 5000 * marker.len());
        assert!(
            !raw.windows(16).any(|w| w == &marker[..16]),
            "plaintext in the spool's file"
        );
        // One octet changed in the second chunk: reading stops there with
        // an error, never other bytes.
        spool
            .file
            .seek(SeekFrom::Start((CHUNK + TAG + 5) as u64))
            .unwrap();
        spool.file.write_all(&[raw[CHUNK + TAG + 5] ^ 1]).unwrap();
        let mut r = spool.into_reader().unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() <= CHUNK, "only the first chunk was read");
    }
}
