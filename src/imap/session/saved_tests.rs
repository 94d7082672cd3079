//! SEARCHRES in the session, without sockets: `$` saved and put in place
//! ([`crate::imap::saved_result`]), and searches that wait for the
//! commands before them ([`Plan::Quiet`]).

use super::*;

pub(super) fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// Logged in, INBOX selected.
fn selected() -> Session {
    let mut s = Session::over_tls(Runner::inline());
    exchange(&mut s, b"l LOGIN u p\r\n", b"l OK logged in\r\n");
    exchange(
        &mut s,
        b"s SELECT INBOX\r\n",
        b"* 9 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\ns OK [READ-WRITE] done\r\n",
    );
    s
}

/// The client's bytes in; what went to the provider.
pub(super) fn send(s: &mut Session, client: &[u8]) -> String {
    s.client_input(client);
    s.advance();
    text(s.take_to_provider())
}

/// The provider's bytes in; what went to the client.
pub(super) fn answer(s: &mut Session, provider: &[u8]) -> String {
    s.provider_input(provider);
    s.advance();
    text(s.take_to_client())
}

pub(super) fn exchange(s: &mut Session, client: &[u8], provider: &[u8]) -> String {
    send(s, client);
    answer(s, provider)
}

#[test]
fn a_saved_result_is_named_by_uid_and_by_number_and_emptied_by_select() {
    let mut s = selected();
    // SAVE alone: no untagged answer; the provider's search under writ's tag.
    let sent = send(&mut s, b"a UID SEARCH RETURN (SAVE) FLAGGED\r\n");
    assert_eq!(sent, "writ.s5 UID SEARCH FLAGGED\r\n");
    let out = answer(&mut s, b"* SEARCH 4 7 8\r\nwrit.s5 OK done\r\n");
    assert!(out.starts_with("a OK "), "{out}");
    // By UID: the UIDs in its place, pipelined commands in order.
    let sent = send(
        &mut s,
        b"b UID STORE $ +FLAGS (\\Seen)\r\nc SEARCH OR $ 1\r\nd FETCH $ (FLAGS)\r\n",
    );
    assert_eq!(
        sent, "b UID STORE 4,7:8 +FLAGS (\\Seen)\r\nc SEARCH OR UID 4,7:8 1\r\n",
        "the FETCH by number waits for both to be answered"
    );
    let out = answer(
        &mut s,
        b"* 2 FETCH (FLAGS (\\Seen) UID 4)\r\nb OK stored\r\n",
    );
    assert_eq!(out, "* 2 FETCH (FLAGS (\\Seen) UID 4)\r\nb OK stored\r\n");
    assert_eq!(text(s.take_to_provider()), "");
    let out = answer(&mut s, b"* SEARCH 1 2 5\r\nc OK done\r\n");
    assert_eq!(out, "* SEARCH 1 2 5\r\nc OK done\r\n");
    // By number: the numbers asked for first, then the command.
    assert_eq!(text(s.take_to_provider()), "writ.r1 SEARCH UID 4,7:8\r\n");
    let out = answer(&mut s, b"* SEARCH 2 4 5\r\nwrit.r1 OK done\r\n");
    assert_eq!(out, "", "writ's own search is not the client's");
    let sent = text(s.take_to_provider());
    assert!(sent.starts_with("d FETCH 2,4:5 "), "{sent}");
    // A SELECT empties it.
    let _ = answer(&mut s, b"d OK done\r\n");
    exchange(
        &mut s,
        b"e SELECT INBOX\r\n",
        b"* OK [UIDVALIDITY 7] v\r\ne OK done\r\n",
    );
    // An empty `$`: the provider's own (always empty: writ never saves
    // there) in its place, so that it answers as for an empty one.
    let sent = send(&mut s, b"f UID FETCH $ (FLAGS)\r\ng SEARCH $\r\n");
    assert_eq!(sent, "f UID FETCH $ FLAGS\r\ng SEARCH NOT ALL\r\n");
}

