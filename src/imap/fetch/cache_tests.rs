//! The FETCH plan answering from the cache: a chunk at a time as the
//! client drains its output, each chunk looked up, decrypted and composed
//! by a job off the session.

use super::tests::probe_at;
use super::*;
use crate::imap::testing::*;

/// The bytes of message bodies the outputs carry to the client.
fn body_bytes(out: &[Output]) -> usize {
    out.iter()
        .map(|o| match o {
            Output::ToClient(Data::Fetch { items, .. }) => items
                .as_ref()
                .iter()
                .map(|i| match i {
                    MessageDataItem::BodyExt { data, .. } => {
                        data.0.as_ref().map_or(0, |d| d.as_ref().len())
                    }
                    _ => 0,
                })
                .sum(),
            Output::ToClientRaw(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}

/// A folder of `n` sealed messages of `lines` lines each, all in a new
/// cache (summaries and bodies): the keys, the cache, the stored
/// messages and the plaintext's size.
fn cached_folder(
    n: u32,
    lines: usize,
) -> (SharedKeys, CacheRef, Vec<Vec<u8>>, usize, tempfile::TempDir) {
    let mut text = b"From: a@example.test\r\nSubject: big\r\n\r\n".to_vec();
    text.extend(
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n".repeat(lines),
    );
    let texts = vec![text.clone(); n as usize];
    let (ids, cache, stored, dir) = cached_messages(&texts);
    (ids, cache, stored, text.len(), dir)
}

/// `texts` sealed as UIDs 1, 2, ..., all in a new cache (summaries and
/// bodies): the keys, the cache and the stored messages.
fn cached_messages(texts: &[Vec<u8>]) -> (SharedKeys, CacheRef, Vec<Vec<u8>>, tempfile::TempDir) {
    let (ids, sealer) = keys();
    let ids: SharedKeys = Arc::new(ids);
    let (cache, dir) = empty_cache(ids.as_ref());
    let mut stored = Vec::new();
    for (uid, text) in (1..).zip(texts) {
        let mut s = Vec::new();
        sealer.seal(&text[..], &mut s).expect("seal");
        let summary = crate::envelope::read_summary(&s[..], ids.as_ref()).expect("summary");
        let mut opened = Vec::new();
        crate::envelope::open(&s[..], ids.as_ref(), &mut opened).expect("open");
        let key = MessageKey::new(uid, header_of(&s));
        cache
            .cache
            .put(&cache.mailbox, key, &summary, Some(&opened));
        stored.push(s);
    }
    (ids, cache, stored, dir)
}

/// A `UID FETCH 1:* (BODY.PEEK[])` plan over `stored` (message i has
/// sequence number and UID i + 1) whose probe is over.
fn probed(
    plan: &mut FetchPlan,
    stored: &[Vec<u8>],
    keys: &(dyn Keys + Send + Sync),
) -> Vec<Output> {
    for (i, s) in stored.iter().enumerate() {
        let (seq, items) = fetch_response(&probe_at(i as u32 + 1, i as u32 + 1, s));
        let out = plan.on_fetch(seq, items, keys).expect("ours");
        assert!(out.is_empty(), "{out:?}");
    }
    plan.on_status(status("f OK done\r\n")).expect("ours")
}

fn start(cache: &CacheRef) -> FetchPlan {
    start_with(cache, "f UID FETCH 1:* (BODY.PEEK[])\r\n")
}

pub(super) fn start_with(cache: &CacheRef, command_line: &str) -> FetchPlan {
    FetchPlan::start(&command(command_line), Some(cache.clone()))
        .expect("FETCH")
        .0
}

/// A plan over a cached folder of `n` messages of `lines` lines whose
/// probe is over, its jobs held until the test runs them.
fn held_plan(n: u32, lines: usize) -> (FetchPlan, Runner, tempfile::TempDir) {
    let (ids, cache, stored, _, dir) = cached_folder(n, lines);
    let runner = Runner::held();
    let mut plan = start(&cache).opening_with(Arc::clone(&ids), runner.clone());
    assert!(probed(&mut plan, &stored, ids.as_ref()).is_empty());
    (plan, runner, dir)
}

/// The sequence numbers of the FETCH answers in `out`.
pub(super) fn answered(out: &[Output]) -> Vec<u32> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToClient(Data::Fetch { seq, .. }) => Some(seq.get()),
            Output::ToClientRaw(raw) => std::str::from_utf8(raw)
                .ok()?
                .strip_prefix("* ")?
                .split_once(" FETCH ")?
                .0
                .parse()
                .ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn a_whole_cached_folder_is_answered_a_chunk_at_a_time() {
    // Eight messages of 200 KiB, all in the cache: three chunks' worth.
    const N: u32 = 8;
    let (ids, cache, stored, message, _dir) = cached_folder(N, 3200);
    let mut plan = start(&cache);
    // Nothing is composed before the client asks for it, and then at most
    // a chunk and the message that crosses it each time.
    let mut batches = vec![probed(&mut plan, &stored, ids.as_ref())];
    while plan.has_more() {
        batches.push(plan.more());
    }
    let mut answered = 0;
    for batch in &batches {
        let bytes = body_bytes(batch);
        assert!(
            bytes <= CACHE_CHUNK_BYTES + message,
            "{bytes} bytes composed at once"
        );
        assert!(
            !batch.iter().any(|o| matches!(o, Output::ToProvider(_))),
            "{batch:?}"
        );
        answered += batch
            .iter()
            .filter(|o| matches!(o, Output::ToClient(Data::Fetch { .. })))
            .count();
    }
    assert_eq!(answered, N as usize);
    assert!(matches!(
        batches.last().and_then(|b| b.last()),
        Some(Output::Finish(_))
    ));
}

/// Defect (issue 11, item 3): the cache's index read, the decryption of
/// each entry and the composing of the answers ran inside
/// `Session::advance`, on the runtime thread. Now each chunk is a job:
/// `more` returns nothing while it runs, the plan is working (the
/// connection waits for the job's wake) and asks for no further chunk,
/// and the answers come when the plan is polled after the job.
#[test]
fn a_cached_folder_is_looked_up_and_composed_off_the_session() {
    const N: u32 = 8;
    let (mut plan, runner, _dir) = held_plan(N, 3200);
    let mut got = Vec::new();
    let mut chunks = 0;
    while plan.has_more() {
        assert!(plan.more().is_empty(), "composed inside the session");
        assert!(plan.working());
        assert!(!plan.has_more(), "a second chunk while one is out");
        assert!(plan.poll().is_empty(), "taken before the job ran");
        assert_eq!(runner.run_held(), 1);
        let out = plan.poll();
        got.extend(answered(&out));
        assert!(!plan.working());
        chunks += 1;
        if matches!(out.last(), Some(Output::Finish(_))) {
            break;
        }
    }
    assert_eq!(got, (1..=N).collect::<Vec<u32>>());
    assert!(chunks >= 3, "{chunks} chunks");
    // What the FETCH stored goes to the index off the session too (here
    // nothing new: every message was in the cache).
    assert!(runner.run_held() <= 1);
}

/// The next chunk is composed while the one taken is written to the
/// client: once the session asks for it, it is there at once.
#[test]
fn the_next_chunk_is_composed_ahead_while_one_is_written() {
    const N: u32 = 8;
    let (mut plan, runner, _dir) = held_plan(N, 3200);
    assert!(plan.more().is_empty());
    assert_eq!(runner.run_held(), 1);
    let first = answered(&plan.poll());
    assert!(!first.is_empty());
    // Not asked for yet, and not waited for: the session writes what it
    // took and reads on meanwhile.
    assert!(plan.has_more());
    assert!(!plan.working());
    assert_eq!(runner.run_held(), 1, "the next chunk was not submitted");
    let second = answered(&plan.more());
    assert_eq!(second.first(), Some(&(first.last().unwrap() + 1)));
}

/// A message expunged (by another session, reported during a command of
/// the client's) while its chunk is composed is not answered, and the
/// others carry their sequence numbers as they are once taken.
#[test]
fn a_message_expunged_while_its_chunk_is_composed_is_skipped_and_the_rest_renumbered() {
    const N: u32 = 4;
    let (mut plan, runner, _dir) = held_plan(N, 10);
    assert!(plan.more().is_empty());
    plan.on_expunge(NonZeroU32::new(2).unwrap());
    assert_eq!(runner.run_held(), 1);
    let out = plan.poll();
    assert_eq!(answered(&out), vec![1, 2, 3], "{out:?}");
    let uids: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToClient(Data::Fetch { items, .. }) => uid_of(items.as_ref()).map(|u| u.get()),
            _ => None,
        })
        .collect();
    assert_eq!(uids, vec![1, 3, 4]);
    assert!(matches!(out.last(), Some(Output::Finish(_))), "{out:?}");
}

/// A chunk whose job is lost (it panicked) loses no message: the plan
/// asks the provider for them.
#[test]
fn a_chunk_whose_job_is_lost_sends_its_messages_to_the_provider() {
    const N: u32 = 3;
    let (ids, cache, stored, _, _dir) = cached_folder(N, 10);
    let mut plan = start(&cache);
    assert!(probed(&mut plan, &stored, ids.as_ref()).is_empty());
    // As `more` does, with a job that dies.
    let uids: Vec<NonZeroU32> = plan.cached.drain(..).collect();
    let runner = Runner::inline();
    plan.from_cache = Some(from_cache::Chunk::new(
        uids,
        runner.spawn(|| -> Vec<from_cache::Found> { panic!("lost") }),
    ));
    let out = plan.take_chunk();
    let [Output::ToProvider(next)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(wire(next), "writ.1 UID FETCH 1:3 (UID BODY.PEEK[])\r\n");
}

/// A message whose BINARY section is refused, expunged while its chunk is
/// composed, is never answered: its refusal does not end the FETCH, and
/// the messages after it are answered (by the next chunk), not dropped.
#[test]
fn a_refusing_message_expunged_while_composed_does_not_silence_the_rest() {
    let text = |cte: &str| {
        format!("From: a@example.test\r\nSubject: s\r\nContent-Transfer-Encoding: {cte}\r\n\r\nhello\r\n")
            .into_bytes()
    };
    let texts = [text("7bit"), text("x-unknown"), text("7bit"), text("7bit")];
    let (ids, cache, stored, _dir) = cached_messages(&texts);
    let runner = Runner::held();
    let mut plan = start_with(&cache, "f UID FETCH 1:* (BINARY.PEEK[1])\r\n")
        .opening_with(Arc::clone(&ids), runner.clone());
    assert!(probed(&mut plan, &stored, ids.as_ref()).is_empty());
    assert!(plan.more().is_empty());
    plan.on_expunge(NonZeroU32::new(2).unwrap());
    let mut out = Vec::new();
    for _ in 0..4 {
        runner.run_held();
        out.extend(plan.poll());
        out.extend(plan.more());
        if matches!(out.last(), Some(Output::Finish(_))) {
            break;
        }
    }
    assert_eq!(answered(&out), vec![1, 2, 3], "{out:?}");
    let Some(Output::Finish(Status::Tagged(end))) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(end.body.kind, StatusKind::Ok, "{out:?}");
}

/// A probe's answer for a listing: UID, FLAGS and the marker fields.
fn listing_probe(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    let mut r = format!("* {seq} FETCH (UID {uid} FLAGS () ").into_bytes();
    r.extend(literal_item(MARKER, &marker_of(stored)));
    r.extend_from_slice(b")\r\n");
    r
}

/// The provider's answer to the sealed phase: stored header and part 1.
pub(super) fn part1_answer(seq: u32, uid: u32, stored: &[u8]) -> Vec<u8> {
    part_one_answer(seq, uid, stored, true)
}

/// Gives `plan` the probe's answers for `uids` (the same stored message,
/// sequence number = UID), taking what the cache answers as the client
/// would: every output.
pub(super) fn probe_listing(
    plan: &mut FetchPlan,
    uids: std::ops::RangeInclusive<u32>,
    stored: &[u8],
    keys: &(dyn Keys + Send + Sync),
) -> Vec<Output> {
    let mut out = Vec::new();
    for uid in uids {
        let (seq, items) = fetch_response(&listing_probe(uid, uid, stored));
        out.extend(plan.on_fetch(seq, items, keys).expect("ours"));
        while plan.has_more() {
            out.extend(plan.more());
        }
    }
    out
}

/// A new, empty cache under `keys`, with INBOX of account `a` in it.
pub(super) fn empty_cache(keys: &(dyn Keys + Send + Sync)) -> (CacheRef, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheRef {
        cache: Arc::new(Cache::open(dir.path(), 1 << 30, keys).unwrap()),
        mailbox: MailboxKey {
            account: "a".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 1,
        },
        messages: None,
    };
    (cache, dir)
}

fn cold_cache() -> (CacheRef, tempfile::TempDir) {
    empty_cache(&keys().0)
}

/// The keys, a sealed message to answer a probe with, a plan, and the
/// directory of its cache.
pub(super) type Planned = (
    Vec<age::x25519::Identity>,
    Vec<u8>,
    FetchPlan,
    tempfile::TempDir,
);

/// A plan for `command_line` over a new cache, and a sealed message to
/// answer its probe with: the keys, the message, the plan. The cache
/// holds that message under `entry`, if given, and nothing else.
pub(super) fn plan_over(command_line: &str, entry: Option<u32>) -> Planned {
    let (ids, sealer) = keys();
    let stored = sealed(&sealer);
    let (cache, dir) = empty_cache(&ids);
    if let Some(uid) = entry {
        let summary = crate::envelope::read_summary(&stored[..], &ids).expect("summary");
        let key = MessageKey::new(uid, header_of(&stored));
        cache.cache.put(&cache.mailbox, key, &summary, None);
    }
    let plan = start_with(&cache, command_line);
    (ids, stored, plan, dir)
}

/// [`plan_over`] a cache that holds nothing.
fn cold_plan(command_line: &str) -> Planned {
    plan_over(command_line, None)
}

/// Every message numbered in `seqs` answered exactly once, and the
/// client's tagged status (tag `l`) last.
pub(super) fn answered_once_then_finished(out: &[Output], seqs: impl IntoIterator<Item = u32>) {
    let mut got = answered(out);
    got.sort_unstable();
    assert_eq!(got, seqs.into_iter().collect::<Vec<_>>(), "{out:?}");
    let Some(Output::Finish(Status::Tagged(t))) = out.last() else {
        panic!("the status is not last: {out:?}")
    };
    assert_eq!(t.tag.as_ref(), "l");
}

/// The provider commands among `out`, as written.
pub(super) fn commands(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToProvider(c) => Some(wire(c)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cold_listing_fetches_summaries_while_the_probe_is_still_answered() {
    // By sequence number: no speculative command (that is by UID), the
    // summaries looked up and fetched 64 at a time.
    const N: u32 = 150;
    let (ids, sealer) = keys();
    let ids: SharedKeys = Arc::new(ids);
    let stored = sealed(&sealer);
    let (cache, _dir) = cold_cache();
    // Summaries opened through a runner (inline): 8 to a job.
    let mut plan = start_with(&cache, "l FETCH 1:* (UID FLAGS ENVELOPE)\r\n")
        .opening_with(Arc::clone(&ids), Runner::inline());
    let probed = probe_listing(&mut plan, 1..=N, &stored, ids.as_ref());
    assert!(answered(&probed).is_empty(), "nothing is in the cache");
    let sent = commands(&probed);
    // Two batches were looked up and fetched before the probe's end.
    let summary = "(UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n";
    assert_eq!(
        sent,
        [
            format!("writ.1 FETCH 1:64 {summary}"),
            format!("writ.2 FETCH 65:128 {summary}"),
        ]
    );
    // The provider may run them side by side with the probe (Dovecot
    // does when its output blocks): writ.2 is over before the probe,
    // writ.1 last of all. Each message is answered once, the probe's
    // status last, after every command's.
    let mut out = Vec::new();
    let answer = |plan: &mut FetchPlan, range: std::ops::RangeInclusive<u32>, tag: &str| {
        let mut out = Vec::new();
        for uid in range {
            let (seq, items) = fetch_response(&part1_answer(uid, uid, &stored));
            out.extend(plan.on_fetch(seq, items, ids.as_ref()).expect("ours"));
        }
        out.extend(
            plan.on_status(status(&format!("{tag} OK done\r\n")))
                .expect("ours"),
        );
        out
    };
    out.extend(answer(&mut plan, 65..=128, "writ.2"));
    let mut after = plan.on_status(status("l OK done\r\n")).expect("ours");
    while plan.has_more() {
        after.extend(plan.more());
    }
    assert_eq!(
        commands(&after),
        [format!("writ.3 FETCH 129:150 {summary}")]
    );
    out.extend(after);
    // 22 summaries: two jobs of 8 and 6 submitted at writ.3's status.
    out.extend(answer(&mut plan, 129..=N, "writ.3"));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Finish(_))),
        "{out:?}"
    );
    out.extend(answer(&mut plan, 1..=64, "writ.1"));
    answered_once_then_finished(&out, 1..=N);
}

#[test]
fn at_most_three_pipelined_commands_are_out_at_once() {
    let (ids, stored, mut plan, _dir) = cold_plan("l FETCH 1:* (ENVELOPE)\r\n");
    let sent = commands(&probe_listing(&mut plan, 1..=400, &stored, &ids));
    assert_eq!(sent.len(), MAX_PIPELINED, "{sent:?}");
    // One is over: the next goes, with what waited meanwhile (385 to
    // 400 are not looked up before the probe is over).
    for uid in 1..=64 {
        let (seq, items) = fetch_response(&part1_answer(uid, uid, &stored));
        plan.on_fetch(seq, items, &ids).expect("ours");
    }
    let out = plan.on_status(status("writ.1 OK done\r\n")).expect("ours");
    assert_eq!(
        commands(&out),
        ["writ.4 FETCH 193:384 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
}

#[test]
fn a_listing_that_sets_seen_is_not_pipelined_and_marks_every_message() {
    let (ids, stored, mut plan, _dir) =
        cold_plan("l FETCH 1:100 (ENVELOPE BODY[HEADER.FIELDS (SUBJECT)])\r\n");
    for uid in 1..=100 {
        let mut r = format!("* {uid} FETCH (UID {uid} FLAGS () ").into_bytes();
        r.extend(literal_item(
            "BODY[HEADER.FIELDS (SUBJECT)]",
            b"Subject: x\r\n\r\n",
        ));
        r.push(b' ');
        r.extend(literal_item(MARKER, &marker_of(&stored)));
        r.extend_from_slice(b")\r\n");
        let (seq, items) = fetch_response(&r);
        let mut out = plan.on_fetch(seq, items, &ids).expect("ours");
        while plan.has_more() {
            out.extend(plan.more());
        }
        assert!(commands(&out).is_empty(), "pipelined: {out:?}");
    }
    let mut out = plan.on_status(status("l OK done\r\n")).expect("ours");
    while plan.has_more() {
        out.extend(plan.more());
    }
    assert_eq!(
        commands(&out),
        ["writ.1 FETCH 1:100 (UID BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1])\r\n"]
    );
    let mut out = Vec::new();
    for uid in 1..=100 {
        let (seq, items) = fetch_response(&part1_answer(uid, uid, &stored));
        out.extend(plan.on_fetch(seq, items, &ids).expect("ours"));
    }
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    assert_eq!(answered(&out).len(), 100);
    assert_eq!(
        commands(&out),
        ["writ.2 STORE 1:100 +FLAGS.SILENT (\\Seen)\r\n"]
    );
}

#[test]
fn a_failed_probe_waits_for_the_commands_pipelined_behind_it() {
    let (ids, stored, mut plan, _dir) = cold_plan("l FETCH 1:* (ENVELOPE)\r\n");
    let sent = commands(&probe_listing(&mut plan, 1..=70, &stored, &ids));
    assert_eq!(sent.len(), 1, "{sent:?}");
    let out = plan
        .on_status(status("l NO [SERVERBUG] broken\r\n"))
        .expect("ours");
    assert!(out.is_empty(), "ended before writ.1 was answered: {out:?}");
    // writ.1's answers are taken and not passed on; then the probe's NO.
    let (seq, items) = fetch_response(&part1_answer(1, 1, &stored));
    assert!(plan.on_fetch(seq, items, &ids).expect("ours").is_empty());
    let out = plan.on_status(status("writ.1 OK done\r\n")).expect("ours");
    let [Output::Finish(Status::Tagged(t))] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(t.tag.as_ref(), "l");
    assert_eq!(t.body.kind, StatusKind::No);
}

#[test]
fn what_pipelined_commands_brought_is_answered_before_the_listing_ends() {
    // 64 cold messages, fetched while the probe is answered; the 65th is
    // in the cache, looked up after the probe, while the provider has
    // answered writ.1 already and its messages are still being opened.
    let (ids, sealer) = keys();
    let ids: SharedKeys = Arc::new(ids);
    let (cache, _dir) = empty_cache(ids.as_ref());
    let stored: Vec<Vec<u8>> = (0..65)
        .map(|i| {
            let text = format!("From: a@example.test\r\nSubject: m{i}\r\n\r\nhi\r\n");
            let mut s = Vec::new();
            sealer.seal(text.as_bytes(), &mut s).expect("seal");
            s
        })
        .collect();
    let last = &stored[64];
    let summary = crate::envelope::read_summary(&last[..], ids.as_ref()).expect("summary");
    let key = MessageKey::new(65, header_of(last));
    cache.cache.put(&cache.mailbox, key, &summary, None);
    let runner = Runner::held();
    let mut plan = start_with(&cache, "l UID FETCH 1:* (ENVELOPE)\r\n")
        .opening_with(Arc::clone(&ids), runner.clone());
    let mut out = Vec::new();
    for uid in 1..=64 {
        let (seq, items) = fetch_response(&listing_probe(uid, uid, &stored[uid as usize - 1]));
        out.extend(plan.on_fetch(seq, items, ids.as_ref()).expect("ours"));
        while plan.has_more() {
            out.extend(plan.more());
        }
    }
    runner.run_held();
    out.extend(plan.poll());
    assert_eq!(commands(&out).len(), 1, "{out:?}");
    let (seq, items) = fetch_response(&listing_probe(65, 65, last));
    out.extend(plan.on_fetch(seq, items, ids.as_ref()).expect("ours"));
    out.extend(plan.on_status(status("l OK done\r\n")).expect("ours"));
    for uid in 1..=64 {
        let (seq, items) = fetch_response(&part1_answer(uid, uid, &stored[uid as usize - 1]));
        out.extend(plan.on_fetch(seq, items, ids.as_ref()).expect("ours"));
    }
    out.extend(plan.on_status(status("writ.1 OK done\r\n")).expect("ours"));
    while plan.has_more() {
        out.extend(plan.more());
    }
    // The lookup of 65 and the openings of 1 to 64 end together.
    runner.run_held();
    out.extend(plan.poll());
    let mut seqs = answered(&out);
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=65).collect::<Vec<_>>(), "{out:?}");
    assert_eq!(commands(&out).len(), 1, "{out:?}");
    let Some(Output::Finish(_)) = out.last() else {
        panic!("the status is not last: {out:?}")
    };
}

#[test]
fn a_huge_part_one_is_opened_as_a_heavy_job_after_those_queued_before() {
    let (ids, stored, plan, _dir) = cold_plan("l FETCH 1:2 (ENVELOPE)\r\n");
    let ids: SharedKeys = Arc::new(ids);
    let runner = Runner::held();
    let mut plan = plan.opening_with(Arc::clone(&ids), runner.clone());
    probe_listing(&mut plan, 1..=2, &stored, ids.as_ref());
    let mut out = plan.on_status(status("l OK done\r\n")).expect("ours");
    // The cache's lookup (held too) finds nothing: the sealed phase.
    while plan.has_more() {
        out.extend(plan.more());
    }
    runner.run_held();
    out.extend(plan.poll());
    assert_eq!(commands(&out).len(), 1, "{out:?}");
    // Message 1's summary waits for the next ones (a batch of 8).
    let (seq, items) = fetch_response(&part1_answer(1, 1, &stored));
    plan.on_fetch(seq, items, ids.as_ref()).expect("ours");
    assert_eq!(runner.held_lanes(), (0, 0));
    // Message 2 claims a part 1 of 2 MiB: message 1 goes first, light;
    // message 2 alone, heavy.
    let mut huge = b"* 2 FETCH (UID 2 ".to_vec();
    huge.extend(literal_item("BODY[HEADER]", header_of(&stored)));
    huge.push(b' ');
    huge.extend(literal_item("BODY[1]", &vec![b'a'; 2 << 20]));
    huge.extend_from_slice(b")\r\n");
    let (seq, items) = fetch_response(&huge);
    plan.on_fetch(seq, items, ids.as_ref()).expect("ours");
    assert_eq!(runner.held_lanes(), (2, 1));
}
