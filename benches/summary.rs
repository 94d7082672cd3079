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
//! - `x25519_agreement`: one X25519 agreement alone (x25519-dalek), the
//!   part of opening a summary that cannot go: one per message;
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

/// Deriving an identity's public key (what the age crate's identity does
/// at every stanza).
#[divan::bench]
fn public_key(bencher: Bencher) {
    let secret = StaticSecret::from([0x42; 32]);
    bencher.bench_local(|| PublicKey::from(black_box(&secret)));
}
