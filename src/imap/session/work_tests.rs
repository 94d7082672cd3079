//! The session never does the heavy work itself: opening sealed messages
//! and holding them against SEARCH criteria are jobs, kept here by a
//! [`Runner::held`] until the test runs them, so what the session does
//! meanwhile is seen step by step.

use super::*;
use crate::imap::fetch::opening;
use crate::imap::testing::{MARKER, header_of, keys, literal_item, marker_of, sealed};

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// A logged-in session whose jobs wait for the test, and a stored sealed
/// message its keys open.
fn held_session() -> (Session, Runner, Vec<u8>) {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let runner = Runner::held();
    (session_with(ids, sealer, runner.clone()), runner, stored)
}

/// A logged-in session with these keys, its work going through `runner`.
fn session_with(
    ids: Vec<age::x25519::Identity>,
    sealer: crate::envelope::Sealer,
    runner: Runner,
) -> Session {
    let ctx = Context {
        client_tls: false,
        client_loopback: true,
        starttls_listener: true,
        allow_plaintext_auth: false,
        max_literal_size: 1024 * 1024,
    };
    let mut s = Session::new(ctx, Arc::new(ids), sealer).with_runner(runner);
    s.advance();
    let _ = s.take_to_client();
    s.client_input(b"x LOGIN alice pw\r\n");
    s.advance();
    let _ = s.take_to_provider();
    s.provider_input(b"x OK Logged in\r\n");
    s.advance();
    let _ = s.take_to_client();
    s
}

fn exchange(s: &mut Session, input: &[u8]) -> String {
    s.client_input(input);
    s.advance();
    text(s.take_to_provider())
}

/// The provider's answer to a probe of the stored header: messages 1 to
/// `n`, UID `uid_step` times the sequence number, each with `stored`'s
/// header, then `status`.
fn header_probe(n: u32, uid_step: u32, stored: &[u8], status: &str) -> Vec<u8> {
    let mut probe = Vec::new();
    for seq in 1..=n {
        probe.extend(format!("* {seq} FETCH (UID {} FLAGS () ", seq * uid_step).into_bytes());
        probe.extend(literal_item("BODY[HEADER]", header_of(stored)));
        probe.extend_from_slice(b")\r\n");
    }
    probe.extend_from_slice(status.as_bytes());
    probe
}

/// The provider's answer to a FETCH's probe (the marker fields):
/// messages 1 to `n`, UID = the sequence number, each with `stored`'s
/// marker, then `status`.
fn marker_probe(n: u32, stored: &[u8], status: &str) -> Vec<u8> {
    let mut probe = Vec::new();
    for seq in 1..=n {
        probe.extend(format!("* {seq} FETCH (UID {seq} FLAGS () ").into_bytes());
        probe.extend(literal_item(MARKER, &marker_of(stored)));
        probe.extend_from_slice(b")\r\n");
    }
    probe.extend_from_slice(status.as_bytes());
    probe
}

fn whole(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut r = format!("* {seq} FETCH (UID {uid} ").into_bytes();
    r.extend(literal_item("BODY[]", stored));
    r.extend_from_slice(b")\r\n");
    r
}

/// Defect: SEARCH's plan opened every sealed message and searched it
/// inside `advance`, on the runtime thread that serves other sessions
/// too. Now `advance` returns with the work still running, and the answer
/// comes once the jobs are done.
#[test]
fn a_search_over_sealed_mail_is_opened_and_searched_off_the_session() {
    let (mut s, runner, stored) = held_session();
    let up = exchange(&mut s, b"s UID SEARCH BODY text\r\n");
    assert_eq!(up, "writ.s1 FETCH * UID\r\n");
    s.provider_input(b"* 3 FETCH (UID 30)\r\nwrit.s1 OK done\r\n");
    s.advance();
    assert!(text(s.take_to_provider()).starts_with("writ.s2 FETCH 1:* "));
    s.provider_input(&header_probe(3, 10, &stored, "writ.s2 OK done\r\n"));
    s.advance();
    assert_eq!(
        text(s.take_to_provider()),
        "writ.s3 UID FETCH 10,20,30 (UID BODY.PEEK[])\r\n"
    );
    let mut bodies = Vec::new();
    for seq in 1..=3 {
        bodies.extend(whole(seq, seq * 10, &stored));
    }
    bodies.extend_from_slice(b"writ.s3 OK done\r\n");
    s.provider_input(&bodies);
    assert_eq!(s.advance(), Step::Wait);
    // Nothing was opened in `advance`: no answer yet, the work is out,
    // and the phase's end waits for it (the provider is not read).
    assert_eq!(text(s.take_to_client()), "");
    assert!(s.working());
    assert!(!s.wants_provider_input());
    assert_eq!(runner.run_held(), 3);
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* SEARCH 10 20 30\r\ns OK SEARCH completed (by writ)\r\n"
    );
    assert!(!s.working());
    assert!(s.wants_provider_input());
}

