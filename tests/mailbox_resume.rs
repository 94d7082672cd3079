//! Mailbox jobs survive what long jobs meet: kill -9 at any instant, a
//! provider that throttles (NO [LIMIT]), says BYE, or drops the
//! connection. After the job completes, every original is present exactly
//! once, sealed, and opens byte-exact. A provider that lies (a body not
//! sent whole, one UID answered again and again, a flood of responses, an
//! answer trickled for ever, a new UIDVALIDITY mid-job) and a second run
//! on the same mailbox never cost an original.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::hostile::{
    HostileProvider, Lies, body_item, replace_whole_body, whole_body, with_size, with_uid,
};
use common::jobs::Jobs;
use common::writ::TestKeys;
use common::{FaultProxy, Faults, User, When, provider};

/// The `[provider.imap]` settings besides the address.
const PROVIDER: &str = "security = \"plain\"\ntimeout_secs = 20";

/// The `[jobs]` settings: 10 ms back-off and `retries`.
fn jobs_settings(retries: u32) -> String {
    format!("backoff_ms = 10\nretries = {retries}")
}

/// Keys and config for a job through the provider's IMAP at `imap`, with
/// 12 retries.
fn new_job(imap: SocketAddr) -> Jobs {
    Jobs::with_config(imap, PROVIDER, Some(&jobs_settings(12)))
}

/// `writ mailbox seal` in the background, its output dropped.
fn spawn(job: &Jobs, user: &User, args: &[&str]) -> Child {
    job.job_command(user, "seal", args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: s{n}@example.org\r\nTo: r@example.test\r\nSubject: resume {n}\r\n\
         Message-ID: <resume-{n}@example.org>\r\n\r\nbody {n} {}\r\n",
        "y".repeat(n * 13 % 700)
    )
    .into_bytes()
}

/// Stores `count` plaintext messages in INBOX, with APPEND pipelined by
/// LITERAL+ in one write per 50.
fn fill(user: &User, count: usize) -> BTreeMap<String, Vec<u8>> {
    let p = provider();
    let mut imap = p.imap(user);
    let mut originals = BTreeMap::new();
    for n in 0..count {
        let m = message(n);
        let r = imap.command_with_literal(
            &format!(
                "APPEND INBOX (\\Seen) \"0{}-Jan-2026 10:00:00 +0000\"",
                n % 9 + 1
            ),
            &m,
            "",
        );
        assert!(r.is_ok(), "{}", r.text());
        originals.insert(format!("<resume-{n}@example.org>"), m);
    }
    imap.logout();
    originals
}

