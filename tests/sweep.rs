//! The sweep (`[sweep]` in `writ serve`) against the real provider: mail
//! that reaches Dovecot without passing through writ (LMTP deliveries,
//! APPENDs straight to Dovecot) is sealed in place within the bound, with
//! its flags and INTERNALDATE; Drafts stays plaintext; a client reading
//! through writ's IMAP proxy meanwhile sees every message, opened to its
//! original; and `writ serve` killed with a batch in flight, then started
//! again, loses and duplicates nothing. The account's watcher (NOTIFY,
//! else IDLE) seals new mail in any folder long before the poll, and a
//! provider flooding it past its caps is dropped while the sweep goes on.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::imap::{Imap, quote};
use common::imap_proxy::ImapProxy;
use common::mail::{message_id, stored_by_id};
use common::writ::{TestKeys, Writ, WritConfig};
use common::{FaultProxy, Faults, Smtp, User, When, provider};

/// The `[sweep]` bound these tests configure, in seconds.
const BOUND_SECS: u64 = 20;

/// Delivers `message` to `to` over the provider's LMTP (Dovecot), as the
/// provider's own MTA would: writ is not on this path.
#[track_caller]
fn lmtp_deliver(to: &str, message: &[u8]) {
    // The harness talking to Dovecot's LMTP (writ is not on this path): a
    // connection closed before LHLO is answered delivered nothing, and is
    // tried again (Dovecot dropped one on a loaded machine).
    let mut tries = 0;
    let mut lmtp = loop {
        tries += 1;
        let hello = Smtp::connect(provider().lmtp_addr())
            .and_then(|mut l| l.command("LHLO sweep.test").map(|r| (l, r)));
        match hello {
            Ok((l, r)) => {
                assert_eq!(r.code, 250, "LHLO: {r:?}");
                break l;
            }
            Err(e) if tries < 3 => eprintln!("LMTP: {e}; connecting again"),
            Err(e) => panic!("LMTP connect/LHLO: {e}"),
        }
    };
    lmtp.begin_data("sender@elsewhere.test", to);
    let stored = lmtp.send_data(message).unwrap();
    assert_eq!(stored.code, 250, "LMTP DATA: {stored:?}");
    lmtp.quit();
}

fn message(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: <s{n}@elsewhere.test>\r\nTo: <r@example.test>\r\nSubject: sweep {tag} {n}\r\n\
         Message-ID: <sweep-{tag}-{n}@elsewhere.test>\r\n\r\nplaintext body {tag} {n} {}\r\n",
        "z".repeat(n * 37 % 900)
    )
    .into_bytes()
}

/// `[provider.imap]` for `imap` in plain IMAP, a 5 s timeout.
fn provider_toml(imap: SocketAddr) -> String {
    format!("[provider.imap]\naddress = \"{imap}\"\nsecurity = \"plain\"\ntimeout_secs = 5\n\n")
}

/// `[jobs]` and `[sweep]` lines: the sweep of `user` (password, or the
/// master user's, in `password_file`), polling every second, batches of 3,
/// with `extra` lines added to `[sweep]`.
fn sweep_toml(user: &User, password_file: &Path, extra: &str) -> String {
    sweep_toml_polling(user, password_file, 1, extra)
}

/// [`sweep_toml`] polling every `poll_secs`, the bound as long.
fn sweep_toml_polling(user: &User, password_file: &Path, poll_secs: u64, extra: &str) -> String {
    let bound = poll_secs.max(BOUND_SECS);
    format!(
        "\n[jobs]\nbatch = 3\nbackoff_ms = 20\n\n\
         [sweep]\nenabled = true\naccounts = [{account}]\npassword_file = {pw}\n\
         poll_secs = {poll_secs}\nbound_secs = {bound}\nbackoff_secs = 1\nmax_backoff_secs = 2\n{extra}\n",
        account = quote(&user.name),
        pw = quote(&password_file.display().to_string()),
    )
}

/// `writ serve` running only the sweep (and the admin endpoint), with the
/// keyring `keys`.
fn serve_sweep(keys: &TestKeys, toml: String) -> Writ {
    let mut cfg = WritConfig::relay(provider().smtp_addr());
    cfg.listeners.clear();
    cfg.provider = None;
    cfg.unlock = true;
    cfg.extra_toml = toml;
    Writ::start(&cfg.keys(keys))
}

/// `dir = ".../sweep"`: the sweep's checkpoints in `tmp`, kept across
/// restarts of `writ serve`.
fn dir_line(tmp: &Path) -> String {
    format!("dir = {}", quote(&tmp.join("sweep").display().to_string()))
}

fn password_file(dir: &Path, user: &User) -> std::path::PathBuf {
    let f = dir.join(format!("{}.password", user.name));
    std::fs::write(&f, format!("{}\n", user.password)).unwrap();
    f
}

