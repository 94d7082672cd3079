//! Several gateways behind a load balancer (issue 13 item 3): two `writ
//! serve` processes with one keyring whose epochs are wrapped by a key on
//! one shared PKCS#11 token (SoftHSM2, unlocked with its PIN), on loopback behind a real HAProxy
//! (TCP mode, PROXY protocol v2, health checks, redispatch), relaying to
//! and proxying the one local provider.
//!
//! Under a steady SMTP load from several senders and with IMAP sessions
//! open through the balancer, one gateway is killed (SIGKILL, as a lost
//! machine). What must hold:
//!
//! - every message a sender got a 250 for is at the provider exactly once,
//!   sealed, and opens to what was sent; a message whose sender got no
//!   250 (its session was on the killed gateway) is there at most once;
//! - the senders go on through the other gateway without a change on
//!   their side (HAProxy takes the dead one out);
//! - IMAP clients whose session was on the killed gateway reconnect
//!   through the balancer and continue: sealed mail opens, and every
//!   client sees the same mailbox;
//! - the gateways keep one audit chain in a real PostgreSQL (`[state]
//!   backend = "postgres"`): a key rotation made on the first gateway
//!   before the kill and one made on the second after it are both in it,
//!   each naming its gateway, and the chain verifies; mail sealed to each
//!   epoch opens through either gateway after its SIGHUP;
//! - a mailbox job (`writ mailbox seal`) running on the killed gateway's
//!   machine, with a batch in flight, is refused on the other gateway
//!   while its lease lives, and finished there once the lease expired:
//!   every original once, sealed, opening to its bytes.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::imap::Imap;
use common::mail::{DELIVERY_TIMEOUT, contains, short_message, unique, wait_until};
use common::postgres::postgres;
use common::provider::{Provider, User, provider};
use common::smtp::Smtp;
use common::tls::{TestTls, test_tls};
use common::writ::{ListenerSpec, TestKeys, WRIT, Writ, WritConfig, free_port};
use common::{FaultProxy, Faults, When};

/// Senders sending one message per session, in parallel.
const SENDERS: usize = 3;
/// IMAP clients kept open through the balancer.
const READERS: usize = 4;
/// Messages acknowledged before the kill, and after it.
const ACKED_BEFORE: usize = 12;
const ACKED_AFTER: usize = 12;

/// Mailbox leases last this long here (seconds): a dead gateway's job is
/// taken over that soon.
const LEASE_SECS: u64 = 3;

/// The `[state]` table of gateway `name`: the shared PostgreSQL database
/// whose URL (with its password) is in `url_file`.
fn state_toml(url_file: &std::path::Path, name: &str) -> String {
    format!(
        "[state]\nbackend = \"postgres\"\nurl_file = {:?}\ngateway = \"{name}\"\n\
         lease_secs = {LEASE_SECS}\n",
        url_file.display().to_string()
    )
}

/// `writ <args>` as the administrator of gateway `name` runs it, with
/// the shared keyring, the shared state and `extra` tables; not started.
fn admin_command(
    keys: &TestKeys,
    url_file: &std::path::Path,
    name: &str,
    extra: &str,
    args: &[&str],
) -> (std::process::Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("writ.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ndir = {:?}\n\n{}\n{extra}",
            keys.dir().display().to_string(),
            state_toml(url_file, name)
        ),
    )
    .unwrap();
    let mut c = std::process::Command::new(WRIT);
    c.env_remove("WRIT_PASSPHRASE_FILE")
        .env_remove("WRIT_PIN_FILE")
        .env_remove("WRIT_PROVIDER_PASSWORD")
        .envs(keys.unlock_env())
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(keys.unlock_args())
        .args(args)
        .stdin(std::process::Stdio::null());
    (c, dir)
}

