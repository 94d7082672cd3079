//! The intake caps on byte streams, without a session.

use super::*;

fn bytes(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Bytes(b) => Some(b.clone()),
            Event::Refused { .. } | Event::Passthrough { .. } | Event::AppendPart { .. } => None,
        })
        .flatten()
        .collect()
}

fn refusals(events: &[Event]) -> Vec<(Option<String>, &'static str, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { tag, why, close } => Some((
                tag.as_ref()
                    .map(|t| String::from_utf8_lossy(t).into_owned()),
                *why,
                *close,
            )),
            Event::Bytes(_) | Event::Passthrough { .. } | Event::AppendPart { .. } => None,
        })
        .collect()
}

/// Feeds `input` in chunks of `n` octets.
fn feed(intake: &mut Intake, input: &[u8], n: usize) -> Vec<Event> {
    input.chunks(n).flat_map(|c| intake.push(c)).collect()
}

#[test]
fn ordinary_commands_and_literals_pass_unchanged_in_any_chunking() {
    let input = b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\nb APPEND INBOX {3}\r\nx\ny\r\nc NOOP\n";
    for n in [1, 2, 7, 64, 1000] {
        let mut i = Intake::new(1024);
        let events = feed(&mut i, input, n);
        assert_eq!(bytes(&events), input.to_vec(), "chunks of {n}");
        assert!(refusals(&events).is_empty());
    }
}

#[test]
fn a_long_first_line_gets_tagged_bad_and_the_stream_goes_on() {
    let mut line = b"t1 UID FETCH 1".to_vec();
    while line.len() <= MAX_COMMAND_TEXT {
        line.extend_from_slice(b":2");
    }
    line.extend_from_slice(b" (FLAGS)\r\nt2 NOOP\r\n");
    for n in [1000, 65536, line.len()] {
        let mut i = Intake::new(1024);
        let events = feed(&mut i, &line, n);
        assert_eq!(
            refusals(&events),
            vec![(Some("t1".into()), why::TEXT, false)],
            "chunks of {n}"
        );
        assert_eq!(bytes(&events), b"t2 NOOP\r\n".to_vec());
    }
}

#[test]
fn too_many_sequence_elements_are_refused_before_parsing() {
    let mut line = b"s UID STORE 1".to_vec();
    for k in 0..MAX_SEQUENCE_ELEMENTS {
        line.extend_from_slice(format!(",{}", k % 9 + 1).as_bytes());
    }
    line.extend_from_slice(b" +FLAGS (\\Seen)\r\nn NOOP\r\n");
    assert!(line.len() < MAX_COMMAND_TEXT);
    let mut i = Intake::new(1024);
    let events = feed(&mut i, &line, 4096);
    assert_eq!(
        refusals(&events),
        vec![(Some("s".into()), why::ELEMENTS, false)]
    );
    assert_eq!(bytes(&events), b"n NOOP\r\n".to_vec());
    // Commas in quoted strings are no sequence elements.
    let mut i = Intake::new(1024);
    let mut q = b"q SEARCH SUBJECT \"".to_vec();
    q.extend(std::iter::repeat_n(b',', MAX_SEQUENCE_ELEMENTS + 5));
    q.extend_from_slice(b"\"\r\n");
    let events = i.push(&q);
    assert!(refusals(&events).is_empty());
    assert_eq!(bytes(&events), q);
}

#[test]
fn literal_count_is_capped_and_closes_once_the_command_has_begun() {
    let mut input = b"m SEARCH".to_vec();
    for _ in 0..=MAX_LITERALS {
        input.extend_from_slice(b" TEXT {1+}\r\nx");
    }
    input.extend_from_slice(b"\r\n");
    let mut i = Intake::new(1024);
    let events = i.push(&input);
    assert_eq!(
        refusals(&events),
        vec![(Some("m".into()), why::LITERALS, true)]
    );
}

