//! Hostile clients of writ's IMAP listeners, in front of a real Dovecot:
//! huge sequence sets, long lines, huge and many literals, deep SEARCH
//! nesting, idle and slow clients before and after login, many connections
//! from one address or over both listeners, a process out of file
//! descriptors, STARTTLS out of place or with commands pipelined behind it,
//! and sequence sets ending at the largest UIDs.
//!
//! Each attack asserts what the attacker is told (the cap, by name) and
//! that another user keeps being served (logs in and fetches) within
//! [`SERVED_WITHIN`] while the attack runs. Attacks from "another address"
//! come from 127.0.0.2 (Python sockets bind it as their source).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::imap_proxy::ImapProxy;
use common::python::{self, Paused};
use common::{FaultProxy, Faults, Imap, User, provider};

/// How long another user's login and FETCH may take during an attack.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// `imap.max_literal_size` of these proxies.
const MAX_LITERAL: usize = 1024 * 1024;

fn proxy(options: &str) -> ImapProxy {
    proxy_in_front_of(provider().imap_addr(), options)
}

fn proxy_in_front_of(upstream: SocketAddr, options: &str) -> ImapProxy {
    proxy_with(upstream, MAX_LITERAL, options)
}

fn proxy_with(upstream: SocketAddr, max_literal: usize, options: &str) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 10\n", ImapProxy::plain(upstream)),
        &format!("max_literal_size = {max_literal}\n{options}"),
    )
}

/// A user with three plaintext messages in INBOX.
fn user_with_mail(prefix: &str) -> User {
    let p = provider();
    let user = p.new_user(prefix);
    for n in 1..=3 {
        p.imap_append(
            &user,
            "INBOX",
            format!("From: a@example.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n").as_bytes(),
        );
    }
    user
}

/// Another user logs in through writ and fetches all its mail, within
/// [`SERVED_WITHIN`].
#[track_caller]
fn assert_served(proxy: &ImapProxy, user: &User) {
    let started = Instant::now();
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    let messages = imap.fetch_all();
    assert_eq!(messages.len(), 3, "the other user's mail");
    imap.logout();
    let took = started.elapsed();
    assert!(
        took < SERVED_WITHIN,
        "another user waited {took:?} during the attack\n{}",
        proxy.writ.log()
    );
}

/// A connection logged in through writ, INBOX selected.
fn logged_in(proxy: &ImapProxy, user: &User) -> Imap {
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    imap
}

/// A raw connection to writ: the greeting is read.
fn raw(addr: SocketAddr) -> (TcpStream, std::io::BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let greeting = read_line(&mut r);
    assert!(greeting.starts_with("* OK"), "{greeting}");
    (s, r)
}

fn read_line(r: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    line
}