/// Asserts that INBOX holds exactly the originals, each once, sealed.
#[track_caller]
fn assert_exactly_once(user: &User, keys: &TestKeys, originals: &BTreeMap<String, Vec<u8>>) {
    let stored = provider().imap_fetch_all(user, "INBOX");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for s in &stored {
        assert!(
            writ::envelope::detect(s).is_some(),
            "a message is still plaintext: {}",
            String::from_utf8_lossy(&s[..s.len().min(200)])
        );
        let opened = keys.open(s);
        let id = String::from_utf8_lossy(
            &writ::envelope::header::first_value(&opened, "message-id").unwrap_or_default(),
        )
        .trim()
        .to_string();
        assert_eq!(
            originals.get(&id),
            Some(&opened),
            "{id} opens to its original"
        );
        *seen.entry(id).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "present more than once: {dups:?}");
    assert_eq!(seen.len(), originals.len(), "every original is present");
    assert_eq!(stored.len(), originals.len());
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn killed_twenty_times_at_random_points_then_completed_loses_nothing() {
    let p = provider();
    let user = p.new_user("killed");
    let originals = fill(&user, 500);
    let job = new_job(p.imap_addr());

    // How long one uninterrupted run of a batch takes here, to spread the
    // kills over the job instead of guessing.
    let seed = std::env::var("WRIT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
        });
    eprintln!("kill schedule seed: {seed} (WRIT_TEST_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let mut completed_early = 0;
    for round in 0..20 {
        let mut child = spawn(&job, &user, &["--mailbox", "INBOX", "--batch", "7"]);
        // A random instant in the first 1.5 s of this run.
        let at = Duration::from_millis(rng.next() % 1500);
        let started = Instant::now();
        let mut exited = None;
        while started.elapsed() < at {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match exited {
            Some(_) => completed_early += 1,
            None => {
                // SIGKILL: no chance to clean up.
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
        eprintln!(
            "round {round}: killed after {at:?} (exited first: {})",
            exited.is_some()
        );
    }
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    assert!(
        out.status.success(),
        "final run: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(completed_early < 20, "the job was never interrupted");
    assert_exactly_once(&user, &job.keys, &originals);
    // The checkpoint holds no batch in flight and counts every message
    // once. (A kill during a checkpoint write leaves a `.writ-*.tmp` file
    // beside it; it is never read.)
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(job.checkpoints())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(checkpoints.len(), 1);
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoints[0]).unwrap()).unwrap();
    assert_eq!(cp["in_flight"].as_array().map(Vec::len), Some(0));
    assert_eq!(cp["moved"], 500, "{cp}");
}

#[test]
fn throttling_bye_and_cut_connections_are_retried_not_failed() {
    let p = provider();
    let user = p.new_user("flaky");
    let originals = fill(&user, 60);
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new()
            .throttle("APPEND", When::Nth(3))
            .throttle("APPEND", When::Nth(20))
            .bye("UID FETCH", When::Nth(4))
            .cut("UID EXPUNGE", When::Nth(2))
            .lose_reply("UID STORE", When::Nth(5)),
    );
    let job = new_job(proxy.addr());
    let out = job.job(&user, "seal", &["--mailbox", "INBOX", "--batch", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("retries"), "{stdout}");
    // Each fault fired, and the job logged in again after each.
    assert!(
        proxy.count("LOGIN") >= 4,
        "logins: {}",
        proxy.count("LOGIN")
    );
    assert_exactly_once(&user, &job.keys, &originals);
}

#[test]
fn a_provider_that_never_recovers_stops_the_job_with_the_originals_intact() {
    let p = provider();
    let user = p.new_user("down");
    let originals = fill(&user, 12);
    let originals_again = originals.clone();
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new().throttle("APPEND", When::Always),
    );
    let job = new_job(proxy.addr());
    job.configure(proxy.addr(), PROVIDER, Some(&jobs_settings(3)));
    let out = job.job(&user, "seal", &["--mailbox", "INBOX", "--batch", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LIMIT") || err.contains("Too many requests"),
        "{err}"
    );
    assert!(err.contains("run again to resume"), "{err}");
    // Nothing was lost, nothing sealed: every original is still there.
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 12);
    let mut got: Vec<Vec<u8>> = stored;
    got.sort();
    let mut want: Vec<Vec<u8>> = originals.into_values().collect();
    want.sort();
    assert_eq!(got, want);
    // When the provider recovers, the same job completes.
    job.configure(p.imap_addr(), PROVIDER, Some(&jobs_settings(12)));
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&user, &job.keys, &originals_again);
}

#[test]
fn without_uidplus_the_job_refuses_unless_expunge_all_is_allowed() {
    let p = provider();
    let user = p.new_user("nouidplus");
    let originals = fill(&user, 3);
    // The proxy answers CAPABILITY itself, listing nothing: the job sees a
    // provider without UIDPLUS.
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new().answer("CAPABILITY", When::Always, "OK capabilities withheld"),
    );
    let job = new_job(proxy.addr());
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UIDPLUS") && err.contains("--allow-expunge-all"),
        "{err}"
    );
    assert_eq!(p.imap_fetch_all(&user, "INBOX").len(), 3);
    assert_eq!(
        proxy.count("APPEND"),
        0,
        "nothing was stored before refusing"
    );

    let out = job.job(
        &user,
        "seal",
        &["--mailbox", "INBOX", "--allow-expunge-all"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proxy.count("EXPUNGE") >= 1 && proxy.count("UID EXPUNGE") == 0);
    assert_exactly_once(&user, &job.keys, &originals);
}

