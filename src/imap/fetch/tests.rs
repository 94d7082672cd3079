//! The FETCH plan without sockets: which commands go to the provider for
//! which client request, and what comes back to the client.

use super::*;
use crate::envelope::Summary;
use crate::imap::cache::Known;
use crate::imap::testing::*;

/// The probe's answer for message 1: its marker fields (what every
/// probe asks for, a body section wanted or not).
fn probe_answer(uid: u32, stored: &[u8]) -> Vec<u8> {
    probe_at(1, uid, stored)
}

#[test]
fn listing_a_sealed_message_fetches_only_its_summary() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, probe) =
        FetchPlan::start(&command("a1 FETCH 1 (ENVELOPE RFC822.SIZE)\r\n"), None).expect("a FETCH");
    assert_eq!(
        wire(&probe),
        "a1 FETCH 1 (RFC822.SIZE UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
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
    // Part 1 only: the payload is not downloaded to list a message. By
    // sequence number, as the client's command: the provider holds back
    // EXPUNGE during it (RFC 3501 §7.4.1).
    assert_eq!(
        wire(next),
        "writ.1 FETCH 1 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"
    );
}

#[test]
fn a_flag_change_passed_on_during_a_listing_is_not_undone_by_the_answer() {
    // The probe saw FLAGS (); another session marks the message \Seen
    // (with its MODSEQ) before writ answers from the opened summary: the
    // client gets that change first, and the answer after it must not
    // take the flags back.
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, _) = FetchPlan::start(
        &command("a1 UID FETCH 1:* (UID FLAGS ENVELOPE) (CHANGEDSINCE 1)\r\n"),
        None,
    )
    .expect("a FETCH");
    let mut probe = b"* 1 FETCH (UID 7 FLAGS () MODSEQ (5) ".to_vec();
    probe.extend(literal_item(MARKER, &marker_of(&stored)));
    probe.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&probe);
    assert!(
        plan.on_fetch(seq, items, &ids)
            .expect("the probe's")
            .is_empty()
    );
    let (seq, items) = fetch_response(b"* 1 FETCH (UID 7 FLAGS (\\Seen) MODSEQ (9))\r\n");
    assert!(plan.on_fetch(seq, items, &ids).is_err(), "passed on");
    let out = plan.on_status(status("a1 OK done\r\n")).expect("ours");
    assert!(matches!(&out[..], [Output::ToProvider(_)]), "{out:?}");
    let (seq, items) = fetch_response(&part_one_answer(1, 7, &stored, true));
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClientRaw(raw)] = &out[..] else {
        panic!("{out:?}")
    };
    let raw = String::from_utf8_lossy(raw);
    assert!(
        raw.starts_with("* 1 FETCH (UID 7 FLAGS (\\Seen) MODSEQ (9) ENVELOPE "),
        "{raw}"
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
        "b UID FETCH 7 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
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
    // The items in order, and FLAGS with \Seen (a non-PEEK fetch set it)
    // just before the body sections, where Dovecot puts it.
    assert_eq!(items[0], MessageDataItem::Uid(NonZeroU32::new(7).unwrap()));
    assert_eq!(items[1], MessageDataItem::Rfc822Size(M.len() as u32));
    assert!(
        matches!(&items[2], MessageDataItem::Flags(f) if f.contains(&FlagFetch::Flag(Flag::Seen)))
    );
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
    answer.extend(literal_item(MARKER, &marker_of(M)));
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

/// A plan for `command_line` (with `cache`) whose probe (checked to be `probe_wire`) is
/// answered for one plaintext message (`answer_head`, then its marker
/// fields) and ends OK: the plan and the command it sends next.
fn plaintext_probed(
    command_line: &str,
    probe_wire: &str,
    answer_head: &str,
    cache: Option<CacheRef>,
) -> (FetchPlan, String) {
    let (ids, _) = keys();
    let (mut plan, probe) = FetchPlan::start(&command(command_line), cache).expect("FETCH");
    assert_eq!(wire(&probe), probe_wire);
    let mut answer = answer_head.as_bytes().to_vec();
    answer.extend(literal_item(MARKER, &marker_of(M)));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let tag = command_line.split(' ').next().unwrap_or_default();
    let out = plan
        .on_status(status(&format!("{tag} OK done\r\n")))
        .expect("ours");
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    (plan, wire(next))
}

#[test]
fn the_structure_of_a_plaintext_message_is_fetched_after_the_probe() {
    // The probe asks the provider for no ENVELOPE or BODYSTRUCTURE (for
    // sealed mail writ makes its own); a plaintext message gets the
    // provider's in the plain phase, with the probe's items, in the
    // client's order.
    let (ids, _) = keys();
    let (mut plan, next) = plaintext_probed(
        "c UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)\r\n",
        "c UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n",
        "* 1 FETCH (UID 3 FLAGS (\\Seen) RFC822.SIZE 52 ",
        None,
    );
    assert_eq!(next, "writ.1 UID FETCH 3 (UID ENVELOPE BODYSTRUCTURE)\r\n");
    // A flag change by another session is not the answer.
    let (seq, items) = fetch_response(b"* 1 FETCH (UID 3 FLAGS (\\Seen \\Flagged))\r\n");
    assert!(plan.on_fetch(seq, items, &ids).is_err());
    let (seq, items) = fetch_response(
        b"* 1 FETCH (UID 3 ENVELOPE (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL))\r\n",
    );
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { items, .. })] = &out[..] else {
        panic!("{out:?}")
    };
    let items = items.as_ref();
    assert_eq!(items.len(), 5, "{items:?}");
    assert!(matches!(items[0], MessageDataItem::Uid(_)));
    // The flag change went to the client first: the answer after it
    // carries it, not the probe's older FLAGS.
    let MessageDataItem::Flags(flags) = &items[1] else {
        panic!("{items:?}")
    };
    assert!(flags.contains(&FlagFetch::Flag(Flag::Flagged)), "{flags:?}");
    assert_eq!(items[2], MessageDataItem::Rfc822Size(52));
    assert!(matches!(items[3], MessageDataItem::Envelope(_)));
    assert!(matches!(items[4], MessageDataItem::BodyStructure(_)));
    let out = plan.on_status(status("writ.1 OK done\r\n")).expect("ours");
    assert!(matches!(&out[..], [Output::Finish(_)]), "{out:?}");
}

