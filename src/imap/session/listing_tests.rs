//! A listing's summaries asked for with its probe, as the session decides
//! it: the selected mailbox's EXISTS as the provider told it, and a
//! listing that waits behind another FETCH
//! ([`crate::imap::fetch::FetchPlan::take_speculative`]).

use super::saved_tests::{answer, exchange, send, text};
use super::*;
use crate::imap::cache::Cache;

/// Logged in, with a cache that holds nothing (and its directory).
fn logged_in() -> (Session, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = crate::imap::testing::keys();
    let cache = Cache::open(dir.path(), 1 << 20, &ids).unwrap();
    let mut s = Session::over_tls(Runner::inline()).with_cache(Some(Arc::new(cache)));
    exchange(&mut s, b"l LOGIN u p\r\n", b"l OK logged in\r\n");
    (s, dir)
}

/// SELECTs `mailbox`, the provider saying it holds `exists` messages.
fn select(s: &mut Session, mailbox: &str, exists: u32) {
    let out = exchange(
        s,
        format!("s SELECT {mailbox}\r\n").as_bytes(),
        format!("* {exists} EXISTS\r\n* OK [UIDVALIDITY 7] v\r\ns OK [READ-WRITE] done\r\n")
            .as_bytes(),
    );
    assert!(out.ends_with("s OK [READ-WRITE] done\r\n"), "{out}");
}

/// Sends a listing; `true` when its summaries went with the probe (part
/// 1 up to a first listing's 16 KiB). The provider then answers both
/// with nothing.
fn listed_ahead(s: &mut Session) -> bool {
    let sent = send(s, b"f UID FETCH 1:* (ENVELOPE)\r\n");
    let lines: Vec<&str> = sent.lines().collect();
    assert!(lines[0].starts_with("f UID FETCH 1:* "), "{sent}");
    let ahead = match lines[1..] {
        [] => false,
        [one] => {
            assert!(one.ends_with(" UID FETCH 1:4294967294 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1]<0.16384>)"), "{one}");
            true
        }
        _ => panic!("{sent}"),
    };
    let mut out = answer(s, b"f OK done\r\n");
    if ahead {
        let tag = lines[1].split(' ').next().unwrap_or_default();
        out += &answer(s, format!("{tag} OK done\r\n").as_bytes());
    }
    assert!(out.ends_with("f OK done\r\n"), "{out}");
    ahead
}

#[test]
fn a_first_listing_is_asked_ahead_by_the_selected_mailboxs_exists() {
    let (mut s, _dir) = logged_in();
    select(&mut s, "Big", 2001);
    assert!(!listed_ahead(&mut s), "over 2,000 messages");
    // An expunge brings it to 2,000: its first listing is asked ahead
    // (the one before was not, so it is not spent).
    let out = exchange(&mut s, b"n NOOP\r\n", b"* 7 EXPUNGE\r\nn OK done\r\n");
    assert_eq!(out, "* 7 EXPUNGE\r\nn OK done\r\n");
    assert!(listed_ahead(&mut s));
    assert!(!listed_ahead(&mut s), "once");
    // Another mailbox's count is not this one's: a SELECT of 3,000
    // after one of 5.
    select(&mut s, "Small", 5);
    select(&mut s, "Other", 3000);
    assert!(!listed_ahead(&mut s));
    // New mail told while selected counts too.
    let out = exchange(&mut s, b"n NOOP\r\n", b"* 3001 EXISTS\r\nn OK done\r\n");
    assert_eq!(out, "* 3001 EXISTS\r\nn OK done\r\n");
    assert!(!listed_ahead(&mut s));
    select(&mut s, "Small", 5);
    assert!(listed_ahead(&mut s));
}

#[test]
fn a_listing_behind_a_flag_sync_is_asked_ahead_once_it_runs() {
    let (mut s, _dir) = logged_in();
    select(&mut s, "INBOX", 5);
    // A flag sync and a listing in one write: the listing waits until
    // the flag sync is answered, then goes with its summaries.
    let sent = send(
        &mut s,
        b"a UID FETCH 1:* (UID FLAGS)\r\nf UID FETCH 1:* (ENVELOPE)\r\n",
    );
    assert_eq!(sent, "a UID FETCH 1:* (UID FLAGS)\r\n");
    let out = answer(&mut s, b"a OK done\r\n");
    assert_eq!(out, "a OK done\r\n");
    let sent = text(s.take_to_provider());
    let lines: Vec<&str> = sent.lines().collect();
    assert_eq!(lines.len(), 2, "{sent}");
    assert!(lines[0].starts_with("f UID FETCH 1:* "), "{sent}");
    assert!(lines[1].ends_with("BODY.PEEK[1]<0.16384>)"), "{sent}");
}
