//! The SEARCH plan's steps, fed the provider's answers by hand.

use super::*;
use crate::imap::testing::*;
use imap_next::imap_types::response::Data;

/// `* 1 FETCH (...)` answering the probe for one stored message.
fn probe(uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "* 1 FETCH (UID {uid} FLAGS (\\Seen) INTERNALDATE \"01-Jan-2026 00:00:00 +0000\" \
         RFC822.SIZE {} ",
        stored.len()
    )
    .into_bytes();
    r.extend(literal_item("BODY[HEADER]", header_of(stored)));
    r.extend_from_slice(b")\r\n");
    r
}

/// Part 1 and its MIME header, cut from the stored message by its own
/// MIME structure (as the provider would serve BODY[1], BODY[1.MIME]).
fn part_one_answer(uid: u32, stored: &[u8]) -> Vec<u8> {
    crate::imap::testing::part_one_answer(1, uid, stored, false)
}

/// Runs a plan through COUNT and PROBE for one message; returns the
/// plan and what it sends next.
fn through_probe(
    search: &str,
    stored: &[u8],
    ids: &(dyn Keys + Send + Sync),
) -> (SearchPlan, Vec<Output>) {
    let (mut plan, count) = SearchPlan::start(&command(search), None, None)
        .expect("a content search")
        .expect("accepted");
    assert_eq!(wire(&count), "writ.s1 FETCH * UID\r\n");
    let (seq, items) = fetch_response(b"* 1 FETCH (UID 9)\r\n");
    plan.on_fetch(seq, items, ids).expect("ours");
    let out = plan.on_status(status("writ.s1 OK done\r\n")).expect("ours");
    assert_eq!(out.len(), 1);
    let (seq, items) = fetch_response(&probe(9, stored));
    plan.on_fetch(seq, items, ids).expect("ours");
    let out = plan.on_status(status("writ.s2 OK done\r\n")).expect("ours");
    (plan, out)
}

fn found(out: &[Output]) -> Vec<u32> {
    out.iter()
        .find_map(|o| match o {
            Output::ToClient(Data::Search(found, _)) => {
                Some(found.iter().map(|n| n.get()).collect())
            }
            _ => None,
        })
        .expect("a SEARCH answer")
}

#[test]
fn header_searches_of_sealed_mail_download_part_one_only() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, out) = through_probe("a UID SEARCH SUBJECT secret\r\n", &stored, &ids);
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        wire(next),
        "writ.s4 UID FETCH 9 (UID BODY.PEEK[1] BODY.PEEK[1.MIME])\r\n"
    );
    let (seq, items) = fetch_response(&part_one_answer(9, &stored));
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let out = plan.on_status(status("writ.s4 OK done\r\n")).expect("ours");
    assert_eq!(found(&out), [9]);
}

#[test]
fn body_searches_download_the_whole_message() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, out) = through_probe("a UID SEARCH BODY text\r\n", &stored, &ids);
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(next), "writ.s3 UID FETCH 9 (UID BODY.PEEK[])\r\n");
    let mut answer = b"* 1 FETCH (UID 9 ".to_vec();
    answer.extend(literal_item("BODY[]", &stored));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    plan.on_fetch(seq, items, &ids).expect("ours");
    let out = plan.on_status(status("writ.s3 OK done\r\n")).expect("ours");
    assert_eq!(found(&out), [9]);
}

#[test]
fn a_count_answer_with_flags_or_modseq_folded_in_still_counts() {
    // A provider may fold a flag change into its answer to `FETCH *
    // (UID)`, or add MODSEQ to every FETCH under CONDSTORE: the mailbox is
    // not empty for that, and the rest goes on to the client.
    let (ids, _) = keys();
    for answer in [
        &b"* 1 FETCH (UID 9 FLAGS (\\Seen))\r\n"[..],
        b"* 1 FETCH (UID 9 MODSEQ (12))\r\n",
    ] {
        let (mut plan, _) =
            SearchPlan::start(&command("a UID SEARCH SUBJECT secret\r\n"), None, None)
                .expect("a content search")
                .expect("accepted");
        let (seq, items) = fetch_response(answer);
        let passed = plan.on_fetch(seq, items, &ids).expect_err("passed on");
        assert_eq!(passed.as_ref().len(), 2);
        let out = plan.on_status(status("writ.s1 OK done\r\n")).expect("ours");
        let [Output::ToProvider(next)] = &out[..] else {
            panic!("the probe, not an empty answer: {out:?}")
        };
        assert!(
            wire(next).starts_with("writ.s2 FETCH 1:* "),
            "{}",
            wire(next)
        );
        let (seq, items) = fetch_response(&probe(9, M));
        plan.on_fetch(seq, items, &ids).expect("ours");
        let out = plan.on_status(status("writ.s2 OK done\r\n")).expect("ours");
        assert_eq!(found(&out), [9]);
    }
}