#[test]
fn responses_that_are_not_the_plans_pass_through() {
    let (ids, _) = keys();
    let (mut plan, _) =
        FetchPlan::start(&command("d FETCH 1:* (FLAGS RFC822.SIZE)\r\n"), None).expect("FETCH");
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

/// The answer for `uid` at `seq` to a `FETCH (UID BODY.PEEK[])`.
fn whole_answer(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut answer = format!("* {seq} FETCH (UID {uid} ").into_bytes();
    answer.extend(literal_item("BODY[]", stored));
    answer.extend_from_slice(b")\r\n");
    answer
}

/// The probe's answer for `uid` at `seq`: its marker fields.
pub(super) fn probe_at(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut r = format!("* {seq} FETCH (UID {uid} FLAGS () ").into_bytes();
    r.extend(literal_item(MARKER, &marker_of(stored)));
    r.extend_from_slice(b")\r\n");
    r
}

#[test]
fn an_expunge_during_a_uid_fetch_renumbers_what_is_still_to_be_answered() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, _) =
        FetchPlan::start(&command("f UID FETCH 1:* (BODY.PEEK[])\r\n"), None).expect("FETCH");
    for (seq, uid) in [(2, 20), (3, 30), (4, 40)] {
        let (seq, items) = fetch_response(&probe_at(seq, uid, &stored));
        assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    }
    let out = plan.on_status(status("f OK done\r\n")).expect("ours");
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        wire(next),
        "writ.1 UID FETCH 20,30,40 (UID BODY.PEEK[])\r\n"
    );
    // Message 3 (UID 30) goes; the client is told; 4 is now 3.
    plan.on_expunge(NonZeroU32::new(3).unwrap());
    let mut seqs = Vec::new();
    for uid in [20, 40] {
        let (seq, items) = fetch_response(&whole_answer(9, uid, &stored));
        for o in plan.on_fetch(seq, items, &ids).expect("ours") {
            if let Output::ToClient(Data::Fetch { seq, .. }) = o {
                seqs.push(seq.get());
            }
        }
    }
    assert_eq!(seqs, [2, 3]);
}

