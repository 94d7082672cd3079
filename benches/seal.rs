//! Sealed-message format v1: seal and open throughput, and the cost of a
//! recipient.
//!
//! Run with `cargo bench --bench seal`. The messages are built once, outside
//! the timed region: a realistic multipart/mixed (a short text part and a
//! base64 attachment that fills the rest). Sealing and opening write into
//! `std::io::sink()`; what is timed is the format's own work (scanner, age
//! encryption/decryption, armor, CRLF, and for messages over the 8 MiB spill
//! threshold the ciphertext spill file in the system temp dir).
//!
//! Throughput benches seal to two recipients (epoch + escrow), the smallest
//! production setup; `seal_recipients` compares 1 and 3 on a 10 KiB message.

use std::io;

use age::x25519::{Identity, Recipient};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use writ::envelope::{Sealed, Sealer, open};

fn main() {
    divan::main();
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A fixed, well-formed epoch id (the benches do not need a keyring).
const EPOCH: &str = "0123456789abcdef";

/// A multipart/mixed message of exactly `size` octets (for sizes above a
/// few hundred octets): header, a text part, a base64 "attachment" of
/// pseudo-random data in 76-character CRLF lines, the close delimiter.
fn message(size: usize) -> Vec<u8> {
    let head = b"From: Alice Example <alice@example.test>\r\n\
To: Bob Example <bob@example.test>\r\n\
Subject: Quarterly figures\r\n\
Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n\
Message-ID: <bench.1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"bench-boundary\"\r\n\
\r\n\
--bench-boundary\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Figures attached.\r\n\
--bench-boundary\r\n\
Content-Type: application/octet-stream; name=\"figures.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"figures.bin\"\r\n\
\r\n";
    let tail = b"\r\n--bench-boundary--\r\n";
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body_len = size.saturating_sub(head.len() + tail.len());
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(head);
    // xorshift64: cheap, deterministic, incompressible enough.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut col = 0;
    for _ in 0..body_len {
        if col == 76 {
            m.extend_from_slice(b"\r\n");
            col = 0;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(ALPHABET[(x & 63) as usize]);
        col += 1;
    }
    m.truncate(size.saturating_sub(tail.len()).max(head.len()));
    if m.last() == Some(&b'\r') {
        // Cut between CR and LF: keep the line endings CRLF.
        *m.last_mut().expect("non-empty") = b'A';
    }
    m.extend_from_slice(tail);
    m
}

/// `n` fresh X25519 identities and their recipients.
fn identities(n: usize) -> (Vec<Identity>, Vec<Recipient>) {
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let recipients = ids.iter().map(Identity::to_public).collect();
    (ids, recipients)
}

fn seal_to_vec(sealer: &Sealer, m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 3 + 4096);
    match sealer.seal(m, &mut out).expect("seal") {
        Sealed::Sealed { .. } => out,
        Sealed::AlreadySealed { .. } => panic!("bench message detected as sealed"),
    }
}

fn bench_seal(bencher: Bencher, size: usize) {
    let m = message(size);
    assert_eq!(m.len(), size);
    let (_ids, recipients) = identities(2);
    let sealer = Sealer::new(EPOCH, recipients);
    bencher
        .counter(BytesCount::new(m.len()))
        .bench_local(|| sealer.seal(black_box(&m[..]), io::sink()).expect("seal"));
}

fn bench_open(bencher: Bencher, size: usize) {
    let m = message(size);
    let (ids, recipients) = identities(2);
    let sealed = seal_to_vec(&Sealer::new(EPOCH, recipients), &m);
    // Check once, outside the timed region, that the round trip holds.
    let mut check = Vec::with_capacity(m.len());
    open(&sealed[..], &ids, &mut check).expect("open");
    assert!(check == m, "open(seal(m)) != m");
    drop(check);
    bencher
        .counter(BytesCount::new(m.len()))
        .bench_local(|| open(black_box(&sealed[..]), &ids, io::sink()).expect("open"));
}

/// Seal throughput, 10 KiB and 1 MiB messages.
#[divan::bench(args = [10 * KIB, MIB])]
fn seal(bencher: Bencher, size: usize) {
    bench_seal(bencher, size);
}

/// Seal throughput, 100 MiB message (spills ciphertext to a temp file).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn seal_100mib(bencher: Bencher) {
    bench_seal(bencher, 100 * MIB);
}

/// Open throughput, 10 KiB and 1 MiB messages.
#[divan::bench(args = [10 * KIB, MIB])]
fn open_sealed(bencher: Bencher, size: usize) {
    bench_open(bencher, size);
}

/// Open throughput, 100 MiB message.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn open_sealed_100mib(bencher: Bencher) {
    bench_open(bencher, 100 * MIB);
}

/// Cost of sealing one 10 KiB message to 1 or 3 X25519 recipients.
#[divan::bench(args = [1, 3])]
fn seal_recipients(bencher: Bencher, recipients: usize) {
    let m = message(10 * KIB);
    let (_ids, recipients) = identities(recipients);
    let sealer = Sealer::new(EPOCH, recipients);
    bencher.bench_local(|| sealer.seal(black_box(&m[..]), io::sink()).expect("seal"));
}
