//! The relay when things go wrong, against the real provider: the provider
//! down (4xx, /healthz 503) and back, the provider dropping mid-DATA, a
//! client dying mid-DATA, malformed and out-of-order input, start-up
//! errors, and shutdown on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::files::copy_dir;
use common::mail::{DELIVERY_TIMEOUT, contains, short_message as message, unique, wait_until};

const WAIT: Duration = Duration::from_secs(30);
use common::writ::{TestKeys, Writ, WritConfig, free_listener, serve_expecting_failure};
use common::{Smtp, provider, smtp};

/// The message stored in `user`'s INBOX is the one with `marker` (sealed:
/// opening shows it), and it is the only one.
#[track_caller]
fn assert_only_message(keys: &TestKeys, stored: &[Vec<u8>], marker: &str) {
    assert_eq!(stored.len(), 1, "exactly one message stored");
    let opened = keys.open(&stored[0]);
    assert!(
        contains(&opened, marker.as_bytes()),
        "the stored message is not the expected one:\n{}",
        String::from_utf8_lossy(&opened)
    );
}

/// A TCP forwarder in front of the provider: it stands for the provider
/// coming up (it binds a port writ already points at), and can cut each
/// connection after `cut_after` bytes from writ (the provider dropping
/// mid-DATA).
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(listener: TcpListener, target: SocketAddr, cut_after: Option<usize>) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pump(client, server, cut_after));
                thread::spawn(move || pump(s2, c2, None));
            }
        });
        Proxy {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

/// Copies `from` to `to`; after `cut_after` bytes closes both directions.
fn pump(mut from: TcpStream, mut to: TcpStream, cut_after: Option<usize>) {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if total + n > limit => {
                let _ = to.write_all(&buf[..limit - total]);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            _ => n,
        };
        total += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn provider_down_means_4xx_and_unhealthy_then_back_up_means_delivery() {
    let p = provider();
    let user = p.new_user("down");
    // Reserve a port for the provider-to-be; nothing listens on it yet.
    let reserved = free_listener();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let mut cfg = WritConfig::relay(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    cfg.provider.as_mut().unwrap().timeout_secs = Some(5);
    let writ = Writ::start(&cfg);

    let (status, body) = writ.healthz();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("provider unreachable"), "{body}");

    let mut smtp = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(smtp.greeting.code, 220, "writ greets without the provider");
    assert_eq!(smtp.command("EHLO mta.test").unwrap().code, 250);
    let r = smtp.command("MAIL FROM:<a@elsewhere.test>").unwrap();
    assert_eq!(r.code / 100, 4, "provider down: a temporary failure: {r:?}");
    assert!(r.text().starts_with("4."), "{r:?}");
    // No transaction was opened.
    let r = smtp
        .command(&format!("RCPT TO:<{}>", user.address))
        .unwrap();
    assert_eq!(r.code, 503, "{r:?}");

    // The provider comes up on that port.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("rebind the port");
    let _proxy = Proxy::start(listener, p.smtp_addr(), None);
    let (status, body) = writ.healthz();
    assert_eq!((status, body.trim()), (200, "ok"));
    // The same session now gets through.
    let marker = unique("back-up");
    smtp.begin_data("a@elsewhere.test", &user.address);
    let r = smtp.send_data(&message(&user.address, &marker)).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    smtp.quit();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(writ.test_keys(), &stored, &marker);
}

#[test]
fn provider_dropping_mid_data_gives_4xx_and_delivers_nothing() {
    let p = provider();
    let user = p.new_user("dropped");
    // The provider connection is cut after 16 KB from writ: inside the
    // sealed DATA of a big message, after a small one.
    let proxy = Proxy::start(free_listener(), p.smtp_addr(), Some(16 * 1024));
    let writ = Writ::start(&WritConfig::relay(proxy.addr));
    let mut smtp = Smtp::connect(writ.relay_addr()).unwrap();
    smtp.command("EHLO mta.test").unwrap();
    let big_marker = unique("cut");
    let mut big = message(&user.address, &big_marker);
    for i in 0..4000 {
        big.extend_from_slice(format!("filler line {i} of a big message\r\n").as_bytes());
    }
    smtp.begin_data("a@elsewhere.test", &user.address);
    let r = smtp.send_data(&big).unwrap();
    assert!(
        r.code / 100 == 4 && r.text().starts_with("4."),
        "the provider dropped: {r:?}\n{}",
        writ.log()
    );

    // The session goes on with a new provider connection.
    let marker = unique("after-cut");
    smtp.begin_data("a@elsewhere.test", &user.address);
    let r = smtp.send_data(&message(&user.address, &marker)).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    smtp.quit();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(writ.test_keys(), &stored, &marker);
}

#[test]
fn client_dying_mid_data_delivers_nothing() {
    let p = provider();
    let user = p.new_user("diesmid");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    for cut in [10usize, 200_000] {
        let mut smtp = Smtp::connect(writ.relay_addr()).unwrap();
        smtp.command("EHLO mta.test").unwrap();
        smtp.begin_data("a@elsewhere.test", &user.address);
        let mut partial = message(&user.address, &unique("never"));
        partial.resize(cut.max(partial.len()), b'x');
        partial.truncate(cut);
        smtp.write_raw(&partial).unwrap();
        // Gone without the final dot.
        drop(smtp);
    }
    // Both sessions are over at writ (and their provider sessions closed)
    // before the next message is sent.
    wait_until("the aborted sessions to end", || {
        writ.metric("writ_smtp_sessions_active", &[]) == 0.0
    });
    let marker = unique("complete");
    smtp::send(
        writ.relay_addr(),
        "a@elsewhere.test",
        &[&user.address],
        &message(&user.address, &marker),
    )
    .expect("a complete message is accepted");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(writ.test_keys(), &stored, &marker);
}

#[test]
fn bad_input_gets_5xx_and_the_session_goes_on() {
    let p = provider();
    let user = p.new_user("badinput");
    let limit = 100_000usize;
    let writ = Writ::start(
        &WritConfig::relay(p.smtp_addr())
            .smtp("max_message_size", &limit.to_string())
            .smtp("max_line_length", "1000"),
    );
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    let code = |s: &mut Smtp, line: &str| {
        let r = s.command(line).unwrap();
        (r.code, r.text())
    };
    // Before EHLO.
    assert_eq!(code(&mut s, "MAIL FROM:<a@elsewhere.test>").0, 503);
    let ehlo = s.command("EHLO mta.test").unwrap();
    assert!(
        ehlo.lines.contains(&format!("SIZE {limit}")),
        "SIZE advertised: {ehlo:?}"
    );
    assert!(!ehlo.text().contains("AUTH"), "no AUTH on relay: {ehlo:?}");
    let checks: &[(&str, u16, &str)] = &[
        ("XYZZY", 500, "5.5.2"),
        ("", 500, "5.5.2"),
        ("MAIL FROM:a@elsewhere.test", 501, "5.5.4"),
        ("MAIL FROM:<a@elsewhere.test> SIZE=lots", 501, "5.5.4"),
        ("RCPT TO:<x@example.test>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("DATA now", 501, "5.5.4"),
        ("BDAT 10 LAST", 502, "5.5.1"),
        ("AUTH PLAIN AGFAYg==", 502, "5.5.1"),
        ("STARTTLS", 502, "5.5.1"),
        ("EXPN staff", 502, "5.5.1"),
    ];
    for (line, want, enhanced) in checks {
        let (got, text) = code(&mut s, line);
        assert_eq!(got, *want, "{line:?}: {got} {text}");
        assert!(text.starts_with(enhanced), "{line:?}: {got} {text}");
    }
    // Not UTF-8; an overlong line (its whole length is discarded).
    s.write_raw(b"MAIL FROM:<\xff\xfe@elsewhere.test>\r\n")
        .unwrap();
    assert_eq!(s.read_reply().unwrap().code, 501);
    s.write_raw(format!("NOOP {}\r\n", "x".repeat(5000)).as_bytes())
        .unwrap();
    let r = s.read_reply().unwrap();
    assert_eq!(r.code, 500, "{r:?}");
    assert!(r.text().starts_with("5.5.6"), "{r:?}");
    assert_eq!(code(&mut s, "NOOP").0, 250, "the session goes on");

    // SIZE declared too big: refused at MAIL.
    let (got, text) = code(
        &mut s,
        &format!("MAIL FROM:<a@elsewhere.test> SIZE={}", limit + 1),
    );
    assert_eq!((got, &text[..5]), (552, "5.3.4"), "{text}");

    // Refused message contents; each transaction pipelined in one write.
    let transaction = |s: &mut Smtp, data: &[u8]| -> Vec<(u16, String)> {
        let mut wire = format!(
            "MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            user.address
        )
        .into_bytes();
        wire.extend_from_slice(data);
        wire.extend_from_slice(b".\r\n");
        s.write_raw(&wire).unwrap();
        (0..4)
            .map(|_| {
                let r = s.read_reply().unwrap();
                (r.code, r.text())
            })
            .collect()
    };
    let head = format!("To: <{}>\r\nSubject: refused\r\n\r\n", user.address);
    let bare_lf = format!("{head}a line ending in a bare LF\nnext\r\n");
    let nul = format!("{head}a NUL \0 byte\r\n");
    let mut too_big = head.clone().into_bytes();
    while too_big.len() <= limit {
        too_big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    for (what, data, want, enhanced) in [
        ("bare LF", bare_lf.as_bytes(), 554, "5.6.0"),
        ("NUL", nul.as_bytes(), 554, "5.6.0"),
        ("too big", &too_big[..], 552, "5.3.4"),
    ] {
        let replies = transaction(&mut s, data);
        assert_eq!(
            replies.iter().map(|r| r.0).collect::<Vec<_>>(),
            [250, 250, 354, want],
            "{what}: {replies:?}"
        );
        assert!(replies[3].1.starts_with(enhanced), "{what}: {replies:?}");
    }
    // And after all that, a good message in the same session.
    let marker = unique("good-after-bad");
    let replies = transaction(&mut s, &message(&user.address, &marker));
    assert_eq!(replies[3].0, 250, "{replies:?}");
    s.quit();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(writ.test_keys(), &stored, &marker);
}

/// Runs `writ serve` with `config` expecting a start-up failure: non-zero
/// exit and exactly one line on stderr, starting `writ: `. Returns it.
#[track_caller]
fn start_fails(config: &str, dir: &Path) -> String {
    let path = dir.join("writ.toml");
    std::fs::write(&path, config).unwrap();
    let out = serve_expecting_failure(&path, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail:\n{config}\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    assert!(err.starts_with("writ: "), "{err}");
    err
}

#[test]
fn start_up_errors_are_one_line_and_exit_non_zero() {
    let p = provider();
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut base = WritConfig::relay(p.smtp_addr()).keys(&keys);
    // Quiet: start-up errors are reported whatever the log level (and the
    // harness finds this server ready without its log).
    base.log_level = "warn".into();
    let render = |cfg: &WritConfig| {
        let ports: Vec<u16> = cfg
            .listeners
            .iter()
            .map(|_| free_listener().local_addr().unwrap().port())
            .collect();
        cfg.render(&ports, None, &keys.dir())
    };

    // The base config is good: it starts (and is stopped at once).
    drop(Writ::start(&base));

    // An unknown key, named with its line.
    let err = start_fails(
        &format!("{}\n[smtp.bogus]\nx = 1\n", render(&base)),
        tmp.path(),
    );
    assert!(err.contains("bogus"), "{err}");
    let err = start_fails(
        &render(&base).replace("[smtp]\n", "[smtp]\nmax_sesions = 3\n"),
        tmp.path(),
    );
    assert!(err.contains("max_sesions"), "{err}");

    // A relay listener without allowed networks.
    let mut cfg = base.clone();
    cfg.listeners[0].allowed_networks.clear();
    let err = start_fails(&render(&cfg), tmp.path());
    assert!(err.contains("allowed_networks"), "{err}");

    // A submission listener without a certificate.
    let cfg = base.clone().listener("submission", &[]);
    let err = start_fails(&render(&cfg), tmp.path());
    assert!(err.contains("tls_cert"), "{err}");

    // Plain SMTP to a provider that is not on loopback.
    let mut cfg = base.clone();
    cfg.provider.as_mut().unwrap().address = "192.0.2.1:25".into();
    let err = start_fails(&render(&cfg), tmp.path());
    assert!(
        err.contains("192.0.2.1:25") && err.contains("plain"),
        "{err}"
    );

    // An unreadable recipient directory.
    let mut cfg = base.clone().external("seal");
    cfg.directory = Some(tmp.path().join("no-such-directory.toml"));
    let err = start_fails(&render(&cfg), tmp.path());
    assert!(err.contains("no-such-directory.toml"), "{err}");

    // The port is in use (held here): both a listener and the admin port.
    let busy = free_listener();
    let busy_port = busy.local_addr().unwrap().port();
    let mut cfg = base.clone();
    cfg.listeners[0].port = Some(busy_port);
    let err = start_fails(&render(&cfg), tmp.path());
    assert!(
        err.contains(&format!("127.0.0.1:{busy_port}")) && err.contains("listen"),
        "{err}"
    );
    let text = render(&base).replace(
        "[serve]\n",
        &format!("[serve]\nadmin_listen = \"127.0.0.1:{busy_port}\"\n"),
    );
    let err = start_fails(&text, tmp.path());
    assert!(err.contains(&format!("127.0.0.1:{busy_port}")), "{err}");
    drop(busy);

    // No keyring.
    let text = render(&base).replace(
        &toml_string(&keys.dir()),
        &toml_string(&tmp.path().join("no-keys")),
    );
    let err = start_fails(&text, tmp.path());
    assert!(err.contains("no keyring"), "{err}");

    // A damaged keyring, and one without an active epoch (nothing to seal
    // to): refused at start, not at the first message.
    let damaged = tmp.path().join("damaged");
    copy_dir(&keys.dir(), &damaged);
    std::fs::write(damaged.join("keyring.toml"), "version = [\n").unwrap();
    let text = render(&base).replace(&toml_string(&keys.dir()), &toml_string(&damaged));
    let err = start_fails(&text, tmp.path());
    assert!(err.contains("keyring.toml"), "{err}");
    let inactive = tmp.path().join("inactive");
    copy_dir(&keys.dir(), &inactive);
    let ring = std::fs::read_to_string(inactive.join("keyring.toml")).unwrap();
    assert!(ring.contains("\"active\""), "{ring}");
    std::fs::write(
        inactive.join("keyring.toml"),
        ring.replace("\"active\"", "\"decrypt-only\""),
    )
    .unwrap();
    let text = render(&base).replace(&toml_string(&keys.dir()), &toml_string(&inactive));
    let err = start_fails(&text, tmp.path());
    assert!(err.contains("no active epoch"), "{err}");
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

#[test]
fn sigterm_lets_the_open_transaction_finish_refuses_new_ones_and_exits_0() {
    let p = provider();
    let user = p.new_user("sigterm");
    let mut writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let addr = writ.relay_addr();

    // One session inside a transaction, one idle.
    let mut busy = Smtp::connect(addr).unwrap();
    busy.command("EHLO mta.test").unwrap();
    assert_eq!(
        busy.command("MAIL FROM:<a@elsewhere.test>").unwrap().code,
        250
    );
    assert_eq!(
        busy.command(&format!("RCPT TO:<{}>", user.address))
            .unwrap()
            .code,
        250
    );
    let mut idle = Smtp::connect(addr).unwrap();
    assert_eq!(idle.command("EHLO idle.test").unwrap().code, 250);

    writ.sigterm();
    // The idle session is told at once.
    let r = idle.read_reply().unwrap();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().starts_with("4.3.2"), "{r:?}");
    // New connections are refused.
    wait_until("new connections to be refused", || {
        TcpStream::connect(addr).is_err()
    });
    assert!(writ.try_exit().is_none(), "still running for the open one");

    // The open transaction finishes and is delivered.
    let marker = unique("in-flight");
    assert_eq!(busy.command("DATA").unwrap().code, 354);
    let r = busy.send_data(&message(&user.address, &marker)).unwrap();
    assert_eq!(r.code, 250, "{r:?}\n{}", writ.log());
    // Then that session is closed too.
    let r = busy.read_reply().unwrap();
    assert_eq!(r.code, 421, "{r:?}");

    let status = writ.wait_exit(WAIT);
    assert!(status.success(), "{status}\n{}", writ.log());
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(writ.test_keys(), &stored, &marker);
}

#[test]
fn sigterm_grace_period_over_cuts_the_transaction_and_delivers_nothing() {
    let p = provider();
    let user = p.new_user("grace");
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.grace_secs = Some(1);
    let mut writ = Writ::start(&cfg);
    let mut slow = Smtp::connect(writ.relay_addr()).unwrap();
    slow.command("EHLO slow.test").unwrap();
    slow.command("MAIL FROM:<a@elsewhere.test>").unwrap();
    let r = slow
        .command(&format!("RCPT TO:<{}>", user.address))
        .unwrap();
    assert_eq!(r.code, 250);
    assert_eq!(slow.command("DATA").unwrap().code, 354);
    slow.write_raw(&message(&user.address, &unique("cut-by-shutdown")))
        .unwrap();

    let started = Instant::now();
    writ.sigterm();
    let status = writ.wait_exit(WAIT);
    assert!(status.success(), "{status}\n{}", writ.log());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the grace period was given"
    );
    // The client's connection was closed without a reply.
    assert!(slow.read_reply().is_err(), "no reply to an unfinished DATA");

    // Nothing reached the provider: a message sent to it directly
    // afterwards is the only one.
    let marker = unique("direct");
    p.smtp_send(
        "a@elsewhere.test",
        &[&user.address],
        &message(&user.address, &marker),
    )
    .expect("the provider accepts");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    assert!(contains(&stored[0], marker.as_bytes()));
}

#[test]
fn keyring_gone_fails_closed_with_451_and_unhealthy_then_recovers() {
    let p = provider();
    let user = p.new_user("nokeys");
    let keys = TestKeys::new();
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()).keys(&keys));
    assert_eq!(writ.healthz().0, 200);
    let moved = keys.dir().with_extension("moved");
    std::fs::rename(keys.dir(), &moved).unwrap();

    let (status, body) = writ.healthz();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keyring"), "{body}");
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO mta.test").unwrap();
    assert_eq!(s.command("MAIL FROM:<a@elsewhere.test>").unwrap().code, 250);
    assert_eq!(
        s.command(&format!("RCPT TO:<{}>", user.address))
            .unwrap()
            .code,
        250
    );
    // Nothing to seal to: refused before any data, temporarily.
    let r = s.command("DATA").unwrap();
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text().starts_with("4.3.0"), "{r:?}");

    // The keyring is back: the same session delivers.
    std::fs::rename(&moved, keys.dir()).unwrap();
    assert_eq!(writ.healthz().0, 200);
    let marker = unique("keys-back");
    s.begin_data("a@elsewhere.test", &user.address);
    let r = s.send_data(&message(&user.address, &marker)).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    s.quit();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_only_message(&keys, &stored, &marker);
    assert_eq!(
        writ.metric(
            "writ_messages_total",
            &[("outcome", "refused"), ("reason", "seal-unavailable")]
        ),
        1.0
    );
}

#[test]
fn limits_recipients_sessions_per_ip_and_command_timeout() {
    let p = provider();
    let users: Vec<_> = (0..3).map(|_| p.new_user("limits")).collect();
    let writ = Writ::start(
        &WritConfig::relay(p.smtp_addr())
            .smtp("max_recipients", "2")
            .smtp("max_sessions_per_ip", "2")
            .smtp("command_timeout_secs", "1"),
    );
    let mut a = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(a.greeting.code, 220);
    a.command("EHLO a.test").unwrap();
    a.command("MAIL FROM:<a@elsewhere.test>").unwrap();
    let replies: Vec<_> = users
        .iter()
        .map(|u| a.command(&format!("RCPT TO:<{}>", u.address)).unwrap())
        .collect();
    assert_eq!(replies[0].code, 250);
    assert_eq!(replies[1].code, 250);
    assert_eq!(replies[2].code, 452, "{:?}", replies[2]);
    assert!(replies[2].text().starts_with("4.5.3"), "{:?}", replies[2]);

    // A second session from the same address is fine, a third is not.
    let b = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(b.greeting.code, 220);
    let c = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(c.greeting.code, 421, "{:?}", c.greeting);
    assert!(c.greeting.text().starts_with("4.7.0"), "{:?}", c.greeting);

    // An idle client is dropped after the command timeout, with 421.
    let mut b = b;
    let r = b.read_reply().unwrap();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().starts_with("4.4.2"), "{r:?}");
    // Its slot is free again.
    wait_until("a session slot", || {
        Smtp::connect(writ.relay_addr()).is_ok_and(|s| s.greeting.code == 220)
    });
    drop(a);
}