#[test]
fn a_message_expunged_elsewhere_is_answered_nil_without_its_sealed_items() {
    let (ids, _) = keys();
    let (mut plan, probe) = FetchPlan::start(
        &command("g FETCH 3 (UID BODYSTRUCTURE BODY[TEXT])\r\n"),
        None,
    )
    .expect("FETCH");
    // The marker fields, a body section asked for or not: the provider
    // answers NIL when it no longer has the message's file.
    assert_eq!(
        wire(&probe),
        "g FETCH 3 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    let (seq, items) = fetch_response(
        b"* 3 FETCH (UID 7 FLAGS (\\Deleted) BODY[HEADER.FIELDS (X-WRIT CONTENT-TYPE)] NIL)\r\n",
    );
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { seq, items })] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(seq.get(), 3);
    assert_eq!(items.as_ref().len(), 2, "{items:?}");
    assert_eq!(
        items.as_ref()[0],
        MessageDataItem::Uid(NonZeroU32::new(7).unwrap())
    );
    assert!(matches!(
        &items.as_ref()[1],
        MessageDataItem::BodyExt { section: Some(Section::Text(None)), data, .. } if data.0.is_none()
    ));
}

#[test]
fn a_fetch_by_sequence_number_marks_seen_by_sequence_number() {
    let (ids, _) = keys();
    let (mut plan, probe) = FetchPlan::start(
        &command("h FETCH 5 (BODY[HEADER.FIELDS (Subject)])\r\n"),
        None,
    )
    .expect("FETCH");
    // The probe reads the field with PEEK: writ reports and stores \Seen.
    assert_eq!(
        wire(&probe),
        "h FETCH 5 (BODY.PEEK[HEADER.FIELDS (Subject)] UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    let mut answer = b"* 5 FETCH (UID 50 FLAGS () ".to_vec();
    answer.extend(literal_item(
        "BODY[HEADER.FIELDS (SUBJECT)]",
        b"Subject: hi\r\n\r\n",
    ));
    answer.push(b' ');
    answer.extend(literal_item(MARKER, &marker_of(M)));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { items, .. })] = &out[..] else {
        panic!("{out:?}")
    };
    // The client's own header section and FLAGS only: not the marker fields.
    assert_eq!(items.as_ref().len(), 2, "{items:?}");
    assert!(
        matches!(&items.as_ref()[0], MessageDataItem::Flags(f) if f.contains(&FlagFetch::Flag(Flag::Seen))),
        "{items:?}"
    );
    assert!(matches!(
        &items.as_ref()[1],
        MessageDataItem::BodyExt { .. }
    ));
    let out = plan.on_status(status("h OK done\r\n")).expect("ours");
    let [Output::ToProvider(store)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(store), "writ.1 STORE 5 +FLAGS.SILENT (\\Seen)\r\n");
}

/// Keys without any identity: every epoch is unknown.
struct NoKeys;

impl Keys for NoKeys {
    fn identities(&self, _epoch: &str) -> Vec<&dyn age::Identity> {
        Vec::new()
    }
}

/// A listing of message 1 (UID 7, `stored`) through a plan with `cache`:
/// what the plan sends the provider after the probe.
fn list_once(cache: &CacheRef, stored: &[u8], keys: &(dyn Keys + Send + Sync)) -> Vec<Output> {
    list_items(cache, stored, keys, "RFC822.SIZE")
}

/// A listing of `items` of the sealed message `stored` (UID 7), the
/// provider's part 1 given when the plan asks for it: every output.
fn list_items(
    cache: &CacheRef,
    stored: &[u8],
    keys: &(dyn Keys + Send + Sync),
    items: &str,
) -> Vec<Output> {
    let (mut plan, _) = FetchPlan::start(
        &command(&format!("l FETCH 1 ({items})\r\n")),
        Some(cache.clone()),
    )
    .expect("FETCH");
    let mut r = b"* 1 FETCH (RFC822.SIZE 999 UID 7 FLAGS () ".to_vec();
    r.extend(literal_item(MARKER, &marker_of(stored)));
    r.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&r);
    let mut out = plan.on_fetch(seq, items, keys).expect("ours");
    let mut next = plan.on_status(status("l OK done\r\n")).expect("ours");
    while plan.has_more() {
        next.extend(plan.more());
    }
    if let [Output::ToProvider(_)] = &next[..] {
        // The summary: part 1 as the provider serves it.
        let (seq, items) = fetch_response(&part_one_answer(1, 7, stored, true));
        next.extend(plan.on_fetch(seq, items, keys).expect("ours"));
        next.extend(plan.poll());
    }
    out.extend(next);
    out
}

/// The bytes the client is sent for a listing's outputs.
fn to_client(out: &[Output]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for o in out {
        match o {
            Output::ToClientRaw(b) => bytes.extend_from_slice(b),
            Output::ToClient(d) => bytes.extend(format!("{d:?}").into_bytes()),
            _ => {}
        }
    }
    bytes
}

