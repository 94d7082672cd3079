//! The payload's age file, which writ writes itself (`envelope::stream`:
//! header, STREAM, armor, batches sealed on worker threads), against the
//! reference `age` CLI and the age crate: at the sizes where STREAM and
//! the armor have edges (empty, one chunk, one chunk and a byte, whole
//! batches), on the caller's thread and on workers; and writ's opener
//! still reads a payload the `age` CLI wrote.

mod common;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use age::x25519::{Identity, Recipient};
use common::process::output_with_stdin;
use common::writ::{age_decrypt, age_keygen, payload_armor};
use writ::envelope::{OpeningKey, Sealer, open};

const EPOCH: &str = "0123456789abcdef";
const CHUNK: usize = 64 * 1024;
/// Three chunks: one batch of parallel work.
const BATCH: usize = 3 * CHUNK;

/// A message of exactly `size` octets (a short header, then a body of
/// varied bytes, line breaks included).
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: ann@example.test\r\nSubject: interop\r\n\r\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    while m.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        m.push(if x.is_multiple_of(61) { b'\n' } else { x as u8 });
    }
    m.truncate(size);
    m
}

fn identity(path: &Path) -> Identity {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("age-keygen writes the identity")
        .parse()
        .unwrap()
}

/// Opened with the age crate's identity and with writ's opening key (what
/// the keyring opens with): the same bytes.
fn open_bytes(sealed: &[u8], id: &Identity) -> Vec<u8> {
    let mut out = Vec::new();
    open(Cursor::new(sealed), std::slice::from_ref(id), &mut out).expect("writ opens it");
    let mut with_key = Vec::new();
    open(
        Cursor::new(sealed),
        &vec![OpeningKey::new(id)],
        &mut with_key,
    )
    .expect("writ's opening key opens it");
    assert!(with_key == out, "the opening key opens it alike");
    out
}

#[test]
fn payloads_at_stream_and_armor_edges_decrypt_with_the_age_cli_and_crate() {
    let dir = tempfile::tempdir().unwrap();
    let (id_path, recipient) = age_keygen(dir.path(), "id.txt");
    let id = identity(&id_path);
    let recipient: Recipient = recipient.parse().unwrap();
    let sizes = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        BATCH - 1,
        BATCH,
        BATCH + 1,
        2 * BATCH,
        2 * BATCH + CHUNK,
        5 * BATCH + 12_345,
    ];
    // Inline (the default for messages this small), and on two workers
    // from the first batch on; with one to three recipients, so the age
    // header's length (and so where each batch falls on the armor's
    // 48-byte lines) differs.
    let others: Vec<Recipient> = (0..2).map(|_| Identity::generate().to_public()).collect();
    let mut sealers = Vec::new();
    for n in 0..=others.len() {
        let mut to = vec![recipient.clone()];
        to.extend(others[..n].iter().cloned());
        sealers.push(("inline", Sealer::new(EPOCH, to.clone())));
        sealers.push(("workers", Sealer::new(EPOCH, to).parallel(0, 2)));
    }
    for size in sizes {
        let m = message(size);
        for (how, sealer) in &sealers {
            let mut sealed = Vec::new();
            sealer.seal(&m[..], &mut sealed).expect("seal");
            let armor = payload_armor(&sealed);
            assert!(
                armor
                    .split(|&b| b == b'\n')
                    .all(|l| l.len() <= 65 && !l.ends_with(b"\r\r")),
                "{how} {size}: armor lines of at most 64 columns"
            );
            assert!(
                age_decrypt(&id_path, &armor) == m,
                "{how} {size}: age -d gives M back"
            );
            assert!(
                open_bytes(&sealed, &id) == m,
                "{how} {size}: the age crate (writ's opener) gives M back"
            );
        }
    }
}

#[test]
fn a_payload_that_the_age_cli_wrote_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (id_path, recipient_text) = age_keygen(dir.path(), "id.txt");
    let id = identity(&id_path);
    let recipient: Recipient = recipient_text.parse().unwrap();
    for size in [0, CHUNK, BATCH + 1, 4 * BATCH + 7] {
        let m = message(size);
        let mut sealed = Vec::new();
        Sealer::new(EPOCH, vec![recipient.clone()])
            .seal(&m[..], &mut sealed)
            .expect("seal");
        let out = output_with_stdin(Command::new("age").args(["-a", "-r", &recipient_text]), &m)
            .expect("run age");
        assert!(out.status.success(), "age -a: {out:?}");
        // The sealed format's line ending is CRLF.
        let mut by_age = Vec::new();
        for &b in &out.stdout {
            if b == b'\n' {
                by_age.push(b'\r');
            }
            by_age.push(b);
        }
        // Put age's armored file where writ's payload was.
        let text = sealed.clone();
        let begin = find_last(&text, b"-----BEGIN AGE ENCRYPTED FILE-----").unwrap();
        let end_marker = b"-----END AGE ENCRYPTED FILE-----\r\n";
        let end = find_last(&text, end_marker).unwrap() + end_marker.len();
        let mut swapped = text[..begin].to_vec();
        swapped.extend_from_slice(&by_age);
        swapped.extend_from_slice(&text[end..]);
        assert_ne!(swapped, sealed);
        assert!(open_bytes(&swapped, &id) == m, "size {size}");
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}
