//! The entry points of the fuzz targets (`fuzz/fuzz_targets/`) and of the
//! property tests that run the same code in CI (`tests/imap_fuzz.rs`):
//!
//! - [`exercise`] (target `rewrite`): arbitrary bytes, from either side,
//!   into a session that is rewriting a FETCH over sealed mail. Whatever
//!   comes in, the session must not panic, and a client command must never
//!   reach the provider unparsed.
//! - [`sequence_sets`] (target `intake`): a client command with any valid
//!   sequence set reaches the provider byte for byte as the client wrote
//!   it (`*` stays `*`, `4294967295` stays a number, nothing is merged).
//! - [`intake`] (target `intake`): the intake caps pass what is within
//!   them unchanged, in any chunking, and hold at most one command's text.

use std::sync::{Arc, OnceLock};

use super::session::{Context, Session, Step};
use crate::envelope::Sealer;
use crate::envelope::fuzz::mutated;

struct Fixture {
    identity: age::x25519::Identity,
    sealer: Sealer,
    sealed: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let identity = age::x25519::Identity::generate();
        let sealer = Sealer::new("0123456789abcdef", vec![identity.to_public()]);
        let m = b"From: a@example.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n--b--\r\n";
        let mut sealed = Vec::new();
        // A fixed message and fresh keys: sealing cannot fail here.
        let _ = sealer.seal(&m[..], &mut sealed);
        Fixture {
            identity,
            sealer,
            sealed,
        }
    })
}

/// A session on a TLS client connection, opening with the fixture's keys.
fn session(f: &Fixture) -> Session {
    Session::new(
        Context {
            client_tls: true,
            client_loopback: false,
            starttls_listener: false,
            allow_plaintext_auth: false,
            max_literal_size: 64 * 1024,
        },
        Arc::new(vec![f.identity.clone()]),
        f.sealer.clone(),
    )
    .with_inline_work()
}

fn literal(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = format!("{name} {{{}}}\r\n", bytes.len()).into_bytes();
    v.extend_from_slice(bytes);
    v
}

/// Feeds `data` to a session. The first byte picks the mode:
/// 0 — `data` is what the client sends;
/// 1 — `data` is what the provider answers to a FETCH over sealed mail;
/// otherwise — the provider answers with a real sealed message into
///   which `data` is written at positions it chooses (mutation).
pub fn exercise(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let mut s = session(f);
    let step = |s: &mut Session| {
        let st = s.advance();
        let _ = s.take_to_client();
        let _ = s.take_to_provider();
        if st == Step::StartTls {
            s.tls_started();
        }
        // What follows stands for the inflated bytes.
        if st == Step::Compress {
            s.compression_started();
        }
        st
    };
    step(&mut s);
    match mode % 3 {
        0 => {
            for chunk in data.chunks(97) {
                s.client_input(chunk);
                if step(&mut s) == Step::Close {
                    return;
                }
            }
        }
        mode => {
            s.client_input(b"a FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY[] BODY[1.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.9>)\r\n");
            step(&mut s);
            let answer = if mode == 1 {
                data.to_vec()
            } else {
                let stored = mutated(&f.sealed, data);
                let header_end = stored
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(stored.len(), |p| p + 4);
                let mut a = b"* 1 FETCH (UID 5 FLAGS () ".to_vec();
                a.extend(literal("BODY[HEADER]", &stored[..header_end]));
                a.extend_from_slice(b")\r\na OK done\r\n* 1 FETCH (UID 5 ");
                a.extend(literal("BODY[]", &stored));
                a.extend_from_slice(b")\r\nwrit.1 OK done\r\nwrit.2 OK done\r\n");
                a
            };
            for chunk in answer.chunks(113) {
                s.provider_input(chunk);
                if step(&mut s) == Step::Close {
                    return;
                }
            }
            s.provider_closed();
            step(&mut s);
        }
    }
}

/// Builds `a [UID] STORE <set> +FLAGS (\\Seen)` with a valid sequence set
/// made of `data` (each two bytes one element: a number or `*`, or a range
/// of two, in any order, the largest numbers included) and checks that the
/// session forwards it to the provider byte for byte.
pub fn sequence_sets(data: &[u8]) {
    const NUMBERS: [&str; 8] = ["1", "2", "3", "7", "*", "65536", "4294967294", "4294967295"];
    let set: Vec<String> = data
        .chunks_exact(2)
        .take(2048)
        .map(|p| {
            let a = NUMBERS[usize::from(p[0] % 8)];
            let b = NUMBERS[usize::from(p[1] % 8)];
            if p[0] & 0x80 != 0 {
                format!("{a}:{b}")
            } else {
                a.to_owned()
            }
        })
        .collect();
    // `4294967295:4294967295` standing alone is how imap-codec hands writ
    // a `$` (SEARCHRES): writ answers it BAD instead of guessing (the
    // session's refusal, tested there), so it is not forwarded.
    if set.is_empty() || set == ["4294967295:4294967295"] {
        return;
    }
    let uid = if data[0] & 0x40 != 0 { "UID " } else { "" };
    let command = format!("a {uid}STORE {} +FLAGS (\\Seen)\r\n", set.join(","));
    let f = fixture();
    let mut s = session(f);
    s.advance();
    let _ = s.take_to_client();
    s.client_input(command.as_bytes());
    s.advance();
    let forwarded = s.take_to_provider();
    assert!(
        forwarded == command.as_bytes(),
        "sequence set rewritten: {command:?} went out as {:?} (the client was told {:?})",
        String::from_utf8_lossy(&forwarded),
        String::from_utf8_lossy(&s.take_to_client())
    );
}

/// Feeds `data` (the first byte picks the chunk size) to an [`Intake`]:
/// without a refusal, what it passes on is the input, less at most one
/// command's text held back.
pub fn intake(data: &[u8]) {
    use super::intake::{Event, Intake, MAX_COMMAND_TEXT};
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    // Long lines without a fuzzer spending megabytes: each `~` is 4 KiB.
    let mut input = Vec::with_capacity(data.len());
    for &b in data {
        if b == b'~' {
            input.extend(std::iter::repeat_n(b'a', 4096));
        } else {
            input.push(b);
        }
    }
    let mut i = Intake::new(1024);
    let mut passed = Vec::new();
    let mut refused = false;
    for piece in input.chunks(usize::from(chunk).max(1)) {
        for event in i.push(piece) {
            match event {
                Event::Bytes(b) => passed.extend_from_slice(&b),
                Event::Refused { .. } => refused = true,
                // An extended LIST taken off: a NOOP in its place.
                Event::Passthrough { .. } => refused = true,
                // A MULTIAPPEND taken apart: lines added between messages.
                Event::AppendPart { .. } => refused = true,
            }
        }
    }
    // RETURN options moved into a tag, `$` written as a set: changed.
    if !refused && i.lines_rewritten() == 0 {
        assert_eq!(
            &input[..passed.len()],
            &passed[..],
            "the intake changed what it passed on"
        );
        assert!(input.len() - passed.len() <= MAX_COMMAND_TEXT + 1);
    }
}