/// A cache of 1 MiB in a new directory (kept while the second value
/// lives), under `keys`, as INBOX of account "a", UIDVALIDITY 1.
fn temp_cache(keys: &(dyn Keys + Send + Sync)) -> (CacheRef, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheRef {
        cache: Arc::new(Cache::open(dir.path(), 1 << 20, keys).unwrap()),
        mailbox: MailboxKey {
            account: "a".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 1,
        },
        messages: None,
    };
    (cache, dir)
}

#[test]
fn a_cold_listing_keeps_the_items_it_made_and_the_next_one_answers_from_them() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = temp_cache(&ids);
    let key = MessageKey::new(7, header_of(&stored));
    let items = "RFC822.SIZE ENVELOPE BODYSTRUCTURE";
    let cold = list_items(&cache, &stored, &ids, items);
    let known = cache.cache.lookup(&cache.mailbox, &[key]).pop().flatten();
    let Some(Known::Summary(entry)) = known.as_deref() else {
        panic!("not cached: {known:?}");
    };
    for name in [
        MessageDataItemName::Rfc822Size,
        MessageDataItemName::Envelope,
        MessageDataItemName::BodyStructure,
    ] {
        assert!(entry.listing().made(&name), "{name:?} not kept");
    }
    assert!(!entry.listing().made(&MessageDataItemName::Body));
    let warm = list_items(&cache, &stored, &ids, items);
    assert!(
        warm.iter().all(|o| !matches!(o, Output::ToProvider(_))),
        "{warm:?}"
    );
    let (cold, warm) = (to_client(&cold), to_client(&warm));
    assert!(
        String::from_utf8_lossy(&cold).contains("BODYSTRUCTURE"),
        "{}",
        String::from_utf8_lossy(&cold)
    );
    assert_eq!(cold, warm);
}

#[test]
fn an_undecryptable_message_is_remembered_until_the_keys_offer_otherwise() {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = temp_cache(&NoKeys);
    // The cache knows the message by its UID and the header it is stored
    // with.
    let key = MessageKey::new(7, header_of(&stored));
    // No key for its epoch: the summary is fetched once, fails, and is
    // remembered.
    let out = list_once(&cache, &stored, &NoKeys);
    assert!(matches!(&out[..], [Output::ToProvider(_)]), "{out:?}");
    let why = cache
        .cache
        .undecryptable(&cache.mailbox, key)
        .expect("remembered");
    assert_eq!(why.reason, "unknown_epoch");
    // The next listing shows it as stored from the probe alone.
    let out = list_once(&cache, &stored, &NoKeys);
    assert!(
        matches!(&out[..], [Output::ToClient(Data::Fetch { items, .. }), Output::Finish(_)]
            if items.as_ref() == [MessageDataItem::Rfc822Size(999)]),
        "{out:?}"
    );
    // A keyring that now has a key for the epoch tries again, and opens it.
    let out = list_once(&cache, &stored, &ids);
    assert!(
        matches!(&out[..], [Output::ToProvider(_), Output::ToClient(Data::Fetch { items, .. })]
            if items.as_ref() == [MessageDataItem::Rfc822Size(52)]),
        "{out:?}"
    );
    assert!(cache.cache.undecryptable(&cache.mailbox, key).is_none());
    assert!(cache.cache.summary(&cache.mailbox, key).is_some());
    // Under another stored header (another user's message with the same
    // UID and UIDVALIDITY, say) the entry is not found.
    let other = MessageKey::new(7, b"X-Writ: v=1; key=0123456789abcdef\r\n\r\n");
    assert!(cache.cache.summary(&cache.mailbox, other).is_none());
}

/// A summary of `M` inside `depth` multiparts, one in the other.
fn nested(depth: usize) -> Summary {
    let mut summary = crate::envelope::scan::scan(M, Default::default());
    let leaf = summary.root.clone();
    let mut root = leaf.clone();
    for _ in 0..depth {
        let mut outer = leaf.clone();
        outer.media_type = "multipart".into();
        outer.subtype = "mixed".into();
        outer.content_type_present = true;
        outer.params = vec![("boundary".into(), "b".into())];
        outer.parts = vec![root];
        root = outer;
    }
    summary.root = root;
    summary
}

fn probed_with(items: &[u8]) -> Probed {
    let (_, items) = fetch_response(items);
    Probed {
        seq: NonZeroU32::MIN,
        items: items.into_iter().collect(),
        sealed: None,
        prefix: Vec::new(),
        seen: true,
        key: MessageKey::new(7, b""),
        offered: 0,
    }
}