/// Reads lines until one starts with `prefix`; returns it.
fn read_until(r: &mut impl std::io::BufRead, prefix: &str) -> String {
    loop {
        let line = read_line(r);
        assert!(!line.is_empty(), "connection closed before {prefix:?}");
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// `UID FETCH 1,3,5,...` with `n` elements.
fn huge_uid_fetch(tag: &str, n: u32) -> Vec<u8> {
    let mut line = format!("{tag} UID FETCH 1").into_bytes();
    for k in 1..n {
        line.extend_from_slice(format!(",{}", 2 * k + 1).as_bytes());
    }
    line.extend_from_slice(b" (FLAGS)\r\n");
    line
}

#[test]
fn huge_sequence_sets_are_refused_at_once_and_others_are_served() {
    let victim = user_with_mail("hv");
    let attacker = user_with_mail("ha");
    // The default literal limit (50 MiB): the whole-command limit derived
    // from it is no defence against a 1.4 MB line.
    let proxy = proxy_with(provider().imap_addr(), 50 * 1024 * 1024, "");
    // The other user comes once both commands are sent in full.
    let sent = Arc::new(Barrier::new(3));
    let attacks: Vec<_> = (0..2)
        .map(|_| {
            let mut imap = logged_in(&proxy, &attacker);
            let sent = sent.clone();
            thread::spawn(move || {
                let started = Instant::now();
                imap.write_raw(&huge_uid_fetch("big", 200_000)).unwrap();
                sent.wait();
                let answer = imap.read_response("big").expect("an answer");
                let took = started.elapsed();
                // The session goes on.
                imap.command("NOOP").expect_ok("NOOP after the refusal");
                (answer.text(), took)
            })
        })
        .collect();
    sent.wait();
    assert_served(&proxy, &victim);
    for attack in attacks {
        let (answer, took) = attack.join().unwrap();
        assert!(
            answer.contains("big BAD Command too long: at most 65536 octets"),
            "{answer}"
        );
        assert!(took < SERVED_WITHIN, "the refusal took {took:?}");
    }
}

#[test]
fn uid_ranges_ending_at_the_largest_uids_mean_what_dovecot_says() {
    let p = provider();
    let direct_user = user_with_mail("md");
    let proxied_user = user_with_mail("mp");
    let proxy = proxy("");
    let mut direct = p.imap(&direct_user);
    let mut proxied = logged_in(&proxy, &proxied_user);
    direct.select("INBOX").expect_ok("SELECT");
    for imap in [&mut direct, &mut proxied] {
        imap.command("CREATE Trash").expect_ok("CREATE");
    }
    // UIDNEXT is 4: none of these names an existing message, and `*` would
    // name the last one.
    let commands = [
        "UID STORE 4:4294967295 +FLAGS (\\Flagged)",
        "UID STORE 4:4294967294 +FLAGS (\\Deleted)",
        "UID STORE 4294967295 +FLAGS (\\Answered)",
        "UID COPY 4:4294967295 Trash",
        "UID COPY 4294967294:4294967295 Trash",
        "UID SEARCH UID 4:4294967295",
        "UID SEARCH UID 4:4294967294",
        "UID FETCH 4:4294967295 (UID FLAGS)",
        "UID FETCH * (UID)",
        "UID SEARCH UID *",
    ];
    for command in commands {
        let a = direct.command(command).expect_ok(command);
        let b = proxied.command(command).expect_ok(command);
        assert_eq!(
            untagged(&a.text()),
            untagged(&b.text()),
            "{command}: Dovecot directly, then through writ"
        );
    }
    let flags = "UID FETCH 1:* (UID FLAGS)";
    assert_eq!(
        untagged(&direct.command(flags).text()),
        untagged(&proxied.command(flags).text())
    );
    let last = proxied.command("UID FETCH 3 (FLAGS)").text();
    assert!(
        !last.contains("\\Flagged") && !last.contains("\\Deleted"),
        "the last message was touched: {last}"
    );
    let trash = "STATUS Trash (MESSAGES)";
    assert_eq!(proxied.command(trash).status_item("MESSAGES"), Some(0));
    assert_eq!(direct.command(trash).status_item("MESSAGES"), Some(0));
}

/// The untagged lines of a response, without \Recent (only the first
/// session to select sees it).
fn untagged(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("* "))
        .map(|l| l.replace(" \\Recent", "").replace("\\Recent", ""))
        .collect()
}

const HOLD_CONNECTIONS: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns, ok, bye = [], 0, 0
for _ in range(n):
    s = socket.create_connection(('127.0.0.1', port), timeout=20, source_address=('127.0.0.2', 0))
    line = s.makefile('rb').readline()
    if line.startswith(b'* OK'):
        ok += 1
    elif b'Too many connections from your address' in line:
        bye += 1
    else:
        print('unexpected', line)
    conns.append(s)
print('ready', flush=True)
sys.stdin.readline()
print(ok, bye)
"#;

#[test]
fn idle_connections_from_one_address_cannot_lock_others_out() {
    let victim = user_with_mail("lv");
    let proxy = proxy("max_sessions = 8\nmax_prelogin_per_ip = 3\n");
    let held = Paused::start(
        HOLD_CONNECTIONS,
        [proxy.imap.port().to_string(), "40".into()],
        "ready",
    );
    assert_served(&proxy, &victim);
    assert_served(&proxy, &victim);
    let (status, out) = held.finish();
    assert!(status.success(), "{out}");
    assert_eq!(out.trim(), "3 37", "accepted and refused from 127.0.0.2");
}

#[test]
fn max_sessions_counts_the_sessions_of_both_listeners() {
    let proxy = proxy("max_sessions = 2\n");
    // Two sessions on the STARTTLS listener fill max_sessions ...
    let held = [raw(proxy.imap), raw(proxy.imap)];
    // ... so the implicit-TLS listener refuses the next, in plain text
    // before any handshake (a listener with its own count would accept it
    // and wait for the ClientHello).
    let s = TcpStream::connect(proxy.imaps).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let refused = read_line(&mut std::io::BufReader::new(s));
    assert!(
        refused.starts_with("* BYE [UNAVAILABLE] Too many connections"),
        "{refused:?}\n{}",
        proxy.writ.log()
    );
    drop(held);
}

/// The time of day of a log line (`2026-01-02T03:04:05.678901Z  WARN ...`),
/// in seconds.
fn log_time(line: &str) -> f64 {
    let time = line.split(['T', 'Z']).nth(1).expect("a timestamp");
    time.split(':')
        .map(|part| part.parse::<f64>().expect("a timestamp"))
        .fold(0.0, |total, part| total * 60.0 + part)
}

#[test]
fn out_of_file_descriptors_the_listener_backs_off_and_recovers() {
    let proxy = ImapProxy::start_with_open_files(
        &format!(
            "{}timeout_secs = 10\n",
            ImapProxy::plain(provider().imap_addr())
        ),
        "max_sessions_per_ip = 1000\nmax_prelogin_per_ip = 1000\n",
        64,
    );
    // The STARTTLS listener's failed accepts (named, or logged from its
    // module), by time.
    let failures = |log: &str| -> Vec<f64> {
        log.lines()
            .filter(|l| {
                l.contains("accept failed")
                    && (l.contains("listener=\"imap\"") || l.contains("writ::imap::listener:"))
            })
            .map(log_time)
            .collect()
    };
    // Connect until writ has no descriptor left to accept with: the last
    // connection waits in the backlog, ungreeted.
    let mut held = Vec::new();
    let waiting = loop {
        assert!(held.len() < 64, "still greeted with RLIMIT_NOFILE 64");
        let mut s = TcpStream::connect(proxy.imap).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut greeting = [0u8; 4];
        let greeted = loop {
            match std::io::Read::read(&mut s, &mut greeting) {
                Ok(_) => break true,
                Err(_) if !failures(&proxy.writ.log()).is_empty() => break false,
                Err(_) => assert!(Instant::now() < deadline, "{}", proxy.writ.log()),
            }
        };
        if !greeted {
            break s;
        }
        assert_eq!(&greeting, b"* OK");
        held.push(s);
    };
    // While it lasts, each retry waits ACCEPT_BACKOFF (100 ms): five
    // failures span at least 400 ms (retrying at once, they come by the
    // thousand within a millisecond).
    let deadline = Instant::now() + Duration::from_secs(30);
    let times = loop {
        let times = failures(&proxy.writ.log());
        if times.len() >= 5 {
            break times;
        }
        assert!(Instant::now() < deadline, "{}", proxy.writ.log());
        thread::yield_now();
    };
    let span = times[4] - times[0];
    assert!(
        span >= 0.39,
        "5 failed accepts within {span:.6} s: {:?}",
        &times[..5]
    );
    // Descriptors given back, the waiting connection is served.
    drop(held);
    let mut waiting = std::io::BufReader::new(waiting);
    waiting
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let greeting = read_line(&mut waiting);
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
}

#[test]
fn a_client_that_does_not_log_in_in_time_is_told_bye() {
    let proxy = proxy("login_timeout_secs = 5\n");
    // One client says nothing; one trickles a command a byte at a time,
    // which a per-read timer would never end.
    let script = r#"
import socket, sys, time, threading
port = int(sys.argv[1])
def run(trickle, out):
    s = socket.create_connection(('127.0.0.1', port), timeout=30, source_address=('127.0.0.2', 0))
    f = s.makefile('rb')
    f.readline()
    start = time.monotonic()
    if trickle:
        def send():
            try:
                for b in b'a NOOP':
                    s.send(bytes([b]))
                    time.sleep(0.5)
                while True:
                    s.send(b' ')
                    time.sleep(0.5)
            except OSError:
                pass
        threading.Thread(target=send, daemon=True).start()
    line = f.readline()
    out.append((trickle, line.decode().strip(), time.monotonic() - start))
out = []
ts = [threading.Thread(target=run, args=(t, out)) for t in (False, True)]
[t.start() for t in ts]
[t.join() for t in ts]
for trickle, line, took in sorted(out):
    print(trickle, line, '%.1f' % took)
"#;
    let out = python::ok(script, [proxy.imap.port().to_string()]);
    for line in out.lines() {
        assert!(line.contains("* BYE Login timeout"), "{out}");
        let took: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((4.0..15.0).contains(&took), "{out}");
    }
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn the_provider_is_not_contacted_before_the_client_speaks() {
    let upstream = FaultProxy::start(provider().imap_addr(), Faults::new());
    let proxy = proxy_in_front_of(upstream.addr(), "");
    let silent: Vec<_> = (0..5).map(|_| raw(proxy.imap)).collect();
    let mut imap = Imap::connect(proxy.imap).expect("connect");
    assert_eq!(upstream.connections(), 0, "greeted without the provider");
    let caps = imap.command("CAPABILITY").expect_ok("CAPABILITY").text();
    assert!(caps.contains("* CAPABILITY IMAP4REV1"), "{caps}");
    assert!(caps.contains("STARTTLS"), "{caps}");
    assert_eq!(
        upstream.connections(),
        1,
        "one provider connection, for CAPABILITY"
    );
    drop(silent);
}

const STARTTLS_CHECKS: &str = r#"
import imaplib, ssl, sys, socket
port, tls_port, ca, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4('127.0.0.1', int(port))
c.starttls(ssl_context=ctx)
c.login(user, pw)
typ, caps = c.capability()
print('caps after login', any('STARTTLS' in c.decode() for c in caps))
# imaplib itself refuses STARTTLS after login: send it by hand.
c.send(b'x1 STARTTLS\r\n')
print('starttls after login', c.readline().decode().strip())
# Logged in without TLS (loopback may): still no STARTTLS after login.
p = imaplib.IMAP4('127.0.0.1', int(port))
p.login(user, pw)
typ, caps = p.capability()
print('plain caps after login', any('STARTTLS' in c.decode() for c in caps))
p.send(b'x2 STARTTLS\r\n')
print('plain starttls after login', p.readline().decode().strip())
print('plain noop', p.noop()[0])
typ, data = c.noop()
print('noop', typ)
s = imaplib.IMAP4_SSL('127.0.0.1', int(tls_port), ssl_context=ctx)
try:
    typ, data = s._simple_command('STARTTLS')
    print('starttls on tls', typ)
except imaplib.IMAP4.error as e:
    print('starttls on tls BAD', e)
# Commands pipelined behind STARTTLS in the same packet are dropped.
r = socket.create_connection(('127.0.0.1', int(port)), timeout=20)
f = r.makefile('rb')
f.readline()
r.sendall(('a STARTTLS\r\nb LOGIN %s %s\r\nc SELECT INBOX\r\n' % (user, pw)).encode())
print('starttls', f.readline().decode().split(' ')[1])
t = ctx.wrap_socket(r, server_hostname='127.0.0.1')
t.sendall(('d LOGIN %s %s\r\n' % (user, pw)).encode())
g = t.makefile('rb')
print('after tls', g.readline().decode().strip())
"#;

#[test]
fn starttls_only_once_and_only_before_login() {
    let user = user_with_mail("st");
    let proxy = proxy("");
    let out = python::ok(
        STARTTLS_CHECKS,
        [
            proxy.imap.port().to_string(),
            proxy.imaps.port().to_string(),
            proxy.tls.ca.display().to_string(),
            user.name.clone(),
            user.password.clone(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "caps after login False", "{out}");
    assert!(
        lines[1].starts_with("starttls after login x1 BAD STARTTLS only before login"),
        "{out}"
    );
    assert_eq!(lines[2], "plain caps after login False", "{out}");
    assert!(
        lines[3].starts_with("plain starttls after login x2 BAD STARTTLS only before login"),
        "{out}"
    );
    assert_eq!(lines[4], "plain noop OK", "{out}");
    assert_eq!(lines[5], "noop OK", "{out}");
    assert!(lines[6].starts_with("starttls on tls BAD"), "{out}");
    assert_eq!(lines[7], "starttls OK", "{out}");
    // Had the pipelined LOGIN run, this LOGIN would be BAD (RFC 3501:
    // LOGIN only in the not-authenticated state).
    assert!(
        lines[8].starts_with("after tls d OK"),
        "the pipelined LOGIN must not have run: {out}"
    );
}

#[test]
fn long_lines_before_and_after_login_are_refused_and_others_are_served() {
    let victim = user_with_mail("lo");
    let attacker = user_with_mail("la");
    let proxy = proxy("");
    // Before login: 2 MB without a line end, then the end; a tag is read.
    let (mut s, mut r) = raw(proxy.imap);
    s.write_all(b"x1 LOGIN ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..32 {
        s.write_all(&chunk).unwrap();
    }
    assert_served(&proxy, &victim);
    s.write_all(b"\r\nx2 NOOP\r\n").unwrap();
    let bad = read_line(&mut r);
    assert!(bad.starts_with("x1 BAD Command too long"), "{bad}");
    assert!(read_until(&mut r, "x2 ").starts_with("x2 OK"));
    // After login: a line of 60 KiB held unfinished (within the cap) while
    // others are served, then finished.
    let mut imap = logged_in(&proxy, &attacker);
    let mut partial = b"y1 SEARCH SUBJECT \"".to_vec();
    partial.extend(std::iter::repeat_n(b'z', 60 * 1024));
    imap.write_raw(&partial).unwrap();
    assert_served(&proxy, &victim);
    imap.write_raw(b"\"\r\n").unwrap();
    assert!(imap.read_response("y1").unwrap().is_ok());
    // No tag at all: untagged BAD.
    let (mut s, mut r) = raw(proxy.imap);
    s.write_all(&vec![b'('; 100 * 1024]).unwrap();
    s.write_all(b"\r\nz NOOP\r\n").unwrap();
    let bad = read_line(&mut r);
    assert!(bad.starts_with("* BAD Command too long"), "{bad}");
    assert!(read_until(&mut r, "z ").starts_with("z OK"));
}

/// The next line is `* BYE`, then the connection ends.
#[track_caller]
fn assert_closed_after_bye(imap: &mut Imap) {
    let bye = imap.read_line().expect("a BYE").text_only();
    assert!(bye.starts_with("* BYE "), "{bye}");
    assert!(imap.read_line().is_err(), "the connection is closed");
}

#[test]
fn huge_and_many_literals_are_refused() {
    let victim = user_with_mail("iv");
    let attacker = user_with_mail("ia");
    let proxy = proxy("");
    let mut imap = logged_in(&proxy, &attacker);
    // Synchronising, too large: BAD at once, no continuation; the session
    // goes on.
    imap.write_raw(format!("a1 APPEND INBOX {{{}}}\r\n", MAX_LITERAL + 1).as_bytes())
        .unwrap();
    let answer = imap.read_response("a1").unwrap().text();
    assert!(
        answer.starts_with(&format!("a1 BAD Literal too large: at most {MAX_LITERAL}")),
        "{answer}"
    );
    imap.command("NOOP").expect_ok("NOOP after the refusal");
    // Non-synchronising, too large: BAD, then the connection is closed.
    imap.write_raw(format!("a2 APPEND INBOX {{{}+}}\r\n", 4_000_000_000u32).as_bytes())
        .unwrap();
    let answer = imap.read_response("a2").unwrap().text();
    assert!(
        answer.contains("a2 BAD Non-synchronising literal"),
        "{answer}"
    );
    assert_closed_after_bye(&mut imap);
    assert_served(&proxy, &victim);
    // Many literals in one command: BAD once over the cap, then closed.
    let mut imap = logged_in(&proxy, &attacker);
    let mut command = b"m1 SEARCH".to_vec();
    for _ in 0..200 {
        command.extend_from_slice(b" TEXT {1+}\r\nq");
    }
    command.extend_from_slice(b"\r\n");
    imap.write_raw(&command).unwrap();
    let answer = imap.read_response("m1").unwrap().text();
    assert!(
        answer.contains("m1 BAD Too many literals in one command: at most 128"),
        "{answer}"
    );
    assert_closed_after_bye(&mut imap);
    assert_served(&proxy, &victim);
}

#[test]
fn deep_search_nesting_is_refused_quickly() {
    let victim = user_with_mail("nv");
    let attacker = user_with_mail("na");
    let proxy = proxy("");
    let mut imap = logged_in(&proxy, &attacker);
    let started = Instant::now();
    let mut parens = "(".repeat(30_000);
    parens.push_str("ALL");
    parens.push_str(&")".repeat(30_000));
    let answer = imap.command(&format!("SEARCH {parens}"));
    assert!(answer.text().contains(" BAD "), "{}", answer.text());
    let answer = imap.command(&format!("SEARCH {}ALL", "NOT ".repeat(15_000)));
    assert!(answer.text().contains(" BAD "), "{}", answer.text());
    let answer = imap.command(&format!("SEARCH {}ALL ALL", "OR ".repeat(20_000)));
    assert!(answer.text().contains(" BAD "), "{}", answer.text());
    // Within imap-codec's depth: answered.
    imap.command("SEARCH ((((NOT OR SEEN UNSEEN))))")
        .expect_ok("nested SEARCH");
    assert!(started.elapsed() < SERVED_WITHIN);
    assert_served(&proxy, &victim);
    // Many FETCH items.
    let items = vec!["FLAGS"; 101].join(" ");
    let answer = imap.command(&format!("FETCH 1 ({items})"));
    assert!(
        answer
            .text()
            .contains("BAD Too many FETCH items: at most 100"),
        "{}",
        answer.text()
    );
    imap.command("NOOP").expect_ok("NOOP");
}

#[test]
fn slow_connections_do_not_hold_up_others() {
    let victim = user_with_mail("sv");
    let proxy = proxy("");
    // Clients stuck mid-TLS-handshake (implicit, and after STARTTLS) are
    // their own tasks' business.
    let mut stalled: Vec<TcpStream> = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(proxy.imaps).unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).unwrap();
        stalled.push(s);
    }
    let (mut s, _) = raw(proxy.imap);
    s.write_all(b"a STARTTLS\r\n").unwrap();
    stalled.push(s);
    // Logged-in clients: one silent, one in IDLE, one that never reads
    // what it asked for.
    let attacker = user_with_mail("sa");
    let silent = logged_in(&proxy, &attacker);
    let mut idle = logged_in(&proxy, &attacker);
    idle.write_raw(b"i IDLE\r\n").unwrap();
    assert!(idle.read_line().unwrap().text_only().starts_with("+ "));
    let mut greedy = logged_in(&proxy, &attacker);
    for _ in 0..50 {
        greedy
            .write_raw(b"g UID FETCH 1:* (BODY.PEEK[] FLAGS)\r\n")
            .unwrap();
    }
    assert_served(&proxy, &victim);
    // Still served themselves.
    idle.write_raw(b"DONE\r\n").unwrap();
    assert!(idle.read_response("i").unwrap().is_ok());
    drop((stalled, silent, greedy));
}

/// A provider that greets, accepts the login, then never reads again (a
/// stalled server behind a full socket buffer). Returns its address; the
/// connection is kept open until the test ends.
fn provider_that_stops_reading() -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.write_all(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] stalls\r\n");
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let tag = line.split(' ').next().unwrap_or("*").to_owned();
            let _ = conn
                .write_all(format!("{tag} OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n").as_bytes());
            // From now on nothing is read.
            held.push((conn, reader));
        }
    });
    addr
}