#[test]
fn malformed_provider_responses_are_retried_never_trusted() {
    let p = provider();
    let user = p.new_user("garbled");
    let originals = fill(&user, 10);
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new()
            .answer(
                "APPEND",
                When::Nth(2),
                "OK [APPENDUID 1 999999999] but garbled \u{1}\u{2} {5}",
            )
            .answer("UID FETCH", When::Nth(3), "WHAT ((( not IMAP"),
    );
    let job = new_job(proxy.addr());
    let out = job.job(&user, "seal", &["--mailbox", "INBOX", "--batch", "4"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(proxy.faulted("APPEND") + proxy.faulted("UID FETCH"), 2);
    assert_exactly_once(&user, &job.keys, &originals);
}

/// The `--batch 3` job arguments of the stalled-provider tests.
const STALL_ARGS: [&str; 4] = ["--mailbox", "INBOX", "--batch", "3"];

/// The job's first batch was held by the proxy (a provider that stalled)
/// and its run gave up on it (killed, or timed out and retried); the job
/// then completes. When the provider resumes and stores the held copies,
/// they are duplicates, and the next run removes them.
fn late_copies_are_removed_by_the_next_run(
    job: &Jobs,
    proxy: &FaultProxy,
    user: &User,
    originals: &BTreeMap<String, Vec<u8>>,
) {
    let out = job.ok(job.job(user, "seal", &STALL_ARGS));
    assert!(out.contains("0 failed"), "{out}");
    assert_exactly_once(user, &job.keys, originals);
    // The provider resumes and stores the held copies.
    // (A kill may cut the batch short: only complete APPENDs are stored.)
    let answers = proxy.release(Duration::from_secs(60));
    let late = answers.len();
    assert!((1..=3).contains(&late), "{answers:?}");
    assert!(
        answers.iter().all(|a| a.contains(" OK [APPENDUID ")),
        "the late APPENDs were stored: {answers:?}"
    );
    assert_eq!(provider().imap_fetch_all(user, "INBOX").len(), 6 + late);
    let out = job.ok(job.job(user, "seal", &STALL_ARGS));
    assert!(out.contains(&format!(" {late} duplicate(s)")), "{out}");
    assert_exactly_once(user, &job.keys, originals);
    // Nothing is awaited any more: the next run has nothing to do.
    let out = job.ok(job.job(user, "seal", &STALL_ARGS));
    assert!(out.contains("0 sealed, 0 duplicate(s)"), "{out}");
    assert_exactly_once(user, &job.keys, originals);
}

#[test]
fn copies_stored_after_the_job_was_killed_and_completed_are_removed() {
    let p = provider();
    let user = p.new_user("stallkill");
    let originals = fill(&user, 6);
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let job = new_job(proxy.addr());
    let mut child = spawn(&job, &user, &STALL_ARGS);
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "the job never APPENDed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    late_copies_are_removed_by_the_next_run(&job, &proxy, &user, &originals);
}

/// The same, through a provider whose search misses the X-Writ field (a
/// full-text index without custom fields): the late copies are found by
/// their header fields, not by the provider's search.
#[test]
fn copies_stored_late_are_found_where_the_providers_search_misses_them() {
    let p = provider();
    let user = p.new_user("stallblind");
    let originals = fill(&user, 6);
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let blind = HostileProvider::start(
        proxy.addr(),
        Lies::new().command(|line| {
            let from = b"HEADER X-Writ ";
            match line.windows(from.len()).position(|w| w == from) {
                Some(at) => [
                    &line[..at],
                    b"HEADER X-Not-Indexed ",
                    &line[at + from.len()..],
                ]
                .concat(),
                None => line.to_vec(),
            }
        }),
    );
    let job = new_job(blind.addr());
    let mut child = spawn(&job, &user, &STALL_ARGS);
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "the job never APPENDed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    late_copies_are_removed_by_the_next_run(&job, &proxy, &user, &originals);
}

#[test]
fn copies_stored_after_a_timeout_and_retry_are_removed() {
    let p = provider();
    let user = p.new_user("stalltimeout");
    let originals = fill(&user, 6);
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let job = new_job(proxy.addr());
    // writ gives up on the held APPENDs after 2 s and retries at once.
    job.configure(
        proxy.addr(),
        "security = \"plain\"\ntimeout_secs = 2",
        Some(&jobs_settings(12)),
    );
    late_copies_are_removed_by_the_next_run(&job, &proxy, &user, &originals);
}

/// A message of about `mib` MiB: a base64 attachment of pseudo-random
/// bytes (nothing on the way can shrink it).
fn large_message(mib: usize) -> Vec<u8> {
    let mut rng = Rng(0x05ee_d0f1_a46e);
    let mut m = b"From: big@example.org\r\nTo: r@example.test\r\nSubject: large\r\n\
        Message-ID: <resume-large@example.org>\r\nMIME-Version: 1.0\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() < mib << 20 {
        for _ in 0..76 {
            m.push(ALPHABET[(rng.next() % 64) as usize]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[test]
fn a_message_larger_than_the_timeout_times_the_uplink_is_still_sealed() {
    let p = provider();
    let user = p.new_user("slowuplink");
    let mut originals = fill(&user, 2);
    let big = large_message(9);
    {
        let mut imap = p.imap(&user);
        let r = imap.command_with_literal("APPEND INBOX (\\Seen)", &big, "");
        assert!(r.is_ok(), "{}", r.text());
        imap.logout();
    }
    originals.insert("<resume-large@example.org>".into(), big);
    // 2.5 MB a second toward the provider, 2 s of provider timeout: the
    // sealed copy (over 12 MB) takes about five seconds to go out, more
    // than the kernel's socket buffers can absorb within one timeout.
    const RATE: u64 = 2_500_000;
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().uplink(RATE));
    let job = new_job(proxy.addr());
    job.configure(
        proxy.addr(),
        "security = \"plain\"\ntimeout_secs = 2",
        Some(&jobs_settings(2)),
    );
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // The link was as slow as said: the APPEND's literal was still on its
    // way well past one provider timeout (the next command came after).
    let events = proxy.events();
    let literal = |line: &str| -> u64 {
        let size = line.rsplit('{').next().unwrap_or("");
        size.trim_end_matches(['}', '+']).parse().unwrap_or(0)
    };
    let append = (0..events.len())
        .filter(|&i| events[i].command == "APPEND")
        .max_by_key(|&i| literal(&events[i].line))
        .unwrap();
    assert!(literal(&events[append].line) > 12_000_000, "{events:?}");
    let after = &events[append + 1];
    assert!(
        after.at.duration_since(events[append].at) > Duration::from_secs(3),
        "{events:?}"
    );
    assert_eq!(proxy.count("APPEND"), 3, "each copy sent once, no retry");
    assert_exactly_once(&user, &job.keys, &originals);
}

/// The commands the job sent through `proxy` before its first APPEND.
fn before_first_append(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .events()
        .into_iter()
        .map(|e| e.command)
        .take_while(|c| c != "APPEND")
        .collect()
}

#[test]
fn killed_while_the_next_batch_seals_and_this_one_is_stored_resumes_exactly_once() {
    let p = provider();
    let user = p.new_user("overlap");
    let originals = fill(&user, 12);
    // The provider stalls on the 4th APPEND: batch 2's first (batches of 3).
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(4)));
    let job = new_job(proxy.addr());
    let mut child = spawn(&job, &user, &STALL_ARGS);
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "the job never APPENDed batch 2"
    );
    // Batch 2 is being stored (held) and batch 3 was fetched in the same
    // flight, before it: writ is sealing it when it is killed. Before any
    // APPEND, the header scan, batch 1 and batch 2 were fetched.
    let fetched_ahead = before_first_append(&proxy);
    assert_eq!(
        fetched_ahead
            .iter()
            .filter(|c| c.as_str() == "UID FETCH")
            .count(),
        3,
        "the next batch is fetched in the flight of this batch's APPENDs: {fetched_ahead:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The provider resumes and stores the held copies of batch 2.
    let late = proxy.release(Duration::from_secs(60));
    assert!(
        (1..=3).contains(&late.len()) && late.iter().all(|a| a.contains(" OK [APPENDUID ")),
        "{late:?}"
    );
    let out = job.ok(job.job(&user, "seal", &STALL_ARGS));
    assert!(out.contains("0 failed"), "{out}");
    assert!(
        out.contains(&format!(" {} duplicate(s)", late.len())),
        "the stored copies of batch 2 are kept, their originals removed: {out}"
    );
    assert_exactly_once(&user, &job.keys, &originals);
    let out = job.ok(job.job(&user, "seal", &STALL_ARGS));
    assert!(out.contains("0 sealed, 0 duplicate(s)"), "{out}");
}

#[test]
fn a_second_client_changing_the_mailbox_during_a_pipelined_job_loses_nothing() {
    let p = provider();
    let user = p.new_user("busy");
    let mut originals = fill(&user, 200);
    // The 10 highest originals, chosen before the job starts (later, the
    // highest UIDs are the job's own copies).
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("SELECT");
    let search = imap.command("UID SEARCH ALL").expect_ok("SEARCH");
    let mut uids: Vec<u32> = search
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("* SEARCH "))
        .flat_map(|l| l.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    uids.sort_unstable();
    let top: Vec<u32> = uids.iter().rev().take(10).copied().collect();
    imap.logout();
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new());
    let job = new_job(proxy.addr());
    // 100 batches: the changes below come while most are still ahead.
    let mut child = spawn(&job, &user, &["--mailbox", "INBOX", "--batch", "2"]);
    common::mail::wait_until("two batches stored", || proxy.count("APPEND") >= 4);

    // Meanwhile, on its own connection: new mail arrives, the highest
    // UIDs (not reached by the job yet) are flagged or deleted.
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("SELECT");
    let (deleted, flagged) = top.split_at(5);
    let ids = |set: &[u32]| set.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    // What they are, by Message-ID.
    let fetched = imap
        .command(&format!("UID FETCH {} (UID BODY.PEEK[])", ids(&top)))
        .expect_ok("FETCH");
    let by_uid: BTreeMap<u32, Vec<u8>> = fetched.fetch_literals("BODY[]").into_iter().collect();
    let message_id = |m: &[u8]| {
        String::from_utf8_lossy(
            &writ::envelope::header::first_value(m, "message-id").unwrap_or_default(),
        )
        .trim()
        .to_string()
    };
    imap.command(&format!("UID STORE {} +FLAGS (\\Flagged)", ids(flagged)))
        .expect_ok("STORE flagged");
    imap.command(&format!("UID STORE {} +FLAGS (\\Deleted)", ids(deleted)))
        .expect_ok("STORE deleted");
    imap.command(&format!("UID EXPUNGE {}", ids(deleted)))
        .expect_ok("UID EXPUNGE");
    for n in 1000..1010 {
        let m = message(n);
        imap.append("INBOX", &m).expect_ok("APPEND");
        originals.insert(format!("<resume-{n}@example.org>"), m);
    }
    imap.logout();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job was still running while the mailbox changed"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the job failed: {status}");
    let flagged_ids: Vec<String> = flagged.iter().map(|u| message_id(&by_uid[u])).collect();
    for u in deleted {
        // Deleted before the job reached them: they stay deleted.
        originals.remove(&message_id(&by_uid[u]));
    }
    // The messages that came after the job's scan are sealed by the next run.
    let out = job.ok(job.job(&user, "seal", &["--mailbox", "INBOX"]));
    assert!(
        out.contains("10 sealed, 0 duplicate(s)") && out.contains(" 0 failed"),
        "{out}"
    );
    assert_exactly_once(&user, &job.keys, &originals);
    // The flags set meanwhile are on the sealed copies.
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("SELECT");
    let flagged_now = imap
        .command("UID SEARCH FLAGGED")
        .expect_ok("SEARCH FLAGGED");
    let found: Vec<u32> = flagged_now
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("* SEARCH "))
        .flat_map(|l| l.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    assert_eq!(found.len(), 5, "{found:?}");
    let headers = imap
        .command(&format!(
            "UID FETCH {} (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            ids(&found)
        ))
        .expect_ok("FETCH");
    let mut got: Vec<String> = headers
        .fetch_literals("BODY[HEADER.FIELDS (MESSAGE-ID)]")
        .iter()
        .map(|(_, h)| message_id(h))
        .collect();
    got.sort();
    let mut want = flagged_ids;
    want.sort();
    assert_eq!(got, want);
    imap.logout();
}