#[test]
fn a_saved_result_by_number_is_saved_as_uids() {
    let mut s = selected();
    let sent = send(&mut s, b"a SEARCH RETURN (SAVE MAX) SEEN\r\n");
    assert_eq!(sent, "writ.s5 SEARCH SEEN\r\n");
    let out = answer(&mut s, b"* SEARCH 2 3 6\r\nwrit.s5 OK done\r\n");
    assert_eq!(out, "");
    assert_eq!(text(s.take_to_provider()), "writ.s7 FETCH 6 UID\r\n");
    // Another session's flag change meanwhile passes on; only the answer
    // to writ's FETCH is taken.
    let out = answer(
        &mut s,
        b"* 6 FETCH (FLAGS (\\Seen) UID 30)\r\n* 6 FETCH (UID 30)\r\nwrit.s7 OK done\r\n",
    );
    assert_eq!(
        out,
        "* 6 FETCH (FLAGS (\\Seen) UID 30)\r\n* ESEARCH (TAG \"a\") MAX 6\r\na OK SEARCH completed (by writ)\r\n"
    );
    let sent = send(&mut s, b"b UID FETCH $ (FLAGS)\r\n");
    assert_eq!(sent, "b UID FETCH 30 FLAGS\r\n");
}

#[test]
fn a_failed_save_empties_the_saved_result() {
    let mut s = selected();
    send(&mut s, b"a UID SEARCH RETURN (SAVE) ALL\r\n");
    answer(&mut s, b"* SEARCH 1 2\r\nwrit.s5 OK done\r\n");
    send(&mut s, b"b UID SEARCH RETURN (SAVE) CHARSET X-NONE ALL\r\n");
    let out = answer(&mut s, b"writ.s5 NO [BADCHARSET] no\r\n");
    assert!(out.starts_with("b NO "), "{out}");
    assert_eq!(send(&mut s, b"c SEARCH $\r\n"), "c SEARCH NOT ALL\r\n");
}

#[test]
fn a_save_writ_refuses_bad_keeps_the_saved_result() {
    let mut s = selected();
    send(&mut s, b"a UID SEARCH RETURN (SAVE) ALL\r\n");
    answer(&mut s, b"* SEARCH 1 2\r\nwrit.s5 OK done\r\n");
    // More SORT keys than writ takes: BAD from writ, before any plan.
    s.client_input(b"b UID SORT RETURN (SAVE) (DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE) UTF-8 ALL\r\n");
    s.advance();
    let out = text(s.take_to_client());
    assert!(out.starts_with("b BAD "), "{out}");
    assert_eq!(
        send(&mut s, b"c UID SEARCH $\r\n"),
        "c UID SEARCH UID 1:2\r\n"
    );
}

#[test]
fn a_search_waits_for_a_search_before_it_to_be_answered() {
    let mut s = selected();
    // The first goes to the provider as it is; the ESEARCH's plan would
    // take its `* SEARCH` for its own if it started before the answer.
    let sent = send(
        &mut s,
        b"a SEARCH FLAGGED\r\nb SEARCH RETURN (COUNT) ALL\r\n",
    );
    assert_eq!(sent, "a SEARCH FLAGGED\r\n");
    let out = answer(&mut s, b"* SEARCH 3\r\na OK done\r\n");
    assert_eq!(out, "* SEARCH 3\r\na OK done\r\n");
    assert_eq!(text(s.take_to_provider()), "writ.s5 SEARCH ALL\r\n");
    let out = answer(&mut s, b"* SEARCH 1 2 3\r\nwrit.s5 OK done\r\n");
    assert!(
        out.starts_with("* ESEARCH (TAG \"b\") COUNT 3\r\nb OK "),
        "{out}"
    );
}

#[test]
fn hostile_dollars_and_tags_are_refused_and_the_session_goes_on() {
    let mut s = selected();
    let sent = send(
        &mut s,
        b"a SEARCH $ 4294967295:4294967295\r\nb SEARCH LARGER $\r\nc!writ-return.s SEARCH ALL\r\nd NOOP\r\n",
    );
    assert_eq!(sent, "d NOOP\r\n");
    let out = text(s.take_to_client());
    for tag in ["a", "b", "c!writ-return.s"] {
        assert!(out.contains(&format!("{tag} BAD ")), "{tag}: {out}");
    }
}

