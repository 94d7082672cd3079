//! MULTIAPPEND through the session without sockets ([`super::multiappend`]).

use super::*;

fn session() -> Session {
    session_with(Runner::inline())
}

/// The same, its work (sealing) going through `runner`.
fn session_with(runner: Runner) -> Session {
    let mut s = Session::over_tls(runner);
    s.intake.logged_in();
    s
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

const FIRST: &str = "Subject: one\r\n\r\nplain one\r\n";
const SECOND: &str = "Subject: two\r\n\r\nplain two\r\n";

/// Sends a two-message MULTIAPPEND as a client does (waiting for the
/// continuation of each synchronising literal); returns what the client
/// was sent meanwhile.
fn send(s: &mut Session) -> String {
    let mut to_client = String::new();
    s.client_input(format!("a APPEND Drafts (\\Seen) {{{}}}\r\n", FIRST.len()).as_bytes());
    s.advance();
    to_client.push_str(&text(s.take_to_client()));
    s.client_input(format!("{FIRST} (\\Flagged) {{{}}}\r\n", SECOND.len()).as_bytes());
    s.advance();
    to_client.push_str(&text(s.take_to_client()));
    s.client_input(format!("{SECOND}\r\n").as_bytes());
    s.advance();
    to_client.push_str(&text(s.take_to_client()));
    to_client
}

#[test]
fn two_messages_go_on_sealed_as_one_command_with_continuations() {
    let mut s = session();
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+\r\n");
    s.advance();
    s.take_to_client();
    let to_client = send(&mut s);
    assert_eq!(to_client.matches("+ ").count(), 2, "{to_client}");
    let sent = text(s.take_to_provider());
    assert_eq!(sent.matches("APPEND").count(), 1, "{sent}");
    assert!(sent.starts_with("a APPEND Drafts (\\Seen) {"), "{sent}");
    assert!(sent.contains("+}\r\n"), "{sent}");
    assert!(sent.contains(" (\\Flagged) {"), "{sent}");
    assert!(!sent.contains("plain"), "plaintext went to the provider");
    assert!(sent.ends_with("\r\n"));
    s.provider_input(b"a OK [APPENDUID 7 1:2] Append completed.\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "a OK [APPENDUID 7 1:2] Append completed.\r\n"
    );
}

#[test]
fn before_the_provider_offers_it_a_multiappend_is_refused_and_nothing_sent() {
    let mut s = session();
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL-\r\n");
    s.advance();
    s.take_to_client();
    let to_client = send(&mut s);
    assert!(
        to_client.contains(&format!("a BAD {}", multiappend::NOT_OFFERED)),
        "{to_client}"
    );
    assert_eq!(text(s.take_to_provider()), "");
}

/// Defect: each message was sealed inside `advance`, on the runtime
/// thread (up to `imap.max_literal_size` of them per command). Now each is
/// a job as it arrives; the command goes on once all are sealed, and what
/// the client sends after it waits until then.
#[test]
fn the_messages_are_sealed_off_the_session_and_the_command_goes_on_when_all_are() {
    let runner = Runner::held();
    let mut s = session_with(runner.clone());
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+\r\n");
    s.advance();
    s.take_to_client();
    send(&mut s);
    s.client_input(b"n NOOP\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "");
    assert!(s.working());
    assert_eq!(runner.run_held(), 2);
    s.advance();
    let sent = text(s.take_to_provider());
    assert_eq!(sent.matches("APPEND").count(), 1, "{sent}");
    assert!(sent.starts_with("a APPEND Drafts (\\Seen) {"), "{sent}");
    assert!(sent.contains(" (\\Flagged) {"), "{sent}");
    assert!(!sent.contains("plain"), "plaintext went to the provider");
    assert!(sent.ends_with("\r\nn NOOP\r\n"), "{sent}");
    assert!(!s.working());
}

/// One session never queues more than `in_flight` sealing jobs on the
/// shared pool: past that it reads no more of the client until some end.
/// A command that will be refused seals nothing.
#[test]
fn a_multiappend_queues_at_most_the_window_of_seals_and_a_refused_one_none() {
    let runner = Runner::held();
    let mut s = session_with(runner.clone());
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+\r\n");
    s.advance();
    s.take_to_client();
    let window = crate::imap::fetch::opening::in_flight();
    let mut input = format!("a APPEND Drafts {{{}+}}\r\n{FIRST}", FIRST.len()).into_bytes();
    // One message more than the window: a message is taken once what
    // follows it (another, or the command's end) is read.
    for _ in 0..window {
        input.extend(format!(" {{{}+}}\r\n{FIRST}", FIRST.len()).into_bytes());
    }
    s.client_input(&input);
    s.advance();
    assert!(
        !s.wants_client_input(),
        "{window} seals running, still reading"
    );
    assert!(s.working());
    assert_eq!(runner.run_held(), window);
    s.advance();
    assert!(s.wants_client_input());
    s.client_input(b"\r\n");
    s.advance();
    assert_eq!(runner.run_held(), 1);
    s.advance();
    let sent = text(s.take_to_provider());
    assert_eq!(sent.matches("APPEND").count(), 1, "{sent}");
    assert_eq!(sent.matches("+}\r\n").count(), window + 1, "{sent}");
    assert!(!s.working());

    // Not offered (a provider without LITERAL+): nothing sealed.
    let mut s = session_with(runner.clone());
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL-\r\n");
    s.advance();
    s.take_to_client();
    let to_client = send(&mut s);
    assert!(to_client.contains("a BAD"), "{to_client}");
    assert_eq!(runner.run_held(), 0);
    assert!(!s.working());
}

/// A MULTIAPPEND whose tag is still in use at the provider is refused
/// once, and leaves nothing behind: a later APPEND with that tag goes on
/// alone, not joined to the refused command's last message.
#[test]
fn a_multiappend_with_a_tag_in_use_is_refused_once_and_leaves_nothing() {
    let mut s = session();
    s.provider_input(b"* CAPABILITY IMAP4rev1 MULTIAPPEND LITERAL+\r\n");
    s.advance();
    s.take_to_client();
    s.client_input(b"a NOOP\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "a NOOP\r\n");
    let mut input = format!("a APPEND Drafts {{{}+}}\r\n{FIRST}", FIRST.len()).into_bytes();
    input.extend(format!(" {{{}+}}\r\n{SECOND}\r\n", SECOND.len()).into_bytes());
    s.client_input(&input);
    s.advance();
    let to_client = text(s.take_to_client());
    assert_eq!(to_client.matches("a BAD").count(), 1, "{to_client}");
    assert_eq!(text(s.take_to_provider()), "");
    s.provider_input(b"a OK NOOP completed.\r\n");
    s.advance();
    s.take_to_client();
    s.client_input(format!("a APPEND Sent {{{}+}}\r\n{FIRST}\r\n", FIRST.len()).as_bytes());
    s.advance();
    let sent = text(s.take_to_provider());
    assert!(sent.starts_with("a APPEND Sent {"), "{sent}");
    assert_eq!(sent.matches("APPEND").count(), 1, "{sent}");
    assert!(
        !sent.contains("Drafts"),
        "joined to the refused command: {sent}"
    );
}
