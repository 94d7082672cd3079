//! `[scanner]` end to end: a real rspamd from Debian (started here on
//! loopback in a temp dir, with a minimal config: no Redis, no modules that
//! reach the network, DNS pointed at a closed loopback port) judges the
//! plaintext before writ seals it for the real local provider.
//!
//! - GTUBE is refused 554 before anything reaches the provider;
//! - a clean message is stored sealed with the scanner's fields in the
//!   outer header (Subject still sealed), and rspamd's `add header` test
//!   pattern stores `X-Spam: Yes` outside;
//! - a scanner that is down: `on_failure = "tempfail"` answers 451 and
//!   delivers nothing; `"deliver"` delivers sealed and logs a warning;
//! - a scanner that accepts and never answers: 451 after
//!   `timeout_secs`, and the relay keeps serving other sessions meanwhile.
//!
//! "Nothing reached the provider" is checked without sleeping: after a
//! refusal, a clean message goes to the same mailbox, and once it is there
//! it is the only message.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mail::{DELIVERY_TIMEOUT, contains, marker_offset, message, unique};
use common::provider;
use common::smtp::send;
use common::writ::{Writ, WritConfig, free_port};

/// GTUBE: rspamd's reject test pattern.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's `add header` test pattern (`enable_test_patterns`).
const ADD_HEADER: &str = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's `rewrite subject` test pattern (`enable_test_patterns`).
const REWRITE_SUBJECT: &str =
    "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

struct Rspamd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    fn start() -> Rspamd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        // A tiny TLD list: the packaged one takes rspamd ~10 s to compile.
        std::fs::write(dir.path().join("tld.dat"), "com\ntest\norg\n").unwrap();
        let cfg = format!(
            "options {{\n  pidfile = \"{d}/rspamd.pid\";\n  dbdir = \"{d}\";\n  tmpdir = \"{d}\";\n  \
             url_tld = \"{d}/tld.dat\";\n  enable_test_patterns = true;\n  \
             dns {{ nameserver = [\"127.0.0.1:1\"]; }}\n}}\n\
             logging {{ type = \"file\"; filename = \"{d}/rspamd.log\"; level = \"notice\"; }}\n\
             actions {{ reject = 15; add_header = 6; greylist = 4; }}\n\
             worker \"normal\" {{ bind_socket = \"127.0.0.1:{port}\"; count = 1; }}\n"
        );
        let path = dir.path().join("rspamd.conf");
        std::fs::write(&path, cfg).unwrap();
        let mut rspamd = Command::new("rspamd");
        rspamd.arg("-c").arg(&path).arg("-f");
        // As root (CI containers), rspamd wants to be told to stay root.
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
            rspamd.args(["-i", "-u", "root", "-g", "root"]);
        }
        let child = rspamd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rspamd is installed (scripts/install-deps)");
        let r = Rspamd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.pong() {
            assert!(Instant::now() < deadline, "rspamd did not answer /ping");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("pong")
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // SIGTERM: the main process stops its workers.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn writ_with_scanner(address: SocketAddr, options: &str) -> Writ {
    let mut cfg = WritConfig::relay(provider().smtp_addr());
    cfg.extra_toml = format!("\n[scanner]\nenabled = true\naddress = \"{address}\"\n{options}");
    Writ::start(&cfg)
}

fn text_message(to: &str, subject: &str, body: &str) -> Vec<u8> {
    message(
        "sender@elsewhere.test",
        to,
        subject,
        body,
        &format!("{}@elsewhere.test", unique("scan-id")),
    )
}

/// Sends `msg` to `to` through `writ`'s relay; panics (with `why` and
/// writ's log) unless it is accepted.
#[track_caller]
fn send_ok(writ: &Writ, to: &str, msg: &[u8], why: &str) {
    send(writ.relay_addr(), "sender@elsewhere.test", &[to], msg)
        .unwrap_or_else(|r| panic!("{why}: {}\n{}", r.text(), writ.log()));
}

