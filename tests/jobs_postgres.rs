//! Mailbox jobs and the sweep on the PostgreSQL state backend, against a
//! real PostgreSQL (initdb in a temp dir) and the real provider (Dovecot):
//! checkpoints in the database, one lease per mailbox across gateways.
//!
//! - The lease itself, through the library: one holder among gateways
//!   asking at once; INBOX in any case is one lease; renewed by its
//!   heartbeat; a lease taken over after it expired makes the old
//!   holder's saves fail and its run stop (fencing).
//! - `writ mailbox seal` on gateway A, stalled by the provider with a
//!   batch in flight: gateway B is refused with one line naming A; A is
//!   killed (SIGKILL); once A's lease expired B finishes the job; the
//!   APPENDs A left are stored late and B's next run removes them. Every
//!   original is there once, sealed, byte-exact, flags and INTERNALDATE
//!   kept.
//! - Two gateways started at once on one mailbox: one works, the other is
//!   refused naming it.
//! - Two `writ serve` sweeping one account on one database: while one
//!   holds the mailbox the other leaves it; the holder is killed, the
//!   other takes over; then both sweep together. Every plaintext message
//!   delivered is sealed exactly once.
//! - `writ serve` started while its database is down (nothing listening on
//!   its port yet): a bad `[state]` still stops it, but a database that is
//!   unreachable does not: the relay delivers meanwhile, `/healthz` is ok,
//!   the sweep logs each failed attempt (without the password) and shows
//!   `writ_sweep_running 0`; once PostgreSQL starts on that port the sweep
//!   connects, migrates and seals the plaintext that arrived.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::imap::quote;
use common::mail::{Stored, short_message, stored_by_id, unique};
use common::postgres::{PASSWORD, Postgres, postgres};
use common::writ::{TestKeys, WRIT, Writ, WritConfig, free_port, serve_expecting_failure};
use common::{FaultProxy, Faults, User, When, provider};
use writ::config::{Backend, StateConfig};
use writ::jobs::checkpoint::{Checkpoint, CheckpointError, Store};
use writ::state::{Db, PgCheckpoints};

/// The lease the process tests configure, in seconds.
const LEASE_SECS: u64 = 3;