/// `writ <args>` as the administrator of gateway `name` runs it, with
/// the shared keyring and the shared state; its standard output.
#[track_caller]
fn admin(keys: &TestKeys, url_file: &std::path::Path, name: &str, args: &[&str]) -> String {
    let (mut c, _dir) = admin_command(keys, url_file, name, "", args);
    let out = c.output().expect("run writ");
    assert!(
        out.status.success(),
        "writ {args:?} on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `writ keys rotate` on gateway `name`, then SIGHUP to `gateways`, each
/// waited for.
fn rotate(keys: &TestKeys, url_file: &std::path::Path, name: &str, gateways: &[&Writ]) {
    admin(keys, url_file, name, &["keys", "rotate"]);
    for g in gateways {
        let before = g.log().matches("SIGHUP: keyring reloaded").count();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &g.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
        wait_until("the keyring reloaded", || {
            g.log().matches("SIGHUP: keyring reloaded").count() > before
        });
    }
}

/// One gateway: a relay listener and an IMAP listener, both taking PROXY
/// headers from the balancer (127.0.0.1), with the shared keyring and
/// the shared state.
fn gateway(p: &Provider, keys: &TestKeys, tls: &TestTls, state: &str) -> (Writ, SocketAddr) {
    let mut cfg = WritConfig::relay(p.smtp_addr()).keys(keys);
    cfg.listeners = vec![ListenerSpec {
        kind: "relay".into(),
        port: None,
        allowed_networks: vec!["127.0.0.1".into()],
        proxy_protocol_from: vec!["127.0.0.1".into()],
    }];
    let imap = free_port();
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {cert:?}\ntls_key = {key:?}\n\n\
         [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap}\"\n\
         proxy_protocol_from = [\"127.0.0.1\"]\n\n\
         [provider.imap]\naddress = \"{provider}\"\nsecurity = \"plain\"\ntimeout_secs = 10\n\n\
         {state}",
        cert = tls.cert.display().to_string(),
        key = tls.key.display().to_string(),
        provider = p.imap_addr(),
    );
    // Unlocked with the token's PIN (the keyring's epochs are wrapped by
    // a key that never leaves the token both gateways share).
    let unlock = keys.unlock_args();
    cfg.serve_env = keys.unlock_env();
    cfg.serve_env
        .push(("WRIT_PIN_FILE".into(), unlock[1].clone()));
    let writ = Writ::start(&cfg);
    (writ, SocketAddr::from(([127, 0, 0, 1], imap)))
}

/// One message in one SMTP session through the balancer: `Some(true)` for
/// a 250 to the final dot, `Some(false)` for any other reply or a broken
/// session.
fn send_once(relay: SocketAddr, to: &str, marker: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = Smtp::connect(relay)?;
        if !s.greeting.is_positive() {
            return Ok(false);
        }
        for line in [
            "EHLO sender.test".to_string(),
            "MAIL FROM:<sender@elsewhere.test>".to_string(),
            format!("RCPT TO:<{to}>"),
            "DATA".to_string(),
        ] {
            if !s.command(&line)?.is_positive() {
                return Ok(false);
            }
        }
        let done = s.send_data(&short_message(to, marker))?;
        let acked = done.code == 250;
        if acked {
            s.quit();
        }
        Ok(acked)
    };
    attempt().unwrap_or(false)
}

/// An IMAP client through the balancer, logged in, INBOX selected.
fn reader(imap: SocketAddr, user: &User) -> std::io::Result<Imap> {
    let mut c = Imap::connect(imap)?;
    let r = c.try_command(&format!(
        "LOGIN {} {}",
        common::imap::quote(&user.name),
        common::imap::quote(&user.password)
    ))?;
    if !r.is_ok() {
        return Err(std::io::Error::other(format!("LOGIN: {r:?}")));
    }
    let r = c.try_command("SELECT INBOX")?;
    if !r.is_ok() {
        return Err(std::io::Error::other(format!("SELECT: {r:?}")));
    }
    Ok(c)
}

/// The opened text of message 1 as this client sees it.
fn first_body(c: &mut Imap) -> std::io::Result<Vec<u8>> {
    let r = c.try_command("FETCH 1 BODY.PEEK[TEXT]")?;
    let mut bodies = r.fetch_literals("BODY[TEXT]");
    if !r.is_ok() || bodies.len() != 1 {
        return Err(std::io::Error::other(format!("FETCH: {r:?}")));
    }
    Ok(bodies.remove(0).1)
}

