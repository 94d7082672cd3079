//! Hostile clients on every SMTP listener kind of `writ serve` (relay,
//! submission, submissions), end to end against the real local provider.
//! Each attack runs while another client is served: its greeting arrives
//! and its normal message is relayed ([`Server::assert_served`]).
//!
//! - Already-sealed mail, which writ passes through as it arrives, of
//!   several MB: delivered once and unchanged; a client stalling inside it
//!   is cut off by `data_timeout_secs` and its session slot given back.
//! - SMTP smuggling: every end-of-data shape with a bare LF or lone CR,
//!   followed by a second transaction in the same write. Only CRLF.CRLF
//!   ends a message; a bare-newline end is refused and the connection
//!   closed; the smuggled message never reaches the provider.
//! - Oversized command lines, messages past SIZE and past twice the limit,
//!   too many recipients, idle and slow clients, commands pipelined after
//!   STARTTLS.
//! - `max_sessions` and `max_sessions_per_ip` count the sessions of every
//!   listener together.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::thread;

use base64::Engine as _;
use common::mail::{DELIVERY_TIMEOUT, contains, marker_offset, message, unique};
use common::smtp::{Client, Smtp};
use common::tls::{TestTls, test_tls};
use common::writ::{Writ, WritConfig};
use common::{Provider, User, provider};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Relay,
    Submission,
    Submissions,
}

/// `writ serve` with a listener of one kind (submission servers have both
/// submission kinds), and who sends through it.
struct Server {
    writ: Writ,
    kind: Kind,
    tls: Option<TestTls>,
    /// The authenticated sender (submission kinds).
    sender: Option<User>,
}