#[test]
fn a_structure_nested_past_imap_codecs_limit_is_answered_whole() {
    // imap-codec reads back about 7 levels; writ writes the answer itself,
    // so the summary's own cap (MAX_DEPTH) is the only one.
    let (plan, _) = FetchPlan::start(
        &command("k FETCH 1 (UID BODYSTRUCTURE RFC822.SIZE FLAGS)\r\n"),
        None,
    )
    .expect("FETCH");
    let depth = crate::envelope::summary::MAX_DEPTH - 1;
    let summary = nested(depth);
    let probed = probed_with(
        b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1) RFC822.SIZE 9)\r\n",
    );
    let out = plan.compose(&probed, &summary, None);
    assert!(!plan.incomplete.get());
    let Some(Output::ToClientRaw(wire)) = fetch(NonZeroU32::MIN, out) else {
        panic!("not written whole")
    };
    // Dovecot's order: the short items first, as asked, then the others.
    let mut expected = format!(
        "* 1 FETCH (UID 7 RFC822.SIZE {} FLAGS (\\Seen) BODYSTRUCTURE ",
        M.len()
    )
    .into_bytes();
    expected.extend(crate::envelope::view::body_structure_bytes(
        &summary.root,
        true,
    ));
    expected.extend_from_slice(b")\r\n");
    assert_eq!(
        String::from_utf8_lossy(&wire),
        String::from_utf8_lossy(&expected)
    );
    let opened = wire.iter().filter(|&&b| b == b'(').count();
    assert!(opened > depth, "{opened} parentheses for {depth} levels");
}

#[test]
fn an_item_writ_cannot_write_falls_back_to_the_stored_messages_own() {
    let (plan, _) =
        FetchPlan::start(&command("k FETCH 1 (ENVELOPE RFC822.SIZE)\r\n"), None).expect("FETCH");
    // A summary without the header cannot give an ENVELOPE by itself.
    let mut summary = crate::envelope::scan::scan(M, Default::default());
    summary.root.header = None;
    assert!(
        answer::answer(&MessageDataItemName::Envelope, &summary, None).is_none(),
        "the test needs an answer that fails"
    );
    let probed = probed_with(
        b"* 1 FETCH (UID 7 FLAGS () ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) RFC822.SIZE 9)\r\n",
    );
    let out = plan.compose(&probed, &summary, None);
    assert!(
        matches!(out[0], Item::Typed(MessageDataItem::Envelope(_))),
        "{out:?}"
    );
    assert_eq!(
        out[1],
        Item::Typed(MessageDataItem::Rfc822Size(M.len() as u32))
    );
    assert!(!plan.incomplete.get());
    // Nothing to fall back on: the FETCH ends NO, not OK.
    let bare = Probed {
        items: vec![MessageDataItem::Uid(NonZeroU32::MIN)],
        ..probed
    };
    plan.compose(&bare, &summary, None);
    assert!(plan.incomplete.get());
}

#[test]
fn writs_own_sets_are_ranges() {
    let n =
        |v: &[u32]| -> Vec<NonZeroU32> { v.iter().map(|&x| NonZeroU32::new(x).unwrap()).collect() };
    let wire_set = |v: &[u32]| {
        let c = Command {
            tag: Tag::unvalidated("t"),
            body: CommandBody::Fetch {
                sequence_set: crate::imap::sequence::compact(&n(v)).expect("a set"),
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                    MessageDataItemName::Uid,
                ]),
                uid: false,
                modifiers: Vec::new(),
            },
        };
        wire(&c)
    };
    assert_eq!(wire_set(&[1, 2, 3, 5, 7, 8]), "t FETCH 1:3,5,7:8 UID\r\n");
    assert_eq!(wire_set(&[4]), "t FETCH 4 UID\r\n");
    assert!(crate::imap::sequence::compact(&[]).is_none());
    let many: Vec<u32> = (1..=100_000).collect();
    assert_eq!(wire_set(&many), "t FETCH 1:100000 UID\r\n");
}

