//! The age v1 file, written by writ itself: header, STREAM payload, ASCII
//! armor with CRLF line endings, in pieces that can be made in parallel.
//!
//! Why not the `age` crate's `Encryptor` here: it encrypts and armors one
//! 64 KiB chunk after another on the caller's thread, through
//! RustCrypto's ChaCha20-Poly1305 and a line-at-a-time armor writer, and
//! exposes neither the payload key nor the chunk counter. Sealing a large
//! message on one core that way was slower than the reference `age` CLI
//! (issue 14). The format makes every chunk independent, so writ builds the
//! file itself and lets [`super::payload::PayloadWriter`] spread batches of
//! chunks over threads. The X25519 stanzas are writ's too, on ring
//! ([`wrap_x25519`]: half the CPU of the age crate's, which was the largest
//! cost of a small message); the age crate still does all decryption,
//! with writ's own X25519 identity (`identity.rs`: the stanza unwrap
//! without deriving the identity's public key each time).
//!
//! What is written is exactly the age v1 format (age-encryption.org/v1,
//! C2SP), laid out as the age crate lays it out:
//!
//! - **Header**: `age-encryption.org/v1`, one stanza per recipient and a
//!   "grease" stanza (as the age crate adds), `---` and the header MAC:
//!   HMAC-SHA-256 keyed with HKDF-SHA-256(ikm = file key, salt = empty,
//!   info = "header") over the header up to and including `---`.
//! - **Payload**: a random 16-byte nonce, then STREAM: the plaintext in
//!   64 KiB chunks, each sealed with ChaCha20-Poly1305 (ring) under
//!   HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload"), nonce =
//!   11-byte big-endian chunk counter and a last-chunk flag byte. Only the
//!   last chunk may be short, it is empty only when the plaintext is, and
//!   a plaintext of whole chunks ends with a full last chunk.
//! - **Armor**: `-----BEGIN AGE ENCRYPTED FILE-----`, the whole binary file
//!   in padded standard base64, 64 columns a line, the end marker; every
//!   line ends CRLF (the sealed format's line ending, `docs/FORMAT.md`
//!   section 7).
//!
//! Parallel armor: a batch of [`BATCH_CHUNKS`] full chunks is
//! `3 × 65,552` = 4,097 armor lines' worth (48 bytes a line), so every
//! batch starts at the same offset within an armor line. A batch's sealer
//! encodes the whole lines inside it and hands back the few bytes before
//! the first and after the last line boundary ([`Sealed::head`],
//! [`Sealed::tail`]); [`Armor`] joins those on the writer's thread.
//!
//! Invariants: the chunk counter and the stream position of each batch are
//! fixed by the writer before the batch is sealed, so batches can finish in
//! any order and are written in order; keys live in ring's key types and
//! the file key in the age crate's zeroizing `FileKey`.