/// Longest wait for anything in these tests.
const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `check` every 20 ms until it gives `Some`; panics with `what` and
/// `context()` after [`PATIENCE`].
#[track_caller]
fn wait_for<T>(
    what: &str,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new database and a file holding its URL (with the password).
fn database(dir: &Path, prefix: &str) -> (String, PathBuf) {
    let pg = postgres();
    let db = pg.new_database(prefix);
    let url_file = dir.join(format!("{db}.url"));
    std::fs::write(&url_file, format!("{}\n", pg.url(&db))).unwrap();
    (db, url_file)
}

/// `[state]` of gateway `name` on the database in `url_file`.
fn state_toml(url_file: &Path, name: &str) -> String {
    format!(
        "[state]\nbackend = \"postgres\"\nurl_file = {}\ngateway = \"{name}\"\nlease_secs = {LEASE_SECS}\n",
        quote(&url_file.display().to_string())
    )
}

/// One gateway's view for `writ mailbox`: a config file naming the shared
/// keyring, the provider's IMAP at `imap` and the shared database.
struct Gateway {
    name: String,
    config: PathBuf,
    password_file: PathBuf,
}

impl Gateway {
    fn new(
        dir: &Path,
        name: &str,
        keys: &TestKeys,
        imap: std::net::SocketAddr,
        url_file: &Path,
        user: &User,
    ) -> Gateway {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[keys]\ndir = {keys}\n\n[provider.imap]\naddress = \"{imap}\"\nsecurity = \"plain\"\n\
                 timeout_secs = 20\n\n[jobs]\ndir = {jobs}\nbackoff_ms = 20\nretries = 3\n\n{state}",
                keys = quote(&keys.dir().display().to_string()),
                jobs = quote(&dir.join(format!("{name}-jobs")).display().to_string()),
                state = state_toml(url_file, name),
            ),
        )
        .unwrap();
        let password_file = dir.join(format!("{name}-{}.password", user.name));
        std::fs::write(&password_file, format!("{}\n", user.password)).unwrap();
        Gateway {
            name: name.to_string(),
            config,
            password_file,
        }
    }

    /// `writ mailbox seal --account USER --mailbox INBOX --batch 7` here.
    fn seal(&self, keys: &TestKeys, user: &User) -> Command {
        let mut c = Command::new(WRIT);
        c.env_remove("WRIT_PASSPHRASE_FILE")
            .env_remove("WRIT_PROVIDER_PASSWORD")
            .arg("--config")
            .arg(&self.config)
            .arg("--passphrase-file")
            .arg(keys.passphrase_file())
            .args([
                "mailbox",
                "seal",
                "--account",
                &user.name,
                "--password-file",
            ])
            .arg(&self.password_file)
            .args(["--mailbox", "INBOX", "--batch", "7"])
            .stdin(Stdio::null());
        c
    }

    fn spawn_seal(&self, keys: &TestKeys, user: &User) -> Child {
        self.seal(keys, user)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run_seal(&self, keys: &TestKeys, user: &User) -> Output {
        self.seal(keys, user).output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn message(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: s{n}@example.org\r\nTo: r@example.test\r\nSubject: {tag} {n}\r\n\
         Message-ID: <{tag}-{n}@example.org>\r\n\r\nbody {tag} {n} {}\r\n",
        "q".repeat(n * 17 % 600)
    )
    .into_bytes()
}

/// APPENDs `count` plaintext messages straight to Dovecot (writ is not
/// on this path), each with flags and an INTERNALDATE of its own.
fn fill(user: &User, tag: &str, range: std::ops::Range<usize>) -> BTreeMap<String, Vec<u8>> {
    let mut imap = provider().imap(user);
    let mut originals = BTreeMap::new();
    for n in range {
        let m = message(tag, n);
        imap.command_with_literal(
            &format!(
                "APPEND INBOX (\\Seen $Tag{}) \"{:02}-Feb-2026 0{}:00:00 +0000\"",
                n % 5,
                n % 28 + 1,
                n % 10
            ),
            &m,
            "",
        )
        .expect_ok("APPEND");
        originals.insert(format!("<{tag}-{n}@example.org>"), m);
    }
    imap.logout();
    originals
}

/// INBOX holds exactly `n` messages, all sealed.
fn all_sealed(user: &User, n: usize) -> bool {
    let (by_id, count) = stored_by_id(user, "INBOX");
    count == n
        && by_id
            .values()
            .flatten()
            .all(|(m, _, _)| writ::envelope::detect(m).is_some())
}

/// Every original once, sealed, opening byte-exact, with the flags and
/// INTERNALDATE it had in `before`.
#[track_caller]
fn assert_exactly_once(
    user: &User,
    keys: &TestKeys,
    originals: &BTreeMap<String, Vec<u8>>,
    before: &BTreeMap<String, Vec<Stored>>,
) {
    let (after, n) = stored_by_id(user, "INBOX");
    assert_eq!(n, originals.len(), "one message per original");
    for (id, original) in originals {
        let copies = after.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(copies.len(), 1, "{id} exactly once");
        let (m, flags, date) = &copies[0];
        assert!(writ::envelope::detect(m).is_some(), "{id} sealed");
        assert_eq!(&keys.open(m), original, "{id} opens byte-exact");
        let (_, flags_before, date_before) = &before[id][0];
        assert_eq!(
            (flags, date),
            (flags_before, date_before),
            "{id} flags and date"
        );
    }
}

/// Who holds INBOX of `user` now (an unexpired lease), if anyone.
fn lease_holder(db: &str, user: &User) -> Option<String> {
    let out = postgres().psql(
        db,
        &format!(
            "SELECT gateway FROM writ_mailbox_lease WHERE account = '{}' AND mailbox = 'INBOX' \
             AND expires > now()",
            user.name
        ),
    );
    let name = out.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A field of the seal checkpoint of INBOX of `user`, as JSON text.
fn checkpoint_field(db: &str, user: &User, field: &str) -> String {
    postgres()
        .psql(
            db,
            &format!(
                "SELECT checkpoint::jsonb -> '{field}' FROM writ_job_checkpoint \
                 WHERE account = '{}' AND mailbox = 'INBOX' AND job = 'seal'",
                user.name
            ),
        )
        .trim()
        .to_string()
}

#[test]
fn a_gateway_killed_mid_job_is_taken_over_once_its_lease_expires() {
    let p = provider();
    let user = p.new_user("pgtakeover");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let (db, url_file) = database(tmp.path(), "takeover");
    let originals = fill(&user, "takeover", 0..300);
    let (before, _) = stored_by_id(&user, "INBOX");

    // Gateway A's provider stalls on its 50th APPEND (the 8th batch of 7):
    // that batch is recorded and in flight.
    let faults = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(50)));
    let a = Gateway::new(tmp.path(), "gw-a", &keys, faults.addr(), &url_file, &user);
    let b = Gateway::new(tmp.path(), "gw-b", &keys, p.imap_addr(), &url_file, &user);
    let mut a_job = a.spawn_seal(&keys, &user);
    assert!(
        faults.wait_held(PATIENCE),
        "gateway A never reached its 50th APPEND"
    );
    assert_eq!(lease_holder(&db, &user).as_deref(), Some("gw-a"));
    assert_ne!(
        checkpoint_field(&db, &user, "in_flight"),
        "[]",
        "a batch is in flight"
    );

    // While A lives (its heartbeat renews the lease), B is refused.
    let refused = b.run_seal(&keys, &user);
    assert!(!refused.status.success(), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("being worked on by gateway gw-a") && err.contains("lease runs until"),
        "{}",
        text(&refused)
    );
    assert!(!all_sealed(&user, 300), "A did not finish");
    assert_eq!(
        lease_holder(&db, &user).as_deref(),
        Some("gw-a"),
        "B took nothing"
    );

    // A dies; its lease runs out.
    a_job.kill().unwrap();
    a_job.wait().unwrap();
    wait_for("A's lease to expire", String::new, || {
        lease_holder(&db, &user).is_none().then_some(())
    });
    let done = b.run_seal(&keys, &user);
    assert!(done.status.success(), "{}", text(&done));
    assert!(all_sealed(&user, 300), "B finished the job");

    // The provider resumes and stores A's held APPENDs: copies of
    // originals B has sealed meanwhile. B's next run removes them (the
    // checkpoint kept their tokens as unanswered).
    let answers = faults.release(PATIENCE);
    assert!(
        !answers.is_empty() && answers.iter().all(|a| a.contains(" OK [APPENDUID ")),
        "the held APPENDs were stored late: {answers:?}"
    );
    let (_, with_late) = stored_by_id(&user, "INBOX");
    assert!(with_late > 300, "late copies are there: {with_late}");
    let again = b.run_seal(&keys, &user);
    assert!(again.status.success(), "{}", text(&again));
    assert_exactly_once(&user, &keys, &originals, &before);
    assert_eq!(checkpoint_field(&db, &user, "in_flight"), "[]");
    assert_eq!(checkpoint_field(&db, &user, "unanswered"), "[]");
    assert_eq!(checkpoint_field(&db, &user, "moved"), "300");
    assert_eq!(lease_holder(&db, &user), None, "B gave its lease back");
    // Nothing of the job was written to the gateways' [jobs] dir.
    assert!(!tmp.path().join("gw-a-jobs").exists() && !tmp.path().join("gw-b-jobs").exists());
    let out =
        String::from_utf8_lossy(&done.stdout).into_owned() + &String::from_utf8_lossy(&done.stderr);
    assert!(!out.contains(PASSWORD), "{out}");
}