/// Polls `check` every 20 ms until it gives `Some`; panics with `what` and
/// the log after `timeout`.
#[track_caller]
fn wait_for<T>(
    writ: &Writ,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n--- writ serve log\n{}",
            writ.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// All of `mailbox` is sealed and holds exactly `n` messages.
fn all_sealed(user: &User, mailbox: &str, n: usize) -> bool {
    let (by_id, count) = stored_by_id(user, mailbox);
    count == n
        && by_id
            .values()
            .flatten()
            .all(|(m, _, _)| writ::envelope::detect(m).is_some())
}

#[test]
fn mail_delivered_past_writ_is_sealed_within_the_bound_and_drafts_stay_readable() {
    let p = provider();
    let user = p.new_user("sweepbound");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    // Plaintext already there before writ starts: a Sent copy with flags
    // and a date of its own, and a draft.
    let sent = message("sent", 1);
    let mut imap = p.imap(&user);
    imap.command("CREATE Sent").expect_ok("CREATE Sent");
    imap.command("CREATE Drafts").expect_ok("CREATE Drafts");
    imap.command_with_literal(
        "APPEND Sent (\\Seen \\Answered $Forwarded) \"03-Feb-2026 04:05:06 +0100\"",
        &sent,
        "",
    )
    .expect_ok("APPEND Sent");
    let draft = message("draft", 2);
    imap.command_with_literal("APPEND Drafts (\\Draft)", &draft, "")
        .expect_ok("APPEND Drafts");
    imap.logout();
    let (sent_before, _) = stored_by_id(&user, "Sent");
    let (_, sent_flags, sent_date) = sent_before[&message_id(&sent)][0].clone();
    assert_eq!(sent_flags, "$Forwarded \\Answered \\Seen");

    let toml = provider_toml(p.imap_addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let rounds = |w: &Writ| w.metric("writ_sweep_rounds_total", &[("account", &user.name)]);
    wait_for(
        &writ,
        "the first sweep round",
        Duration::from_secs(30),
        || (rounds(&writ) >= 1.0).then_some(()),
    );

    // Mail delivered straight into Dovecot while writ runs.
    let delivered: Vec<Vec<u8>> = (0..5).map(|n| message("inbox", n)).collect();
    let started = Instant::now();
    for m in &delivered {
        lmtp_deliver(&user.address, m);
    }
    wait_for(
        &writ,
        "INBOX sealed",
        Duration::from_secs(BOUND_SECS),
        || all_sealed(&user, "INBOX", delivered.len()).then_some(()),
    );
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(BOUND_SECS),
        "sealed after {took:?}, bound {BOUND_SECS} s"
    );
    wait_for(
        &writ,
        "Sent sealed",
        Duration::from_secs(BOUND_SECS),
        || all_sealed(&user, "Sent", 1).then_some(()),
    );

    // Each delivered message once, opening to what Dovecot stored (its
    // delivery fields, then the message as sent).
    let (inbox, _) = stored_by_id(&user, "INBOX");
    for m in &delivered {
        let copies = &inbox[&message_id(m)];
        assert_eq!(copies.len(), 1, "{} is there once", message_id(m));
        let opened = keys.open(&copies[0].0);
        assert!(
            opened.ends_with(m),
            "{} opens to the original",
            message_id(m)
        );
        assert!(!common::mail::contains(&copies[0].0, b"plaintext body"));
    }
    // The Sent copy kept its flags and INTERNALDATE, and opens byte-exact.
    let (sent_after, _) = stored_by_id(&user, "Sent");
    let (stored_sent, flags, date) = &sent_after[&message_id(&sent)][0];
    assert_eq!(keys.open(stored_sent), sent);
    assert_eq!((flags, date), (&sent_flags, &sent_date));

    // Drafts is left alone, however many rounds pass.
    let seen = rounds(&writ);
    wait_for(&writ, "two more rounds", Duration::from_secs(30), || {
        (rounds(&writ) >= seen + 2.0).then_some(())
    });
    let (drafts, n) = stored_by_id(&user, "Drafts");
    assert_eq!(n, 1);
    assert_eq!(
        drafts[&message_id(&draft)][0].0,
        draft,
        "the draft is untouched"
    );

    // What the admin endpoint tells.
    let found = writ.metric(
        "writ_sweep_plaintext_found_total",
        &[("account", &user.name)],
    );
    let sealed = writ.metric("writ_sweep_sealed_total", &[("account", &user.name)]);
    assert_eq!((found, sealed), (6.0, 6.0));
    assert_eq!(
        writ.metric(
            "writ_sweep_oldest_plaintext_seconds",
            &[("account", &user.name)]
        ),
        0.0
    );
    // SIGTERM stops the sweep with the rest of `writ serve`.
    let mut writ = writ;
    writ.sigterm();
    assert!(writ.wait_exit(Duration::from_secs(20)).success());
    let log = writ.log();
    assert!(log.contains("sweep stopped"), "{log}");
    assert!(
        !log.contains(&user.password),
        "the password is never logged"
    );
    assert!(!log.contains("plaintext body"), "no content is logged");
}

#[test]
fn a_client_reading_through_the_proxy_meanwhile_sees_every_message_opened() {
    let p = provider();
    let user = p.new_user("sweepproxy");
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    // `[provider.imap]` comes last in the proxy's config: the sweep's
    // tables follow it.
    let proxy = ImapProxy::start(
        &(ImapProxy::plain(p.imap_addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()))),
        "",
    );
    let keys = proxy.writ.test_keys();
    let total = 24;
    let originals: BTreeMap<String, Vec<u8>> = (0..total)
        .map(|n| message("proxy", n))
        .map(|m| (message_id(&m), m))
        .collect();

    let deliverer = {
        let address = user.address.clone();
        let messages: Vec<Vec<u8>> = originals.values().cloned().collect();
        std::thread::spawn(move || {
            for m in &messages {
                lmtp_deliver(&address, m);
            }
        })
    };
    // A client reading through writ while the sweep works: every message
    // opens to its original; none delivered is ever missing.
    let mut client = Imap::login_to(proxy.imap, &user.name, &user.password);
    let mut snapshots = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered_before = deliverer.is_finished();
        client.select("INBOX").expect_ok("SELECT through writ");
        let response = client.command("UID FETCH 1:* (UID BODY.PEEK[])");
        if !response.is_ok() {
            // The provider may refuse a FETCH of a message another session
            // expunged meanwhile (the sweep's original): read again.
            eprintln!("snapshot refused: {:?}", response.tagged);
            continue;
        }
        let mut fetched = response.fetch_literals("BODY[]");
        // What arrived since SELECT is announced by the next command, as
        // any client learns it: the sealed copies of originals the sweep
        // expunged meanwhile (a copy is always stored before its original
        // goes).
        client.command("NOOP").expect_ok("NOOP through writ");
        let newest = fetched.iter().map(|(uid, _)| *uid).max().unwrap_or(0);
        let response = client.command(&format!("UID FETCH {}:* (UID BODY.PEEK[])", newest + 1));
        if !response.is_ok() {
            eprintln!("snapshot refused: {:?}", response.tagged);
            continue;
        }
        fetched.extend(
            response
                .fetch_literals("BODY[]")
                .into_iter()
                .filter(|(uid, _)| *uid > newest),
        );
        snapshots += 1;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (uid, m) in &fetched {
            let id = message_id(m);
            let original = originals
                .get(&id)
                .unwrap_or_else(|| panic!("UID {uid}: an unknown message {id}"));
            assert!(
                m.ends_with(original),
                "UID {uid} ({id}) does not open to its original through writ"
            );
            *seen.entry(id).or_default() += 1;
        }
        // A message may show twice (its original before the sweep's
        // EXPUNGE, its sealed copy after it), never more.
        assert!(seen.values().all(|&n| n <= 2), "{seen:?}");
        if delivered_before {
            assert_eq!(seen.len(), total, "every delivered message is there");
            if seen.values().all(|&n| n == 1) && all_sealed(&user, "INBOX", total) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the sweep did not finish: {seen:?}\n{}",
            proxy.writ.log()
        );
    }
    deliverer.join().unwrap();
    client.logout();
    assert!(snapshots >= 2, "the client read while the sweep worked");
    // At the provider: each exactly once, sealed, opening to the original.
    let (inbox, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, total);
    for (id, original) in &originals {
        assert_eq!(inbox[id].len(), 1, "{id}");
        assert!(keys.open(&inbox[id][0].0).ends_with(original), "{id}");
    }
}