/// Defect: APPEND sealed its message inside `advance`, on the runtime
/// thread that serves other sessions too (up to `imap.max_literal_size`
/// of sealing). Now the seal is a job: nothing goes to the provider until
/// it is done, the command the client sent after it waits, and goes to
/// the provider after the sealed APPEND; the provider's answers pass on.
#[test]
fn an_append_is_sealed_off_the_session_and_what_follows_waits_for_it() {
    let (mut s, runner, _) = held_session();
    let message = b"From: a@example.test\r\nSubject: draft\r\n\r\nvery private\r\n";
    let mut input = format!("a APPEND Drafts {{{}+}}\r\n", message.len()).into_bytes();
    input.extend_from_slice(message);
    input.extend_from_slice(b"\r\nn NOOP\r\n");
    assert_eq!(exchange(&mut s, &input), "");
    assert!(s.working());
    assert_eq!(text(s.take_to_client()), "");
    assert_eq!(runner.run_held(), 1);
    s.advance();
    let up = text(s.take_to_provider());
    assert!(up.starts_with("a APPEND Drafts {"), "{up}");
    assert!(up.contains("X-Writ"), "not sealed: {up}");
    assert!(!up.contains("very private"), "plaintext went out: {up}");
    assert!(up.ends_with("\r\nn NOOP\r\n"), "{up}");
    assert!(!s.working());
    s.provider_input(b"a OK [APPENDUID 1 5] Append completed.\r\nn OK NOOP completed.\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "a OK [APPENDUID 1 5] Append completed.\r\nn OK NOOP completed.\r\n"
    );
}

/// Commands read behind a plan in the plaintext phase never run once a
/// STARTTLS among them switched to TLS (a man in the middle put them
/// there): the replay of held commands stops at STARTTLS, and the new flow
/// drops what was held.
#[test]
fn commands_held_behind_an_append_do_not_run_past_starttls() {
    let (ids, sealer) = keys();
    let runner = Runner::held();
    let ctx = Context {
        client_tls: false,
        client_loopback: false,
        starttls_listener: true,
        allow_plaintext_auth: false,
        max_literal_size: 1024 * 1024,
    };
    let mut s = Session::new(ctx, Arc::new(ids), sealer).with_runner(runner.clone());
    s.advance();
    let _ = s.take_to_client();
    let up = exchange(
        &mut s,
        b"x APPEND INBOX {1+}\r\nz\r\nb STARTTLS\r\nc LOGIN mallory pw\r\nd NOOP\r\n",
    );
    assert_eq!(up, "", "{}", text(s.take_to_client()));
    assert_eq!(runner.run_held(), 1);
    assert_eq!(s.advance(), Step::StartTls);
    assert!(text(s.take_to_client()).contains("b OK"));
    s.tls_started();
    s.advance();
    // The sealed APPEND goes on; what the client sent after STARTTLS in
    // the same packet does not.
    let up = text(s.take_to_provider());
    assert!(up.starts_with("x APPEND INBOX {"), "{up}");
    assert!(!up.contains("LOGIN") && !up.contains("NOOP"), "{up}");
    assert!(!s.authenticated());
}

/// The provider's part 1 (the summary) and its MIME header of `stored`
/// for messages 1 to 3 (UIDs 10, 20, 30), then `status`.
fn summaries(stored: &[u8], status: &str) -> Vec<u8> {
    let structure = crate::envelope::scan::scan(stored, Default::default());
    let p = &structure.root.parts[0];
    let slice = |off: u64, len: u64| &stored[off as usize..(off + len) as usize];
    let mut r = Vec::new();
    for seq in 1..=3u32 {
        r.extend(format!("* {seq} FETCH (UID {} ", seq * 10).into_bytes());
        r.extend(literal_item("BODY[1]", slice(p.body_offset, p.body_size)));
        r.push(b' ');
        r.extend(literal_item(
            "BODY[1.MIME]",
            slice(p.header_offset, p.header_size),
        ));
        r.extend_from_slice(b")\r\n");
    }
    r.extend_from_slice(status.as_bytes());
    r
}

