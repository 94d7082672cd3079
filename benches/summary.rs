//! Opening one summary, as a cold IMAP listing does for every sealed
//! message (issue 11, "cold listing"), and its floor.
//!
//! Run with `cargo bench --bench summary`. The message is sealed once,
//! outside the timed region, to two recipients (the epoch's first, then an
//! escrow recipient, as `writ serve` seals); part 1 is cut from it by its
//! MIME structure, as the provider serves `BODY[1]`. What is timed:
//!
//! - `open_summary`: `envelope::open_summary` of part 1 (dearmor, the
//!   X25519 stanza unwrap, the header MAC, the payload decryption, the
//!   JSON parse), with writ's opening key (`OpeningKey`, as the server's
//!   keyring holds it) and with the age crate's identity, which derives its
//!   public key again at every stanza;
//! - `x25519_agreement`: one X25519 agreement alone (x25519-dalek's
//!   Montgomery ladder, as the age crate computes it), and
//!   `x25519_agreement_edwards` the same on the Edwards form, as writ's
//!   opening key computes it: the part of opening a summary that cannot
//!   go, one per message;
//! - `summary_to_json`, `summary_from_json`, `summary_clone`,
//!   `compose_envelope_and_structure`: the rest of a cold listing's work
//!   per message (the cache entry, the parse, the answer's two items);
//! - `public_key`: deriving an identity's public key (what `OpeningKey`
//!   keeps).

use age::x25519::Identity;
use divan::{Bencher, black_box};
use writ::envelope::{Keys, OpeningKey, Sealed, Sealer, open_summary};
use x25519_dalek::{PublicKey, StaticSecret};

fn main() {
    divan::main();
}

const EPOCH: &str = "0123456789abcdef";

/// A multipart/mixed message with a text part, an HTML part and a small
/// attachment: a summary with a few parts and a full envelope.
fn message() -> Vec<u8> {
    let mut m = b"From: Alice Example <alice@example.test>\r\n\
To: Bob Example <bob@example.test>, Carol <carol@example.test>\r\n\
Cc: Dave <dave@example.test>\r\n\
Subject: Quarterly figures, =?utf-8?q?r=C3=A9sum=C3=A9?=\r\n\
Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n\
Message-ID: <bench.1@example.test>\r\n\
In-Reply-To: <bench.0@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n"
        .to_vec();
    for i in 0..60 {
        m.extend_from_slice(
            format!("Line {i} of the figures, nothing to see here.\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n");
    for i in 0..60 {
        m.extend_from_slice(format!("<p>Line {i} of the figures.</p>\r\n").as_bytes());
    }
    m.extend_from_slice(
        b"</body></html>\r\n--alt--\r\n--outer\r\n\
Content-Type: application/octet-stream; name=\"figures.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"figures.bin\"\r\n\r\n",
    );
    for _ in 0..100 {
        m.extend_from_slice(
            b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n",
        );
    }
    m.extend_from_slice(b"--outer--\r\n");
    m
}

/// Part 1 of the sealed message (the summary part's body).
fn part1(identity: &Identity) -> Vec<u8> {
    let escrow = Identity::generate();
    let sealer = Sealer::new(EPOCH, vec![identity.to_public(), escrow.to_public()]);
    let mut stored = Vec::new();
    match sealer.seal(&message()[..], &mut stored).expect("seal") {
        Sealed::Sealed { .. } => {}
        Sealed::AlreadySealed { .. } => panic!("bench message detected as sealed"),
    }
    let structure = writ::envelope::scan::scan(&stored, Default::default());
    let p = &structure.root.parts[0];
    stored[p.body_offset as usize..(p.body_offset + p.body_size) as usize].to_vec()
}

fn bench_open(bencher: Bencher, keys: &impl Keys, identity: &Identity) {
    let part = part1(identity);
    let summary = open_summary(&part, None, EPOCH, keys).expect("the summary opens");
    assert!(summary.size > 10_000);
    bencher.bench_local(|| open_summary(black_box(&part), None, EPOCH, keys).expect("open"));
}

/// `open_summary` with writ's opening key.
#[divan::bench]
fn open_summary_writ(bencher: Bencher) {
    let identity = Identity::generate();
    let keys = vec![OpeningKey::new(&identity)];
    bench_open(bencher, &keys, &identity);
}

/// `open_summary` with the age crate's identity.
#[divan::bench]
fn open_summary_age(bencher: Bencher) {
    let identity = Identity::generate();
    let keys = vec![identity.clone()];
    bench_open(bencher, &keys, &identity);
}

/// One X25519 agreement (x25519-dalek): the floor of opening a summary.
#[divan::bench]
fn x25519_agreement(bencher: Bencher) {
    let secret = StaticSecret::from([0x42; 32]);
    let peer = PublicKey::from(&StaticSecret::from([0x17; 32]));
    bencher.bench_local(|| black_box(&secret).diffie_hellman(black_box(&peer)));
}

/// One X25519 agreement as writ's opening key computes it: on the Edwards
/// form (curve25519-dalek's vector backend where the CPU has AVX2).
#[divan::bench]
fn x25519_agreement_edwards(bencher: Bencher) {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    let secret = [0x42; 32];
    let peer = MontgomeryPoint(*PublicKey::from(&StaticSecret::from([0x17; 32])).as_bytes());
    bencher.bench_local(|| {
        black_box(peer)
            .to_edwards(0)
            .map(|p| p.mul_clamped(black_box(secret)).to_montgomery())
    });
}

/// Deriving an identity's public key (what the age crate's identity does
/// at every stanza).
#[divan::bench]
fn public_key(bencher: Bencher) {
    let secret = StaticSecret::from([0x42; 32]);
    bencher.bench_local(|| PublicKey::from(black_box(&secret)));
}

/// The parts of a cold listing's per-summary work after the opening: the
/// JSON the cache stores (and parses back), and a copy of the summary.
fn opened_summary() -> writ::envelope::Summary {
    let identity = Identity::generate();
    let part = part1(&identity);
    open_summary(&part, None, EPOCH, &vec![OpeningKey::new(&identity)]).expect("the summary opens")
}

/// Serialising a summary to JSON (what the cache seals).
#[divan::bench]
fn summary_to_json(bencher: Bencher) {
    let summary = opened_summary();
    bencher.bench_local(|| serde_json::to_vec(black_box(&summary)).expect("json"));
}

/// Parsing a summary's JSON (what opening it and reading a cache entry do).
#[divan::bench]
fn summary_from_json(bencher: Bencher) {
    let json = serde_json::to_vec(&opened_summary()).expect("json");
    bencher.bench_local(|| {
        serde_json::from_slice::<writ::envelope::Summary>(black_box(&json)).expect("parse")
    });
}

/// A deep copy of a summary.
#[divan::bench]
fn summary_clone(bencher: Bencher) {
    let summary = opened_summary();
    bencher.bench_local(|| black_box(&summary).clone());
}

/// Composing ENVELOPE and BODYSTRUCTURE from a summary (what the session's
/// thread does for every message of a listing).
#[divan::bench]
fn compose_envelope_and_structure(bencher: Bencher) {
    let summary = opened_summary();
    let header = summary
        .root
        .header
        .clone()
        .expect("the summary keeps the header");
    bencher.bench_local(|| {
        let e = writ::envelope::view::envelope_bytes(black_box(&header));
        let b = writ::envelope::view::body_structure_bytes(black_box(&summary.root), true);
        (e, b)
    });
}