#[test]
fn many_pipelined_saves_and_tags_used_twice_keep_their_own_options() {
    let mut s = selected();
    // More commands with RETURN options in one read than any table by tag
    // would hold, one tag used twice: each keeps its own.
    let mut burst = String::new();
    for i in 0..20 {
        burst.push_str(&format!("t{i} UID SEARCH RETURN (COUNT) {}\r\n", i + 1));
    }
    burst.push_str("t0 UID SEARCH 99\r\nz UID SEARCH RETURN (SAVE) 98\r\n");
    s.client_input(burst.as_bytes());
    for i in 0..20 {
        s.advance();
        assert_eq!(
            text(s.take_to_provider()),
            format!("writ.s5 UID SEARCH {}\r\n", i + 1)
        );
        let out = answer(
            &mut s,
            format!("* SEARCH {}\r\nwrit.s5 OK done\r\n", i + 1).as_bytes(),
        );
        assert!(
            out.starts_with(&format!("* ESEARCH (TAG \"t{i}\") UID COUNT 1\r\nt{i} OK ")),
            "{out}"
        );
    }
    assert_eq!(text(s.take_to_provider()), "t0 UID SEARCH 99\r\n");
    let out = answer(&mut s, b"* SEARCH 99\r\nt0 OK done\r\n");
    assert_eq!(out, "* SEARCH 99\r\nt0 OK done\r\n");
    assert_eq!(text(s.take_to_provider()), "writ.s5 UID SEARCH 98\r\n");
    let out = answer(&mut s, b"* SEARCH 98\r\nwrit.s5 OK done\r\n");
    assert!(out.starts_with("z OK "), "{out}");
    assert_eq!(
        send(&mut s, b"y UID FETCH $ (UID)\r\n").split(' ').nth(3),
        Some("98")
    );
}

#[test]
fn searches_the_provider_answers_itself_stay_pipelined() {
    let mut s = selected();
    let sent = send(&mut s, b"a SEARCH FLAGGED\r\nb UID SEARCH SEEN\r\n");
    assert_eq!(sent, "a SEARCH FLAGGED\r\nb UID SEARCH SEEN\r\n");
}

#[test]
fn a_fetch_the_provider_answers_passes_whole_and_a_plan_waits_behind_it() {
    let mut s = selected();
    // Only what the provider has: as the client wrote it, no probe.
    let sent = send(
        &mut s,
        b"a UID FETCH 1:* (FLAGS INTERNALDATE)\r\nb FETCH 1 (RFC822.SIZE)\r\n",
    );
    assert_eq!(sent, "a UID FETCH 1:* (FLAGS INTERNALDATE)\r\n");
    // Its answers pass whole while the FETCH plan behind it waits.
    let answers = "* 1 FETCH (UID 4 FLAGS (\\Seen) INTERNALDATE \"07-Dec-2026 10:00:00 +0000\")\r\n\
                   a OK Fetch completed\r\n";
    assert_eq!(answer(&mut s, answers.as_bytes()), answers);
    let probe = text(s.take_to_provider());
    assert!(
        probe.starts_with("b FETCH 1 (RFC822.SIZE UID FLAGS "),
        "{probe}"
    );
}

#[test]
fn a_selects_changed_messages_pass_filtered_while_a_search_waits() {
    let mut s = selected();
    let sent = send(&mut s, b"s SELECT INBOX\r\nb SEARCH TEXT x\r\n");
    assert_eq!(
        sent, "s SELECT INBOX\r\n",
        "the search waits for the SELECT"
    );
    let out = answer(
        &mut s,
        b"* 1 FETCH (UID 117 FLAGS () BODY[1] {6}\r\nsealed)\r\n\
          * OK [UIDVALIDITY 7] v\r\ns OK [READ-WRITE] done\r\n",
    );
    assert!(out.starts_with("* 1 FETCH (UID 117 FLAGS ())\r\n"), "{out}");
    assert!(!out.contains("sealed"), "{out}");
}