/// Whether `haystack` holds `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The whole body of a FETCH response, if it is message `n` of [`fill`]
/// (by its Subject, which a sealed copy does not show).
fn body_of(response: &[u8], n: usize) -> Option<&[u8]> {
    whole_body(response).filter(|b| contains(b, format!("Subject: resume {n}\r\n").as_bytes()))
}

/// A seal job with `args` through `hostile` (counted by a proxy in front
/// of it) that exits 1: the proxy, the job, its stdout and stderr.
fn a_failing_run(
    hostile: &HostileProvider,
    user: &User,
    args: &[&str],
) -> (FaultProxy, Jobs, String, String) {
    let proxy = FaultProxy::start(hostile.addr(), Faults::new());
    let job = new_job(proxy.addr());
    let out = job.job(user, "seal", args);
    let (stdout, stderr) = said(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    (proxy, job, stdout, stderr)
}

/// stdout and stderr of a job, for assertions.
fn said(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The originals of INBOX, stored exactly as `fill` stored them.
#[track_caller]
fn assert_untouched(user: &User, originals: &BTreeMap<String, Vec<u8>>) {
    let mut got = provider().imap_fetch_all(user, "INBOX");
    got.sort();
    let mut want: Vec<Vec<u8>> = originals.values().cloned().collect();
    want.sort();
    assert_eq!(got, want, "INBOX holds exactly the originals, as they were");
}

#[test]
fn an_answer_that_is_not_the_whole_message_leaves_that_original_alone() {
    let p = provider();
    let user = p.new_user("notwhole");
    // A fresh mailbox: message n has UID n + 1.
    let originals = fill(&user, 5);
    // Messages 1 to 4 come back NIL, empty, short, or as a partial answer.
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| {
            let half = |b: &[u8]| b[..b.len() / 2].to_vec();
            if body_of(r, 1).is_some() {
                replace_whole_body(r, b"BODY[] NIL")
            } else if body_of(r, 2).is_some() {
                replace_whole_body(r, b"BODY[] \"\"")
            } else if let Some(b) = body_of(r, 3) {
                replace_whole_body(r, &body_item(None, &half(b)))
            } else if let Some(b) = body_of(r, 4) {
                replace_whole_body(r, &body_item(Some(0), &half(b)))
            } else {
                r.to_vec()
            }
        }),
    );
    let (proxy, job, stdout, _stderr) = a_failing_run(&hostile, &user, &["--mailbox", "INBOX"]);
    assert!(
        stdout.contains("INBOX: 1 sealed") && stdout.contains("4 failed"),
        "{stdout}"
    );
    for (uid, why) in [
        (2, "BODY[] NIL"),
        (3, "an empty body"),
        (4, "RFC822.SIZE"),
        (5, "BODY[]<n>"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("UID {uid}: ")) && l.contains(why)),
            "UID {uid} failed for {why}: {stdout}"
        );
    }
    // Only message 0 (UID 1) was marked and expunged.
    let removed: Vec<String> = proxy
        .events()
        .into_iter()
        .filter(|e| e.command == "UID STORE" || e.command == "UID EXPUNGE")
        .map(|e| e.line)
        .collect();
    assert!(!removed.is_empty());
    for line in &removed {
        assert_eq!(line.split_whitespace().nth(3), Some("1"), "{removed:?}");
    }
    // At the provider: messages 1 to 4 as they were, message 0 sealed.
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 5);
    for n in 1..=4 {
        assert!(stored.contains(&originals[&format!("<resume-{n}@example.org>")]));
    }
    let sealed: Vec<&Vec<u8>> = stored
        .iter()
        .filter(|s| writ::envelope::detect(s).is_some())
        .collect();
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        job.keys.open(sealed[0]),
        originals["<resume-0@example.org>"]
    );
}