#[test]
fn items_are_asked_once_uid_first_and_changedsince_brings_modseq() {
    // As Dovecot parses a FETCH: a UID FETCH's UID comes first, an item
    // named twice is answered once (a section twice, twice), and
    // CHANGEDSINCE adds MODSEQ (RFC 7162 §3.1.4.1).
    let (plan, probe) = FetchPlan::start(
        &command("u UID FETCH 1 (BODY FLAGS UID FLAGS BODY.PEEK[1] BODY.PEEK[1])\r\n"),
        None,
    )
    .expect("FETCH");
    assert_eq!(
        wire(&probe),
        "u UID FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    assert_eq!(plan.wanted.len(), 5, "{:?}", plan.wanted);
    let (_, probe) = FetchPlan::start(
        &command("c FETCH 1:* (FLAGS RFC822.SIZE) (CHANGEDSINCE 7)\r\n"),
        None,
    )
    .expect("FETCH");
    assert_eq!(
        wire(&probe),
        "c FETCH 1:* (FLAGS RFC822.SIZE MODSEQ UID BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]) (CHANGEDSINCE 7)\r\n"
    );
    // Only what the provider has: no plan, the provider answers it.
    for only_provider in [
        "c FETCH 1:* (FLAGS) (CHANGEDSINCE 7)\r\n",
        "c UID FETCH 1:* (UID FLAGS INTERNALDATE MODSEQ)\r\n",
        "c FETCH 2 UID\r\n",
    ] {
        assert!(FetchPlan::start(&command(only_provider), None).is_none());
    }
}

#[test]
fn a_response_puts_the_short_items_first_as_dovecot_does() {
    let (_, items) = fetch_response(
        b"* 3 FETCH (BODY[1] {2}\r\nab RFC822.SIZE 9 MODSEQ (4) UID 8 INTERNALDATE \"01-Jan-2024 00:00:00 +0000\" FLAGS ())\r\n",
    );
    let items: Vec<Item> = items.into_iter().map(Item::Typed).collect();
    let Some(Output::ToClient(Data::Fetch { items, .. })) = fetch(NonZeroU32::MIN, items) else {
        panic!("typed")
    };
    let names: Vec<&str> = items
        .as_ref()
        .iter()
        .map(|i| match i {
            MessageDataItem::BodyExt { .. } => "BODY[1]",
            MessageDataItem::Rfc822Size(_) => "RFC822.SIZE",
            MessageDataItem::ModSeq(_) => "MODSEQ",
            MessageDataItem::Uid(_) => "UID",
            MessageDataItem::InternalDate(_) => "INTERNALDATE",
            MessageDataItem::Flags(_) => "FLAGS",
            _ => "?",
        })
        .collect();
    assert_eq!(
        names,
        [
            "RFC822.SIZE",
            "MODSEQ",
            "UID",
            "INTERNALDATE",
            "FLAGS",
            "BODY[1]"
        ]
    );
}

#[test]
fn an_expunge_found_after_the_probe_ends_the_fetch_as_dovecot_does() {
    // The provider answers the marker fields from its index even for a
    // message another session expunged; writ's own FETCH of its summary
    // meets the expunge. Dovecot's own FETCH would end OK
    // [EXPUNGEISSUED], its HIGHESTMODSEQ sent untagged before.
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, _) = FetchPlan::start(
        &command("q UID FETCH 1:* (UID FLAGS ENVELOPE) (CHANGEDSINCE 3)\r\n"),
        None,
    )
    .expect("FETCH");
    let (seq, items) = fetch_response(&probe_answer(7, &stored));
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let out = plan
        .on_status(status("q OK [HIGHESTMODSEQ 21] Fetch completed.\r\n"))
        .expect("ours");
    assert!(matches!(&out[..], [Output::ToProvider(_)]), "{out:?}");
    let (seq, items) =
        fetch_response(b"* 1 FETCH (UID 7 BODY[HEADER] NIL BODY[1.MIME] NIL BODY[1] NIL)\r\n");
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    // Answered as the provider answers for plaintext: no ENVELOPE.
    assert!(
        matches!(&out[..], [Output::ToClient(Data::Fetch { items, .. })]
            if !items.as_ref().iter().any(|i| matches!(i, MessageDataItem::Envelope(_)))),
        "{out:?}"
    );
    let out = plan
        .on_status(status(
            "writ.1 OK [EXPUNGEISSUED] Some messages were already expunged.\r\n",
        ))
        .expect("ours");
    let [Output::ToClientRaw(highest), Output::Finish(end)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(highest, b"* OK [HIGHESTMODSEQ 21] Highest\r\n");
    use imap_codec::encode::Encoder;
    let end_wire = imap_codec::ResponseCodec::default()
        .encode(&imap_next::imap_types::response::Response::Status(
            end.clone(),
        ))
        .dump();
    assert_eq!(
        String::from_utf8_lossy(&end_wire),
        "q OK [EXPUNGEISSUED] Some messages were already expunged.\r\n"
    );
}

#[test]
fn a_probe_answer_with_megabytes_of_flags_is_not_kept() {
    // FLAGS past what writ keeps for a message: the message goes
    // unanswered and the command ends NO, nothing held for it.
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (mut plan, _) =
        FetchPlan::start(&command("a1 UID FETCH 1:* (UID FLAGS ENVELOPE)\r\n"), None)
            .expect("a FETCH");
    let keywords: Vec<String> = (0..3_000).map(|n| format!("keyword{n:020}")).collect();
    let mut probe = format!("* 1 FETCH (UID 7 FLAGS ({}) ", keywords.join(" ")).into_bytes();
    probe.extend(literal_item(MARKER, &marker_of(&stored)));
    probe.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&probe);
    assert!(
        plan.on_fetch(seq, items, &ids)
            .expect("the probe's")
            .is_empty()
    );
    assert!(plan.probed.is_empty() && plan.probed_bytes == 0);
    let out = plan.on_status(status("a1 OK done\r\n")).expect("ours");
    assert!(
        matches!(&out[..], [Output::Finish(Status::Tagged(t))] if t.body.kind == StatusKind::No),
        "{out:?}"
    );
}