#[test]
fn literal_data_is_not_read_as_command_text() {
    // A literal full of commas and newlines, larger than the text cap.
    let data = vec![b','; MAX_COMMAND_TEXT + 10];
    let mut input = format!("a APPEND INBOX {{{}}}\r\n", data.len()).into_bytes();
    input.extend_from_slice(&data);
    input.extend_from_slice(b"\r\n");
    let mut i = Intake::new(1 << 20);
    i.logged_in();
    let events = feed(&mut i, &input, 999);
    assert!(refusals(&events).is_empty());
    assert_eq!(bytes(&events), input);
}

#[test]
fn oversized_literals() {
    // Synchronising: imap-next answers BAD; the next line is a new command.
    let mut i = Intake::new(10);
    let events = i.push(b"a APPEND INBOX {11}\r\nb NOOP\r\n");
    assert!(refusals(&events).is_empty());
    assert_eq!(
        bytes(&events),
        b"a APPEND INBOX {11}\r\nb NOOP\r\n".to_vec()
    );
    // Non-synchronising: its data cannot be told from commands.
    let mut i = Intake::new(10);
    let events = i.push(b"a APPEND INBOX {11+}\r\nb NOOP\r\n");
    assert_eq!(
        refusals(&events),
        vec![(Some("a".into()), why::NONSYNC, true)]
    );
    assert!(bytes(&events).is_empty());
}

#[test]
fn a_dropped_line_drops_its_non_synchronising_literal() {
    let mut line = b"t1 SEARCH SUBJECT ".to_vec();
    line.extend(std::iter::repeat_n(b'a', MAX_COMMAND_TEXT));
    line.extend_from_slice(b" BODY {9+}\r\nt9 LOGOUT\r\nt2 NOOP\r\n");
    let mut i = Intake::new(1024);
    let events = feed(&mut i, &line, 5000);
    assert_eq!(
        refusals(&events),
        vec![(Some("t1".into()), why::TEXT, false)]
    );
    assert_eq!(bytes(&events), b"t2 NOOP\r\n".to_vec());
}

#[test]
fn no_tag_means_untagged_bad() {
    let line = vec![b'x'; MAX_COMMAND_TEXT + 1];
    let mut i = Intake::new(1024);
    let events = i.push(&line);
    assert_eq!(refusals(&events), vec![(None, why::TEXT, false)]);
}

/// Through a whole session: what the provider is sent, what the client is
/// told.
mod session {
    use crate::envelope::Sealer;
    use crate::imap::session::{Context, Session, SharedKeys, Step};
    use std::sync::Arc;

    fn session() -> Session {
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
        let _ = s.take_to_client();
        s
    }

    fn exchange(s: &mut Session, client: &[u8]) -> (String, String) {
        s.client_input(client);
        s.advance();
        (
            String::from_utf8(s.take_to_provider()).unwrap(),
            String::from_utf8(s.take_to_client()).unwrap(),
        )
    }

    #[test]
    fn sequence_sets_reach_the_provider_as_the_client_wrote_them() {
        let mut s = session();
        for command in [
            "a UID STORE 4:4294967295 +FLAGS (\\Flagged)\r\n",
            "b UID COPY 4:4294967294 Trash\r\n",
            "c UID SEARCH UID 7:4294967295\r\n",
            "d UID EXPUNGE *\r\n",
            "e STORE 3,1,2,2:1 +FLAGS (\\Seen)\r\n",
            "h COPY * Trash\r\n",
            "f UID STORE 4294967295 +FLAGS (\\Seen)\r\n",
            "g SEARCH 1,*:3\r\n",
        ] {
            let (to_provider, to_client) = exchange(&mut s, command.as_bytes());
            assert_eq!(to_provider, command, "client got {to_client:?}");
            // Answer, so that no plan holds the next command.
            let tag = command.split(' ').next().unwrap();
            s.provider_input(format!("{tag} OK done\r\n").as_bytes());
            s.advance();
            let _ = s.take_to_client();
        }
    }

    #[test]
    fn a_huge_sequence_set_is_refused_cheaply_and_the_session_goes_on() {
        let mut s = session();
        let mut line = b"a UID FETCH 1".to_vec();
        for k in 0..200_000u32 {
            line.extend_from_slice(format!(",{}", 2 * k + 3).as_bytes());
        }
        line.extend_from_slice(b" (FLAGS)\r\nb NOOP\r\n");
        let started = std::time::Instant::now();
        let (to_provider, to_client) = exchange(&mut s, &line);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(to_provider, "b NOOP\r\n");
        assert_eq!(
            to_client,
            format!("a BAD {}\r\n", super::why::TEXT),
            "the cap is named"
        );
    }