/// `command` (a SORT) over three sealed messages, its summaries asked
/// with a FETCH starting `summaries_asked` and opened: the session and its
/// runner, with the ordering still to come.
fn sort_judged(command: &[u8], summaries_asked: &str) -> (Session, Runner) {
    let (mut s, runner, stored) = held_session();
    exchange(&mut s, command);
    s.provider_input(b"* 3 FETCH (UID 30)\r\nwrit.s1 OK done\r\n");
    s.advance();
    let _ = s.take_to_provider();
    s.provider_input(&header_probe(3, 10, &stored, "writ.s2 OK done\r\n"));
    s.advance();
    let up = text(s.take_to_provider());
    assert!(up.starts_with(summaries_asked), "{up}");
    s.provider_input(&summaries(&stored, "writ.s4 OK done\r\n"));
    s.advance();
    // The summaries are opened and judged off the session...
    assert_eq!(runner.run_held(), 3);
    s.advance();
    (s, runner)
}

/// Defect: SORT and THREAD ordered their matches (up to 100,000 of them;
/// THREAD=REFERENCES up to 20,000,000 parent steps) inside `advance`.
/// Now that is a job too: the answer comes once it is done.
#[test]
fn a_sort_is_ordered_off_the_session() {
    let (mut s, runner) = sort_judged(
        b"s UID SORT (SUBJECT) UTF-8 ALL\r\n",
        "writ.s4 UID FETCH 10,20,30 ",
    );
    // ... and then ordered off it: no answer until that job ran.
    assert_eq!(text(s.take_to_client()), "");
    assert!(s.working());
    assert_eq!(runner.run_held(), 1);
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* SORT 10 20 30\r\ns OK SORT completed (by writ)\r\n"
    );
    assert!(!s.working());
}