use std::io::{self, Write};

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::Engine;
use base64::prelude::{BASE64_STANDARD, BASE64_STANDARD_NO_PAD};
use ring::aead::{self, Aad, LessSafeKey, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{agreement, hkdf, hmac};

use super::EnvelopeError;
use super::witness::FileKeyOf;

/// STREAM chunk size (plaintext).
pub const CHUNK: usize = 64 * 1024;
/// Poly1305 tag size.
const TAG: usize = 16;
/// Chunks in one batch of parallel work. Three, because three sealed
/// chunks are a whole number of armor lines (see the module docs).
pub const BATCH_CHUNKS: usize = 3;
/// Plaintext bytes in one full batch.
pub const BATCH: usize = CHUNK * BATCH_CHUNKS;
/// Binary bytes in one armor line.
const LINE_BYTES: usize = 48;
/// One armor line as written: 64 base64 characters and CRLF.
const LINE_OUT: usize = 66;

pub const BEGIN_LINE: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----\r\n";
pub const END_LINE: &[u8] = b"-----END AGE ENCRYPTED FILE-----\r\n";

const _: () = assert!((BATCH + BATCH_CHUNKS * TAG).is_multiple_of(LINE_BYTES));

/// A new age file: its binary header and payload nonce (to be armored
/// first), and the payload key.
pub struct AgeFile {
    pub header: Vec<u8>,
    pub key: LessSafeKey,
    /// The file key, for a caller that keeps a [`super::witness::Witness`].
    pub file_key: FileKeyOf,
}

impl AgeFile {
    /// A fresh file key wrapped to every recipient, the header MAC, a fresh
    /// payload nonce and the payload key derived from both.
    pub fn new(recipients: &[age::x25519::Recipient]) -> Result<AgeFile, EnvelopeError> {
        let rng = SystemRandom::new();
        let file_key = FileKey::try_init_with_mut(|k| rng.fill(k))
            .map_err(|_| EnvelopeError::Encrypt("the system random source failed".into()))?;
        let mut stanzas = Vec::with_capacity(recipients.len() + 1);
        for r in recipients {
            stanzas.push(wrap_x25519(r, &file_key, &rng)?);
        }
        let share = stanzas
            .first()
            .and_then(|s| s.args.first())
            .cloned()
            .unwrap_or_default();
        // As the age crate does, so readers keep accepting unknown stanzas.
        stanzas.push(age_core::format::grease_the_joint());

        let mut header = b"age-encryption.org/v1\n".to_vec();
        for s in &stanzas {
            write_stanza(&mut header, s);
        }
        header.extend_from_slice(b"---");
        let mac_key: hmac::Key = hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
            .extract(file_key.expose_secret())
            .expand(&[b"header"], hmac::HMAC_SHA256)
            .map_err(|_| EnvelopeError::Encrypt("cannot derive the header key".into()))?
            .into();
        let mac = hmac::sign(&mac_key, &header);
        header.push(b' ');
        header.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac.as_ref()).as_bytes());
        header.push(b'\n');

        let nonce: [u8; 16] = ring::rand::generate(&rng)
            .map_err(|_| EnvelopeError::Encrypt("the system random source failed".into()))?
            .expose();
        let key: aead::UnboundKey = hkdf::Salt::new(hkdf::HKDF_SHA256, &nonce)
            .extract(file_key.expose_secret())
            .expand(&[b"payload"], &aead::CHACHA20_POLY1305)
            .map_err(|_| EnvelopeError::Encrypt("cannot derive the payload key".into()))?
            .into();
        header.extend_from_slice(&nonce);
        Ok(AgeFile {
            header,
            key: LessSafeKey::new(key),
            file_key: FileKeyOf::new(share, &file_key),
        })
    }
}

/// The HKDF info of an X25519 stanza's wrapping key (age v1).
const X25519_LABEL: &[u8] = b"age-encryption.org/v1/X25519";