    #[test]
    fn too_many_fetch_items_are_refused() {
        let mut s = session();
        let items = vec!["FLAGS"; super::MAX_FETCH_ITEMS + 1].join(" ");
        let (to_provider, to_client) =
            exchange(&mut s, format!("f FETCH 1 ({items})\r\n").as_bytes());
        assert_eq!(to_provider, "");
        assert_eq!(to_client, format!("f BAD {}\r\n", super::why::FETCH_ITEMS));
    }

    #[test]
    fn starttls_after_login_is_bad_and_no_longer_offered() {
        let mut s = session();
        let (to_provider, _) = exchange(&mut s, b"l LOGIN alice secret\r\n");
        assert_eq!(to_provider, "l LOGIN alice secret\r\n");
        s.provider_input(b"l OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
        s.advance();
        assert_eq!(
            String::from_utf8(s.take_to_client()).unwrap(),
            "l OK [CAPABILITY IMAP4REV1 IDLE COMPRESS=DEFLATE] Logged in\r\n",
            "STARTTLS is not offered after login"
        );
        assert!(s.authenticated());
        let (to_provider, to_client) = exchange(&mut s, b"t STARTTLS\r\n");
        assert_eq!(to_provider, "");
        assert!(to_client.starts_with("t BAD "), "{to_client}");
        assert_eq!(s.advance(), Step::Wait, "no TLS upgrade");
        let (to_provider, _) = exchange(&mut s, b"c CAPABILITY\r\n");
        assert_eq!(to_provider, "c CAPABILITY\r\n");
        s.provider_input(b"* CAPABILITY IMAP4rev1 IDLE STARTTLS\r\nc OK done\r\n");
        s.advance();
        assert_eq!(
            String::from_utf8(s.take_to_client()).unwrap(),
            "* CAPABILITY IMAP4REV1 IDLE COMPRESS=DEFLATE\r\nc OK done\r\n"
        );
    }

    #[test]
    fn capabilities_sent_during_login_are_post_login() {
        let mut s = session();
        exchange(&mut s, b"l LOGIN alice secret\r\n");
        s.provider_input(b"* CAPABILITY IMAP4rev1 IDLE\r\nl OK Logged in\r\n");
        s.advance();
        assert_eq!(
            String::from_utf8(s.take_to_client()).unwrap(),
            "* CAPABILITY IMAP4REV1 IDLE COMPRESS=DEFLATE\r\nl OK Logged in\r\n"
        );
    }

    #[test]
    fn deep_search_nesting_is_bad_without_recursion() {
        let mut s = session();
        let mut line = b"s SEARCH ".to_vec();
        line.extend(std::iter::repeat_n(b'(', 20_000));
        line.extend_from_slice(b"ALL");
        line.extend(std::iter::repeat_n(b')', 20_000));
        line.extend_from_slice(b"\r\nn SEARCH ");
        line.extend(std::iter::repeat_n(&b"NOT "[..], 10_000).flatten());
        line.extend_from_slice(b"ALL\r\n");
        let (to_provider, to_client) = exchange(&mut s, &line);
        assert_eq!(to_provider, "");
        assert!(to_client.starts_with("s BAD "), "{to_client}");
        assert!(to_client.contains("\r\nn BAD "), "{to_client}");
    }

    #[test]
    fn searches_with_too_many_keys_are_refused_naming_the_cap() {
        let mut s = session();
        let strings = vec!["BODY x"; super::MAX_SEARCH_STRING_KEYS + 1].join(" ");
        let keys = vec!["SEEN"; super::MAX_SEARCH_KEYS + 1].join(" ");
        let nested = format!("{}SEEN{}", "OR SEEN (".repeat(3), ")".repeat(3));
        let mut within = vec!["TEXT y"; super::MAX_SEARCH_STRING_KEYS].join(" ");
        within.push(' ');
        within.push_str(&nested);
        let (to_provider, to_client) = exchange(
            &mut s,
            format!("a SEARCH {strings}\r\nb UID SEARCH {keys}\r\n").as_bytes(),
        );
        assert_eq!(to_provider, "");
        assert_eq!(
            to_client,
            format!(
                "a BAD {}\r\nb BAD {}\r\n",
                super::why::SEARCH_STRING_KEYS,
                super::why::SEARCH_KEYS
            )
        );
        // Within the caps (nested keys counted), the SEARCH goes on.
        let (_, to_client) = exchange(&mut s, format!("c SEARCH {within}\r\n").as_bytes());
        assert!(!to_client.contains("BAD"), "{to_client}");
    }
}

#[test]
fn literals_before_login_are_capped() {
    let cap = MAX_PRELOGIN_LITERAL;
    // A password literal within the cap passes.
    let mut i = Intake::new(1 << 30);
    let head = format!("a LOGIN {{{cap}}}\r\n");
    let events = i.push(head.as_bytes());
    assert!(refusals(&events).is_empty());
    // Synchronising, over the cap in all: BAD, no continuation, next
    // command read.
    let mut i = Intake::new(1 << 30);
    let events = i.push(b"a LOGIN {40000}\r\n");
    assert!(refusals(&events).is_empty());
    let mut i = Intake::new(1 << 30);
    let line = format!("a LOGIN {{{}}}\r\nb NOOP\r\n", cap + 1);
    let events = i.push(line.as_bytes());
    assert_eq!(
        refusals(&events),
        vec![(Some("a".into()), why::PRELOGIN_LITERAL, false)]
    );
    assert_eq!(bytes(&events), b"b NOOP\r\n".to_vec());
    // Non-synchronising: BAD and close.
    let mut i = Intake::new(1 << 30);
    let line = format!("a LOGIN {{{}+}}\r\n", 40 << 20);
    let events = i.push(line.as_bytes());
    assert_eq!(
        refusals(&events),
        vec![(Some("a".into()), why::PRELOGIN_NONSYNC, true)]
    );
    // After login, `max_literal_size` is the limit.
    let mut i = Intake::new(1 << 30);
    i.logged_in();
    let line = format!("a APPEND INBOX {{{}+}}\r\n", 40 << 20);
    assert!(refusals(&i.push(line.as_bytes())).is_empty());
}

#[test]
fn return_options_are_taken_off_a_search_line_split_across_reads() {
    let mut intake = Intake::new(1024);
    let mut events = intake.push(b"a1 UID SEARCH RET");
    events.extend(intake.push(b"URN (MIN COUNT) {3}\r\n"));
    events.extend(intake.push(b"foo RETURN (MAX) x\r\n"));
    // Into the tag; only the first line of a command: literal data and
    // later lines pass as they are.
    assert_eq!(
        bytes(&events),
        b"a1!writ-return.nc UID SEARCH {3}\r\nfoo RETURN (MAX) x\r\n"
    );
    assert_eq!(intake.lines_rewritten(), 1);
    // A client's own tag holding the mark is refused, the session goes on.
    let events = intake.push(b"b!writ-return.s SEARCH ALL\r\nc NOOP\r\n");
    assert_eq!(
        refusals(&events),
        vec![(Some("b!writ-return.s".into()), why::RESERVED_TAG, false)]
    );
    assert_eq!(bytes(&events), b"c NOOP\r\n");
}

#[test]
fn an_extended_list_is_taken_off_and_a_noop_goes_on_in_its_place() {
    for n in [1, 3, 1000] {
        let mut intake = Intake::new(1024);
        let events = feed(
            &mut intake,
            b"a NOOP\r\nl1 LIST \"\" \"*\" RETURN (CHILDREN STATUS (MESSAGES))\nl2 LIST \"\" \"*\"\r\n",
            n,
        );
        let taken: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Passthrough { .. }))
            .collect();
        assert_eq!(
            taken,
            [&Event::Passthrough {
                tag: b"l1".to_vec(),
                line: b"l1 LIST \"\" \"*\" RETURN (CHILDREN STATUS (MESSAGES))\r\n".to_vec(),
            }]
        );
        assert_eq!(
            bytes(&events),
            b"a NOOP\r\nl1 NOOP\r\nl2 LIST \"\" \"*\"\r\n"
        );
    }
    // Refused: BAD with the tag, the session goes on with the next line.
    let mut intake = Intake::new(1024);
    let events = intake.push(b"s LIST \"\" * RETURN (STATUS (SIZE))\r\nb NOOP\r\n");
    assert_eq!(
        refusals(&events),
        [(
            Some("s".to_owned()),
            crate::imap::list_extended::why::SIZE,
            false
        )]
    );
    assert_eq!(bytes(&events), b"b NOOP\r\n");
    // With a literal: refused, and the literal (never continued) dropped.
    let events = intake.push(b"t LIST (SUBSCRIBED) {3+}\r\nabc\r\nc NOOP\r\n");
    assert_eq!(
        refusals(&events),
        [(
            Some("t".to_owned()),
            crate::imap::list_extended::why::LITERAL,
            false
        )]
    );
    assert_eq!(bytes(&events), b"c NOOP\r\n");
}