/// An EXPUNGE while the result of a SORT by sequence number is ordered
/// (a provider that sends one with no command in flight) would leave
/// numbers naming other messages: the command is answered NO instead.
#[test]
fn an_expunge_while_a_sort_is_ordered_makes_it_no() {
    let (mut s, runner) = sort_judged(b"s SORT (SUBJECT) UTF-8 ALL\r\n", "writ.s4 FETCH 1:3 ");
    assert!(s.working());
    s.provider_input(b"* 2 EXPUNGE\r\n");
    s.advance();
    assert_eq!(runner.run_held(), 1);
    s.advance();
    let answer = text(s.take_to_client());
    assert!(
        answer.ends_with("s NO The mailbox changed while writ ordered the result: try again\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("* SORT"), "{answer}");
}

/// Whole messages (a BODY[] fetch) open off the session too, at most
/// `in_flight` at once: past it the session takes no more of the
/// provider's responses until some are done. Answers go in the
/// provider's order though the jobs end in the reverse one.
#[test]
fn whole_messages_open_off_the_session_in_bounded_numbers_and_in_order() {
    let (mut s, runner, stored) = held_session();
    let n = (opening::in_flight() * 2 + 1) as u32;
    let up = exchange(&mut s, b"f UID FETCH 1:* (BODY.PEEK[])\r\n");
    assert_eq!(
        up,
        "f UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    let bodies = probed_then_whole(&mut s, n, &stored);
    s.provider_input(&bodies);
    let mut answered: Vec<u32> = Vec::new();
    let mut rounds = 0;
    loop {
        s.advance();
        let down = text(s.take_to_client());
        answered.extend(
            down.lines()
                .filter(|l| l.starts_with("* ") && l.contains(" FETCH (UID "))
                .map(|l| l.split(' ').nth(1).unwrap().parse::<u32>().unwrap()),
        );
        if down.contains("f OK done") {
            break;
        }
        assert!(!s.wants_provider_input(), "reads on while its work is full");
        let ran = runner.run_held();
        assert!(
            ran >= 1 && ran <= opening::in_flight(),
            "{ran} jobs out at once"
        );
        rounds += 1;
        assert!(rounds <= n as usize, "the FETCH does not end");
    }
    assert_eq!(answered, (1..=n).collect::<Vec<u32>>());
    assert!(rounds >= 3, "all the work was out at once: {rounds} rounds");
}

/// UIDs of the FETCH answers in `down`, and the BODY[] literals in them.
fn answers(down: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = down;
    while let Some(at) = find(rest, b" FETCH (UID ") {
        let after = &rest[at + 12..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        let uid: u32 = text(after[..digits].to_vec()).parse().unwrap();
        let open = find(after, b"BODY[] {").unwrap() + 8;
        let close = open + find(&after[open..], b"}").unwrap();
        let len: usize = text(after[open..close].to_vec()).parse().unwrap();
        let body = after[close + 3..close + 3 + len].to_vec();
        out.push((uid, body));
        rest = &after[close + 3 + len..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Defect (issue 11): every response written to the client while a plan
/// ran was kept, whole, behind the plan with the client's commands until
/// the plan ended: a whole-folder BODY[] fetch held the whole folder.
/// Now a response written is dropped at once, and a client that does not
/// read holds at most [`CLIENT_OUTPUT_BYTES`] (and the one response that
/// crosses it) in the session, however many answers the provider sent.
#[test]
fn a_whole_folder_fetch_holds_a_bounded_output_whatever_the_folder() {
    let (ids, sealer) = keys();
    let mut plain = b"From: a@example.test\r\nSubject: large\r\n\r\n".to_vec();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n";
    plain.extend(line.repeat(64 * 1024 / line.len()));
    let mut stored = Vec::new();
    sealer.seal(&plain[..], &mut stored).expect("seal");
    let mut s = session_with(ids, sealer, Runner::inline());
    // 2.5 times the bound, at 64 KiB a message.
    let n = (CLIENT_OUTPUT_BYTES * 5 / 2 / (64 * 1024)) as u32;
    exchange(&mut s, b"f UID FETCH 1:* (BODY.PEEK[])\r\n");
    let bodies = probed_then_whole(&mut s, n, &stored);
    // Everything the provider has to say is read at once; the client
    // reads nothing yet.
    s.provider_input(&bodies);
    for _ in 0..3 {
        s.advance();
        assert!(s.output_full(), "the session did not stop for the client");
        assert!(!s.wants_provider_input());
    }
    let held = s.take_to_client();
    assert!(
        held.len() >= CLIENT_OUTPUT_BYTES && held.len() < CLIENT_OUTPUT_BYTES + 80 * 1024,
        "{} bytes held for a client that does not read",
        held.len()
    );
    let mut got = answers(&held);
    assert!(got.len() < n as usize, "every answer was composed at once");
    // Now a client that reads everything it is given: nothing written
    // stays in the session, and the client may send its next command.
    let mut rounds = 0;
    loop {
        s.advance();
        assert!(
            s.held.is_empty(),
            "{} events held behind the plan",
            s.held.len()
        );
        assert!(s.wants_client_input());
        let down = s.take_to_client();
        assert!(down.len() < CLIENT_OUTPUT_BYTES + 80 * 1024);
        got.extend(answers(&down));
        if find(&down, b"f OK done").is_some() {
            break;
        }
        rounds += 1;
        assert!(rounds <= n as usize, "the FETCH does not end");
    }
    assert_eq!(
        got.iter().map(|(u, _)| *u).collect::<Vec<u32>>(),
        (1..=n).collect::<Vec<u32>>()
    );
    assert!(got.iter().all(|(_, body)| *body == plain), "a body differs");
}

/// Answers the probe of `f UID FETCH 1:* (BODY.PEEK[])` with `n` copies of
/// `stored`, checks that the session then asks for the bodies, and returns
/// the provider's answer to that (each message whole, then OK).
fn probed_then_whole(s: &mut Session, n: u32, stored: &[u8]) -> Vec<u8> {
    s.provider_input(&marker_probe(n, stored, "f OK done\r\n"));
    s.advance();
    assert_eq!(
        text(s.take_to_provider()),
        format!("writ.1 UID FETCH 1:{n} (UID BODY.PEEK[])\r\n")
    );
    let mut bodies = Vec::new();
    for seq in 1..=n {
        bodies.extend(whole(seq, seq, stored));
    }
    bodies.extend_from_slice(b"writ.1 OK done\r\n");
    bodies
}