#[derive(Default)]
struct Sent {
    acked: Vec<(String, Instant)>,
    failed: Vec<String>,
}

#[test]
fn a_gateway_killed_under_load_loses_no_acknowledged_message_and_readers_reconnect() {
    let p = provider();
    let user = p.new_user("scale");
    // One keyring on one (SoftHSM2) token, shared by both gateways.
    let keys = TestKeys::on_token();
    let tls = test_tls("writ scale-out test CA");
    // The shared state: the keyring's audit log moved into PostgreSQL.
    let pg = postgres();
    let db = pg.new_database("scale");
    let state_dir = tempfile::tempdir().unwrap();
    let url_file = state_dir.path().join("db-url");
    std::fs::write(&url_file, format!("{}\n", pg.url(&db))).unwrap();
    admin(&keys, &url_file, "gw-1", &["audit", "import"]);
    let (mut first, first_imap) = gateway(p, &keys, &tls, &state_toml(&url_file, "gw-1"));
    let (second, second_imap) = gateway(p, &keys, &tls, &state_toml(&url_file, "gw-2"));
    // A rotation on the first gateway, both reloaded: mail from now on is
    // sealed to the second epoch.
    rotate(&keys, &url_file, "gw-1", &[&first, &second]);
    let balancer = Haproxy::start_balanced(&[
        (
            "smtp",
            vec![first.relay_addr(), second.relay_addr()],
            "send-proxy-v2",
        ),
        ("imap", vec![first_imap, second_imap], "send-proxy-v2"),
    ]);
    let (relay, imap) = (balancer.frontend("smtp"), balancer.frontend("imap"));

    // A first message, so readers have sealed mail to open.
    let first_marker = unique("scale-first");
    assert!(send_once(relay, &user.address, &first_marker));
    p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    // A mailbox job on the first gateway's machine, which the provider
    // stalls with a batch in flight; the other gateway is refused while
    // its lease lives.
    let job = LostJob::start(p, &keys, &url_file);
    let mut readers: Vec<Imap> = (0..READERS)
        .map(|_| reader(imap, &user).expect("reader through the balancer"))
        .collect();
    for r in &mut readers {
        let body = first_body(r).expect("FETCH through the balancer");
        assert!(contains(&body, first_marker.as_bytes()), "opened");
    }

    // Steady load.
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (sent, stop, to) = (Arc::clone(&sent), Arc::clone(&stop), user.address.clone());
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let marker = unique(&format!("scale-{i}-{n}"));
                    n += 1;
                    let ok = send_once(relay, &to, &marker);
                    let mut s = sent.lock().unwrap();
                    if ok {
                        s.acked.push((marker, Instant::now()));
                    } else {
                        s.failed.push(marker);
                    }
                }
            })
        })
        .collect();
    let sealed = |w: &Writ| w.metric("writ_messages_total", &[("outcome", "sealed")]);
    wait_until(
        "messages acknowledged before the kill, by both gateways",
        || sent.lock().unwrap().acked.len() >= ACKED_BEFORE && sealed(&first) >= 3.0,
    );
    let second_before = sealed(&second);
    assert!(second_before >= 1.0, "the balancer used both gateways");
    first.kill();
    let job = job.lose();
    // The administrator rotates on the surviving gateway: what is sent
    // from then on is sealed to the third epoch.
    rotate(&keys, &url_file, "gw-2", &[&second]);
    let killed_at = Instant::now();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while sent
        .lock()
        .unwrap()
        .acked
        .iter()
        .filter(|(_, at)| *at > killed_at)
        .count()
        < ACKED_AFTER
    {
        assert!(
            Instant::now() < deadline,
            "no messages acknowledged after the kill:\n{}",
            second.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert!(
        sealed(&second) >= second_before + ACKED_AFTER as f64,
        "the surviving gateway took the load"
    );
    eprintln!(
        "{} acknowledged, {} not (sessions cut by the kill)",
        sent.acked.len(),
        sent.failed.len()
    );

    // Every acknowledged message once, sealed; the others at most once.
    let acked: Vec<String> = std::iter::once(first_marker.clone())
        .chain(sent.acked.iter().map(|(m, _)| m.clone()))
        .collect();
    let stored = p.wait_for_messages(&user, "INBOX", acked.len(), DELIVERY_TIMEOUT);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in &stored {
        let opened = keys.open(m);
        let hits: Vec<&String> = acked
            .iter()
            .chain(&sent.failed)
            .filter(|k| contains(&opened, k.as_bytes()))
            .collect();
        assert_eq!(hits.len(), 1, "a stored message carries one marker");
        *seen.entry(hits[0].clone()).or_default() += 1;
    }
    for m in &acked {
        assert_eq!(seen.get(m), Some(&1), "{m}: acknowledged, stored once");
    }
    for m in &sent.failed {
        assert!(seen.get(m).copied().unwrap_or(0) <= 1, "{m}: at most once");
    }

    // Readers on the killed gateway lost their session; through the
    // balancer they reconnect and continue. Each ends with the same view.
    let mut reconnected = 0;
    for r in &mut readers {
        if r.try_command("NOOP").map(|n| n.is_ok()).unwrap_or(false) {
            continue;
        }
        reconnected += 1;
        *r = reader(imap, &user).expect("reconnect through the balancer");
    }
    assert!(
        reconnected > 0 && reconnected < READERS,
        "round robin put readers on both gateways; {reconnected} of {READERS} reconnected"
    );
    for r in &mut readers {
        let body = first_body(r).expect("FETCH after the kill");
        assert!(contains(&body, first_marker.as_bytes()));
        let exists = r
            .try_command("SELECT INBOX")
            .expect("SELECT")
            .exists()
            .expect("EXISTS");
        assert_eq!(
            exists as usize,
            stored.len(),
            "every reader sees the mailbox"
        );
    }

    // One audit chain for both gateways, verified from the database.
    let verified = admin(&keys, &url_file, "gw-2", &["audit", "verify"]);
    assert!(verified.contains("chain and signatures OK"), "{verified}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&admin(
        &keys,
        &url_file,
        "gw-2",
        &["audit", "show", "--json"],
    ))
    .unwrap();
    let rotations: Vec<&str> = records
        .iter()
        .filter(|r| r["action"] == "keys.rotate")
        .map(|r| r["gateway"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(rotations, ["gw-1", "gw-2"], "{records:?}");
    let epochs: std::collections::BTreeSet<String> = stored
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m);
            let at = text.find("X-Writ: v=1; key=")? + "X-Writ: v=1; key=".len();
            Some(
                text[at..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect(),
            )
        })
        .collect();
    assert!(
        epochs.len() >= 2,
        "mail sealed to the rotated epochs: {epochs:?}"
    );
    // The job lost with the first gateway is finished on the second once
    // its lease expired.
    job.finish_on_second(p, &keys, &url_file, pg, &db);
    drop(second);
}