#[test]
fn the_whole_header_is_asked_for_plaintext_messages_only_after_the_probe() {
    // BODY[HEADER] and RFC822.HEADER make the provider read each
    // message's file: where the cache holds sealed mail of the mailbox,
    // the probe asks for the marker fields alone (its index answers
    // them), and only a plaintext message's header is fetched, in the
    // plain phase, as the client named it.
    let (ids, sealer) = keys();
    let (cache, _dir) = temp_cache(&ids);
    list_once(&cache, &sealed(&sealer), &ids);
    assert!(cache.cache.highest_uid(&cache.mailbox).is_some());
    let (mut plan, next) = plaintext_probed(
        "h FETCH 5 (RFC822.HEADER BODY[HEADER.FIELDS.NOT (To)] FLAGS)\r\n",
        "h FETCH 5 (FLAGS UID BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n",
        "* 5 FETCH (UID 50 FLAGS () ",
        Some(cache),
    );
    assert_eq!(
        next,
        "writ.1 FETCH 5 (UID RFC822.HEADER BODY[HEADER.FIELDS.NOT (To)])\r\n"
    );
    let mut answer = b"* 5 FETCH (UID 50 FLAGS (\\Seen) ".to_vec();
    answer.extend(literal_item("RFC822.HEADER", header_of(M)));
    answer.push(b' ');
    answer.extend(literal_item(
        "BODY[HEADER.FIELDS.NOT (TO)]",
        b"Subject: x\r\n\r\n",
    ));
    answer.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&answer);
    let out = plan.on_fetch(seq, items, &ids).expect("ours");
    let [Output::ToClient(Data::Fetch { seq, items })] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(seq.get(), 5);
    // FLAGS first, as Dovecot writes it.
    let items = items.as_ref();
    assert!(
        matches!(&items[0], MessageDataItem::Flags(f) if f.contains(&FlagFetch::Flag(Flag::Seen))),
        "{items:?}"
    );
    assert!(
        matches!(&items[1], MessageDataItem::Rfc822Header(h) if h.0.as_ref().map(|h| h.as_ref()) == Some(header_of(M))),
        "{items:?}"
    );
    assert!(matches!(
        &items[2],
        MessageDataItem::BodyExt { section: Some(Section::HeaderFieldsNot(..)), data, .. }
            if data.0.as_ref().map(|d| d.as_ref()) == Some(&b"Subject: x\r\n\r\n"[..])
    ));
}

#[test]
fn a_mailbox_the_cache_holds_nothing_of_has_its_whole_header_in_the_probe() {
    // It may be all plaintext: each message is answered by the probe at
    // once, none waits (in memory) for a plain phase.
    let (ids, _) = keys();
    let (cache, _dir) = temp_cache(&ids);
    for cache in [Some(cache), None] {
        let (mut plan, probe) =
            FetchPlan::start(&command("h FETCH 5 (RFC822.HEADER FLAGS)\r\n"), cache)
                .expect("FETCH");
        assert_eq!(
            wire(&probe),
            "h FETCH 5 (RFC822.HEADER FLAGS UID BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
        );
        let mut answer = b"* 5 FETCH (UID 50 FLAGS () ".to_vec();
        answer.extend(literal_item("RFC822.HEADER", header_of(M)));
        answer.push(b' ');
        answer.extend(literal_item(MARKER, &marker_of(M)));
        answer.extend_from_slice(b")\r\n");
        let (seq, items) = fetch_response(&answer);
        let out = plan.on_fetch(seq, items, &ids).expect("ours");
        let [Output::ToClient(Data::Fetch { items, .. })] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(
            items
                .as_ref()
                .iter()
                .any(|i| matches!(i, MessageDataItem::Rfc822Header(h)
                if h.0.as_ref().map(|h| h.as_ref()) == Some(header_of(M)))),
            "{items:?}"
        );
        let out = plan.on_status(status("h OK done\r\n")).expect("ours");
        assert!(matches!(&out[..], [Output::Finish(_)]), "{out:?}");
    }
}