#[test]
fn two_gateways_started_at_once_never_both_work_on_one_mailbox() {
    let p = provider();
    let user = p.new_user("pgrace");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let (db, url_file) = database(tmp.path(), "race");
    let originals = fill(&user, "race", 0..40);
    let (before, _) = stored_by_id(&user, "INBOX");
    // The first APPEND through the proxy stalls: whoever got the mailbox
    // keeps it while the other tries.
    let faults = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let gateways = [
        Gateway::new(tmp.path(), "gw-1", &keys, faults.addr(), &url_file, &user),
        Gateway::new(tmp.path(), "gw-2", &keys, faults.addr(), &url_file, &user),
    ];
    let mut jobs: Vec<Child> = gateways
        .iter()
        .map(|g| g.spawn_seal(&keys, &user))
        .collect();
    assert!(faults.wait_held(PATIENCE), "no gateway reached an APPEND");
    let (loser, status) = wait_for("one gateway to give up", String::new, || {
        jobs.iter_mut()
            .enumerate()
            .find_map(|(i, j)| j.try_wait().unwrap().map(|s| (i, s)))
    });
    let winner = 1 - loser;
    let out = jobs.remove(loser).wait_with_output().unwrap();
    assert!(!status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "being worked on by gateway {}",
            gateways[winner].name
        )),
        "{}",
        text(&out)
    );
    assert!(
        jobs[0].try_wait().unwrap().is_none(),
        "the winner is still at work"
    );
    assert_eq!(
        lease_holder(&db, &user).as_deref(),
        Some(gateways[winner].name.as_str())
    );
    assert_eq!(
        faults.count("SELECT"),
        1,
        "only the gateway holding the lease opened the mailbox"
    );

    // The winner dies with its batch in flight; the other finishes.
    jobs[0].kill().unwrap();
    jobs[0].wait().unwrap();
    faults.release(PATIENCE);
    wait_for("the lease to expire", String::new, || {
        lease_holder(&db, &user).is_none().then_some(())
    });
    let direct = Gateway::new(
        tmp.path(),
        &gateways[loser].name,
        &keys,
        p.imap_addr(),
        &url_file,
        &user,
    );
    let done = direct.run_seal(&keys, &user);
    assert!(done.status.success(), "{}", text(&done));
    assert_exactly_once(&user, &keys, &originals, &before);
}