/// Plaintext originals of the job's mailbox.
const JOB_MESSAGES: usize = 60;

/// A `writ mailbox seal` run as gateway gw-1's administrator, through a
/// provider that stalls on its 15th APPEND (the third batch of 7).
struct LostJob {
    owner: User,
    originals: BTreeMap<String, Vec<u8>>,
    stall: FaultProxy,
    password_file: tempfile::NamedTempFile,
    child: Option<(std::process::Child, tempfile::TempDir)>,
}

/// `[provider.imap]` at `imap` (plain, loopback) and `[jobs]` for a job.
fn job_toml(imap: SocketAddr) -> String {
    format!(
        "[provider.imap]\naddress = \"{imap}\"\nsecurity = \"plain\"\ntimeout_secs = 20\n\n\
         [jobs]\nbackoff_ms = 20\nretries = 3\n"
    )
}

fn job_message_id(m: &[u8]) -> String {
    String::from_utf8_lossy(
        &writ::envelope::header::first_value(m, "message-id").unwrap_or_default(),
    )
    .trim()
    .to_string()
}

impl LostJob {
    fn start(p: &Provider, keys: &TestKeys, url_file: &std::path::Path) -> LostJob {
        let owner = p.new_user("scalejob");
        let mut imap = p.imap(&owner);
        let mut originals = BTreeMap::new();
        for n in 0..JOB_MESSAGES {
            let m = format!(
                "From: s{n}@example.org\r\nTo: r@example.test\r\nSubject: job {n}\r\n\
                 Message-ID: <scale-job-{n}@example.org>\r\n\r\nbody {n} {}\r\n",
                "j".repeat(n * 29 % 500)
            )
            .into_bytes();
            imap.command_with_literal("APPEND INBOX (\\Seen)", &m, "")
                .expect_ok("APPEND");
            originals.insert(job_message_id(&m), m);
        }
        imap.logout();
        let mut password_file = tempfile::NamedTempFile::new().unwrap();
        writeln!(password_file, "{}", owner.password).unwrap();
        let stall = FaultProxy::start(p.imap_addr(), Faults::new().hold("APPEND", When::Nth(15)));
        let mut job = LostJob {
            owner,
            originals,
            stall,
            password_file,
            child: None,
        };
        let (mut c, dir) = job.seal(keys, url_file, "gw-1", job.stall.addr());
        let child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        job.child = Some((child, dir));
        assert!(
            job.stall.wait_held(DELIVERY_TIMEOUT),
            "the job on gw-1 never reached its 15th APPEND"
        );
        let (mut c, _dir) = job.seal(keys, url_file, "gw-2", p.imap_addr());
        let refused = c.output().unwrap();
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && err.contains("being worked on by gateway gw-1"),
            "gw-2 was not refused while gw-1 holds the mailbox: {err}"
        );
        job
    }

    fn seal(
        &self,
        keys: &TestKeys,
        url_file: &std::path::Path,
        gateway: &str,
        imap: SocketAddr,
    ) -> (std::process::Command, tempfile::TempDir) {
        let pw = self.password_file.path().display().to_string();
        admin_command(
            keys,
            url_file,
            gateway,
            &job_toml(imap),
            &[
                "mailbox",
                "seal",
                "--account",
                &self.owner.name,
                "--password-file",
                &pw,
                "--mailbox",
                "INBOX",
                "--batch",
                "7",
            ],
        )
    }

    /// The machine is lost: the job dies with it (SIGKILL).
    fn lose(mut self) -> LostJob {
        if let Some((mut child, _dir)) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self
    }

    fn finish_on_second(
        self,
        p: &Provider,
        keys: &TestKeys,
        url_file: &std::path::Path,
        pg: &common::postgres::Postgres,
        db: &str,
    ) {
        let leased = || {
            pg.psql(
                db,
                "SELECT count(*) FROM writ_mailbox_lease WHERE expires > now()",
            )
            .trim()
                != "0"
        };
        wait_until("the lost job's lease to expire", || !leased());
        let run = || {
            let (mut c, _dir) = self.seal(keys, url_file, "gw-2", p.imap_addr());
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "the job on gw-2: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run();
        // The stalled provider then stores what gw-1 sent: late copies,
        // which the next run removes.
        let answers = self.stall.release(DELIVERY_TIMEOUT);
        assert!(
            !answers.is_empty() && answers.iter().all(|a| a.contains(" OK [APPENDUID ")),
            "{answers:?}"
        );
        run();
        let stored = p.imap_fetch_all(&self.owner, "INBOX");
        assert_eq!(stored.len(), JOB_MESSAGES, "each original once");
        let mut seen = std::collections::BTreeSet::new();
        for m in &stored {
            assert!(writ::envelope::detect(m).is_some(), "sealed");
            let opened = keys.open(m);
            let id = job_message_id(&opened);
            assert_eq!(
                self.originals.get(&id),
                Some(&opened),
                "{id} opens to its bytes"
            );
            assert!(seen.insert(id), "present once");
        }
    }
}