/// Waits (bounded) until writ's log, read from its stderr pipe as it
/// comes, has `needle`.
#[track_caller]
fn wait_log(writ: &Writ, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !writ.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            writ.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_plaintext_in_log(writ: &Writ, secrets: &[&str]) {
    let log = writ.log();
    for s in secrets {
        assert!(!log.contains(s), "{s} in the log:\n{log}");
    }
}

#[test]
fn gtube_is_refused_before_the_provider_and_clean_mail_is_sealed_with_the_scanners_fields() {
    let p = provider();
    let rspamd = Rspamd::start();
    let writ = writ_with_scanner(rspamd.addr, "");
    let user = p.new_user("scan");

    let spam_subject = unique("spam-subject");
    let spam = text_message(&user.address, &spam_subject, GTUBE);
    let refused = send(
        writ.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &spam,
    )
    .expect_err("GTUBE must be refused");
    assert_eq!(refused.code, 554, "{}", refused.text());
    assert!(refused.text().contains("5.7.1"), "{}", refused.text());

    let subject = unique("clean-subject");
    let marker = unique("clean-body");
    let clean = text_message(&user.address, &subject, &marker);
    send_ok(&writ, &user.address, &clean, "clean mail refused");

    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(
        stored.len(),
        1,
        "only the clean message reached the provider"
    );
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        !text.contains(&subject) && !text.contains(&marker),
        "{text}"
    );
    assert!(!text.contains(&spam_subject), "{text}");
    let outer = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(outer.contains("X-Writ"), "sealed: {outer}");
    assert!(
        outer.contains("X-Spamd-Result: default: False [")
            && outer.contains("X-Spam-Action: no action"),
        "scanner fields in the outer header: {outer}"
    );
    assert!(!outer.contains("X-Spam: Yes"), "{outer}");
    // Inside: the provider's own fields (as for any sealed message), the
    // scanner's fields, then the message as sent, byte for byte.
    let opened = writ.test_keys().open(&stored[0]);
    let inner = &opened[marker_offset(&stored[0])..];
    assert!(
        inner.starts_with(b"X-Spamd-Result: ") && inner.ends_with(&clean),
        "{}",
        String::from_utf8_lossy(&opened)
    );
    assert_no_plaintext_in_log(&writ, &[&subject, &marker, &spam_subject, GTUBE]);
}

#[test]
fn add_header_and_rewrite_subject_verdicts_put_x_spam_yes_outside_and_keep_the_subject_sealed() {
    let p = provider();
    let rspamd = Rspamd::start();
    let writ = writ_with_scanner(rspamd.addr, "");
    let user = p.new_user("scanflag");
    let subject = unique("flagged-subject");
    let msg = text_message(&user.address, &subject, ADD_HEADER);
    send_ok(&writ, &user.address, &msg, "flagged mail refused");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let text = String::from_utf8_lossy(&stored[0]);
    let outer = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(outer.contains("X-Spam: Yes"), "{outer}");
    assert!(outer.contains("X-Spam-Action: add header"), "{outer}");
    assert!(!text.contains(&subject), "Subject stays sealed: {text}");
    assert!(
        writ.metrics().contains("writ_scanner_verdicts_total"),
        "{}",
        writ.metrics()
    );
    // `rewrite subject`: marked the same way; the Subject stays sealed
    // and as sent.
    let subject2 = unique("rewrite-subject");
    let msg2 = text_message(&user.address, &subject2, REWRITE_SUBJECT);
    send_ok(&writ, &user.address, &msg2, "flagged mail refused");
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    let second = stored
        .iter()
        .find(|m| String::from_utf8_lossy(m).contains("X-Spam-Action: rewrite subject"))
        .expect("the rewrite-subject message, marked outside");
    let text = String::from_utf8_lossy(second);
    assert!(
        text.contains("X-Spam: Yes") && !text.contains(&subject2),
        "{text}"
    );
    let opened = writ.test_keys().open(second);
    assert!(contains(
        &opened,
        format!("Subject: {subject2}\r\n").as_bytes()
    ));
    assert_eq!(
        writ.metric("writ_scanner_verdicts_total", &[("outcome", "flagged")]),
        2.0
    );
}

/// An address nothing listens on: a scanner that is down.
fn stopped_scanner() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn scanner_down_fails_closed_by_default_and_open_when_configured() {
    let p = provider();
    let user = p.new_user("scandown");
    let closed = writ_with_scanner(stopped_scanner(), "");
    let subject = unique("down-subject");
    let msg = text_message(&user.address, &subject, &unique("down-body"));
    let refused = send(
        closed.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &msg,
    )
    .expect_err("fail-closed must defer");
    assert_eq!(refused.code, 451, "{}", refused.text());
    wait_log(&closed, "content scanner failed");

    let open = writ_with_scanner(stopped_scanner(), "on_failure = \"deliver\"\n");
    let subject2 = unique("open-subject");
    let msg2 = text_message(&user.address, &subject2, &unique("open-body"));
    send_ok(&open, &user.address, &msg2, "fail-open refused");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(
        stored.len(),
        1,
        "the fail-closed message was never delivered"
    );
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("X-Writ") && !text.contains(&subject2),
        "{text}"
    );
    assert!(
        !text.contains("X-Spamd-Result"),
        "unscanned: no verdict fields"
    );
    wait_log(&open, "delivered unscanned");
    assert_eq!(
        open.metric(
            "writ_scanner_verdicts_total",
            &[("outcome", "failed"), ("delivered", "true")]
        ),
        1.0
    );
    assert_no_plaintext_in_log(&closed, &[&subject]);
    assert_no_plaintext_in_log(&open, &[&subject2]);
}

