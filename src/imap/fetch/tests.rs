//! The FETCH plan without sockets: which commands go to the provider for
//! which client request, and what comes back to the client.

use super::*;
use crate::imap::testing::*;

fn probe_answer(uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut r = format!("* 1 FETCH (UID {uid} FLAGS () ").into_bytes();
    r.extend(literal_item("BODY[HEADER]", header_of(stored)));
    r.extend_from_slice(b")\r\n");
    r
}

#[test]
fn listing_a_sealed_message_fetches_only_its_summary() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, probe) =
        FetchPlan::start(&command("a1 FETCH 1 (ENVELOPE RFC822.SIZE)\r\n"), None).expect("a FETCH");
    assert_eq!(
        wire(&probe),
        "a1 FETCH 1 (ENVELOPE RFC822.SIZE UID FLAGS BODY.PEEK[HEADER])\r\n"
    );
    let (seq, items) = fetch_response(&probe_answer(7, &stored));
    let out = plan.on_fetch(seq, items, &ids).expect("the probe's answer");
    assert!(out.is_empty(), "answered before opening: {out:?}");
    let out = plan
        .on_status(status("a1 OK done\r\n"))
        .expect("the probe's status");
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    // Part 1 only: the payload is not downloaded to list a message.
    assert_eq!(
        wire(next),
        "writ.1 UID FETCH 7 (UID BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"
    );
}

#[test]
fn a_body_section_of_a_sealed_message_is_answered_from_the_opened_message() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, probe) =
        FetchPlan::start(&command("b UID FETCH 7 (RFC822.SIZE BODY[TEXT])\r\n"), None)
            .expect("FETCH");
    assert_eq!(
        wire(&probe),
        "b UID FETCH 7 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])\r\n"
    );
    let (seq, items) = fetch_response(&probe_answer(7, &stored));
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let out = plan.on_status(status("b OK done\r\n")).expect("ours");
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(next), "writ.1 UID FETCH 7 (UID BODY.PEEK[])\r\n");
    let mut answer = b"* 1 FETCH (UID 7 ".to_vec();
    answer.extend(literal_item("BODY[]", &stored));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { items, .. })] = &out[..] else {
        panic!("{out:?}")
    };
    let items = items.as_ref();
    // \Seen first (a non-PEEK fetch set it), then the items in order.
    assert!(
        matches!(&items[0], MessageDataItem::Flags(f) if f.contains(&FlagFetch::Flag(Flag::Seen)))
    );
    assert_eq!(items[1], MessageDataItem::Uid(NonZeroU32::new(7).unwrap()));
    assert_eq!(items[2], MessageDataItem::Rfc822Size(M.len() as u32));
    let MessageDataItem::BodyExt { data, .. } = &items[3] else {
        panic!("{items:?}")
    };
    assert_eq!(
        data.0.as_ref().map(|d| d.as_ref()),
        Some(&b"body text\r\n"[..])
    );
    // writ stores \Seen itself (it fetched with PEEK), then finishes.
    let out = plan.on_status(status("writ.1 OK done\r\n")).expect("ours");
    let [Output::ToProvider(store)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(store), "writ.2 UID STORE 7 +FLAGS.SILENT (\\Seen)\r\n");
    let out = plan.on_status(status("writ.2 OK done\r\n")).expect("ours");
    assert!(matches!(&out[..], [Output::Finish(Status::Tagged(t))] if t.tag.as_ref() == "b"));
}

#[test]
fn plaintext_listing_is_answered_by_the_probe_alone() {
    let (ids, _) = keys();
    let (mut plan, _) =
        FetchPlan::start(&command("c FETCH 1 (RFC822.SIZE)\r\n"), None).expect("FETCH");
    let mut answer = b"* 1 FETCH (RFC822.SIZE 52 UID 3 FLAGS () ".to_vec();
    answer.extend(literal_item("BODY[HEADER]", header_of(M)));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { items, .. })] = &out[..] else {
        panic!("{out:?}")
    };
    // Only what the client asked for: no UID, FLAGS or header of the probe.
    assert_eq!(items.as_ref(), &[MessageDataItem::Rfc822Size(52)][..]);
    let out = plan.on_status(status("c OK done\r\n")).expect("ours");
    assert!(matches!(&out[..], [Output::Finish(_)]), "{out:?}");
}

#[test]
fn responses_that_are_not_the_plans_pass_through() {
    let (ids, _) = keys();
    let (mut plan, _) = FetchPlan::start(&command("d FETCH 1:* (FLAGS)\r\n"), None).expect("FETCH");
    // A flag change by another session, while the probe runs.
    let (seq, items) = fetch_response(b"* 4 FETCH (FLAGS (\\Deleted))\r\n");
    assert!(plan.on_fetch(seq, items, &ids).is_err());
    assert!(plan.on_status(status("other OK done\r\n")).is_err());
    assert!(plan.on_status(status("* OK still here\r\n")).is_err());
}

#[test]
fn a_failed_probe_ends_the_plan_with_the_providers_answer() {
    let (mut plan, _) = FetchPlan::start(&command("e FETCH 99 (BODY[])\r\n"), None).expect("FETCH");
    let out = plan
        .on_status(status(
            "e BAD Error in IMAP command FETCH: Invalid messageset\r\n",
        ))
        .expect("ours");
    assert!(
        matches!(&out[..], [Output::Finish(Status::Tagged(t))] if t.body.kind == StatusKind::Bad)
    );
}