/// Exchange gives a message's stored size as its `RFC822.SIZE` until its
/// RFC 822 size is known, which fetching it makes it: a body whose length
/// differs is asked for once more, and sealed when the second answer is as
/// long as its size now says and the same bytes. One whose size stays
/// wrong is left as it is.
#[test]
fn a_size_that_is_right_the_second_time_is_sealed_and_one_always_wrong_is_not() {
    let p = provider();
    let user = p.new_user("estimated");
    let originals = fill(&user, 4);
    let first_of_1 = Arc::new(AtomicBool::new(true));
    let first_of_3 = Arc::new(AtomicBool::new(true));
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(move |r| {
            if let Some(b) = body_of(r, 1)
                && first_of_1.swap(false, Ordering::SeqCst)
            {
                with_size(r, b.len() as u64 + 4096)
            } else if let Some(b) = body_of(r, 2) {
                with_size(r, b.len() as u64 - 1)
            } else if let Some(b) = body_of(r, 3) {
                // First a size that differs; then another body (cut), as
                // long as the size it comes with: not the first's bytes.
                if first_of_3.swap(false, Ordering::SeqCst) {
                    with_size(r, b.len() as u64 + 4096)
                } else {
                    let cut = &b[..b.len() / 2];
                    with_size(
                        &replace_whole_body(r, &body_item(None, cut)),
                        cut.len() as u64,
                    )
                }
            } else {
                r.to_vec()
            }
        }),
    );
    let (_proxy, job, stdout, _stderr) = a_failing_run(&hostile, &user, &["--mailbox", "INBOX"]);
    assert!(
        stdout.contains("INBOX: 2 sealed") && stdout.contains("2 failed"),
        "{stdout}"
    );
    for uid in [3, 4] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("UID {uid}: ")) && l.contains("RFC822.SIZE")),
            "{stdout}"
        );
    }
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 4);
    assert!(stored.contains(&originals["<resume-2@example.org>"]));
    assert!(stored.contains(&originals["<resume-3@example.org>"]));
    let mut opened: Vec<Vec<u8>> = stored
        .iter()
        .filter(|s| writ::envelope::detect(s).is_some())
        .map(|s| job.keys.open(s))
        .collect();
    opened.sort();
    let mut want = vec![
        originals["<resume-0@example.org>"].clone(),
        originals["<resume-1@example.org>"].clone(),
    ];
    want.sort();
    assert_eq!(opened, want);
}