#[test]
fn a_dollar_is_written_as_a_set_and_a_clients_own_sentinel_refused() {
    let mut intake = Intake::new(1024);
    intake.logged_in();
    let events = intake.push(b"s1 UID SEARCH RETURN (SAVE) SUBJECT {2}\r\nab $\r\n");
    assert_eq!(
        bytes(&events),
        b"s1!writ-return.s UID SEARCH SUBJECT {2}\r\nab 4294967295:4294967295\r\n"
    );
    // A long tag (no tag the intake reads) is marked all the same.
    let long = format!("{} FETCH $ FLAGS\r\n", "t".repeat(80));
    let events = intake.push(long.as_bytes());
    assert!(bytes(&events).ends_with(b" FETCH 4294967295:4294967295 FLAGS\r\n"));
    // Too many, or the client's own 4294967295:4294967295 alone where a
    // `$` may stand:
    // refused as any cap, the session goes on.
    let many = format!("t2 SEARCH {}\r\nt3 NOOP\r\n", vec!["$"; 65].join(" "));
    let events = intake.push(many.as_bytes());
    assert_eq!(
        refusals(&events),
        vec![(
            Some("t2".into()),
            crate::imap::saved_result::why::MARKS,
            false
        )]
    );
    assert_eq!(bytes(&events), b"t3 NOOP\r\n");
    // The same behind RETURN options: refused under the client's tag.
    let many = format!("t6 SEARCH RETURN (ALL) {}\r\n", vec!["$"; 65].join(" "));
    let events = intake.push(many.as_bytes());
    assert_eq!(
        refusals(&events),
        vec![(
            Some("t6".into()),
            crate::imap::saved_result::why::MARKS,
            false
        )]
    );
    // A literal imap-next refuses itself goes on under the client's tag.
    let events = intake.push(b"t7 SEARCH RETURN (COUNT) SUBJECT {99999}\r\n");
    assert_eq!(bytes(&events), b"t7 SEARCH SUBJECT {99999}\r\n");
    for own in [
        &b"t4 UID FETCH 4294967295:4294967295 FLAGS\r\n"[..],
        b"t4 SEARCH OR (4294967295:4294967295) 1\r\n",
        b"t4 SEARCH SUBJECT 4294967295:4294967295\r\n",
    ] {
        let events = intake.push(own);
        assert_eq!(
            refusals(&events),
            vec![(
                Some("t4".into()),
                crate::imap::saved_result::why::RESERVED,
                false
            )]
        );
    }
    // Elsewhere, or not alone, it is the client's.
    for kept in [
        &b"t5 UID FETCH 1:4294967295 FLAGS\r\n"[..],
        b"t5 UID FETCH 4294967295 FLAGS\r\n",
        b"t5 SEARCH LARGER 4294967295\r\n",
        b"t5 SEARCH SUBJECT \"4294967295\"\r\n",
        b"t5 FETCH 1 BODY[]<0.4294967295>\r\n",
    ] {
        let events = intake.push(kept);
        assert_eq!(bytes(&events), kept);
    }
}