/// The X25519 stanza that wraps `file_key` to `recipient`, exactly as the
/// age specification (and the age crate's `wrap_file_key`) makes it: a
/// fresh ephemeral key, the shared secret with the recipient, the wrapping
/// key HKDF-SHA-256(ikm = shared secret, salt = ephemeral public key ||
/// recipient key, info = [`X25519_LABEL`]), the file key sealed under it
/// with ChaCha20-Poly1305 and a zero nonce; `-> X25519 <ephemeral key,
/// base64>` and that body.
///
/// Own code on ring rather than the age crate's: the same steps cost
/// about half as much CPU with ring's X25519 (assembly on x86_64) as with
/// curve25519-dalek's portable field arithmetic, and two such stanzas per
/// sealed message (payload and summary) were the largest single cost of
/// relaying a typical message. ring refuses an all-zero shared secret (a
/// recipient key of small order): the message fails instead of being
/// sealed to a key anyone can compute. The interop tests have the age CLI
/// open what this writes.
fn wrap_x25519(
    recipient: &age::x25519::Recipient,
    file_key: &FileKey,
    rng: &SystemRandom,
) -> Result<Stanza, EnvelopeError> {
    let fail = |what: &str| EnvelopeError::Encrypt(format!("X25519 stanza: {what}"));
    let pk =
        recipient_key(recipient).ok_or_else(|| fail("the recipient is not an age X25519 key"))?;
    let esk = agreement::EphemeralPrivateKey::generate(&agreement::X25519, rng)
        .map_err(|_| fail("the system random source failed"))?;
    let epk = esk
        .compute_public_key()
        .map_err(|_| fail("cannot compute the ephemeral key"))?;
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk.as_ref());
    salt[32..].copy_from_slice(&pk);
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, pk);
    let body = agreement::agree_ephemeral(esk, &peer, |shared| {
        let key: aead::UnboundKey = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt)
            .extract(shared)
            .expand(&[X25519_LABEL], &aead::CHACHA20_POLY1305)
            .ok()?
            .into();
        let mut body = file_key.expose_secret().to_vec();
        LessSafeKey::new(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut body,
            )
            .ok()?;
        Some(body)
    })
    .ok()
    .flatten()
    .ok_or_else(|| fail("the key agreement failed (a recipient key of small order?)"))?;
    Ok(Stanza {
        tag: "X25519".to_owned(),
        args: vec![BASE64_STANDARD_NO_PAD.encode(epk.as_ref())],
        body,
    })
}

/// The 32 bytes of an `age1...` recipient (bech32, human-readable part
/// `age`).
fn recipient_key(recipient: &age::x25519::Recipient) -> Option<[u8; 32]> {
    let (hrp, data) = bech32::decode(&recipient.to_string()).ok()?;
    if hrp.as_str() != "age" {
        return None;
    }
    data.try_into().ok()
}

/// `-> tag args...`, then the body in unpadded base64, 64 columns, the last
/// line short (empty if need be).
fn write_stanza(out: &mut Vec<u8>, s: &Stanza) {
    out.extend_from_slice(b"-> ");
    out.extend_from_slice(s.tag.as_bytes());
    for a in &s.args {
        out.push(b' ');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b'\n');
    let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
    let mut rest = body.as_bytes();
    while rest.len() >= 64 {
        out.extend_from_slice(&rest[..64]);
        out.push(b'\n');
        rest = &rest[64..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// Sealed binary bytes of one batch, mostly already armored.
#[derive(Default)]
pub struct Sealed {
    /// Bytes before the first armor line boundary in the batch.
    pub head: Vec<u8>,
    /// Whole armor lines, CRLF after each.
    pub lines: Vec<u8>,
    /// Bytes after the last armor line boundary.
    pub tail: Vec<u8>,
    /// Scratch for the binary ciphertext (kept for reuse).
    cipher: Vec<u8>,
}

/// Seals `plain` as the chunks numbered from `counter` (the last of them
/// flagged last when `last`), and armors it as bytes starting at binary
/// offset `pos` of the file. `plain` is whole chunks unless `last`.
/// Returns the number of chunks.
pub fn seal_batch(
    key: &LessSafeKey,
    counter: u64,
    plain: &[u8],
    last: bool,
    pos: u64,
    out: &mut Sealed,
) -> io::Result<u64> {
    let cipher = &mut out.cipher;
    cipher.clear();
    cipher.reserve(plain.len() + plain.len().div_ceil(CHUNK).max(1) * TAG);
    let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let is_last = last && i + 1 == n;
        if !is_last && chunk.len() != CHUNK {
            return Err(io::Error::other("short STREAM chunk before the last"));
        }
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&(counter + i as u64).to_be_bytes());
        nonce[11] = u8::from(is_last);
        let start = cipher.len();
        cipher.extend_from_slice(chunk);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut cipher[start..],
            )
            .map_err(|_| io::Error::other("cannot encrypt a payload chunk"))?;
        cipher.extend_from_slice(tag.as_ref());
    }
    // Split at armor line boundaries of the whole file.
    let to_boundary = (LINE_BYTES - (pos % LINE_BYTES as u64) as usize) % LINE_BYTES;
    let head_len = to_boundary.min(cipher.len());
    let whole = (cipher.len() - head_len) / LINE_BYTES * LINE_BYTES;
    out.head.clear();
    out.head.extend_from_slice(&cipher[..head_len]);
    out.lines.clear();
    encode_lines(&cipher[head_len..head_len + whole], &mut out.lines);
    out.tail.clear();
    out.tail.extend_from_slice(&cipher[head_len + whole..]);
    Ok(n as u64)
}