#[test]
fn a_scanner_that_never_answers_times_out_to_451_while_other_sessions_are_served() {
    let p = provider();
    let user = p.new_user("scanslow");
    // Accepts connections, reads nothing, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(1) {
            held.push(s);
        }
        held
    });
    let writ = writ_with_scanner(addr, "timeout_secs = 2\n");
    let relay = writ.relay_addr();
    let to = user.address.clone();
    let slow = std::thread::spawn(move || {
        let msg = text_message(&to, &unique("slow-subject"), "slow");
        send(relay, "sender@elsewhere.test", &[&to], &msg)
    });
    // Meanwhile another session is served (its own EHLO and NOOP).
    let mut other = common::Smtp::connect(relay).unwrap();
    assert!(other.command("EHLO other.test").unwrap().is_positive());
    assert!(other.command("NOOP").unwrap().is_positive());
    other.quit();
    let refused = slow
        .join()
        .unwrap()
        .expect_err("a silent scanner must defer");
    assert_eq!(refused.code, 451, "{}", refused.text());
    wait_log(&writ, "no verdict within 2 s");
    drop(writ);
    let _ = hold.join();
}

#[test]
fn a_scanner_reply_past_the_cap_is_a_failure_not_a_verdict() {
    let p = provider();
    let user = p.new_user("scanhuge");
    // Answers every request with 200 and a body past MAX_REPLY (64 KiB),
    // a valid-looking verdict at its start.
    let hostile = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hostile.local_addr().unwrap();
    let serve = std::thread::spawn(move || {
        let (mut s, _) = hostile.accept().unwrap();
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        // Read the request head (the body is not needed) and hand it back.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let mut body = br#"{"action":"no action","score":0,"required_score":15,"pad":""#.to_vec();
        body.resize(body.len() + 200 * 1024, b'x');
        body.extend_from_slice(b"\"}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(response.as_bytes());
        let _ = s.write_all(&body);
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    });
    let writ = writ_with_scanner(addr, "");
    let msg = text_message(&user.address, &unique("huge-subject"), "huge");
    let refused = send(
        writ.relay_addr(),
        "sender@elsewhere.test",
        &[&user.address],
        &msg,
    )
    .expect_err("an oversized scanner reply must not pass");
    assert_eq!(refused.code, 451, "{}", refused.text());
    wait_log(&writ, "scanner reply larger than 65536 bytes");
    // rspamd's checkv2 request, with the client's address.
    let head = serve.join().unwrap();
    assert!(head.starts_with("post /checkv2 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nip: 127.0.0.1\r\n"), "{head}");
}

#[test]
fn past_max_message_bytes_mail_is_delivered_unscanned_and_counted() {
    let p = provider();
    let rspamd = Rspamd::start();
    let user = p.new_user("scanbig");
    let writ = writ_with_scanner(rspamd.addr, "max_message_bytes = 200\n");
    // GTUBE, but past the scanner's cap: not sent to it, so not refused.
    let subject = unique("big-subject");
    let msg = text_message(&user.address, &subject, GTUBE);
    assert!(msg.len() > 200);
    send_ok(&writ, &user.address, &msg, "unscanned mail refused");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("X-Writ") && !text.contains(&subject),
        "{text}"
    );
    assert!(!text.contains("X-Spamd-Result"), "{text}");
    wait_log(&writ, "larger than scanner.max_message_bytes");
    assert_eq!(
        writ.metric("writ_scanner_verdicts_total", &[("outcome", "too-large")]),
        1.0
    );
}

#[test]
fn concurrent_sessions_each_get_their_own_verdict() {
    let p = provider();
    let rspamd = Rspamd::start();
    let clean_user = p.new_user("scanpar");
    let writ = writ_with_scanner(rspamd.addr, "");
    let relay = writ.relay_addr();
    let sessions: Vec<_> = (0..6)
        .map(|i| {
            let to = clean_user.address.clone();
            std::thread::spawn(move || {
                let body = if i % 2 == 0 {
                    GTUBE.to_string()
                } else {
                    unique("par-body")
                };
                let msg = text_message(&to, &unique("par-subject"), &body);
                (
                    i % 2 == 0,
                    send(relay, "sender@elsewhere.test", &[&to], &msg),
                )
            })
        })
        .collect();
    for s in sessions {
        let (spam, result) = s.join().unwrap();
        match (spam, result) {
            (true, Err(r)) => assert_eq!(r.code, 554, "{}", r.text()),
            (false, Ok(_)) => {}
            (spam, r) => panic!("spam={spam}: {r:?}\n{}", writ.log()),
        }
    }
    let stored = p.wait_for_messages(&clean_user, "INBOX", 3, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 3, "only the three clean messages");
    for m in &stored {
        assert!(String::from_utf8_lossy(m).contains("X-Spam-Action: no action"));
    }
}