/// The library's view: two gateways' stores on one database.
fn store_config(url_file: &Path, gateway: &str) -> StateConfig {
    StateConfig {
        backend: Backend::Postgres,
        gateway: Some(gateway.into()),
        url_file: Some(url_file.to_path_buf()),
        lease_secs: 2,
        ..StateConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_holder_renewed_by_its_heartbeat_and_fenced_once_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, url_file) = database(tmp.path(), "lease");
    let mut stores = Vec::new();
    for n in 0..6 {
        let pool = Db::connect(&store_config(&url_file, &format!("gw-{n}")))
            .await
            .unwrap();
        stores.push(std::sync::Arc::new(PgCheckpoints::new(pool, 2)));
    }
    // Six gateways ask at once, INBOX spelled two ways: one gets it.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
    let mut asking = tokio::task::JoinSet::new();
    for (n, s) in stores.iter().enumerate() {
        let (s, barrier) = (s.clone(), barrier.clone());
        asking.spawn(async move {
            barrier.wait().await;
            let mailbox = if n % 2 == 0 { "INBOX" } else { "inbox" };
            (n, s.lease("alice", mailbox).await)
        });
    }
    let mut held = Vec::new();
    let mut refused = Vec::new();
    while let Some(r) = asking.join_next().await {
        match r.unwrap() {
            (n, Ok(lease)) => held.push((n, lease)),
            (_, Err(CheckpointError::Leased { gateway, until, .. })) => {
                refused.push((gateway, until))
            }
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(held.len(), 1, "exactly one holder");
    let (a, lease_a) = held.pop().unwrap();
    assert_eq!(refused.len(), 5);
    assert!(
        refused
            .iter()
            .all(|(g, u)| *g == format!("gw-{a}") && u.ends_with('Z')),
        "{refused:?}"
    );
    let pg = postgres();

    // Saves and loads go through the database.
    let store_a = &stores[a];
    let mut cp = store_a.load("alice", "INBOX", "seal").await.unwrap();
    cp.uidvalidity = 42;
    store_a.save(&mut cp, &lease_a).await.unwrap();
    let other = (a + 1) % stores.len();
    assert_eq!(
        stores[other]
            .load("alice", "INBOX", "seal")
            .await
            .unwrap()
            .uidvalidity,
        42
    );

    // The heartbeat moves the expiry on.
    let db_name = db.clone();
    let expiry = move || {
        pg.psql(&db_name, "SELECT expires FROM writ_mailbox_lease")
            .trim()
            .to_string()
    };
    let first = expiry();
    let renewed = tokio::task::spawn_blocking(move || {
        wait_for("a renewal", String::new, || {
            (expiry() != first).then_some(())
        })
    });
    renewed.await.unwrap();
    lease_a.check().unwrap();

    // A stalls past its expiry (made so here); another gateway takes over.
    pg.psql(
        &db,
        "UPDATE writ_mailbox_lease SET expires = now() - interval '1 second'",
    );
    let lease_b = stores[other].lease("alice", "INBOX").await.unwrap();
    let mut stale = Checkpoint::fresh("alice", "INBOX", "seal");
    stale.uidvalidity = 7;
    let e = store_a.save(&mut stale, &lease_a).await.unwrap_err();
    assert!(matches!(e, CheckpointError::LeaseLost { .. }), "{e}");
    assert_eq!(
        stores[other]
            .load("alice", "INBOX", "seal")
            .await
            .unwrap()
            .uidvalidity,
        42
    );
    // A's heartbeat finds out, and A's run may change nothing more.
    let deadline = Instant::now() + PATIENCE;
    while lease_a.check().is_ok() {
        assert!(
            Instant::now() < deadline,
            "A never learnt its lease was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Released, the mailbox is free at once.
    stores[other].release(lease_b).await;
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_mailbox_lease")
            .trim(),
        "0"
    );
    let again = store_a.lease("alice", "INBOX").await.unwrap();
    // A row an older writ keyed by INBOX as written (`--mailbox inbox`)
    // is INBOX's: a batch it left in flight is resolved, not sealed again.
    let mut old = Checkpoint::fresh("alice", "inbox", "seal:old");
    old.uidvalidity = 11;
    store_a.save(&mut old, &again).await.unwrap();
    let found = store_a.load("alice", "INBOX", "seal:old").await.unwrap();
    assert_eq!((found.mailbox.as_str(), found.uidvalidity), ("INBOX", 11));
    store_a.release(again).await;
    drop(lease_a);
}

/// `writ serve` running only the sweep of `user` through `imap`, as
/// gateway `name` on the database in `url_file`.
fn serve_sweep(
    keys: &TestKeys,
    imap: std::net::SocketAddr,
    user: &User,
    password_file: &Path,
    url_file: &Path,
    name: &str,
) -> Writ {
    let mut cfg = WritConfig::relay(provider().smtp_addr());
    cfg.listeners.clear();
    cfg.provider = None;
    cfg.unlock = true;
    cfg.extra_toml = format!(
        "[provider.imap]\naddress = \"{imap}\"\nsecurity = \"plain\"\ntimeout_secs = 5\n\n\
         [jobs]\nbatch = 3\nbackoff_ms = 20\n\n\
         [sweep]\nenabled = true\naccounts = [{account}]\npassword_file = {pw}\n\
         poll_secs = 1\nbound_secs = 20\nbackoff_secs = 1\nmax_backoff_secs = 2\n\n{state}",
        account = quote(&user.name),
        pw = quote(&password_file.display().to_string()),
        state = state_toml(url_file, name),
    );
    Writ::start(&cfg.keys(keys))
}

#[test]
fn two_gateways_sweeping_one_account_seal_every_message_exactly_once() {
    let p = provider();
    let user = p.new_user("pgsweep");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let (db, url_file) = database(tmp.path(), "sweep");
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, format!("{}\n", user.password)).unwrap();
    let mut originals = fill(&user, "sweep", 0..12);

    // Gateway A's provider stalls on its first APPEND: A holds the mailbox
    // with a batch in flight.
    let faults = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(1)));
    let mut a = serve_sweep(&keys, faults.addr(), &user, &pw, &url_file, "gw-a");
    assert!(faults.wait_held(PATIENCE), "A never APPENDed\n{}", a.log());
    assert_eq!(lease_holder(&db, &user).as_deref(), Some("gw-a"));
    let b = serve_sweep(&keys, p.imap_addr(), &user, &pw, &url_file, "gw-b");
    wait_for(
        "B to leave the mailbox to A",
        || b.log(),
        || {
            b.log()
                .contains("another gateway holds the mailbox")
                .then_some(())
        },
    );
    assert_eq!(
        stored_by_id(&user, "INBOX").1,
        12,
        "nothing sealed while A holds it"
    );
    assert!(!all_sealed(&user, 12));

    // A dies; B takes the mailbox over once A's lease expired.
    a.kill();
    wait_for(
        "B to seal everything",
        || b.log(),
        || all_sealed(&user, 12).then_some(()),
    );
    // A's held APPENDs are stored late; B's sweep removes the duplicates.
    let answers = faults.release(PATIENCE);
    assert!(
        !answers.is_empty() && answers.iter().all(|a| a.contains(" OK [APPENDUID ")),
        "{answers:?}"
    );
    wait_for(
        "the late copies removed",
        || b.log(),
        || all_sealed(&user, 12).then_some(()),
    );

    // Both gateways sweep together while more mail arrives past writ.
    let a = serve_sweep(&keys, p.imap_addr(), &user, &pw, &url_file, "gw-a");
    let mut before = stored_by_id(&user, "INBOX").0;
    for n in 12..42 {
        let more = fill(&user, "sweep", n..n + 1);
        originals.extend(more);
    }
    let (fresh, _) = stored_by_id(&user, "INBOX");
    for (id, s) in fresh {
        before.entry(id).or_insert(s);
    }
    wait_for(
        "every message sealed",
        || format!("--- A\n{}\n--- B\n{}", a.log(), b.log()),
        || all_sealed(&user, 42).then_some(()),
    );
    assert_exactly_once(&user, &keys, &originals, &before);
    let moved: u64 = checkpoint_field(&db, &user, "moved").parse().unwrap();
    assert_eq!(moved, 42, "each message counted once");
    drop((a, b));
}