/// Base64 of whole 48-byte lines, each followed by CRLF, appended to `out`.
///
/// Own code rather than the `base64` crate (which writes the last, padded
/// line and the header): the crate encodes a 48-byte line at well under
/// half the speed of this table (measured under the same load: about 400
/// against 1,000 MB/s), and encoding was then the largest cost of sealing
/// after the MIME scan. Each 12 bits of input index [`PAIRS`], two
/// characters at a time. The armor tests compare the result with the age
/// crate's armor byte for byte.
fn encode_lines(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len() / LINE_BYTES * LINE_OUT);
    for line in src.chunks_exact(LINE_BYTES) {
        let mut text = [0u8; LINE_OUT];
        for (g, d) in line.chunks_exact(6).zip(text.chunks_exact_mut(8)) {
            let x = u64::from_be_bytes([g[0], g[1], g[2], g[3], g[4], g[5], 0, 0]);
            let v = u64::from(PAIRS[(x >> 52) as usize])
                | u64::from(PAIRS[(x >> 40) as usize & 0xfff]) << 16
                | u64::from(PAIRS[(x >> 28) as usize & 0xfff]) << 32
                | u64::from(PAIRS[(x >> 16) as usize & 0xfff]) << 48;
            d.copy_from_slice(&v.to_le_bytes());
        }
        text[64] = b'\r';
        text[65] = b'\n';
        out.extend_from_slice(&text);
    }
}

/// The base64 characters of every 12-bit value, first character in the low
/// byte.
static PAIRS: [u16; 4096] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = ALPHABET[i >> 6] as u16 | (ALPHABET[i & 63] as u16) << 8;
        i += 1;
    }
    t
};

/// The armor writer's own state: bytes of the current, unfinished line.
pub struct Armor {
    carry: [u8; LINE_BYTES],
    len: usize,
}

impl Default for Armor {
    fn default() -> Self {
        Armor {
            carry: [0; LINE_BYTES],
            len: 0,
        }
    }
}