/// `msg` with sender-written fields named like the scanner's put first.
fn with_forged_verdict(msg: &[u8], forged: &str) -> Vec<u8> {
    let mut out = forged.as_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[test]
fn sender_written_scanner_fields_are_removed_and_never_reach_the_outer_header() {
    let p = provider();
    let rspamd = Rspamd::start();
    let user = p.new_user("scanforge");
    // A spammer's own "verdict", one field folded over two lines.
    let forged = "X-Spam-Action: no action\r\nX-Spamd-Result: default: False\r\n \
                  [0.00 / 15.00] forged-verdict\r\nx-spam : No\r\n";

    // Scanned: rspamd says `add header`; only writ's verdict is outside.
    let scanned = writ_with_scanner(rspamd.addr, "");
    let subject = unique("forge-subject");
    let msg = with_forged_verdict(&text_message(&user.address, &subject, ADD_HEADER), forged);
    send_ok(&scanned, &user.address, &msg, "flagged mail refused");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let text = String::from_utf8_lossy(&stored[0]);
    let outer = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(outer.contains("X-Spam-Action: add header"), "{outer}");
    assert!(outer.contains("X-Spam: Yes"), "{outer}");
    assert!(
        !outer.contains("no action"),
        "forged field outside: {outer}"
    );
    assert!(
        !outer.contains("forged-verdict"),
        "forged field outside: {outer}"
    );
    assert!(
        !outer.to_ascii_lowercase().contains("x-spam : no"),
        "{outer}"
    );
    let opened = scanned.test_keys().open(&stored[0]);
    let inner = String::from_utf8_lossy(&opened[marker_offset(&stored[0])..]).into_owned();
    assert!(
        !inner.contains("forged-verdict") && !inner.contains("no action"),
        "the sender's fields are removed, not only kept inside: {inner}"
    );
    assert!(inner.contains(&subject), "the rest of the message is kept");

    // Unscanned (scanner down, delivered anyway): the sender's fields
    // alone would read as a verdict.
    let open = writ_with_scanner(stopped_scanner(), "on_failure = \"deliver\"\n");
    let msg2 = with_forged_verdict(
        &text_message(&user.address, &unique("forge2"), "hello"),
        forged,
    );
    send_ok(&open, &user.address, &msg2, "fail-open refused");
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    for m in &stored {
        let text = String::from_utf8_lossy(m);
        let outer = &text[..text.find("\r\n\r\n").unwrap()];
        assert!(
            !outer.contains("no action"),
            "forged field outside: {outer}"
        );
        assert!(
            !outer.contains("forged-verdict"),
            "forged field outside: {outer}"
        );
    }
}

#[test]
fn a_message_past_the_in_memory_spool_is_scanned_from_its_temp_file_and_sealed_whole() {
    // 6 MiB: past the 4 MiB kept in memory, so the spool is a file (its
    // writes run on blocking threads) and is read back for rspamd and the
    // sealer; rspamd's verdict still comes, and the message opens whole.
    let p = provider();
    let rspamd = Rspamd::start();
    let user = p.new_user("scanlarge");
    let writ = writ_with_scanner(rspamd.addr, "");
    let subject = unique("large-subject");
    let tail = unique("large-tail");
    let line = "The quarterly figures stay inside the building, line after line.\r\n";
    let mut body = line.repeat(6 * 1024 * 1024 / line.len());
    body.push_str(&tail);
    body.push_str("\r\n");
    let msg = text_message(&user.address, &subject, &body);
    assert!(msg.len() > 6 * 1024 * 1024);
    send_ok(&writ, &user.address, &msg, "large clean mail refused");
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    let outer = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(
        outer.contains("X-Spamd-Result: ") && outer.contains("X-Spam-Action: "),
        "scanned: {outer}"
    );
    assert!(!text.contains(&subject) && !text.contains(&tail));
    let opened = writ.test_keys().open(&stored[0]);
    let inner = &opened[marker_offset(&stored[0])..];
    assert!(
        inner.starts_with(b"X-Spamd-Result: "),
        "scanner fields lead"
    );
    assert!(inner.ends_with(&msg), "the message, byte for byte");
    assert_eq!(
        writ.metric("writ_scanner_verdicts_total", &[("outcome", "clean")]),
        1.0
    );
}