#[test]
fn a_provider_answering_one_uid_again_and_again_stops_the_mailbox_unused() {
    let p = provider();
    let user = p.new_user("sameuid");
    let originals = fill(&user, 6);
    // Message 2's answer, a thousand times, and as many for a UID no one
    // asked for.
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| {
            if body_of(r, 2).is_none() {
                return r.to_vec();
            }
            let mut flood = r.repeat(1000);
            flood.extend(with_uid(r, 4_000_000).repeat(1000));
            flood
        }),
    );
    let (proxy, _job, _stdout, stderr) =
        a_failing_run(&hostile, &user, &["--mailbox", "INBOX", "--batch", "10"]);
    assert!(
        stderr.contains("answered UID 3 more than once") && stderr.contains("stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "not retried: {stderr}");
    assert_eq!(proxy.count("APPEND"), 0, "nothing was stored");
    assert_untouched(&user, &originals);
}

#[test]
fn a_flood_of_untagged_responses_stops_the_mailbox_at_the_cap() {
    let p = provider();
    let user = p.new_user("flood");
    let originals = fill(&user, 3);
    let cap = writ::jobs::client::MAX_KEPT;
    // Every SEARCH answer comes one line more than the cap times over.
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(move |r| {
            if r.starts_with(b"* SEARCH") {
                r.repeat(cap + 1)
            } else {
                r.to_vec()
            }
        }),
    );
    let (proxy, _job, _stdout, stderr) = a_failing_run(&hostile, &user, &["--mailbox", "INBOX"]);
    assert!(
        stderr.contains(&format!("more than {cap} untagged responses")),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "not retried: {stderr}");
    assert_eq!(proxy.count("APPEND"), 0, "nothing was stored");
    assert_untouched(&user, &originals);
}