#[test]
fn a_provider_that_stops_reading_ends_the_session_instead_of_holding_it() {
    let upstream = provider_that_stops_reading();
    let proxy = proxy_with(upstream, 40 * 1024 * 1024, "");
    let mut client = TcpStream::connect(proxy.imap).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client.write_all(b"a LOGIN user secret\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("a OK") {
        let n = std::io::Read::read(&mut client, &mut buf).expect("the login answer");
        assert!(n > 0, "closed before the login answer");
        seen.extend_from_slice(&buf[..n]);
    }
    // 20 MB APPENDed: writ seals it and writes it on to a provider that
    // takes none of it past its socket buffers.
    let mut message = b"From: a@example.test\r\nSubject: big\r\n\r\n".to_vec();
    while message.len() < 20 * 1024 * 1024 {
        message.extend_from_slice(b"a line of a large message for a stalled provider\r\n");
    }
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let _ = writer.write_all(format!("b APPEND INBOX {{{}+}}\r\n", message.len()).as_bytes());
        let _ = writer.write_all(&message);
        let _ = writer.write_all(b"\r\n");
    });
    // The provider's timeout is 10 s a write: the session ends (a BYE or
    // the connection closed) well within the 60 s read bound, instead of
    // waiting on the provider for ever.
    let mut rest = Vec::new();
    let ended = loop {
        match std::io::Read::read(&mut client, &mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                rest.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&rest).contains("* BYE") {
                    break true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        ended,
        "the session still waits on a provider that stopped reading: {}",
        String::from_utf8_lossy(&rest)
    );
    drop(client);
    sender.join().unwrap();
}
