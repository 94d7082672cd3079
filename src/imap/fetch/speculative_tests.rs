//! A listing by UID of a range above every UID the cache holds: the
//! summaries asked for with the probe (the speculative command).

use super::cache_tests::{
    Planned, answered, answered_once_then_finished, commands, empty_cache, part1_answer, plan_over,
    probe_listing, start_with,
};
use super::*;
use crate::imap::testing::*;

/// The summary items of a speculative command, part 1 up to its limit.
const SPECULATIVE: &str = "(UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1]<0.65536>)\r\n";

/// The provider's answer to the speculative command: part 1 from 0.
fn speculative_answer(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    let whole = part1_answer(seq, uid, stored);
    let at = whole
        .windows(9)
        .position(|w| w == b"BODY[1] {")
        .expect("part 1");
    [&whole[..at + 7], b"<0>", &whole[at + 7..]].concat()
}

/// A plan for `command_line` over a cache holding one entry, UID 1: the
/// keys, a sealed message to answer with, the plan.
fn plan_above_one(command_line: &str) -> Planned {
    plan_over(command_line, Some(1))
}

#[test]
fn new_mail_above_every_cached_uid_has_its_summaries_asked_for_with_the_probe() {
    let (ids, stored, mut plan, _dir) = plan_above_one("l UID FETCH 2:* (ENVELOPE)\r\n");
    let speculative = plan.take_speculative().expect("a speculative command");
    // Up to 4294967294: Dovecot reads 4294967295 as `*`, which would
    // bring in the last message even below the range.
    assert_eq!(
        wire(&speculative),
        format!("writ.1 UID FETCH 2:4294967294 {SPECULATIVE}")
    );
    assert!(plan.take_speculative().is_none(), "taken once");
    // The provider runs it beside the probe: message 5's summary comes
    // before the probe lists message 5 (dropped, then fetched as any
    // other); 200 is not the client's (the probe does not list it).
    let mut out = Vec::new();
    for uid in [5, 200] {
        let (seq, items) = fetch_response(&speculative_answer(uid, uid, &stored));
        let dropped = plan.on_fetch(seq, items, &ids).expect("ours");
        assert!(dropped.is_empty(), "{dropped:?}");
    }
    out.extend(probe_listing(&mut plan, 2..=101, &stored, &ids));
    assert!(commands(&out).is_empty(), "looked up or fetched: {out:?}");
    for uid in (2..=101).filter(|u| *u != 5) {
        let (seq, items) = fetch_response(&speculative_answer(uid, uid, &stored));
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    }
    let mut next = plan.on_status(status("l OK done\r\n")).expect("ours");
    while plan.has_more() {
        next.extend(plan.more());
    }
    // Another session's flag changes while the speculative command is
    // answered go to the client: for a message the probe did not list,
    // and for one still waiting for its summary.
    for uid in [200, 5] {
        let change = format!("* {uid} FETCH (UID {uid} FLAGS (\\Seen))\r\n");
        let (seq, items) = fetch_response(change.as_bytes());
        assert!(
            plan.on_fetch(seq, items, &ids).is_err(),
            "{uid}'s flag change held back"
        );
    }
    // Message 5 alone, whole, after its lookup.
    assert_eq!(
        commands(&next),
        ["writ.2 UID FETCH 5 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
    out.extend(next);
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert!(!out.iter().any(|o| matches!(o, Output::Finish(_))));
    let (seq, items) = fetch_response(&part1_answer(5, 5, &stored));
    out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    out.extend(plan.on_status(status("writ.2 OK done\r\n")).expect("ours"));
    answered_once_then_finished(&out, 2..=101);
}

#[test]
fn a_summary_left_out_or_cut_is_asked_for_whole_once_more() {
    let (ids, stored, mut plan, _dir) = plan_above_one("l UID FETCH 2:4 (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
    let mut out = probe_listing(&mut plan, 2..=4, &stored, &ids);
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    // Message 2 whole; 3 left out; 4's part 1 as long as the limit (cut,
    // perhaps): dropped.
    let (seq, items) = fetch_response(&speculative_answer(2, 2, &stored));
    out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    let mut cut = b"* 4 FETCH (UID 4 ".to_vec();
    cut.extend(literal_item("BODY[HEADER]", header_of(&stored)));
    cut.push(b' ');
    cut.extend(literal_item("BODY[1]<0>", &vec![b'a'; 65536]));
    cut.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&cut);
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert_eq!(
        commands(&out),
        ["writ.2 UID FETCH 3:4 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
    for uid in [3, 4] {
        let (seq, items) = fetch_response(&part1_answer(uid, uid, &stored));
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    }
    out.extend(plan.on_status(status("writ.2 OK done\r\n")).expect("ours"));
    let mut seqs = answered(&out);
    seqs.sort_unstable();
    assert_eq!(seqs, [2, 3, 4]);
    assert!(matches!(out.last(), Some(Output::Finish(_))), "{out:?}");
}

#[test]
fn only_a_range_above_the_highest_cached_uid_is_speculative() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = empty_cache(&ids);
    // A mailbox the cache has nothing of may be all plaintext: none.
    let mut plan = start_with(&cache, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_none());
    let summary = crate::envelope::read_summary(&stored[..], &ids).expect("summary");
    cache.cache.put(
        &cache.mailbox,
        MessageKey::new(10, header_of(&stored)),
        &summary,
        None,
    );
    for (command, speculative) in [
        ("l UID FETCH 5:* (ENVELOPE)", None),
        ("l UID FETCH 10 (ENVELOPE)", None),
        (
            "l UID FETCH 11:* (ENVELOPE)",
            Some("UID FETCH 11:4294967294 "),
        ),
        ("l UID FETCH 20:12 (ENVELOPE)", Some("UID FETCH 12:20 ")),
        ("l UID FETCH 11 (ENVELOPE)", Some("UID FETCH 11 ")),
        (
            "l UID FETCH 11:4294967295 (ENVELOPE)",
            Some("UID FETCH 11:4294967294 "),
        ),
        // Not one range, not by UID, a modifier: none (a FETCH with
        // nothing to open makes no plan at all).
        ("l UID FETCH 11,13 (ENVELOPE)", None),
        ("l UID FETCH * (ENVELOPE)", None),
        ("l FETCH 11:* (ENVELOPE)", None),
        ("l UID FETCH 11:* (BODY.PEEK[])", None),
        ("l UID FETCH 11:* (ENVELOPE) (CHANGEDSINCE 5)", None),
    ] {
        let mut plan = start_with(&cache, &format!("{command}\r\n"));
        let got = plan.take_speculative().map(|c| wire(&c));
        match speculative {
            None => assert!(got.is_none(), "{command}: {got:?}"),
            Some(want) => assert_eq!(
                got,
                Some(format!("writ.1 {want}{SPECULATIVE}").replace("  ", " ")),
                "{command}"
            ),
        }
    }
}

#[test]
fn a_listing_tells_the_cache_how_far_it_has_seen_the_mailbox() {
    // Plaintext messages make no entry: without this, every listing of
    // new mail would ask again for their part 1.
    let (ids, _stored, mut plan, _dir) = plan_above_one("l UID FETCH 2:* (FLAGS RFC822.SIZE)\r\n");
    assert!(plan.take_speculative().is_some());
    for uid in 2..=40 {
        let mut r = format!("* {uid} FETCH (UID {uid} FLAGS () RFC822.SIZE 99 ").into_bytes();
        r.extend(literal_item(MARKER, b"Content-Type: text/plain\r\n\r\n"));
        r.extend_from_slice(b")\r\n");
        let (seq, items) = fetch_response(&r);
        plan.on_fetch(seq, items, &ids).expect("ours");
    }
    let mut out = plan.on_status(status("l OK done\r\n")).expect("ours");
    // The speculative command brought nothing (all plaintext).
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert!(matches!(out.last(), Some(Output::Finish(_))), "{out:?}");
    let Some(cache) = plan.cache.as_ref() else {
        panic!("no cache")
    };
    assert_eq!(cache.cache.highest_uid(&cache.mailbox), Some(40));
    // So the next listing of new mail asks from 41 on only.
    let mut next = start_with(cache, "l UID FETCH 30:* (ENVELOPE)\r\n");
    assert!(next.take_speculative().is_none());
    let mut next = start_with(cache, "l UID FETCH 41:* (ENVELOPE)\r\n");
    assert!(next.take_speculative().is_some());
}

#[test]
fn answers_for_messages_never_listed_are_remembered_up_to_a_cap_and_still_all_answered() {
    // A hostile provider floods the speculative command with answers for
    // UIDs the probe does not list: what the plan keeps of them is
    // bounded; a message then not remembered is fetched by the retry.
    let (ids, stored, mut plan, _dir) = plan_above_one("l UID FETCH 2:* (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
    let flood = u32::try_from(MAX_UNSPECULATED).unwrap() + 1_000;
    let answer = speculative_answer(1, 2, &stored);
    let (_, template) = fetch_response(&answer);
    for uid in (1_000..1_000 + flood).chain([3]) {
        let mut items = template.clone().into_inner();
        items[0] = MessageDataItem::Uid(NonZeroU32::new(uid).unwrap());
        let items = Vec1::try_from(items).unwrap();
        let seq = NonZeroU32::new(1).unwrap();
        assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    }
    assert_eq!(plan.unspeculated.len(), MAX_UNSPECULATED);
    // Message 3's early answer was not remembered: still answered.
    let mut out = probe_listing(&mut plan, 2..=3, &stored, &ids);
    let (seq, items) = fetch_response(&speculative_answer(1, 2, &stored));
    out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert_eq!(
        commands(&out),
        ["writ.2 UID FETCH 3 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
    let (seq, items) = fetch_response(&part1_answer(2, 3, &stored));
    out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    out.extend(plan.on_status(status("writ.2 OK done\r\n")).expect("ours"));
    answered_once_then_finished(&out, 2..=3);
}

/// `cache` as a session holding `messages` (its last EXISTS) sees it.
fn holding(cache: &CacheRef, messages: Option<u32>) -> CacheRef {
    CacheRef {
        messages,
        ..cache.clone()
    }
}

#[test]
fn a_small_mailbox_the_cache_holds_nothing_of_has_its_first_listing_speculated_once() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = empty_cache(&ids);
    // The provider has not said how many (no EXISTS seen), or more than
    // the cap: nothing asked for ahead, and the first listing not spent.
    for messages in [None, Some(FIRST_LISTING_MAX_MESSAGES + 1)] {
        let mut plan = start_with(&holding(&cache, messages), "l UID FETCH 1:* (ENVELOPE)\r\n");
        assert!(plan.take_speculative().is_none(), "{messages:?}");
    }
    let small = holding(&cache, Some(FIRST_LISTING_MAX_MESSAGES));
    let mut plan = start_with(&small, "l UID FETCH 1:* (ENVELOPE)\r\n");
    let speculative = plan.take_speculative().expect("a first listing's");
    assert_eq!(
        wire(&speculative),
        "writ.1 UID FETCH 1:4294967294 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] \
         BODY.PEEK[1]<0.16384>)\r\n"
    );
    // Another session's listing of the same mailbox meanwhile, or this
    // one's next: the first listing is spent.
    let mut other = start_with(&small, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(other.take_speculative().is_none(), "spent");
    // The listing answers every message once, from the speculative
    // answers alone (no further command), and stores them.
    let mut out = probe_listing(&mut plan, 1..=20, &stored, &ids);
    for uid in 1..=20 {
        let (seq, items) = fetch_response(&speculative_answer(uid, uid, &stored));
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    }
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    while plan.has_more() {
        out.extend(plan.more());
    }
    assert!(commands(&out).is_empty(), "{:?}", commands(&out));
    answered_once_then_finished(&out, 1..=20);
    assert_eq!(small.cache.highest_uid(&small.mailbox), Some(20));
    // New mail is asked for ahead as before; the listing again is not.
    let mut again = start_with(&small, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(again.take_speculative().is_none());
    let mut new_mail = start_with(&small, "l UID FETCH 21:* (ENVELOPE)\r\n");
    assert!(new_mail.take_speculative().is_some());
}

#[test]
fn a_plaintext_folder_has_its_part_ones_asked_for_ahead_once_then_never() {
    // A folder the cache holds nothing of, all plaintext: its first
    // listing asks for part 1 of each (up to 16 KiB), and drops them;
    // listings after it ask for nothing ahead, and neither does a first
    // listing of the mailbox whose listing failed.
    let (ids, _sealer) = keys();
    let (cache, _dir) = empty_cache(&ids);
    let small = holding(&cache, Some(40));
    let mut plan = start_with(&small, "l UID FETCH 1:* (FLAGS RFC822.SIZE)\r\n");
    assert!(plan.take_speculative().is_some());
    let plain = b"Content-Type: text/plain\r\n\r\n";
    let mut out = Vec::new();
    for uid in 1..=40 {
        let mut r = format!("* {uid} FETCH (UID {uid} FLAGS () RFC822.SIZE 99 ").into_bytes();
        r.extend(literal_item(MARKER, plain));
        r.extend_from_slice(b")\r\n");
        let (seq, items) = fetch_response(&r);
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
        // Its speculative answer: the header and part 1, cut at 16 KiB.
        let mut r = format!("* {uid} FETCH (UID {uid} ").into_bytes();
        r.extend(literal_item("BODY[HEADER]", plain));
        r.push(b' ');
        r.extend(literal_item("BODY[1]<0>", &vec![b'p'; 16384]));
        r.extend_from_slice(b")\r\n");
        let (seq, items) = fetch_response(&r);
        assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    }
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert!(commands(&out).is_empty(), "{:?}", commands(&out));
    answered_once_then_finished(&out, 1..=40);
    // Nothing stored: the cache still knows nothing of it, and asks for
    // nothing ahead, neither the listing again nor its new mail.
    assert_eq!(small.cache.highest_uid(&small.mailbox), None);
    for listing in ["1:*", "41:*"] {
        let mut again = start_with(
            &small,
            &format!("l UID FETCH {listing} (FLAGS RFC822.SIZE)\r\n"),
        );
        assert!(again.take_speculative().is_none(), "{listing}");
    }
    // Another mailbox whose first listing fails: spent all the same.
    let other = CacheRef {
        mailbox: MailboxKey {
            mailbox: "Archive".into(),
            ..small.mailbox.clone()
        },
        ..small.clone()
    };
    let mut plan = start_with(&other, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
    let out = plan.on_status(status("l NO failed\r\n")).expect("ours");
    drop(out);
    let mut next = start_with(&other, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(next.take_speculative().is_none());
    // And one whose first listing finds nothing (an empty folder).
    let empty = CacheRef {
        mailbox: MailboxKey {
            mailbox: "Trash".into(),
            ..small.mailbox.clone()
        },
        ..small.clone()
    };
    let mut plan = start_with(&empty, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
    let mut out = plan.on_status(status("l OK done\r\n")).expect("ours");
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert!(matches!(out.last(), Some(Output::Finish(_))), "{out:?}");
    let mut next = start_with(&empty, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(next.take_speculative().is_none());
}

#[test]
fn a_first_listing_is_spent_only_by_a_plan_that_runs() {
    // A plan made and dropped (the session makes it again once a FETCH
    // before it is answered) asks for nothing and spends nothing.
    let (ids, _sealer) = keys();
    let (cache, _dir) = empty_cache(&ids);
    let small = holding(&cache, Some(10));
    drop(start_with(&small, "l UID FETCH 1:* (ENVELOPE)\r\n"));
    let mut plan = start_with(&small, "l UID FETCH 1:* (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
}

#[test]
fn a_first_listings_summary_longer_than_it_asked_for_is_fetched_whole() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = empty_cache(&ids);
    let mut plan = start_with(&holding(&cache, Some(3)), "l UID FETCH 1:3 (ENVELOPE)\r\n");
    assert!(plan.take_speculative().is_some());
    let mut out = probe_listing(&mut plan, 1..=3, &stored, &ids);
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    for uid in [1, 3] {
        let (seq, items) = fetch_response(&speculative_answer(uid, uid, &stored));
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    }
    // Message 2's part 1 as long as the first listing's limit: cut.
    let mut cut = b"* 2 FETCH (UID 2 ".to_vec();
    cut.extend(literal_item("BODY[HEADER]", header_of(&stored)));
    cut.push(b' ');
    cut.extend(literal_item("BODY[1]<0>", &vec![b'a'; 16384]));
    cut.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&cut);
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert_eq!(
        commands(&out),
        ["writ.2 UID FETCH 2 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
    let (seq, items) = fetch_response(&part1_answer(2, 2, &stored));
    out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    out.extend(plan.on_status(status("writ.2 OK done\r\n")).expect("ours"));
    answered_once_then_finished(&out, 1..=3);
}