/// Fewer responses than the cap, but large ones: 20 SEARCH answers of a
/// million UIDs each (about 80 MB kept) stop the mailbox at the kept
/// responses' memory cap.
#[test]
fn a_few_huge_untagged_responses_stop_the_mailbox_at_the_memory_cap() {
    let p = provider();
    let user = p.new_user("floodbig");
    let originals = fill(&user, 3);
    let mut huge = b"* SEARCH".to_vec();
    huge.extend(b" 1".repeat(1_000_000));
    huge.extend(b"\r\n");
    let huge = huge.repeat(20);
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(move |r| {
            if r.starts_with(b"* SEARCH") {
                huge.clone()
            } else {
                r.to_vec()
            }
        }),
    );
    let job = new_job(hostile.addr());
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    let (stdout, stderr) = said(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("more than 64 MiB of them"), "{stderr}");
    assert_untouched(&user, &originals);
}

#[test]
fn an_answer_trickled_for_ever_ends_at_the_command_deadline() {
    let p = provider();
    let user = p.new_user("trickle");
    let mut originals = fill(&user, 2);
    let slow = format!(
        "From: s@example.org\r\nTo: r@example.test\r\nSubject: slow\r\n\
         Message-ID: <slow@example.org>\r\n\r\n{}\r\n",
        "z".repeat(10_000)
    )
    .into_bytes();
    p.imap_append(&user, "INBOX", &slow);
    originals.insert("<slow@example.org>".into(), slow);
    // Its answer comes a byte every 10 ms (over 100 s in all): each read
    // is well within the provider timeout (1 s), the whole never is.
    let hostile = HostileProvider::start(
        p.imap_addr(),
        Lies::new().trickle(
            |r| whole_body(r).is_some_and(|b| contains(b, b"Subject: slow\r\n")),
            Duration::from_millis(10),
        ),
    );
    let job = new_job(hostile.addr());
    job.configure(
        hostile.addr(),
        "security = \"plain\"\ntimeout_secs = 1",
        Some(&jobs_settings(0)),
    );
    let started = Instant::now();
    let out = job.job(&user, "seal", &["--mailbox", "INBOX"]);
    let took = started.elapsed();
    let (stdout, stderr) = said(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let deadline = writ::jobs::client::COMMAND_TIMEOUTS;
    assert!(
        stderr.contains(&format!("did not finish answering within {deadline} s")),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(60),
        "stopped at the deadline: {took:?}"
    );
    assert_untouched(&user, &originals);
}

#[test]
fn a_new_uidvalidity_mid_job_stops_the_mailbox_before_anything_is_removed() {
    let p = provider();
    let user = p.new_user("uidvalidity");
    let originals = fill(&user, 6);
    // With the answer to the first APPEND, the provider says the mailbox's
    // UIDs now mean other messages.
    let announced = Arc::new(AtomicBool::new(false));
    let hostile = {
        let announced = Arc::clone(&announced);
        HostileProvider::start(
            p.imap_addr(),
            Lies::new().response(move |r| {
                if contains(r, b" OK [APPENDUID ") && !announced.swap(true, Ordering::SeqCst) {
                    let mut out = b"* OK [UIDVALIDITY 4242] UIDs renumbered\r\n".to_vec();
                    out.extend_from_slice(r);
                    return out;
                }
                r.to_vec()
            }),
        )
    };
    let (proxy, job, _stdout, stderr) = a_failing_run(&hostile, &user, &STALL_ARGS);
    assert!(announced.load(Ordering::SeqCst));
    assert!(
        stderr.contains("changed the mailbox's UIDVALIDITY from ") && stderr.contains("to 4242"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "not retried: {stderr}");
    for command in ["UID STORE", "UID EXPUNGE", "EXPUNGE"] {
        assert_eq!(proxy.count(command), 0, "no {command} was sent");
    }
    // Every original is still there; the first batch's copies too.
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 6 + 3);
    for m in originals.values() {
        assert!(stored.contains(m));
    }
    // Against the real provider (whose UIDVALIDITY never changed), the next
    // run finds the copies by their tokens and completes exactly once.
    job.configure(p.imap_addr(), PROVIDER, Some(&jobs_settings(12)));
    let out = job.ok(job.job(&user, "seal", &STALL_ARGS));
    assert!(out.contains("0 failed"), "{out}");
    assert_exactly_once(&user, &job.keys, &originals);
}

#[test]
fn a_second_run_on_a_mailbox_being_worked_on_is_refused() {
    let p = provider();
    let user = p.new_user("secondrun");
    let originals = fill(&user, 6);
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let job = new_job(proxy.addr());
    let mut first = spawn(&job, &user, &STALL_ARGS);
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "the first run never APPENDed"
    );
    let (selects, fetches) = (proxy.count("SELECT"), proxy.count("UID FETCH"));
    // A second run (an overlapping cron run, here naming INBOX in another
    // case) is refused before it selects anything.
    let out = job.job(&user, "seal", &["--mailbox", "inbox", "--batch", "3"]);
    let (stdout, stderr) = said(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("INBOX is being worked on by another run")
            && stderr.contains(&format!("process {}", first.id())),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        (proxy.count("SELECT"), proxy.count("UID FETCH")),
        (selects, fetches)
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Once the first is gone, the lock is free again.
    late_copies_are_removed_by_the_next_run(&job, &proxy, &user, &originals);
}

#[test]
fn inbox_named_twice_in_any_case_is_worked_on_once() {
    let p = provider();
    let user = p.new_user("twice");
    let originals = fill(&user, 10);
    let job = new_job(p.imap_addr());
    let out = job.ok(job.job(
        &user,
        "seal",
        &[
            "--mailbox",
            "INBOX",
            "--mailbox",
            "inbox",
            "--mailbox",
            "Inbox",
            "--parallel",
            "3",
            "--batch",
            "2",
        ],
    ));
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].ends_with(
            "INBOX: 10 sealed, 0 duplicate(s) from an interrupted run removed, 0 failed"
        ),
        "{out}"
    );
    assert_exactly_once(&user, &job.keys, &originals);
}