impl Server {
    #[track_caller]
    fn start(p: &Provider, kind: Kind, change: impl FnOnce(WritConfig) -> WritConfig) -> Server {
        let (cfg, tls, sender) = match kind {
            Kind::Relay => (WritConfig::relay(p.smtp_addr()), None, None),
            Kind::Submission | Kind::Submissions => {
                let tls = test_tls("writ hostile test CA");
                let cfg = WritConfig::submission(p, tls.cert.clone(), tls.key.clone())
                    .listener("submissions", &[]);
                (cfg, Some(tls), Some(p.new_user("hostile-sender")))
            }
        };
        Server {
            writ: Writ::start(&change(cfg)),
            kind,
            tls,
            sender,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.writ.addr(match self.kind {
            Kind::Relay => "relay",
            Kind::Submission => "submission",
            Kind::Submissions => "submissions",
        })
    }

    fn from(&self) -> String {
        match &self.sender {
            Some(u) => u.address.clone(),
            None => "sender@elsewhere.test".into(),
        }
    }

    /// Connects (TLS as the kind needs), checks the greeting.
    #[track_caller]
    fn connect(&self) -> Client {
        let ca = self.tls.as_ref().map(|t| t.ca_der.as_slice());
        let c = match self.kind {
            Kind::Relay => Client::plain(self.addr()),
            Kind::Submission => Client::starttls(self.addr(), ca.unwrap()),
            Kind::Submissions => Client::implicit_tls(self.addr(), ca.unwrap()),
        };
        let c = c.unwrap_or_else(|e| panic!("{:?}: connect: {e}\n{}", self.kind, self.writ.log()));
        assert_eq!(
            c.greeting.code,
            220,
            "{:?}\n{}",
            c.greeting,
            self.writ.metrics()
        );
        c
    }

    /// A new session: greeted, EHLO, AUTH where the kind needs it.
    #[track_caller]
    fn session(&self) -> Client {
        let mut c = self.connect();
        let ehlo = c.command("EHLO hostile.test").unwrap();
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        assert!(
            !ehlo
                .lines
                .iter()
                .any(|l| l.eq_ignore_ascii_case("CHUNKING")),
            "BDAT is not offered: {ehlo:?}"
        );
        if let Some(u) = &self.sender {
            let plain = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{}\0{}", u.address, u.password));
            let auth = c.command(&format!("AUTH PLAIN {plain}")).unwrap();
            assert_eq!(auth.code, 235, "{auth:?}");
        }
        c
    }

    /// MAIL, RCPT to `to`, DATA, expecting 250, 250, 354.
    #[track_caller]
    fn begin(&self, c: &mut Client, to: &str) {
        for line in [
            format!("MAIL FROM:<{}>", self.from()),
            format!("RCPT TO:<{to}>"),
        ] {
            let r = c.command(&line).unwrap();
            assert_eq!(r.code, 250, "{line}: {r:?}\n{}", self.writ.log());
        }
        let r = c.command("DATA").unwrap();
        assert_eq!(r.code, 354, "{r:?}");
    }

    /// Another client is served: greeted, and a normal message to `to`
    /// accepted (250). Returns its body marker.
    #[track_caller]
    fn assert_served(&self, to: &User) -> String {
        let marker = unique("served");
        let mut c = self.session();
        self.begin(&mut c, &to.address);
        let m = message(&self.from(), &to.address, "served", &marker, &unique("id"));
        let mut wire = m.clone();
        wire.extend_from_slice(b".\r\n");
        c.write_raw(&wire).unwrap();
        let r = c.read_reply().unwrap();
        assert_eq!(r.code, 250, "a second client was not served: {r:?}");
        assert_eq!(c.command("QUIT").unwrap().code, 221);
        // writ gives the session's slot back before it closes.
        assert!(c.is_closed());
        marker
    }

    /// Waits for `n` messages for `user` and opens them.
    #[track_caller]
    fn opened(&self, p: &Provider, user: &User, n: usize) -> Vec<Vec<u8>> {
        let stored = p.wait_for_messages(user, "INBOX", n, DELIVERY_TIMEOUT);
        assert_eq!(stored.len(), n, "{}: {} messages", user.name, stored.len());
        stored
            .iter()
            .map(|s| self.writ.test_keys().open(s))
            .collect()
    }
}

/// `writ seal` (the CLI) of a message of about `size` bytes, with the
/// keyring `writ` seals to: an already-sealed message.
fn sealed_message(writ: &Writ, to: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut original = message("a@elsewhere.test", to, "big", &unique("big"), &unique("id"));
    while original.len() < size {
        original.extend_from_slice(b"a line of an already sealed message, passed through\r\n");
    }
    let sealed = writ.seal_with_cli(&original);
    (original, sealed)
}

/// Dot-stuffs `m` and adds the end marker.
fn data(m: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(m);
    assert!(!text.starts_with('.'));
    let mut wire = text.replace("\r\n.", "\r\n..").into_bytes();
    if !wire.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

#[test]
fn relay_passes_a_three_megabyte_sealed_message_through_once_unchanged() {
    let p = provider();
    let user = p.new_user("passthrough");
    let other = p.new_user("passthrough-other");
    let server = Server::start(p, Kind::Relay, |c| c);
    let (original, sealed) = sealed_message(&server.writ, &user.address, 3 * 1024 * 1024);
    assert!(sealed.len() > 3 * 1024 * 1024);
    let mut c = server.session();
    server.begin(&mut c, &user.address);
    let wire = data(&sealed);
    // Written from another thread: writ reads while it relays.
    let r = thread::scope(|s| {
        let mut writer = c.try_clone_writer();
        let w = s.spawn(move || writer.write_all(&wire));
        // Meanwhile, another client is served.
        server.assert_served(&other);
        let r = c.read_reply();
        w.join().unwrap().expect("the whole message written");
        r
    });
    let r =
        r.unwrap_or_else(|e| panic!("no reply to the sealed message: {e}\n{}", server.writ.log()));
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.command("NOOP").unwrap().code, 250, "the session goes on");
    let _ = c.command("QUIT");

    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1, "delivered once");
    let at = marker_offset(&stored[0]);
    assert!(
        stored[0][at..] == sealed[..],
        "the sealed message is stored unchanged below the provider's fields"
    );
    assert!(
        server
            .writ
            .test_keys()
            .open(&stored[0])
            .ends_with(&original)
    );
    server.opened(p, &other, 1);
}