#[test]
fn a_sealed_messages_whole_header_comes_from_its_summary_not_the_provider() {
    // The opened header comes from the summary, fetched once and then
    // cached; once the cache holds the mailbox's sealed mail, the probe
    // leaves RFC822.HEADER and BODY[HEADER] out (the provider would read
    // the sealed container's file for nothing).
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = temp_cache(&ids);
    let items = "RFC822.HEADER BODY.PEEK[HEADER]";
    let cold = list_items(&cache, &stored, &ids, items);
    assert!(
        cold.iter().any(|o| matches!(o, Output::ToProvider(_))),
        "{cold:?}"
    );
    // Once the cache holds sealed mail of the mailbox.
    let (_, probe) = FetchPlan::start(
        &command(&format!("l FETCH 1 ({items})\r\n")),
        Some(cache.clone()),
    )
    .expect("FETCH");
    assert_eq!(
        wire(&probe),
        "l FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)])\r\n"
    );
    let warm = list_items(&cache, &stored, &ids, items);
    assert!(
        warm.iter().all(|o| !matches!(o, Output::ToProvider(_))),
        "{warm:?}"
    );
    for out in [&cold, &warm] {
        let fetched: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::ToClient(Data::Fetch { items, .. }) => Some(items.as_ref().to_vec()),
                _ => None,
            })
            .collect();
        let [items] = &fetched[..] else {
            panic!("{out:?}")
        };
        let opened = header_of(M);
        assert!(
            matches!(&items[0], MessageDataItem::Rfc822Header(h) if h.0.as_ref().map(|h| h.as_ref()) == Some(opened)),
            "{items:?}"
        );
        assert!(
            matches!(&items[1], MessageDataItem::BodyExt { section: Some(Section::Header(None)), data, .. }
                if data.0.as_ref().map(|d| d.as_ref()) == Some(opened)),
            "{items:?}"
        );
    }
}

#[test]
fn a_message_gone_before_its_body_was_read_ends_the_fetch_expunge_issued() {
    // The probe (marker fields, from the provider's index) lists UIDs 20
    // and 30; another session's expunge of 30 reaches the client before
    // its body was fetched. The provider, asked straight, would have met
    // the missing file (for a body section or the whole header) and ended
    // OK [EXPUNGEISSUED]: so does writ. A listing of what the provider
    // answers from its index ends as the provider's probe did.
    // The whole header counts only where the probe left it out (the
    // cache holds sealed mail of the mailbox): in the probe, the
    // provider read it, and its own status says what it met.
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, _dir) = temp_cache(&ids);
    list_once(&cache, &stored, &ids);
    for (wanted, cache, issued) in [
        ("BODY.PEEK[]", None, true),
        ("BODY.PEEK[HEADER]", Some(cache.clone()), true),
        ("BODY.PEEK[HEADER]", None, false),
        ("ENVELOPE", None, false),
    ] {
        let (mut plan, _) =
            FetchPlan::start(&command(&format!("f UID FETCH 1:* ({wanted})\r\n")), cache)
                .expect("FETCH");
        for (seq, uid) in [(1, 20), (2, 30)] {
            let (seq, items) = fetch_response(&probe_at(seq, uid, &stored));
            assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
        }
        plan.on_expunge(NonZeroU32::new(2).unwrap());
        let mut out = plan.on_status(status("f OK done\r\n")).expect("ours");
        // With a cache, UID 20 is looked up there first (a miss).
        while plan.has_more() {
            out.extend(plan.more());
        }
        assert!(matches!(&out[..], [Output::ToProvider(_)]), "{out:?}");
        // The whole message for a body section, the summary otherwise.
        let answer = if wanted == "BODY.PEEK[]" {
            whole_answer(1, 20, &stored)
        } else {
            part_one_answer(1, 20, &stored, true)
        };
        let (seq, items) = fetch_response(&answer);
        let mut out = plan.on_fetch(seq, items, &ids).expect("ours");
        out.extend(plan.poll());
        out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
        let Some(Output::Finish(end)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(is_expunge_issued(end), issued, "{wanted}: {end:?}");
    }
}