#[test]
fn a_database_down_at_start_delays_only_the_sweep_which_connects_once_it_is_up() {
    let p = provider();
    let user = p.new_user("pgdown");
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, format!("{}\n", user.password)).unwrap();
    // The database's port: nothing listens there until the server below
    // starts.
    let port = free_port();
    let url_file = tmp.path().join("db.url");
    std::fs::write(
        &url_file,
        format!("postgresql://writ:{PASSWORD}@127.0.0.1:{port}/postgres\n"),
    )
    .unwrap();
    let config = |url_file: &Path| {
        let mut cfg = WritConfig::relay(p.smtp_addr());
        cfg.unlock = true;
        cfg.extra_toml = format!(
            "[provider.imap]\naddress = \"{imap}\"\nsecurity = \"plain\"\ntimeout_secs = 5\n\n\
             [jobs]\nbatch = 3\nbackoff_ms = 20\n\n\
             [sweep]\nenabled = true\naccounts = [{account}]\npassword_file = {pw}\n\
             poll_secs = 1\nbound_secs = 20\nbackoff_secs = 1\nmax_backoff_secs = 2\n\n{state}",
            imap = p.imap_addr(),
            account = quote(&user.name),
            pw = quote(&pw.display().to_string()),
            state = state_toml(url_file, "gw-down"),
        );
        cfg.keys(&keys)
    };

    // A bad [state] (its URL file missing) still stops start-up.
    let missing = tmp.path().join("missing.url");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(&missing).render(&[free_port()], None, &keys.dir()),
    )
    .unwrap();
    let passphrase = keys.passphrase_file().display().to_string();
    let out = serve_expecting_failure(&bad, &["--passphrase-file", &passphrase]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot read the PostgreSQL URL from") && err.contains("missing.url"),
        "{err}"
    );

    // The database down: writ serve starts all the same.
    let writ = Writ::start(&config(&url_file));
    let context = || writ.log();
    wait_for("a failed attempt logged", context, || {
        writ.log()
            .contains("sweep: cannot reach its checkpoint store")
            .then_some(())
    });
    let log = writ.log();
    assert!(
        log.contains(&format!(
            "127.0.0.1:{port}/postgres as writ: error connecting to server: "
        )),
        "the database and why: {log}"
    );
    assert!(!log.contains(PASSWORD), "the password is logged:\n{log}");
    assert!(
        writ.metrics().lines().any(|l| l == "writ_sweep_running 0"),
        "{}",
        writ.metrics()
    );
    let (status, body) = writ.healthz();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The relay delivers meanwhile (sealed, to the protected domain).
    let marker = unique("pgdown-relay");
    let relayed = short_message(&user.address, &marker);
    let reply = common::smtp::send(
        writ.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &relayed,
    )
    .unwrap_or_else(|r| panic!("relay refused: {r:?}\n{}", writ.log()));
    assert_eq!(reply.code, 250, "{reply:?}");
    let relayed_id = common::mail::message_id(&relayed);
    wait_for("the relayed message delivered", context, || {
        stored_by_id(&user, "INBOX")
            .0
            .contains_key(&relayed_id)
            .then_some(())
    });
    // Plaintext past writ: not sealed while the sweep has no database.
    let originals = fill(&user, "pgdown", 0..3);
    let (stored, n) = stored_by_id(&user, "INBOX");
    assert_eq!(n, 4);
    for id in originals.keys() {
        assert!(writ::envelope::detect(&stored[id][0].0).is_none(), "{id}");
    }

    // The database comes up on that port: the sweep connects, migrates
    // and seals.
    let pg = Postgres::start_on(port).unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    wait_for("the plaintext sealed", context, || {
        all_sealed(&user, 4).then_some(())
    });
    let (stored, _) = stored_by_id(&user, "INBOX");
    for (id, original) in &originals {
        assert_eq!(stored[id].len(), 1, "{id} once");
        assert_eq!(&keys.open(&stored[id][0].0), original, "{id} opens");
    }
    assert!(
        writ.metrics().lines().any(|l| l == "writ_sweep_running 1"),
        "{}",
        writ.metrics()
    );
    assert!(writ.log().contains("sweep: checkpoint store reached"));
    assert!(!writ.log().contains(PASSWORD));
    let migrated = pg.psql("postgres", "SELECT count(*) FROM writ_job_checkpoint");
    assert_ne!(migrated.trim(), "0", "checkpoints in the database");
    drop(writ);
    drop(pg);
}