#[test]
fn relay_cuts_off_a_client_stalled_inside_a_sealed_message_and_frees_its_slot() {
    let p = provider();
    let user = p.new_user("stall");
    let other = p.new_user("stall-other");
    let server = Server::start(p, Kind::Relay, |c| {
        c.smtp("data_timeout_secs", "2")
            .smtp("max_sessions_per_ip", "2")
    });
    let (_, sealed) = sealed_message(&server.writ, &user.address, 3 * 1024 * 1024);
    let mut stalled = server.session();
    server.begin(&mut stalled, &user.address);
    // Two thirds of it, then nothing.
    let part = data(&sealed);
    let part = &part[..part.len() * 2 / 3];
    thread::scope(|s| {
        let mut writer = stalled.try_clone_writer();
        let w = s.spawn(move || writer.write_all(part));
        // The stalled session holds one of the two slots: one more client
        // is served meanwhile.
        server.assert_served(&other);
        w.join().unwrap().expect("written");
    });
    let r = stalled
        .read_reply()
        .unwrap_or_else(|e| panic!("no reply to a stalled DATA: {e}\n{}", server.writ.log()));
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().starts_with("4.4.2"), "{r:?}");
    assert!(stalled.is_closed(), "closed after the 421");
    // Its slot is free: two sessions at once from the same address.
    let first = server.session();
    let second = server.session();
    for mut c in [first, second] {
        assert_eq!(c.command("QUIT").unwrap().code, 221);
        assert!(c.is_closed());
    }
    // Nothing of the cut-off message was delivered.
    server.assert_served(&user);
    let opened = server.opened(p, &user, 1);
    assert!(contains(&opened[0], b"served"), "only the served message");
}

#[test]
fn the_session_limits_count_every_listener_together() {
    let p = provider();
    let two_relays = |key: &str| {
        Writ::start(
            &WritConfig::relay(p.smtp_addr())
                .listener("relay", &["127.0.0.1"])
                .smtp(key, "1"),
        )
    };
    for (key, refusal) in [
        ("max_sessions", "Too many connections, try again later"),
        (
            "max_sessions_per_ip",
            "Too many connections from your address",
        ),
    ] {
        let writ = two_relays(key);
        let (first, second) = (writ.listeners[0].1, writ.listeners[1].1);
        let held = Smtp::connect(first).expect("connect");
        assert_eq!(held.greeting.code, 220, "{:?}", held.greeting);
        // The other listener has no session of its own, yet is full.
        let over = Smtp::connect(second).expect("connect");
        assert_eq!(over.greeting.code, 421, "{key}: {:?}", over.greeting);
        assert!(
            over.greeting.text().contains(refusal),
            "{key}: {:?}",
            over.greeting
        );
        held.quit();
    }
}

/// A second transaction, to be smuggled after a fake end of data.
fn smuggled(from: &str, victim: &str, marker: &str) -> Vec<u8> {
    format!(
        "MAIL FROM:<{from}>\r\nRCPT TO:<{victim}>\r\nDATA\r\n\
         From: <{from}>\r\nTo: <{victim}>\r\nSubject: smuggled\r\n\r\n{marker}\r\n.\r\n"
    )
    .into_bytes()
}

/// Every end-of-data shape but CRLF.CRLF; `true`: a bare-newline end,
/// refused with 554 and the connection closed; `false`: not an end, but
/// a bare LF or a lone CR next to a line's dot in the message, which is
/// refused with 554 (a next hop taking a lone CR for a line break would
/// read an end there).
const FAKE_ENDS: &[(&str, &[u8], bool)] = &[
    ("LF.LF", b"\n.\n", true),
    ("LF.CRLF", b"\n.\r\n", true),
    ("CRLF.LF", b"\r\n.\n", true),
    ("CR.CRLF", b"\r.\r\n", false),
    ("CRLF.CR", b"\r\n.\r", false),
    ("CR.CR", b"\r.\r", false),
    ("CR.LF", b"\r.\n", false),
    ("LF.CR", b"\n.\r", false),
    ("CR.CR.LF", b"\r\n.\r\r\n", false),
];