#[test]
fn killed_with_a_batch_in_flight_then_restarted_loses_and_duplicates_nothing() {
    let p = provider();
    let user = p.new_user("sweepkill");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let master = p.master();
    // Six plaintext messages with flags and dates of their own.
    let mut originals = BTreeMap::new();
    let mut imap = p.imap(&user);
    for n in 0..6 {
        let m = message("kill", n);
        imap.command_with_literal(
            &format!(
                "APPEND INBOX (\\Flagged $Kill{n}) \"0{}-Mar-2026 10:00:00 +0000\"",
                n + 1
            ),
            &m,
            "",
        )
        .expect_ok("APPEND");
        originals.insert(message_id(&m), m);
    }
    imap.logout();
    let (before, _) = stored_by_id(&user, "INBOX");

    // The provider stalls on the sweep's first APPEND: the batch is in
    // flight when writ is killed.
    let faults = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let extra = format!(
        "{}\nmaster_user = {}",
        dir_line(tmp.path()),
        quote(&master.name)
    );
    let toml = provider_toml(faults.addr()) + &sweep_toml(&user, &master.password_file, &extra);
    let writ = serve_sweep(&keys, toml.clone());
    assert!(
        faults.wait_held(Duration::from_secs(60)),
        "the sweep never APPENDed\n{}",
        writ.log()
    );
    drop(writ); // SIGKILL
    assert_eq!(stored_by_id(&user, "INBOX").1, 6, "nothing was removed");

    let writ = serve_sweep(&keys, toml);
    wait_for(
        &writ,
        "INBOX sealed after the restart",
        Duration::from_secs(60),
        || all_sealed(&user, "INBOX", 6).then_some(()),
    );
    // The stalled provider resumes and stores the copies it held: they
    // are duplicates, which the running sweep removes.
    let answers = faults.release(Duration::from_secs(60));
    assert!(
        !answers.is_empty() && answers.iter().all(|a| a.contains(" OK [APPENDUID ")),
        "the held APPENDs were stored late: {answers:?}"
    );
    wait_for(
        &writ,
        "the late duplicates removed",
        Duration::from_secs(60),
        || all_sealed(&user, "INBOX", 6).then_some(()),
    );

    let (after, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, 6);
    for (id, original) in &originals {
        let copies = &after[id];
        assert_eq!(copies.len(), 1, "{id} exactly once");
        let (m, flags, date) = &copies[0];
        assert_eq!(&keys.open(m), original, "{id} opens byte-exact");
        let (_, flags_before, date_before) = &before[id][0];
        assert_eq!(
            (flags, date),
            (flags_before, date_before),
            "{id} flags and date"
        );
    }
    drop(writ);
}

