//! The proxy core without sockets: bytes in from a pretend client and a
//! pretend provider, bytes out checked.

use super::*;

fn ctx() -> Context {
    Context {
        client_tls: false,
        client_loopback: false,
        starttls_listener: true,
        allow_plaintext_auth: false,
        max_literal_size: 1024 * 1024,
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

fn no_keys() -> SharedKeys {
    Arc::new(Vec::<age::x25519::Identity>::new())
}

/// A session whose greeting has gone out.
fn session(ctx: Context) -> Session {
    let sealer = Sealer::new(
        "0123456789abcdef",
        vec![age::x25519::Identity::generate().to_public()],
    );
    let mut s = Session::new(ctx, no_keys(), sealer).with_inline_work();
    assert_eq!(s.advance(), Step::Wait);
    let greeting = text(s.take_to_client());
    assert!(greeting.starts_with("* OK "), "{greeting}");
    s
}

#[test]
fn commands_go_to_the_provider_with_the_clients_tag() {
    let mut s = session(ctx());
    s.client_input(b"a1 NOOP\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert_eq!(text(s.take_to_provider()), "a1 NOOP\r\n");
    s.provider_input(b"a1 OK NOOP completed\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert_eq!(text(s.take_to_client()), "a1 OK NOOP completed\r\n");
}

#[test]
fn capabilities_are_filtered_and_describe_writs_connection() {
    let mut s = session(ctx());
    s.client_input(b"c CAPABILITY\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "c CAPABILITY\r\n");
    s.provider_input(
        b"* CAPABILITY IMAP4rev1 BINARY THREAD=X-UNKNOWN IDLE AUTH=PLAIN STARTTLS\r\nc OK done\r\n",
    );
    s.advance();
    let out = text(s.take_to_client());
    assert_eq!(
        out,
        "* CAPABILITY IMAP4REV1 BINARY IDLE STARTTLS LOGINDISABLED\r\nc OK done\r\n"
    );
}

#[test]
fn plaintext_login_is_refused_off_loopback_without_tls() {
    let mut s = session(ctx());
    s.client_input(b"l LOGIN alice secret\r\n");
    s.advance();
    assert!(
        s.take_to_provider().is_empty(),
        "credentials must not travel"
    );
    let out = text(s.take_to_client());
    assert!(out.starts_with("l NO "), "{out}");
    s.client_input(b"m AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    s.advance();
    assert!(s.take_to_provider().is_empty());
    assert!(text(s.take_to_client()).starts_with("m NO "));
}

#[test]
fn plaintext_login_passes_on_loopback() {
    let mut s = session(Context {
        client_loopback: true,
        ..ctx()
    });
    s.client_input(b"l LOGIN alice secret\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "l LOGIN alice secret\r\n");
}

#[test]
fn starttls_discards_what_was_pipelined_behind_it() {
    let mut s = session(ctx());
    s.client_input(b"s STARTTLS\r\nx LOGIN evil evil\r\n");
    assert_eq!(s.advance(), Step::StartTls);
    assert!(text(s.take_to_client()).starts_with("s OK "));
    s.tls_started();
    assert_eq!(s.advance(), Step::Wait);
    assert!(s.take_to_provider().is_empty(), "the injected LOGIN ran");
    assert!(s.take_to_client().is_empty(), "a second greeting was sent");
    // After TLS, login is allowed and STARTTLS is no longer offered.
    s.client_input(b"c CAPABILITY\r\n");
    s.advance();
    s.provider_input(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nc OK done\r\n");
    s.advance();
    let _ = s.take_to_provider();
    assert_eq!(
        text(s.take_to_client()),
        "* CAPABILITY IMAP4REV1 AUTH=PLAIN\r\nc OK done\r\n"
    );
    s.client_input(b"s2 STARTTLS\r\n");
    assert_eq!(s.advance(), Step::Wait);
    assert!(text(s.take_to_client()).starts_with("s2 BAD "));
}

#[test]
fn malformed_commands_get_bad_and_the_session_goes_on() {
    let mut s = session(ctx());
    s.client_input(b"t1 FETCH 1:* (BODY[HEADER.FIELDS ()\r\n");
    s.advance();
    assert!(s.take_to_provider().is_empty());
    let out = text(s.take_to_client());
    assert!(out.starts_with("t1 BAD "), "{out}");
    s.client_input(b"\r\n)(\r\nt2 NOOP\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "t2 NOOP\r\n");
}

#[test]
fn authenticate_is_relayed_step_by_step() {
    let mut s = session(Context {
        client_tls: true,
        ..ctx()
    });
    s.client_input(b"a AUTHENTICATE PLAIN\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "a AUTHENTICATE PLAIN\r\n");
    s.provider_input(b"+ \r\n");
    s.advance();
    assert_eq!(text(s.take_to_client()), "+ \r\n");
    s.client_input(b"AGFsaWNlAHNlY3JldA==\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "AGFsaWNlAHNlY3JldA==\r\n");
    s.provider_input(b"a OK [CAPABILITY IMAP4rev1 BINARY MOVE] Logged in\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "a OK [CAPABILITY IMAP4REV1 BINARY MOVE COMPRESS=DEFLATE] Logged in\r\n"
    );
}

#[test]
fn idle_passes_through() {
    let mut s = session(Context {
        client_tls: true,
        ..ctx()
    });
    s.client_input(b"i IDLE\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "i IDLE\r\n");
    s.provider_input(b"+ idling\r\n* 3 EXISTS\r\n");
    s.advance();
    assert_eq!(text(s.take_to_client()), "+ idling\r\n* 3 EXISTS\r\n");
    s.client_input(b"DONE\r\n");
    s.advance();
    assert_eq!(text(s.take_to_provider()), "DONE\r\n");
    s.provider_input(b"i OK Idle completed\r\n");
    s.advance();
    assert_eq!(text(s.take_to_client()), "i OK Idle completed\r\n");
}

#[test]
fn provider_gone_means_bye() {
    let mut s = session(ctx());
    s.provider_closed();
    assert_eq!(s.advance(), Step::Close);
    assert!(text(s.take_to_client()).starts_with("* BYE "));
}

#[test]
fn logout_bye_from_provider_is_not_doubled() {
    let mut s = session(ctx());
    s.client_input(b"z LOGOUT\r\n");
    s.advance();
    s.provider_input(b"* BYE Logging out\r\nz OK Logout completed.\r\n");
    s.advance();
    s.provider_closed();
    assert_eq!(s.advance(), Step::Close);
    assert_eq!(
        text(s.take_to_client()),
        "* BYE Logging out\r\nz OK Logout completed.\r\n"
    );
}

#[test]
fn an_unparseable_provider_response_ends_the_session_visibly() {
    let mut s = session(ctx());
    s.client_input(b"a NOOP\r\n");
    s.advance();
    s.provider_input(b"\x00\x01 garbage\r\n");
    assert_eq!(s.advance(), Step::Close);
    assert!(text(s.take_to_client()).starts_with("* BYE "));
}

#[test]
fn append_is_sealed_before_the_provider_sees_it() {
    let mut s = session(Context {
        client_tls: true,
        ..ctx()
    });
    let m = b"From: a@example.test\r\nSubject: secret plans\r\n\r\nthe secret body\r\n";
    s.client_input(format!("a APPEND Drafts (\\Draft) {{{}}}\r\n", m.len()).as_bytes());
    s.advance();
    assert!(text(s.take_to_client()).starts_with('+'), "no continuation");
    s.client_input(m);
    s.client_input(b"\r\n");
    s.advance();
    let first = s.take_to_provider();
    let head = String::from_utf8_lossy(&first).into_owned();
    assert!(head.starts_with("a APPEND Drafts (\\Draft) {"), "{head}");
    assert!(
        !head.contains(&format!("{{{}}}", m.len())),
        "not resized: {head}"
    );
    s.provider_input(b"+ OK\r\n");
    s.advance();
    let literal = s.take_to_provider();
    let stored = String::from_utf8_lossy(&literal);
    assert!(
        stored.contains("X-Writ: v=1; key=0123456789abcdef"),
        "{stored}"
    );
    assert!(
        !stored.contains("secret"),
        "plaintext reached the provider: {stored}"
    );
    s.provider_input(b"a OK [APPENDUID 7 3] Append completed.\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "a OK [APPENDUID 7 3] Append completed.\r\n"
    );
}

#[test]
fn an_append_that_cannot_be_sealed_is_refused() {
    let mut s = Session::new(
        Context {
            client_tls: true,
            ..ctx()
        },
        no_keys(),
        // No recipients: sealing fails.
        Sealer::new("0123456789abcdef", Vec::new()),
    )
    .with_inline_work();
    s.advance();
    let _ = s.take_to_client();
    s.client_input(b"a APPEND INBOX {11+}\r\nSubject: x\r\n");
    s.advance();
    assert!(
        s.take_to_provider().is_empty(),
        "something reached the provider"
    );
    let out = text(s.take_to_client());
    assert!(out.starts_with("a NO "), "{out}");
}

fn loopback() -> Context {
    Context {
        client_loopback: true,
        ..ctx()
    }
}

/// Sends `input` from the client; returns (to provider, to client).
fn exchange(s: &mut Session, input: &[u8]) -> (String, String) {
    s.client_input(input);
    s.advance();
    (text(s.take_to_provider()), text(s.take_to_client()))
}

#[test]
fn a_tag_in_flight_is_refused_and_cannot_pass_for_a_login() {
    let mut s = session(loopback());
    let (up, down) = exchange(&mut s, b"x NOOP\r\nx LOGIN bob pw\r\nwrit.1 NOOP\r\n");
    assert_eq!(up, "x NOOP\r\n");
    assert_eq!(
        down,
        format!(
            "x BAD {}\r\nwrit.1 BAD {}\r\n",
            in_flight::TAG_IN_USE,
            in_flight::TAG_RESERVED
        )
    );
    s.provider_input(b"x OK NOOP completed\r\n");
    s.advance();
    assert_eq!(text(s.take_to_client()), "x OK NOOP completed\r\n");
    assert!(!s.authenticated(), "an OK to NOOP is not a login");
    // Answered: the tag may be used again.
    let (up, _) = exchange(&mut s, b"x LOGIN alice pw\r\n");
    assert_eq!(up, "x LOGIN alice pw\r\n");
    // A second login while one is in flight, and after login: BAD.
    let (up, down) = exchange(&mut s, b"y LOGIN bob pw\r\n");
    assert_eq!(
        (up.as_str(), down.as_str()),
        ("", "y BAD A login is already in progress\r\n")
    );
    s.provider_input(b"x OK Logged in\r\n");
    s.advance();
    assert!(s.authenticated());
    assert_eq!(s.account.as_deref(), Some("alice"));
    let _ = s.take_to_client();
    let (up, down) = exchange(&mut s, b"z LOGIN bob pw\r\nq AUTHENTICATE PLAIN\r\n");
    assert_eq!(up, "");
    assert_eq!(
        down,
        "z BAD Already logged in\r\nq BAD Already logged in\r\n"
    );
    assert_eq!(s.account.as_deref(), Some("alice"));
}

#[test]
fn enable_passes_only_what_writ_offers() {
    let mut s = session(loopback());
    let (_, down) = exchange(&mut s, b"e ENABLE X-OTHER\r\n");
    assert_eq!(down, "e BAD ENABLE only after login\r\n");
    exchange(&mut s, b"l LOGIN alice pw\r\n");
    s.provider_input(b"l OK Logged in\r\n");
    s.advance();
    let _ = s.take_to_client();
    let (up, down) = exchange(&mut s, b"e ENABLE X-OTHER UTF8=ACCEPT\r\n");
    assert_eq!(up, "");
    assert_eq!(down, "* ENABLED\r\ne OK Enabled\r\n");
    let (up, _) = exchange(&mut s, b"f ENABLE qresync X-OTHER CONDSTORE\r\n");
    assert_eq!(up, "f ENABLE qresync CONDSTORE\r\n");
}

/// A logged-in session with the keys that open [`crate::imap::testing::sealed`].
fn logged_in_with_keys() -> (Session, Vec<u8>) {
    use crate::imap::testing::{keys, sealed};
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let mut s = Session::new(loopback(), Arc::new(ids), sealer).with_inline_work();
    s.advance();
    let _ = s.take_to_client();
    let _ = exchange(&mut s, b"x LOGIN alice pw\r\n");
    s.provider_input(b"x OK Logged in\r\n");
    s.advance();
    let _ = s.take_to_client();
    (s, stored)
}

/// The probe's answer for a sealed message.
fn probed(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    use crate::imap::testing::{MARKER, literal_item, marker_of};
    let mut r = format!("* {seq} FETCH (UID {uid} FLAGS () ").into_bytes();
    r.extend(literal_item(MARKER, &marker_of(stored)));
    r.extend_from_slice(b")\r\n");
    r
}

/// The sequence numbers of the FETCH responses in `down` that carry a
/// body, with their UIDs.
fn answered(down: &str) -> Vec<(u32, u32)> {
    down.lines()
        .filter(|l| l.contains(" FETCH (UID ") && l.contains("BODY[]"))
        .map(|l| {
            let w: Vec<&str> = l.split([' ', '(']).filter(|w| !w.is_empty()).collect();
            (w[1].parse().unwrap(), w[4].parse().unwrap())
        })
        .collect()
}

/// Defect (before QRESYNC was offered): a `* VANISHED` during a UID FETCH
/// went to the client while writ's pending answers kept their numbers,
/// so a body went out under a number that names another message.
#[test]
fn a_vanished_during_a_uid_fetch_renumbers_what_is_still_to_be_answered() {
    use crate::imap::testing::literal_item;
    let (mut s, stored) = logged_in_with_keys();
    let (up, _) = exchange(&mut s, b"e ENABLE QRESYNC\r\n");
    assert_eq!(up, "e ENABLE QRESYNC\r\n");
    s.provider_input(b"* ENABLED QRESYNC\r\ne OK Enabled\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* ENABLED QRESYNC\r\ne OK Enabled\r\n"
    );
    let (up, _) = exchange(&mut s, b"f UID FETCH 1:* (BODY.PEEK[])\r\n");
    assert_eq!(
        up,
        "f UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    // Messages 1..=6 with UIDs 10..=60; another session expunges UIDs 10
    // and 30, reported at the probe's end.
    let mut probe = Vec::new();
    for seq in 1..=6 {
        probe.extend(probed(seq, seq * 10, &stored));
    }
    probe.extend_from_slice(b"* VANISHED 10,30\r\nf OK done\r\n");
    s.provider_input(&probe);
    s.advance();
    assert_eq!(
        text(s.take_to_provider()),
        "writ.1 UID FETCH 20,40,50,60 (UID BODY.PEEK[])\r\n"
    );
    assert_eq!(text(s.take_to_client()), "* VANISHED 10,30\r\n");
    // UID 50 goes while writ's own command runs: 60 is now message 3.
    let whole = |seq: u32, uid: u32| {
        let mut r = format!("* {seq} FETCH (UID {uid} ").into_bytes();
        r.extend(literal_item("BODY[]", &stored));
        r.extend_from_slice(b")\r\n");
        r
    };
    let mut rest = whole(1, 20);
    rest.extend(whole(2, 40));
    rest.extend_from_slice(b"* VANISHED 50\r\n");
    rest.extend(whole(3, 60));
    rest.extend_from_slice(b"writ.1 OK done\r\n");
    s.provider_input(&rest);
    s.advance();
    let down = text(s.take_to_client());
    assert_eq!(answered(&down), [(1, 20), (2, 40), (3, 60)], "{down}");
    assert!(down.contains("* VANISHED 50\r\n"), "{down}");
    // UIDs 10, 30 and 50 went before their bodies were read: the
    // provider's own FETCH would have met their missing files.
    assert!(
        down.ends_with("f OK [EXPUNGEISSUED] Some messages were already expunged.\r\n"),
        "{down}"
    );
    assert!(!down.contains("X-Writ"), "sealed bytes went out: {down}");
}

/// What a QRESYNC SELECT and a UID FETCH with VANISHED bring back carries
/// no message content: it reaches the client as the provider sent it.
#[test]
fn a_qresync_select_and_its_resync_responses_pass_as_sent() {
    let (mut s, _) = logged_in_with_keys();
    let select = "s SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 \
                  (1:10 41:50)))\r\n";
    let (up, _) = exchange(&mut s, select.as_bytes());
    assert_eq!(up, select);
    let answer = "* OK [CLOSED] Previous mailbox closed.\r\n\
                  * 3 EXISTS\r\n\
                  * OK [UIDVALIDITY 67890007] UIDs valid\r\n\
                  * OK [HIGHESTMODSEQ 20050715194045010] Highest\r\n\
                  * VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n\
                  * 1 FETCH (UID 117 FLAGS (\\Seen \\Answered) MODSEQ (20050715194045001))\r\n\
                  s OK [READ-WRITE] Select completed\r\n";
    s.provider_input(answer.as_bytes());
    s.advance();
    assert_eq!(text(s.take_to_client()), answer);
    // Whatever else a provider would put in such a FETCH stays back.
    let (up, _) = exchange(&mut s, b"t EXAMINE INBOX (QRESYNC (67890007 1))\r\n");
    assert_eq!(up, "t EXAMINE INBOX (QRESYNC (67890007 1))\r\n");
    s.provider_input(
        b"* 1 FETCH (UID 117 FLAGS () MODSEQ (3) BODY[1] {6}\r\nsealed)\r\n\
          t OK [READ-ONLY] Examine completed\r\n",
    );
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* 1 FETCH (UID 117 FLAGS () MODSEQ (3))\r\nt OK [READ-ONLY] Examine completed\r\n"
    );
    // A flag resync names only what the provider has: it goes as the
    // client wrote it, modifiers and all, and is answered as the provider
    // answers it.
    let fetch = "u UID FETCH 1:* (FLAGS) (CHANGEDSINCE 20050715194045000 VANISHED)\r\n";
    let (up, _) = exchange(&mut s, fetch.as_bytes());
    assert_eq!(
        up,
        "u UID FETCH 1:* FLAGS (CHANGEDSINCE 20050715194045000 VANISHED)\r\n"
    );
    let answer = "* VANISHED (EARLIER) 300:310,405,411\r\n\
                  * 1 FETCH (UID 117 FLAGS (\\Seen) MODSEQ (20050715194045011))\r\n\
                  u OK Fetch completed\r\n";
    s.provider_input(answer.as_bytes());
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* VANISHED (EARLIER) 300:310,405,411\r\n\
         * 1 FETCH (UID 117 FLAGS (\\Seen) MODSEQ (20050715194045011))\r\n\
         u OK Fetch completed\r\n"
    );
    let (up, _) = exchange(&mut s, b"x UID EXPUNGE 117\r\n");
    assert_eq!(up, "x UID EXPUNGE 117\r\n");
    s.provider_input(b"* VANISHED 117\r\nx OK Expunge completed\r\n");
    s.advance();
    assert_eq!(
        text(s.take_to_client()),
        "* VANISHED 117\r\nx OK Expunge completed\r\n"
    );
}

#[test]
fn a_written_fetch_response_keeps_its_place_among_the_typed_ones() {
    use crate::imap::testing::{MARKER, keys, literal_item, marker_of, part_one_answer, sealed};
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let mut s = Session::new(loopback(), Arc::new(ids), sealer).with_inline_work();
    s.advance();
    let _ = s.take_to_client();
    let _ = exchange(&mut s, b"x LOGIN alice pw\r\n");
    s.provider_input(b"x OK Logged in\r\n");
    s.advance();
    let _ = s.take_to_client();
    let (up, _) = exchange(&mut s, b"a FETCH 1 (BODYSTRUCTURE ENVELOPE UID)\r\n");
    assert_eq!(
        up,
        "a FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    // The probe's answer, news of another message, the end of the probe.
    let mut probe = b"* 1 FETCH (UID 7 FLAGS () ".to_vec();
    probe.extend(literal_item(MARKER, &marker_of(&stored)));
    probe.extend_from_slice(b")\r\n* 2 EXISTS\r\na OK done\r\n");
    s.provider_input(&probe);
    s.advance();
    assert_eq!(
        text(s.take_to_provider()),
        "writ.1 FETCH 1 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"
    );
    // The stored header and part 1 (the summary), as the provider serves
    // them.
    let mut part1 = part_one_answer(1, 7, &stored, true);
    part1.extend_from_slice(b"writ.1 OK done\r\n");
    s.provider_input(&part1);
    s.advance();
    let m = crate::envelope::scan::scan(crate::imap::testing::M, Default::default());
    let mut expected = b"* 2 EXISTS\r\n* 1 FETCH (UID 7 BODYSTRUCTURE ".to_vec();
    expected.extend(crate::envelope::view::body_structure_bytes(&m.root, true));
    expected.extend_from_slice(b" ENVELOPE ");
    expected.extend(crate::envelope::view::envelope_bytes(
        m.root.header.as_deref().unwrap(),
    ));
    expected.extend_from_slice(b")\r\na OK done\r\n");
    let got = s.take_to_client();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    // writ's own answer: the media types as M writes them.
    assert!(String::from_utf8_lossy(&got).contains("(\"text\" \"plain\" "));
}

#[test]
fn a_fetch_response_too_deep_to_parse_ends_the_fetch_no_and_the_session_goes_on() {
    let mut s = session(loopback());
    let _ = exchange(&mut s, b"x LOGIN alice pw\r\n");
    s.provider_input(b"x OK Logged in\r\n");
    s.advance();
    let _ = s.take_to_client();
    let (up, _) = exchange(&mut s, b"a FETCH 1:2 (BODYSTRUCTURE)\r\n");
    // The probe leaves BODYSTRUCTURE out: only plaintext messages need
    // the provider's, fetched after it.
    assert_eq!(
        up,
        "a FETCH 1:2 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    // Neither message has the marker fields: plaintext.
    let probe = "* 1 FETCH (UID 5 FLAGS () BODY[HEADER.FIELDS (X-WRIT CONTENT-TYPE)] {2}\r\n\r\n)\r\n\
         * 2 FETCH (UID 6 FLAGS () BODY[HEADER.FIELDS (X-WRIT CONTENT-TYPE)] {2}\r\n\r\n)\r\n\
         a OK Fetch completed.\r\n";
    s.provider_input(probe.as_bytes());
    assert_eq!(s.advance(), Step::Wait);
    assert_eq!(
        text(s.take_to_provider()),
        "writ.1 FETCH 1:2 (UID BODYSTRUCTURE)\r\n"
    );
    // Message 1: a plaintext message nested 20 deep, past what imap-codec
    // reads; message 2 a plain one.
    let leaf = "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1 NIL NIL NIL NIL)";
    let mut deep = leaf.to_string();
    for _ in 0..20 {
        deep = format!("({deep} \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)");
    }
    let answer = format!(
        "* 1 FETCH (UID 5 BODYSTRUCTURE {deep})\r\n\
         * 2 FETCH (UID 6 BODYSTRUCTURE {leaf})\r\n\
         writ.1 OK Fetch completed.\r\n"
    );
    s.provider_input(answer.as_bytes());
    assert_eq!(s.advance(), Step::Wait);
    let down = text(s.take_to_client());
    assert!(
        down.starts_with("* 2 FETCH (BODYSTRUCTURE (")
            && down
                .ends_with("a NO writ could not answer every item asked for; see writ's log\r\n"),
        "{down}"
    );
    // The session goes on.
    let (up, _) = exchange(&mut s, b"b NOOP\r\n");
    assert_eq!(up, "b NOOP\r\n");
}

/// A `* VANISHED` during a UID SEARCH writ answers renumbers the messages
/// still to be searched as an EXPUNGE of the same messages does: the
/// sequence set of the criteria then names what the client numbers so.
#[test]
fn a_vanished_during_a_uid_search_renumbers_as_an_expunge_does() {
    let run = |gone: &[u8]| {
        let (mut s, _) = logged_in_with_keys();
        let (up, _) = exchange(&mut s, b"s UID SEARCH 2:* BODY needle\r\n");
        let mut steps = vec![up];
        s.provider_input(b"* 3 FETCH (UID 30)\r\nwrit.s1 OK done\r\n");
        s.advance();
        steps.push(text(s.take_to_provider()));
        let header = "From: a@example.test\r\n\r\n";
        let mut probe = String::new();
        for (seq, uid) in [(1, 10), (2, 20), (3, 30)] {
            probe.push_str(&format!(
                "* {seq} FETCH (UID {uid} FLAGS () INTERNALDATE \"01-Jan-2026 00:00:00 +0000\" \
                 RFC822.SIZE 40 BODY[HEADER] {{{}}}\r\n{header})\r\n",
                header.len()
            ));
        }
        probe.push_str("writ.s2 OK done\r\n");
        s.provider_input(probe.as_bytes());
        s.advance();
        steps.push(text(s.take_to_provider()));
        let mut bodies = gone.to_vec();
        let whole = format!("{header}needle\r\n");
        for (seq, uid) in [(1, 20), (2, 30)] {
            bodies.extend_from_slice(
                format!(
                    "* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n{whole})\r\n",
                    whole.len()
                )
                .as_bytes(),
            );
        }
        bodies.extend_from_slice(b"writ.s3 OK done\r\n");
        s.provider_input(&bodies);
        s.advance();
        steps.push(text(s.take_to_client()));
        steps
    };
    let by_expunge = run(b"* 1 EXPUNGE\r\n");
    let by_vanished = run(b"* VANISHED 10\r\n");
    assert_eq!(by_expunge[..3], by_vanished[..3]);
    assert_eq!(
        by_vanished[3],
        "* VANISHED 10\r\n* SEARCH 30\r\ns OK SEARCH completed (by writ)\r\n"
    );
    assert_eq!(
        by_expunge[3],
        "* 1 EXPUNGE\r\n* SEARCH 30\r\ns OK SEARCH completed (by writ)\r\n"
    );
}