fn smuggling(kind: Kind) {
    let p = provider();
    let user = p.new_user("smuggle-to");
    let victim = p.new_user("smuggle-victim");
    let other = p.new_user("smuggle-other");
    let server = Server::start(p, kind, |c| c);
    let mut served = 0;
    for (name, end, closes) in FAKE_ENDS {
        let marker = unique("smuggled");
        let mut c = server.session();
        server.begin(&mut c, &user.address);
        let mut wire = format!(
            "From: <{}>\r\nTo: <{}>\r\nSubject: carrier\r\n\r\nbody",
            server.from(),
            user.address
        )
        .into_bytes();
        wire.extend_from_slice(end);
        wire.extend_from_slice(&smuggled(&server.from(), &victim.address, &marker));
        wire.extend_from_slice(b"NOOP\r\n");
        c.write_raw(&wire).unwrap();
        // While the attack is in flight, another client is served.
        server.assert_served(&other);
        served += 1;
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("{kind:?} {name}: {e}\n{}", server.writ.log()));
        if *closes {
            assert_eq!(r.code, 554, "{kind:?} {name}: {r:?}");
            assert!(r.text().starts_with("5.6.0"), "{kind:?} {name}: {r:?}");
            assert!(c.is_closed(), "{kind:?} {name}: not closed after {r:?}");
        } else {
            // One message (the "smuggled" commands are its content),
            // refused; the next reply is the NOOP's.
            assert_eq!(r.code, 554, "{kind:?} {name}: {r:?}");
            assert!(r.text().starts_with("5.6.0"), "{kind:?} {name}: {r:?}");
            let noop = c.read_reply().unwrap();
            assert_eq!(
                (noop.code, noop.text()),
                (250, "2.0.0 OK".to_string()),
                "{kind:?} {name}: a smuggled command was run"
            );
            let _ = c.command("QUIT");
        }
    }
    // A sentinel to the victim, after all the attacks: the only message
    // it ever gets.
    let sentinel = server.assert_served(&victim);
    let opened = server.opened(p, &victim, 1);
    assert!(contains(&opened[0], sentinel.as_bytes()), "{kind:?}");
    assert!(!contains(&opened[0], b"smuggled"), "{kind:?}");
    server.opened(p, &other, served);
}

#[test]
fn smuggling_on_the_relay_listener_never_delivers_a_second_message() {
    smuggling(Kind::Relay);
}

#[test]
fn smuggling_on_the_submission_listener_never_delivers_a_second_message() {
    smuggling(Kind::Submission);
}

#[test]
fn smuggling_on_the_submissions_listener_never_delivers_a_second_message() {
    smuggling(Kind::Submissions);
}

#[test]
fn oversized_lines_and_messages_are_refused_while_others_are_served() {
    const LIMIT: usize = 100_000;
    let p = provider();
    let user = p.new_user("oversized");
    let other = p.new_user("oversized-other");
    let server = Server::start(p, Kind::Relay, |c| {
        c.smtp("max_message_size", &LIMIT.to_string())
    });
    let mut c = server.session();
    // Long command lines, pipelined, and one of a megabyte: each refused
    // with 500 5.5.6, its bytes dropped (19 in all: the 21st protocol
    // error of a session would close it, `smtp_attacks.rs`).
    let mut wire = Vec::new();
    for _ in 0..18 {
        wire.extend_from_slice(format!("NOOP {}\r\n", "x".repeat(5000)).as_bytes());
    }
    wire.extend_from_slice(format!("MAIL FROM:<{}@x>\r\n", "y".repeat(1 << 20)).as_bytes());
    thread::scope(|s| {
        let mut writer = c.try_clone_writer();
        let w = s.spawn(move || writer.write_all(&wire));
        server.assert_served(&other);
        for i in 0..19 {
            let r = c.read_reply().unwrap();
            assert_eq!(r.code, 500, "line {i}: {r:?}");
            assert!(r.text().starts_with("5.5.6"), "{r:?}");
        }
        w.join().unwrap().unwrap();
    });
    // SIZE declared too big.
    let r = c
        .command(&format!("MAIL FROM:<a@elsewhere.test> SIZE={}", LIMIT + 1))
        .unwrap();
    assert_eq!(r.code, 552, "{r:?}");
    // Sent too big: refused at the end, the session goes on.
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.resize(LIMIT * 3 / 2, b'x');
    server.begin(&mut c, &user.address);
    c.write_raw(&data(&big)).unwrap();
    let r = c.read_reply().unwrap();
    assert_eq!(r.code, 552, "{r:?}");
    assert_eq!(c.command("NOOP").unwrap().code, 250);
    // Past twice the limit with no end in sight: 552 and closed, without
    // reading the rest.
    server.begin(&mut c, &user.address);
    let mut endless = b"Subject: endless\r\n\r\n".to_vec();
    endless.resize(LIMIT * 3, b'x');
    let outcome = thread::scope(|s| {
        let mut writer = c.try_clone_writer();
        let w = s.spawn(move || {
            let _ = writer.write_all(&endless);
            let _ = writer.write_all(b"\r\n.\r\n");
        });
        server.assert_served(&other);
        let r = c.read_reply();
        let closed = c.is_closed();
        w.join().unwrap();
        (r, closed)
    });
    // writ drains what is still coming after its reply before it closes:
    // no reset destroys the reply.
    let r = outcome
        .0
        .unwrap_or_else(|e| panic!("no 552: {e}\n{}", server.writ.log()));
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text().starts_with("5.3.4"), "{r:?}");
    assert!(outcome.1, "the session was not closed");
    server.opened(p, &other, 2);
    server.assert_served(&user);
    let opened = server.opened(p, &user, 1);
    assert!(
        contains(&opened[0], b"served"),
        "no oversized message stored"
    );
}