impl Armor {
    /// Armors binary bytes that follow what came before.
    pub fn push(&mut self, mut data: &[u8], out: &mut impl Write) -> io::Result<()> {
        while !data.is_empty() {
            let take = (LINE_BYTES - self.len).min(data.len());
            self.carry[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len == LINE_BYTES {
                let mut line = Vec::with_capacity(LINE_OUT);
                encode_lines(&self.carry, &mut line);
                out.write_all(&line)?;
                self.len = 0;
            }
        }
        Ok(())
    }

    /// Writes a sealed batch in order: its head completes the current line.
    pub fn write(&mut self, sealed: &Sealed, out: &mut impl Write) -> io::Result<()> {
        self.push(&sealed.head, out)?;
        if !sealed.lines.is_empty() {
            if self.len != 0 {
                return Err(io::Error::other("armor lines out of step"));
            }
            out.write_all(&sealed.lines)?;
        }
        self.push(&sealed.tail, out)
    }

    /// The last, short line (padded base64) and the end marker.
    pub fn finish(self, out: &mut impl Write) -> io::Result<()> {
        if self.len > 0 {
            let mut line = BASE64_STANDARD.encode(&self.carry[..self.len]).into_bytes();
            line.extend_from_slice(b"\r\n");
            out.write_all(&line)?;
        }
        out.write_all(END_LINE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the age crate's armor writer makes of `binary`, LF made CRLF.
    fn age_armor(binary: &[u8]) -> Vec<u8> {
        let mut w =
            age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)
                .unwrap();
        w.write_all(binary).unwrap();
        let lf = w.finish().unwrap();
        let mut crlf = Vec::new();
        for &b in &lf {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        crlf
    }

    #[test]
    fn armor_matches_the_age_crate_byte_for_byte_however_it_is_cut() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 2000] {
            let want = age_armor(&data[..len]);
            for cut in [0, 1, 47, 48, 50, len / 2, len] {
                let cut = cut.min(len);
                let mut out = BEGIN_LINE.to_vec();
                let mut a = Armor::default();
                a.push(&data[..cut], &mut out).unwrap();
                a.push(&data[cut..len], &mut out).unwrap();
                a.finish(&mut out).unwrap();
                assert_eq!(out, want, "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn batches_armor_the_same_as_one_stream() {
        // The batch sealer's head/lines/tail split, at every offset within
        // a line, gives what armoring its bytes in one piece gives.
        let rng = SystemRandom::new();
        let key_bytes: [u8; 32] = ring::rand::generate(&rng).unwrap().expose();
        let key =
            LessSafeKey::new(aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key_bytes).unwrap());
        let plain: Vec<u8> = (0..BATCH * 2 + 100).map(|i| (i % 251) as u8).collect();
        for prefix in 0..LINE_BYTES {
            let lead = vec![0xa5u8; prefix + 48 * 3];
            let mut split = BEGIN_LINE.to_vec();
            let mut armor = Armor::default();
            armor.push(&lead, &mut split).unwrap();
            let mut binary = lead.clone();
            let mut pos = lead.len() as u64;
            let mut counter = 0;
            for (i, batch) in plain.chunks(BATCH).enumerate() {
                let last = i == 2;
                let mut s = Sealed::default();
                counter += seal_batch(&key, counter, batch, last, pos, &mut s).unwrap();
                armor.write(&s, &mut split).unwrap();
                pos += s.cipher.len() as u64;
                binary.extend_from_slice(&s.cipher);
            }
            assert_eq!(counter, 7);
            armor.finish(&mut split).unwrap();
            assert_eq!(split, age_armor(&binary), "prefix {prefix}");
        }
    }

    #[test]
    fn x25519_stanzas_unwrap_with_the_age_crate_and_small_order_keys_fail() {
        use age::Identity as _;
        let rng = SystemRandom::new();
        let identity = age::x25519::Identity::generate();
        let file_key = FileKey::try_init_with_mut(|k| rng.fill(k)).unwrap();
        let stanza = wrap_x25519(&identity.to_public(), &file_key, &rng).unwrap();
        assert_eq!(stanza.tag, "X25519");
        let unwrapped = identity
            .unwrap_stanza(&stanza)
            .expect("an X25519 stanza for this identity")
            .expect("it unwraps");
        assert_eq!(unwrapped.expose_secret(), file_key.expose_secret());
        // Another identity does not unwrap it.
        let other = age::x25519::Identity::generate();
        assert!(!matches!(other.unwrap_stanza(&stanza), Some(Ok(_))));
        // A recipient key of small order (all zero): refused, not sealed
        // to a shared secret anyone knows.
        let hrp = bech32::Hrp::parse("age").unwrap();
        let zero = bech32::encode::<bech32::Bech32>(hrp, &[0u8; 32]).unwrap();
        let weak: age::x25519::Recipient = zero.parse().unwrap();
        assert!(wrap_x25519(&weak, &file_key, &rng).is_err());
    }

    #[test]
    fn a_short_chunk_is_only_allowed_last() {
        let key =
            LessSafeKey::new(aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[7; 32]).unwrap());
        let mut s = Sealed::default();
        assert!(seal_batch(&key, 0, &[1, 2, 3], false, 0, &mut s).is_err());
        assert_eq!(seal_batch(&key, 0, &[], true, 0, &mut s).unwrap(), 1);
        assert_eq!(s.cipher.len(), TAG);
    }
}
