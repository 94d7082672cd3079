//! The intake taking a MULTIAPPEND apart, without a session.

use super::super::{Event, Intake};
use super::{MAX_MESSAGES, Next, why};

/// What the intake hands on: bytes joined, announcements in place.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Bytes(Vec<u8>),
    Part(Next),
    Refused(&'static str, bool),
}

fn feed(input: &[u8], n: usize) -> Vec<Seen> {
    let mut intake = Intake::new(1024);
    intake.logged_in();
    let mut out: Vec<Seen> = Vec::new();
    for chunk in input.chunks(n) {
        for event in intake.push(chunk) {
            match event {
                Event::Bytes(b) => match out.last_mut() {
                    Some(Seen::Bytes(prev)) => prev.extend_from_slice(&b),
                    _ => out.push(Seen::Bytes(b)),
                },
                Event::AppendPart { tag, next } => {
                    assert_eq!(tag, b"A1");
                    out.push(Seen::Part(next));
                }
                Event::Refused { why, close, .. } => out.push(Seen::Refused(why, close)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    out
}

#[test]
fn each_message_becomes_an_append_with_the_tag_in_any_chunking() {
    let input = b"A1 APPEND Drafts (\\Seen) {3}\r\nab\n (\\Flagged) \"07-Dec-2026 00:00:00 +0000\" {2+}\r\ncd {1}\r\ne\r\nA2 NOOP\r\n";
    for n in [1, 3, 8, 1000] {
        assert_eq!(
            feed(input, n),
            vec![
                Seen::Bytes(b"A1 APPEND Drafts (\\Seen) {3}\r\nab\n".to_vec()),
                Seen::Part(Next::More),
                Seen::Bytes(
                    b"\r\nA1 APPEND INBOX (\\Flagged) \"07-Dec-2026 00:00:00 +0000\" {2+}\r\ncd"
                        .to_vec()
                ),
                Seen::Part(Next::More),
                Seen::Bytes(b"\r\nA1 APPEND INBOX {1}\r\ne".to_vec()),
                Seen::Part(Next::Last),
                Seen::Bytes(b"\r\nA2 NOOP\r\n".to_vec()),
            ],
            "chunks of {n}"
        );
    }
}

#[test]
fn a_single_append_and_a_literal_mailbox_pass_unchanged() {
    let input = b"A1 APPEND INBOX {1}\r\nx\r\nA1 APPEND {5}\r\nINBOX {1}\r\ny\r\n";
    assert_eq!(feed(input, 5), vec![Seen::Bytes(input.to_vec())]);
}

#[test]
fn too_many_messages_are_refused_and_the_rest_dropped() {
    let mut input = b"A1 APPEND INBOX {1}\r\nx".to_vec();
    for _ in 1..MAX_MESSAGES {
        input.extend_from_slice(b" {1+}\r\nx");
    }
    input.extend_from_slice(b" {1+}\r\nx {1+}\r\nx\r\nA2 NOOP\r\n");
    let seen = feed(&input, 4096);
    let parts = seen
        .iter()
        .filter(|s| matches!(s, Seen::Part(Next::More)))
        .count();
    assert_eq!(parts, MAX_MESSAGES - 1);
    assert_eq!(
        seen[seen.len() - 2],
        Seen::Part(Next::Refused(why::MESSAGES))
    );
    assert_eq!(
        seen[seen.len() - 1],
        Seen::Bytes(b"\r\nA2 NOOP\r\n".to_vec())
    );
}

#[test]
fn a_message_over_the_literal_limit_is_refused_without_a_continuation() {
    // Synchronising: the client waits for a continuation that never comes.
    let seen = feed(b"A1 APPEND INBOX {1}\r\nx {2000}\r\nA2 NOOP\r\n", 7);
    assert_eq!(
        seen,
        vec![
            Seen::Bytes(b"A1 APPEND INBOX {1}\r\nx".to_vec()),
            Seen::Part(Next::Refused(why::LITERAL)),
            Seen::Bytes(b"\r\nA2 NOOP\r\n".to_vec()),
        ]
    );
}

#[test]
fn garbage_after_a_second_message_refuses_the_command() {
    let seen = feed(
        b"A1 APPEND INBOX {1}\r\nx {1+}\r\ny garbage\r\nA2 NOOP\r\n",
        3,
    );
    assert_eq!(seen[3], Seen::Part(Next::Refused(why::SYNTAX)));
    assert_eq!(seen[4], Seen::Bytes(b"\r\nA2 NOOP\r\n".to_vec()));
}

#[test]
fn messages_over_the_literal_limit_together_are_refused() {
    // 600 + 500 > 1024, each within it; the second is non-synchronising
    // and is read and dropped.
    let mut input = b"A1 APPEND INBOX {600}\r\n".to_vec();
    input.extend_from_slice(&[b'a'; 600]);
    input.extend_from_slice(b" {500+}\r\n");
    input.extend_from_slice(&[b'b'; 500]);
    input.extend_from_slice(b" {1+}\r\nc\r\nA2 NOOP\r\n");
    let seen = feed(&input, 100);
    assert_eq!(seen[1], Seen::Part(Next::Refused(why::OCTETS)));
    assert_eq!(seen[2], Seen::Bytes(b"\r\nA2 NOOP\r\n".to_vec()));
    assert_eq!(seen.len(), 3);
}