#[test]
fn too_many_recipients_are_refused_while_others_are_served() {
    let p = provider();
    let user = p.new_user("rcpts");
    let other = p.new_user("rcpts-other");
    let server = Server::start(p, Kind::Relay, |c| c.smtp("max_recipients", "3"));
    let mut c = server.session();
    let mut wire = b"MAIL FROM:<a@elsewhere.test>\r\n".to_vec();
    for _ in 0..50 {
        wire.extend_from_slice(format!("RCPT TO:<{}>\r\n", user.address).as_bytes());
    }
    c.write_raw(&wire).unwrap();
    server.assert_served(&other);
    assert_eq!(c.read_reply().unwrap().code, 250);
    let codes: Vec<u16> = (0..50).map(|_| c.read_reply().unwrap().code).collect();
    assert_eq!(codes[..3], [250, 250, 250]);
    assert!(codes[3..].iter().all(|&c| c == 452), "{codes:?}");
    assert_eq!(c.command("RSET").unwrap().code, 250);
    server.opened(p, &other, 1);
}

/// Probing: one session trying recipients the relay refuses (550, not a
/// protected domain; the provider's own refusals count the same way, see
/// the session's unit tests). Past 20 refusals without a message
/// delivered writ closes the session (421), while another session is
/// served.
#[test]
fn refused_recipients_end_the_session_while_others_are_served() {
    let p = provider();
    let other = p.new_user("harvest-other");
    let server = Server::start(p, Kind::Relay, |c| c);
    let mut c = server.session();
    let mut wire = b"MAIL FROM:<a@elsewhere.test>\r\n".to_vec();
    for i in 0..30 {
        wire.extend_from_slice(format!("RCPT TO:<guess{i}@elsewhere.test>\r\n").as_bytes());
    }
    c.write_raw(&wire).unwrap();
    server.assert_served(&other);
    assert_eq!(c.read_reply().unwrap().code, 250);
    let mut codes = Vec::new();
    while let Ok(r) = c.read_reply() {
        codes.push(r.code);
        if r.code == 421 {
            break;
        }
    }
    assert_eq!(codes.len(), 21, "{codes:?}");
    assert!(codes[..20].iter().all(|&c| c == 550), "{codes:?}");
    assert_eq!(codes[20], 421, "{codes:?}");
    assert!(c.read_reply().is_err(), "closed after the 421");
    server.opened(p, &other, 1);
}

