//! COMPRESS DEFLATE in the session: refused before login, answered OK only
//! once nothing is in progress (the OK is the last uncompressed line),
//! `NO [COMPRESSIONACTIVE]` the second time, BAD for another algorithm.

use super::*;

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

fn logged_in() -> Session {
    let sealer = Sealer::new(
        "0123456789abcdef",
        vec![age::x25519::Identity::generate().to_public()],
    );
    let keys: SharedKeys = Arc::new(Vec::<age::x25519::Identity>::new());
    let mut s = Session::new(
        Context {
            client_tls: false,
            client_loopback: true,
            starttls_listener: true,
            allow_plaintext_auth: false,
            max_literal_size: 1024 * 1024,
        },
        keys,
        sealer,
    );
    s.advance();
    s.take_to_client();
    s.client_input(b"c CAPABILITY\r\n");
    s.advance();
    s.provider_input(b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE\r\nc OK done\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* CAPABILITY IMAP4REV1 IDLE STARTTLS\r\nc OK done\r\n",
        "no COMPRESS before login, even when the provider offers it"
    );
    s.client_input(b"z COMPRESS DEFLATE\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert!(text(s.take_to_client()).starts_with("z BAD "));
    s.client_input(b"l LOGIN alice secret\r\n");
    s.advance();
    s.take_to_provider();
    s.provider_input(b"l OK Logged in\r\n");
    s.advance();
    s.take_to_client();
    s.take_to_provider();
    assert!(s.authenticated());
    s
}

#[test]
fn compress_waits_for_commands_in_progress_then_switches() {
    let mut s = logged_in();
    s.client_input(b"n NOOP\r\nz COMPRESS DEFLATE\r\n");
    assert_eq!(s.advance(), Step::Wait, "the NOOP is still at the provider");
    assert_eq!(text(s.take_to_provider()), "n NOOP\r\n");
    assert_eq!(text(s.take_to_client()), "");
    assert!(!s.wants_client_input(), "nothing is read until the OK");
    s.provider_input(b"* 3 EXISTS\r\nn OK done\r\n");
    assert_eq!(s.advance(), Step::Compress);
    assert_eq!(
        text(s.take_to_client()),
        "* 3 EXISTS\r\nn OK done\r\nz OK DEFLATE active\r\n"
    );
    s.compression_started();
    assert!(s.wants_client_input());
    s.client_input(b"c CAPABILITY\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "c CAPABILITY\r\n");
    s.provider_input(b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE\r\nc OK done\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* CAPABILITY IMAP4REV1 IDLE\r\nc OK done\r\n",
        "no COMPRESS once active"
    );
    s.client_input(b"y COMPRESS DEFLATE\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert_eq!(
        text(s.take_to_client()),
        "y NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n"
    );
    assert_eq!(text(s.take_to_provider()), "", "never forwarded");
}

#[test]
fn other_algorithms_are_bad_and_the_session_goes_on() {
    let mut s = logged_in();
    s.client_input(b"z COMPRESS GZIP\r\nn NOOP\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert_eq!(
        text(s.take_to_client()),
        "z BAD Unknown compression algorithm: only DEFLATE is offered\r\n"
    );
    assert_eq!(text(s.take_to_provider()), "n NOOP\r\n");
}

#[test]
fn commands_sent_before_the_ok_are_refused() {
    let mut s = logged_in();
    s.client_input(b"z COMPRESS DEFLATE\r\nn NOOP\r\n");
    assert_eq!(s.advance(), Step::Compress);
    assert_eq!(
        text(s.take_to_client()),
        "n BAD Wait for the answer to COMPRESS before sending commands\r\nz OK DEFLATE active\r\n"
    );
    assert_eq!(text(s.take_to_provider()), "");
}