#[test]
fn header_searches_of_plaintext_are_answered_by_the_probe() {
    let (ids, _) = keys();
    let (_, out) = through_probe("a UID SEARCH SUBJECT secret\r\n", M, &ids);
    assert_eq!(found(&out), [9]);
    let (_, out) = through_probe("a UID SEARCH SUBJECT other\r\n", M, &ids);
    assert!(found(&out).is_empty());
}

#[test]
fn a_summary_that_does_not_open_falls_back_to_the_whole_message() {
    let (_, sealer) = keys();
    let (others, _) = keys();
    let stored = sealed(&sealer);
    let (mut plan, _) = through_probe("a UID SEARCH SUBJECT secret\r\n", &stored, &others);
    let (seq, items) = fetch_response(&part_one_answer(9, &stored));
    plan.on_fetch(seq, items, &others).expect("ours");
    let out = plan.on_status(status("writ.s4 OK done\r\n")).expect("ours");
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(next), "writ.s3 UID FETCH 9 (UID BODY.PEEK[])\r\n");
}

#[test]
fn a_provider_answering_more_than_it_could_is_answered_no() {
    // An ESEARCH without content keys: the provider's `* SEARCH` answers
    // it. A hostile provider sends more numbers than one answer could
    // hold: they are not kept, and the command ends NO.
    let returns = Some(ReturnOptions {
        count: true,
        ..ReturnOptions::default()
    });
    let (mut plan, first) = SearchPlan::start(&command("e SEARCH FLAGGED\r\n"), None, returns)
        .expect("a plan")
        .expect("started");
    assert_eq!(first.tag.inner(), PROVIDER_TAG);
    let many: Vec<NonZeroU32> = (1..=u32::try_from(MAX_SEARCH_RESULTS).unwrap())
        .map(|n| NonZeroU32::new(n).unwrap())
        .collect();
    plan.on_search(many, None).expect("ours");
    plan.on_search(vec![NonZeroU32::MIN], None).expect("ours");
    assert_eq!(
        plan.found.len(),
        MAX_SEARCH_RESULTS,
        "the excess is not kept"
    );
    let out = plan.on_status(status("writ.s5 OK done\r\n")).expect("ours");
    match out.as_slice() {
        [Output::Finish(Status::Tagged(t))] => {
            assert_eq!((t.tag.inner(), t.body.kind), ("e", StatusKind::No));
        }
        _ => panic!("{out:?}"),
    }
}

#[test]
fn a_probe_answer_with_megabytes_of_flags_ends_the_search_no() {
    // A provider answering the probe with FLAGS past what writ keeps for
    // a message: the search ends NO instead of holding them.
    let (ids, _) = keys();
    let (mut plan, _) = SearchPlan::start(&command("a UID SEARCH BODY x\r\n"), None, None)
        .expect("a content search")
        .expect("accepted");
    let (seq, items) = fetch_response(b"* 1 FETCH (UID 9)\r\n");
    plan.on_fetch(seq, items, &ids).expect("ours");
    plan.on_status(status("writ.s1 OK done\r\n")).expect("ours");
    let keywords: Vec<String> = (0..3_000).map(|n| format!("keyword{n:020}")).collect();
    let mut answer = format!(
        "* 1 FETCH (UID 9 FLAGS ({}) INTERNALDATE \"01-Jan-2026 00:00:00 +0000\" RFC822.SIZE 5 ",
        keywords.join(" ")
    )
    .into_bytes();
    answer.extend(literal_item("BODY[HEADER]", header_of(M)));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let out = plan.on_status(status("writ.s2 OK done\r\n")).expect("ours");
    assert!(
        matches!(&out[..], [Output::Finish(Status::Tagged(t))] if t.body.kind == StatusKind::No),
        "{out:?}"
    );
}

#[test]
fn a_judged_message_gives_its_weight_back() {
    // The budget counts messages waiting to be judged, not every message
    // the search has seen: a folder larger than it is searched whole.
    let (ids, _) = keys();
    let (mut plan, _) = SearchPlan::start(&command("a UID SEARCH SUBJECT x\r\n"), None, None)
        .expect("a content search")
        .expect("accepted");
    let (seq, items) = fetch_response(b"* 1 FETCH (UID 9)\r\n");
    plan.on_fetch(seq, items, &ids).expect("ours");
    plan.on_status(status("writ.s1 OK done\r\n")).expect("ours");
    let (seq, items) = fetch_response(&probe(9, M));
    plan.on_fetch(seq, items, &ids).expect("ours");
    assert!(plan.pending.is_empty(), "judged from its header");
    assert_eq!(plan.pending_bytes, 0);
}