#[test]
fn with_imap_listeners_a_wrong_or_missing_passphrase_is_a_start_up_error() {
    // The relay alone seals with public keys and needs no passphrase; the
    // IMAP proxy opens mail, so `writ serve` unlocks the keyring first.
    let p = provider();
    let keys = TestKeys::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = WritConfig::relay(p.smtp_addr()).keys(&keys);
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {}\ntls_key = {}\n\n[[imap.listeners]]\nkind = \"imap\"\n\
         listen = \"127.0.0.1:{}\"\n\n[provider.imap]\naddress = \"{}\"\nsecurity = \"plain\"\n",
        toml_string(&p.cert_file()),
        toml_string(&p.dir.join("tls/key.pem")),
        free_listener().local_addr().unwrap().port(),
        p.imap_addr(),
    );
    let port = free_listener().local_addr().unwrap().port();
    let text = cfg.render(&[port], None, &keys.dir());
    let path = tmp.path().join("writ.toml");
    std::fs::write(&path, &text).unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    for (args, expect) in [
        (
            vec!["--passphrase-file", wrong.to_str().unwrap()],
            "wrong passphrase",
        ),
        (vec![], "passphrase"),
    ] {
        let out = serve_expecting_failure(&path, &args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line:\n{err}");
        assert!(
            err.starts_with("writ: ") && err.contains(expect),
            "{args:?}: {err}"
        );
    }
    // With the right passphrase the same config serves.
    let mut ok_cfg = cfg.clone();
    ok_cfg.unlock = true;
    let writ = Writ::start(&ok_cfg);
    assert!(writ.log().contains("listener ready"), "{}", writ.log());
}

/// A client that reconnects as soon as its session has ended is never
/// refused for that session: writ gives the session's slot back before it
/// closes the connection (not after the provider has answered its QUIT).
#[test]
fn a_client_reconnecting_at_once_is_not_refused_for_its_own_ended_session() {
    let p = provider();
    let user = p.new_user("reconnect");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()).smtp("max_sessions_per_ip", "1"));
    for round in 0..10 {
        let mut s = Smtp::connect(writ.relay_addr()).unwrap();
        assert_eq!(s.greeting.code, 220, "round {round}: {:?}", s.greeting);
        s.command("EHLO a.test").unwrap();
        s.command("MAIL FROM:<a@elsewhere.test>").unwrap();
        // The RCPT opens writ's connection to the provider.
        let r = s.command(&format!("RCPT TO:<{}>", user.address)).unwrap();
        assert_eq!(r.code, 250, "{r:?}");
        s.command("RSET").unwrap();
        assert_eq!(s.command("QUIT").unwrap().code, 221);
        // The connection closes: the session is over.
        assert!(s.read_reply().is_err(), "the connection stayed open");
    }
}