#[test]
fn idle_and_slow_clients_are_cut_off_while_others_are_served() {
    let p = provider();
    let user = p.new_user("slow");
    let other = p.new_user("slow-other");
    let server = Server::start(p, Kind::Relay, |c| {
        c.smtp("command_timeout_secs", "2")
            .smtp("data_timeout_secs", "2")
    });
    // Idle after the greeting.
    let mut idle = server.connect();
    // Idle inside DATA.
    let mut idle_data = server.session();
    server.begin(&mut idle_data, &user.address);
    idle_data
        .write_raw(b"Subject: half\r\n\r\nhalf a mess")
        .unwrap();
    // A command line a byte at a time, slower than the timeout allows.
    let mut slow = server.session();
    let slow_result = thread::scope(|s| {
        let mut writer = slow.try_clone_writer();
        let w = s.spawn(move || {
            for b in b"NOOP and more and more and more\r\n" {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        server.assert_served(&other);
        let r = slow.read_reply();
        w.join().unwrap();
        r
    });
    let r = slow_result.unwrap();
    assert_eq!(r.code, 421, "slow client: {r:?}");
    for (what, c) in [("idle", &mut idle), ("idle in DATA", &mut idle_data)] {
        let r = c.read_reply().unwrap();
        assert_eq!(r.code, 421, "{what}: {r:?}");
        assert!(r.text().starts_with("4.4.2"), "{what}: {r:?}");
        assert!(c.is_closed(), "{what}");
    }
    server.assert_served(&user);
    let opened = server.opened(p, &user, 1);
    assert!(
        contains(&opened[0], b"served"),
        "the half message was not delivered"
    );
    server.opened(p, &other, 1);
}

#[test]
fn commands_pipelined_after_starttls_are_discarded_while_others_are_served() {
    let p = provider();
    let other = p.new_user("starttls-other");
    let victim = p.new_user("starttls-victim");
    let server = Server::start(p, Kind::Submission, |c| c);
    let sender = server.sender.as_ref().unwrap();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{}", sender.address, sender.password));
    let injected = format!(
        "STARTTLS\r\nEHLO evil.test\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<{}>\r\nRCPT TO:<{}>\r\n",
        sender.address, victim.address
    );
    let ca = &server.tls.as_ref().unwrap().ca_der;
    let mut c = Client::starttls_with(server.addr(), ca, injected.as_bytes())
        .unwrap_or_else(|e| panic!("{e}\n{}", server.writ.log()));
    server.assert_served(&other);
    // Had the injected lines been run, their replies would come first.
    let noop = c.command("NOOP").unwrap();
    assert_eq!((noop.code, noop.text()), (250, "2.0.0 OK".into()));
    let ehlo = c.command("EHLO client.test").unwrap();
    assert_eq!(ehlo.code, 250);
    let mail = c
        .command(&format!("MAIL FROM:<{}>", sender.address))
        .unwrap();
    assert_eq!(mail.code, 530, "the injected AUTH was acted on: {mail:?}");
    let _ = c.command("QUIT");
    server.opened(p, &other, 1);
}

#[test]
fn a_client_trickling_data_inside_the_chunk_timeout_is_cut_off_at_the_phase_limit() {
    let p = provider();
    let user = p.new_user("trickle");
    let other = p.new_user("trickle-other");
    // Each byte comes well inside data_timeout, so only the limit on the
    // whole DATA phase can end this.
    let server = Server::start(p, Kind::Relay, |c| {
        c.smtp("data_timeout_secs", "5").smtp("data_max_secs", "2")
    });
    let mut trickle = server.session();
    server.begin(&mut trickle, &user.address);
    let reply = thread::scope(|s| {
        let mut writer = trickle.try_clone_writer();
        // 30 s of bytes, far past the 2 s limit: true if writ cut it off
        // before the end.
        let w = s.spawn(move || {
            let body = b"Subject: trickle\r\n\r\n"
                .iter()
                .chain(std::iter::repeat(&b'x'));
            for b in body.take(300) {
                if writer.write_all(&[*b]).is_err() {
                    return true;
                }
                thread::sleep(std::time::Duration::from_millis(100));
            }
            false
        });
        // Others are served meanwhile.
        server.assert_served(&other);
        let r = trickle.read_reply();
        (r, w.join().unwrap())
    });
    let (r, cut_off) = reply;
    assert!(cut_off, "the trickling client was never cut off");
    let r = r.unwrap_or_else(|e| panic!("no reply to a trickled DATA: {e}"));
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().starts_with("4.4.2"), "{r:?}");
    assert!(trickle.is_closed(), "closed after the 421");
    // Nothing of the trickled message reached the provider.
    server.assert_served(&user);
    let opened = server.opened(p, &user, 1);
    assert!(contains(&opened[0], b"served"), "only the served message");
}