/// `writ keys rotate` on `keys`.
fn rotate(keys: &TestKeys) {
    let out = std::process::Command::new(common::writ::WRIT)
        .env_remove("WRIT_PASSPHRASE_FILE")
        .arg("--keys")
        .arg(keys.dir())
        .arg("--passphrase-file")
        .arg(keys.passphrase_file())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The epoch `m` is sealed under, if sealed.
fn epoch(m: &[u8]) -> Option<String> {
    writ::envelope::detect(m).map(|d| d.epoch)
}

/// The one message of `mailbox` once it is sealed.
#[track_caller]
fn sealed_one(writ: &Writ, user: &User, mailbox: &str, within: Duration) -> Vec<u8> {
    wait_for(writ, "the message sealed", within, || {
        let (by_id, n) = stored_by_id(user, mailbox);
        let (m, _, _) = by_id.into_values().flatten().next()?;
        (n == 1 && epoch(&m).is_some()).then_some(m)
    })
}

#[test]
fn a_watcher_wakes_the_sweep_long_before_its_poll_and_sighup_moves_it_to_a_new_epoch() {
    let p = provider();
    let user = p.new_user("sweepidle");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    // Polled every 10 minutes: only the watcher (NOTIFY at Dovecot; IDLE
    // without it, a_provider_refusing_notify_is_watched_with_idle) can
    // seal within seconds.
    let toml =
        provider_toml(p.imap_addr()) + &sweep_toml_polling(&user, &pw, 600, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let rounds = || writ.metric("writ_sweep_rounds_total", &[("account", &user.name)]);
    wait_for(
        &writ,
        "the first sweep round",
        Duration::from_secs(30),
        || (rounds() >= 1.0).then_some(()),
    );

    let first = message("idle", 1);
    lmtp_deliver(&user.address, &first);
    let stored_first = sealed_one(&writ, &user, "INBOX", Duration::from_secs(BOUND_SECS));
    let old_epoch = epoch(&stored_first).unwrap();
    assert!(keys.open(&stored_first).ends_with(&first));

    // `writ keys rotate`, then SIGHUP: the next message is sealed to the
    // new epoch.
    rotate(&keys);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &writ.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(&writ, "the reload", Duration::from_secs(30), || {
        writ.log()
            .contains("SIGHUP: keyring reloaded")
            .then_some(())
    });
    let second = message("idle", 2);
    lmtp_deliver(&user.address, &second);
    wait_for(
        &writ,
        "the second message sealed",
        Duration::from_secs(BOUND_SECS),
        || {
            let (by_id, n) = stored_by_id(&user, "INBOX");
            let m = by_id.get(&message_id(&second))?.first()?.0.clone();
            (n == 2 && epoch(&m).is_some()).then_some(())
        },
    );
    let (by_id, _) = stored_by_id(&user, "INBOX");
    let stored_second = &by_id[&message_id(&second)][0].0;
    let new_epoch = epoch(stored_second).unwrap();
    assert_ne!(new_epoch, old_epoch, "sealed to the new epoch after SIGHUP");
    let fresh = writ::keys::Keyring::load(&keys.dir())
        .unwrap()
        .unlock(&secrecy::SecretString::from(
            common::writ::PASSPHRASE.to_string(),
        ))
        .unwrap();
    let mut opened = Vec::new();
    writ::envelope::open(&stored_second[..], &fresh, &mut opened).unwrap();
    assert!(opened.ends_with(&second));
    assert_eq!(
        writ.metric("writ_sweep_errors_total", &[("account", &user.name)]),
        0.0,
        "the sweep's errors; writ's log:\n{}",
        writ.log()
    );
}

#[test]
fn a_provider_refusing_every_append_is_backed_off_loses_nothing_and_readers_are_served() {
    let p = provider();
    let user = p.new_user("sweepbusy");
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let originals: Vec<Vec<u8>> = (0..4).map(|n| message("busy", n)).collect();
    for m in &originals {
        lmtp_deliver(&user.address, m);
    }
    // The provider is busy for every APPEND (NO [LIMIT]), for the sweep
    // and the proxy alike.
    let faults = FaultProxy::start(
        p.imap_addr(),
        Faults::new().throttle("APPEND", When::Always),
    );
    let proxy = ImapProxy::start(
        &(ImapProxy::plain(faults.addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()))),
        "",
    );
    let writ = &proxy.writ;
    let errors = || writ.metric("writ_sweep_errors_total", &[("account", &user.name)]);
    wait_for(writ, "a failed round", Duration::from_secs(30), || {
        (errors() >= 1.0).then_some(())
    });
    let first_failure = Instant::now();
    let appends = faults.count("APPEND");
    wait_for(
        writ,
        "two more failed rounds",
        Duration::from_secs(30),
        || (errors() >= 3.0).then_some(()),
    );
    // Paused 1 s, then 2 s (`backoff_secs` 1, `max_backoff_secs` 2): the
    // provider is not hammered.
    assert!(
        first_failure.elapsed() >= Duration::from_millis(2900),
        "failed rounds came faster than the backoff: {:?}",
        first_failure.elapsed()
    );
    // Each round's mover tries one batch (3) at most 3 times.
    assert!(
        faults.count("APPEND") - appends <= 2 * 9,
        "{} APPENDs in two rounds",
        faults.count("APPEND") - appends
    );

    // Meanwhile a client reads through writ as usual.
    let mut client = Imap::login_to(proxy.imap, &user.name, &user.password);
    client.select("INBOX").expect_ok("SELECT through writ");
    let read: Vec<Vec<u8>> = client.fetch_all().into_iter().map(|(_, m)| m).collect();
    client.logout();
    assert_eq!(read.len(), originals.len());
    for m in &originals {
        assert!(
            read.iter().any(|r| r.ends_with(m)),
            "{} readable",
            message_id(m)
        );
    }
    // Nothing sealed, nothing lost: every original is still there.
    let (inbox, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, originals.len());
    for m in &originals {
        let stored = &inbox[&message_id(m)][0].0;
        assert!(stored.ends_with(m) && epoch(stored).is_none());
    }
    assert!(writ.log().contains("sweep: round failed"), "{}", writ.log());
}

#[test]
fn accounts_log_in_with_their_own_oauth2_tokens_from_a_command() {
    let p = provider();
    let (alice, bob) = (p.new_user("sweeptoka"), p.new_user("sweeptokb"));
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    for user in [&alice, &bob] {
        std::fs::write(
            tmp.path().join(format!("{}.token", user.name)),
            p.oauth2_token(user),
        )
        .unwrap();
    }
    let command = format!("cat {}/\"$WRIT_ACCOUNT\".token", tmp.path().display());
    let toml = format!(
        "{}\n[jobs]\nbatch = 3\n\n[sweep]\nenabled = true\naccounts = [{}, {}]\n\
         oauth2_token_command = {}\npoll_secs = 1\nbound_secs = {BOUND_SECS}\n{}\n",
        provider_toml(p.imap_addr()),
        quote(&alice.name),
        quote(&bob.name),
        quote(&command),
        dir_line(tmp.path()),
    );
    let writ = serve_sweep(&keys, toml);
    let (to_alice, to_bob) = (message("toka", 1), message("tokb", 2));
    lmtp_deliver(&alice.address, &to_alice);
    lmtp_deliver(&bob.address, &to_bob);
    for (user, m) in [(&alice, &to_alice), (&bob, &to_bob)] {
        let stored = sealed_one(&writ, user, "INBOX", Duration::from_secs(BOUND_SECS));
        assert!(keys.open(&stored).ends_with(m), "{}", user.name);
        assert_eq!(
            writ.metric("writ_sweep_sealed_total", &[("account", &user.name)]),
            1.0
        );
    }
    let log = writ.log();
    for user in [&alice, &bob] {
        let token =
            std::fs::read_to_string(tmp.path().join(format!("{}.token", user.name))).unwrap();
        assert!(!log.contains(&token), "no token is logged");
    }
}

/// The message of `mailbox` with `m`'s Message-ID, once it is sealed.
#[track_caller]
fn sealed(writ: &Writ, user: &User, mailbox: &str, m: &[u8], within: Duration) -> Vec<u8> {
    wait_for(writ, "the message sealed", within, || {
        let (by_id, _) = stored_by_id(user, mailbox);
        let stored = by_id.get(&message_id(m))?.first()?.0.clone();
        epoch(&stored).is_some().then_some(stored)
    })
}

#[test]
fn notify_wakes_the_sweep_for_new_mail_in_any_mailbox_long_before_its_poll() {
    let p = provider();
    let user = p.new_user("sweepnotify");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    // Counts what the sweep sends; forwards everything.
    let faults = FaultProxy::start(p.imap_addr(), Faults::new());
    // Polled every 10 minutes and no mailbox watched with IDLE: only the
    // NOTIFY events can wake the sweep within seconds.
    let extra = format!("idle = []\n{}", dir_line(tmp.path()));
    let toml = provider_toml(faults.addr()) + &sweep_toml_polling(&user, &pw, 600, &extra);
    let writ = serve_sweep(&keys, toml);
    wait_for(&writ, "the NOTIFY watch", Duration::from_secs(30), || {
        writ.log()
            .contains("sweep: watching every mailbox with NOTIFY")
            .then_some(())
    });

    // A phone app files mail straight at the provider into a folder of
    // its own, twice; the second comes after the first was sealed, so
    // after any round the watch's start began.
    for n in 1..=2 {
        let m = message("notify", n);
        p.imap_append(&user, "Archive/2026", &m);
        let stored = sealed(
            &writ,
            &user,
            "Archive/2026",
            &m,
            Duration::from_secs(BOUND_SECS),
        );
        assert!(keys.open(&stored).ends_with(&m));
    }
    assert!(all_sealed(&user, "Archive/2026", 2));

    // Three apps at once, into three folders (one new since the watch
    // began): one wake-up may cover several, none is missed.
    let folders = ["Archive/2026", "Lists/rust", "INBOX"];
    let user = &user;
    let filed: Vec<Vec<u8>> = std::thread::scope(|s| {
        let apps: Vec<_> = folders
            .iter()
            .enumerate()
            .map(|(i, folder)| {
                s.spawn(move || {
                    let m = message("notify-concurrent", 10 + i);
                    p.imap_append(user, folder, &m);
                    m
                })
            })
            .collect();
        apps.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for (folder, m) in folders.iter().zip(&filed) {
        let stored = sealed(&writ, user, folder, m, Duration::from_secs(BOUND_SECS));
        assert!(keys.open(&stored).ends_with(m));
    }
    assert!(all_sealed(user, "Archive/2026", 3));
    assert!(faults.count("NOTIFY") >= 1, "{:?}", faults.events());
    assert_eq!(faults.count("IDLE"), 0, "{:?}", faults.events());
    assert_eq!(
        writ.metric("writ_sweep_errors_total", &[("account", &user.name)]),
        0.0,
        "the sweep's errors; writ's log:\n{}",
        writ.log()
    );
}

#[test]
fn a_provider_refusing_notify_is_watched_with_idle() {
    let p = provider();
    let user = p.new_user("sweepnonotify");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    // A provider without NOTIFY answers it as an unknown command.
    let faults = FaultProxy::start(
        p.imap_addr(),
        Faults::new().answer(
            "NOTIFY",
            When::Always,
            "BAD Error in IMAP command: Unknown command",
        ),
    );
    // Polled every 10 minutes: only IDLE on INBOX (the default) can seal
    // within seconds.
    let toml =
        provider_toml(faults.addr()) + &sweep_toml_polling(&user, &pw, 600, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    wait_for(
        &writ,
        "the fallback to IDLE",
        Duration::from_secs(30),
        || {
            writ.log()
                .contains("sweep: NOTIFY refused; watching with IDLE")
                .then_some(())
        },
    );
    wait_for(&writ, "an IDLE", Duration::from_secs(30), || {
        (faults.count("IDLE") >= 1).then_some(())
    });
    for n in 1..=2 {
        let m = message("nonotify", n);
        lmtp_deliver(&user.address, &m);
        let stored = sealed(&writ, &user, "INBOX", &m, Duration::from_secs(BOUND_SECS));
        assert!(keys.open(&stored).ends_with(&m));
    }
    assert_eq!(faults.faulted("NOTIFY"), faults.count("NOTIFY"));
    assert!(faults.faulted("NOTIFY") >= 1);
    let errors = writ.metric("writ_sweep_errors_total", &[("account", &user.name)]);
    assert_eq!(
        errors,
        0.0,
        "the sweep's errors; writ's log:\n{}",
        writ.log()
    );
}

/// A hostile provider on loopback for the NOTIFY watcher: it offers
/// NOTIFY, has no mailboxes, and answers `NOTIFY SET` with a flood of
/// STATUS events and then one STATUS response far past the watcher's
/// 64 KiB cap (a mailbox name of 200 KiB). Counts the NOTIFY commands.
struct HostileProvider {
    addr: SocketAddr,
    notifies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HostileProvider {
    const FLOOD: usize = 5000;

    fn start() -> HostileProvider {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let notifies = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = notifies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream);
                    let _ = out.write_all(b"* OK hostile provider ready\r\n");
                    let mut line = String::new();
                    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                        let mut words = line.split_whitespace();
                        let tag = words.next().unwrap_or("*").to_string();
                        let command = words.next().unwrap_or("").to_ascii_uppercase();
                        let mut answer = Vec::new();
                        match command.as_str() {
                            "CAPABILITY" => {
                                answer.extend_from_slice(b"* CAPABILITY IMAP4rev1 IDLE NOTIFY\r\n")
                            }
                            "NOTIFY" => {
                                counted.fetch_add(1, Ordering::SeqCst);
                                answer.extend_from_slice(format!("{tag} OK set\r\n").as_bytes());
                                for n in 0..Self::FLOOD {
                                    answer.extend_from_slice(
                                        format!("* STATUS INBOX (MESSAGES {n})\r\n").as_bytes(),
                                    );
                                }
                                answer.extend_from_slice(b"* STATUS \"");
                                answer.extend(std::iter::repeat_n(b'a', 200 * 1024));
                                answer.extend_from_slice(b"\" (MESSAGES 1)\r\n");
                            }
                            "LOGOUT" => answer.extend_from_slice(b"* BYE bye\r\n"),
                            _ => {}
                        }
                        if command != "NOTIFY" {
                            answer.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
                        }
                        if out.write_all(&answer).is_err() || command == "LOGOUT" {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        HostileProvider { addr, notifies }
    }

    fn notifies(&self) -> usize {
        self.notifies.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_provider_flooding_the_notify_watcher_past_its_cap_is_dropped_and_the_sweep_goes_on() {
    let hostile = HostileProvider::start();
    let user = User {
        name: "hostile".into(),
        address: "hostile@example.test".into(),
        password: "pw".into(),
    };
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let toml =
        provider_toml(hostile.addr) + &sweep_toml_polling(&user, &pw, 600, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let errors = || writ.metric("writ_sweep_errors_total", &[("account", &user.name)]);
    let rounds = || writ.metric("writ_sweep_rounds_total", &[("account", &user.name)]);
    // The flood is read (each event at most a wake-up); the response past
    // the cap ends the connection as an error, and the watcher comes back
    // after its pause (backoff_secs = 1), to be flooded again.
    wait_for(
        &writ,
        "the watcher back after the oversized response",
        Duration::from_secs(30),
        || (hostile.notifies() >= 2 && errors() >= 1.0).then_some(()),
    );
    assert!(
        writ.log().contains("sweep: NOTIFY watch failed"),
        "{}",
        writ.log()
    );
    // The account's rounds go on meanwhile (woken by the flood, at most
    // one round per wake-up coalesced), and writ serves its admin endpoint.
    wait_for(&writ, "rounds", Duration::from_secs(30), || {
        (rounds() >= 2.0).then_some(())
    });
    assert!(!writ.log().contains("panicked"), "{}", writ.log());
}

/// A mailbox another run holds (`writ mailbox seal` on the same directory,
/// or a second `writ serve`): the sweep leaves it to that run this round
/// and seals the account's other mailboxes; once it is free, it is sealed
/// too.
#[test]
fn a_mailbox_another_run_holds_is_left_to_it_while_the_others_are_sealed() {
    let p = provider();
    let user = p.new_user("sweeplocked");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let mut imap = p.imap(&user);
    imap.command("CREATE Other").expect_ok("CREATE Other");
    imap.logout();
    let inbox = message("held", 1);
    lmtp_deliver(&user.address, &inbox);
    let other = message("free", 2);
    p.imap_append(&user, "Other", &other);
    // This test's process holds INBOX's lock, as another run would.
    let held =
        writ::jobs::checkpoint::Lease::locked(&tmp.path().join("sweep"), &user.name, "INBOX")
            .expect("the lock");
    let toml = provider_toml(p.imap_addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    wait_for(&writ, "Other sealed", Duration::from_secs(30), || {
        all_sealed(&user, "Other", 1).then_some(())
    });
    wait_for(
        &writ,
        "INBOX left to the other run",
        Duration::from_secs(30),
        || {
            writ.log()
                .contains("sweep: another run holds the mailbox")
                .then_some(())
        },
    );
    let (stored, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, 1);
    assert!(
        epoch(&stored[&message_id(&inbox)][0].0).is_none(),
        "INBOX untouched"
    );
    drop(held);
    wait_for(
        &writ,
        "INBOX sealed once free",
        Duration::from_secs(30),
        || all_sealed(&user, "INBOX", 1).then_some(()),
    );
}

/// Gmail (the provider offers X-GM-EXT-1): its folders are labels, so
/// sweeping every folder would seal a message once per label and leave its
/// original in All Mail. Without `[sweep] mailboxes` the account is
/// refused, each round, saying what to set; nothing is sealed.
#[test]
fn a_gmail_account_is_not_swept_folder_by_folder() {
    use common::hostile::{HostileProvider, Lies};
    let p = provider();
    let user = p.new_user("sweepgmail");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let m = message("gmail", 1);
    lmtp_deliver(&user.address, &m);
    let gmail = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| {
            if r.starts_with(b"* CAPABILITY ") && r.ends_with(b"\r\n") {
                [&r[..r.len() - 2], b" X-GM-EXT-1\r\n"].concat()
            } else {
                r.to_vec()
            }
        }),
    );
    let toml = provider_toml(gmail.addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let errors = || writ.metric("writ_sweep_errors_total", &[("account", &user.name)]);
    wait_for(&writ, "a refused round", Duration::from_secs(30), || {
        (errors() >= 1.0).then_some(())
    });
    assert!(
        writ.log().contains("X-GM-EXT-1") && writ.log().contains("[Gmail]/All Mail"),
        "{}",
        writ.log()
    );
    let (stored, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, 1);
    assert!(epoch(&stored[&message_id(&m)][0].0).is_none(), "not sealed");
}

/// A mailbox the provider refuses to select (deleted between LIST and
/// SELECT, or not the account's to read) is left this round; the
/// account's other mailboxes are still looked at and sealed (the round
/// used to end at the first such mailbox, before any sealing).
#[test]
fn a_mailbox_that_cannot_be_selected_does_not_keep_the_others_unswept() {
    use common::hostile::{HostileProvider, Lies};
    let p = provider();
    let user = p.new_user("sweepnoselect");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let mut imap = p.imap(&user);
    imap.command("CREATE Broken").expect_ok("CREATE Broken");
    imap.command("CREATE Other").expect_ok("CREATE Other");
    imap.logout();
    let inbox = message("inbox", 1);
    lmtp_deliver(&user.address, &inbox);
    p.imap_append(&user, "Other", &message("other", 2));
    p.imap_append(&user, "Broken", &message("broken", 3));
    // Every SELECT or EXAMINE of Broken asks for a mailbox that is not
    // there: the provider answers NO.
    let refusing = HostileProvider::start(
        p.imap_addr(),
        Lies::new().command(|line| {
            let text = String::from_utf8_lossy(line);
            let upper = text.to_ascii_uppercase();
            if (upper.contains(" SELECT ") || upper.contains(" EXAMINE "))
                && text.contains("Broken")
            {
                text.replace("Broken", "Gone-Missing").into_bytes()
            } else {
                line.to_vec()
            }
        }),
    );
    let toml = provider_toml(refusing.addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    wait_for(
        &writ,
        "INBOX and Other sealed",
        Duration::from_secs(30),
        || (all_sealed(&user, "INBOX", 1) && all_sealed(&user, "Other", 1)).then_some(()),
    );
    wait_for(&writ, "Broken reported", Duration::from_secs(30), || {
        writ.log()
            .contains("sweep: mailbox not looked at this round")
            .then_some(())
    });
    // The account's rounds go on as usual (Broken counted as an error
    // each time, not backing the others off): rounds complete.
    let rounds = || writ.metric("writ_sweep_rounds_total", &[("account", &user.name)]);
    let errors = || writ.metric("writ_sweep_errors_total", &[("account", &user.name)]);
    wait_for(
        &writ,
        "two rounds complete",
        Duration::from_secs(30),
        || (rounds() >= 2.0 && errors() >= 2.0).then_some(()),
    );
    let (stored, n) = stored_by_id(&user, "Broken");
    assert_eq!(n, 1);
    assert!(
        stored.values().all(|v| epoch(&v[0].0).is_none()),
        "Broken is left as it is"
    );
}

/// Plaintext that reached the provider with writ's marker and sealed
/// Content-Type written on it, under an epoch that is not the keyring's,
/// is sealed by the sweep (it was taken for sealed and left as plaintext).
#[test]
fn a_forged_marker_of_an_unknown_epoch_does_not_hide_plaintext_from_the_sweep() {
    let p = provider();
    let user = p.new_user("sweepforged");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let forged = b"From: a@elsewhere.test\r\nSubject: forged\r\n\
        Message-ID: <forged@elsewhere.test>\r\nX-Writ: v=1; key=0123456789abcdef\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; \
        protocol=\"application/vnd.writ.sealed\"; boundary=b\r\n\r\n--b\r\n\
        Content-Type: text/plain\r\n\r\nplaintext under a forged marker\r\n--b--\r\n";
    lmtp_deliver(&user.address, forged);
    let toml = provider_toml(p.imap_addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let ours = wait_for(
        &writ,
        "the forged message sealed",
        Duration::from_secs(30),
        || {
            let stored = p.imap_fetch_all(&user, "INBOX");
            (stored.len() == 1 && epoch(&stored[0]).is_some_and(|e| e != "0123456789abcdef"))
                .then(|| stored[0].clone())
        },
    );
    let opened = keys.open(&ours);
    assert!(
        opened.ends_with(&forged[..]),
        "{}",
        String::from_utf8_lossy(&opened)
    );
}

#[test]
fn a_mailbox_gone_between_list_and_examine_is_no_error() {
    // The provider lists a mailbox, then answers EXAMINE `NO
    // [NONEXISTENT]` (another client deleted it, or is still making it):
    // skipped that round without counting an error, swept the next.
    let p = provider();
    let user = p.new_user("sweepgone");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), &user);
    let m = message("gone", 1);
    p.imap_append(&user, "INBOX", &m);
    let faults = FaultProxy::start(
        p.imap_addr(),
        Faults::new().answer(
            "EXAMINE",
            When::Nth(1),
            "NO [NONEXISTENT] Mailbox doesn't exist: INBOX",
        ),
    );
    let toml = provider_toml(faults.addr()) + &sweep_toml(&user, &pw, &dir_line(tmp.path()));
    let writ = serve_sweep(&keys, toml);
    let stored = sealed(&writ, &user, "INBOX", &m, Duration::from_secs(BOUND_SECS));
    assert!(keys.open(&stored).ends_with(&m));
    assert_eq!(faults.faulted("EXAMINE"), 1);
    assert_eq!(
        writ.metric("writ_sweep_errors_total", &[("account", &user.name)]),
        0.0,
        "the sweep's errors; writ's log:\n{}",
        writ.log()
    );
    assert!(
        writ.log()
            .contains("sweep: mailbox gone since it was listed")
    );
}
