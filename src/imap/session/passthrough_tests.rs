//! The extended LIST pass-through without sockets ([`super::passthrough`],
//! [`super::list_raw`]).

use super::*;

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

fn session() -> Session {
    Session::over_tls(Runner::inline())
}

const EXTENDED: &str = "l1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"%\" \"Archive/*\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n";

#[test]
fn an_extended_list_goes_as_sent_and_its_answers_come_back_as_written() {
    let mut s = session();
    s.client_input(format!("n1 NOOP\r\n{EXTENDED}n2 NOOP\r\n").as_bytes());
    s.advance();
    assert_eq!(
        text(s.take_to_provider()),
        format!("n1 NOOP\r\n{EXTENDED}n2 NOOP\r\n")
    );
    let answers = "n1 OK NOOP\r\n\
        * LIST (\\UnMarked \\Subscribed) \"/\" Trash\r\n\
        * STATUS Trash (MESSAGES 0 UNSEEN 0)\r\n\
        * LIST () \"/\" Archive (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
        * LIST (\\HasNoChildren) \"/\" {7}\r\nA \"b\" c\r\n\
        l1 OK List completed\r\n\
        n2 OK NOOP\r\n";
    // In pieces, as a provider's bytes may come.
    for piece in answers.as_bytes().chunks(9) {
        s.provider_input(piece);
        s.advance();
    }
    assert_eq!(text(s.take_to_client()), answers);
    assert_eq!(s.step, Step::Wait);
}

#[test]
fn a_clients_own_noop_stays_a_noop_and_refusals_answer_bad() {
    let mut s = session();
    s.client_input(b"x NOOP\r\ny LIST \"\" * RETURN (STATUS (SIZE))\r\nz LIST \"\" *\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "x NOOP\r\nz LIST \"\" *\r\n");
    let out = text(s.take_to_client());
    assert!(out.starts_with("y BAD STATUS SIZE"), "{out}");
}

#[test]
fn extended_lists_past_the_pending_cap_are_answered_bad() {
    let mut s = session();
    let extra = 6;
    let mut input = String::new();
    for i in 0..passthrough::MAX_PENDING + extra {
        input.push_str(&format!("t{i} LIST \"\" \"*\" RETURN (CHILDREN)\r\n"));
    }
    s.client_input(input.as_bytes());
    s.advance();
    let sent = text(s.take_to_provider());
    assert_eq!(
        sent.matches(" RETURN (CHILDREN)\r\n").count(),
        passthrough::MAX_PENDING
    );
    assert!(!sent.contains("NOOP"), "placeholders went out: {sent}");
    let out = text(s.take_to_client());
    assert_eq!(out.matches(passthrough::TOO_MANY).count(), extra, "{out}");
    assert!(
        out.contains(&format!("t{} BAD", passthrough::MAX_PENDING)),
        "{out}"
    );
}
