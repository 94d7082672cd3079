//! The IMAP proxy while other sessions change the mailbox: what a client
//! sees through writ must be what the provider would have shown it for the
//! plaintext. Sequence numbers it knows, EXPUNGE only where RFC 3501
//! §7.4.1 allows it (never during FETCH, STORE or SEARCH by sequence
//! number), bodies under the number of the message they belong to.
//!
//! Real Dovecot; the clients are the test's own IMAP client
//! (`common::imap`), through writ and straight at Dovecot.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::imap::Response;
use common::imap_proxy::ImapProxy;
use common::{Imap, provider};

/// writ's IMAP proxy in front of Dovecot's plain IMAP on loopback.
fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

/// A message whose body names its number (the body shows which message a
/// FETCH answer really carries).
fn message(i: usize) -> Vec<u8> {
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: message {i}\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <c{i}@example.test>\r\n\r\n\
         This is the body of message number {i}.\r\n"
    )
    .into_bytes()
}

/// `(seq, uid, BODY[] bytes)` of each FETCH answer carrying a body.
fn fetched(r: &Response) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for line in &r.untagged {
        let text = line.text_only().to_ascii_uppercase();
        let Some(rest) = text.strip_prefix("* ") else {
            continue;
        };
        let Some((seq, after)) = rest.split_once(' ') else {
            continue;
        };
        if !after.starts_with("FETCH (") {
            continue;
        }
        let seq: u32 = seq.parse().expect("a sequence number");
        let uid = after
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .skip_while(|w| *w != "UID")
            .nth(1)
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if let Some(body) = line.literals.first() {
            out.push((seq, uid, body.clone()));
        }
    }
    out
}

/// The sequence numbers of `* N EXPUNGE` lines, in order.
fn expunges(r: &Response) -> Vec<u32> {
    r.untagged
        .iter()
        .filter_map(|l| {
            let t = l.text_only();
            let rest = t.strip_prefix("* ")?;
            let (n, word) = rest.trim_end().split_once(' ')?;
            word.eq_ignore_ascii_case("EXPUNGE")
                .then(|| n.parse().ok())?
        })
        .collect()
}

/// Follows a response in order as a client does: each `* N EXPUNGE`
/// takes message N out of `view` (UIDs by sequence number), each FETCH
/// with a body must carry, under its number, the UID and the body of the
/// message the client numbers so. Panics with `what` and the response.
fn follow(view: &mut Vec<u32>, r: &Response, bodies: &BTreeMap<u32, Vec<u8>>, what: &str) {
    follow_part(view, r, bodies, what, |m| m.to_vec());
}

/// [`follow`] for a fetch whose literal is `part` of the message.
fn follow_part(
    view: &mut Vec<u32>,
    r: &Response,
    bodies: &BTreeMap<u32, Vec<u8>>,
    what: &str,
    part: impl Fn(&[u8]) -> Vec<u8>,
) {
    for line in &r.untagged {
        let t = line.text_only().to_ascii_uppercase();
        assert!(
            !t.contains("BODY[HEADER]") && !t.contains("BODYSTRUCTURE"),
            "{what}: an item the client did not ask for: {line:?}"
        );
        let one = Response {
            untagged: vec![line.clone()],
            tagged: r.tagged.clone(),
            status: r.status.clone(),
        };
        for n in expunges(&one) {
            assert!(n as usize <= view.len(), "{what}: EXPUNGE of unknown {n}");
            view.remove(n as usize - 1);
        }
        for (seq, uid, body) in fetched(&one) {
            let known = view.get(seq as usize - 1).copied();
            assert_eq!(
                known,
                Some(uid),
                "{what}: message {seq} answered with UID {uid}:\n{}",
                r.text()
            );
            assert_eq!(
                part(&bodies[&uid]),
                body,
                "{what}: message {seq} (UID {uid}) carries another message's body"
            );
        }
    }
}

/// Another session expunges while client A (through writ) still numbers
/// the message: A's FETCH by sequence number over sealed and plaintext
/// mail must carry no EXPUNGE, answer in A's numbering with each message's
/// own body; a UID FETCH may carry EXPUNGE, and what follows it is
/// numbered after it; NOOP brings what was held back.
#[test]
fn an_expunge_by_another_session_never_shifts_bodies_under_other_numbers() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("conc-expunge");
    let mut bodies = BTreeMap::new();
    let mut view = Vec::new();
    for i in 1..=8 {
        let m = message(i);
        // Sealed and plaintext in turn: writ answers them in different
        // commands of its own.
        let stored = if i % 2 == 1 {
            proxy.seal(&m)
        } else {
            m.clone()
        };
        let uid = p.imap_append(&user, "INBOX", &stored);
        bodies.insert(uid, m);
        view.push(uid);
    }

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT through writ");
    let mut b = p.imap(&user);
    b.select("INBOX").expect_ok("SELECT at Dovecot");
    let expunge = |b: &mut Imap, uid: u32| {
        b.command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
            .expect_ok("STORE");
        b.command("EXPUNGE").expect_ok("EXPUNGE");
    };

    expunge(&mut b, view[2]);
    let whole = |m: &[u8]| m.to_vec();
    let subject = |m: &[u8]| {
        let at = m
            .windows(9)
            .position(|w| w == b"Subject: ")
            .expect("a subject");
        let end = at + m[at..].windows(2).position(|w| w == b"\r\n").expect("CRLF");
        [&m[at..end + 2], b"\r\n"].concat()
    };
    type Part = dyn Fn(&[u8]) -> Vec<u8>;
    let commands: [(&str, &str, &Part); 3] = [
        ("a body fetch", "FETCH 1:8 (UID BODY.PEEK[])", &whole),
        ("a fetch setting \\Seen", "FETCH 4:8 (UID BODY[])", &whole),
        (
            "a header fetch",
            "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)",
            &subject,
        ),
    ];
    for (what, command, part) in commands {
        let r = a.command(command).expect_ok(what);
        assert!(
            expunges(&r).is_empty(),
            "{what}: EXPUNGE during a FETCH by sequence number:\n{}",
            r.text()
        );
        let before = view.len();
        follow_part(&mut view, &r, &bodies, what, part);
        assert_eq!(view.len(), before);
    }
    let r = a.command("NOOP").expect_ok("NOOP");
    assert_eq!(
        expunges(&r),
        [3],
        "NOOP must bring the EXPUNGE:\n{}",
        r.text()
    );
    follow(&mut view, &r, &bodies, "NOOP");

    // During a UID FETCH the provider may report an expunge; what writ
    // answers after it is numbered after it.
    expunge(&mut b, view[1]);
    let r = a
        .command("UID FETCH 1:* (UID BODY.PEEK[])")
        .expect_ok("UID FETCH");
    follow(&mut view, &r, &bodies, "a UID FETCH");
    let r = a.command("NOOP").expect_ok("NOOP");
    follow(&mut view, &r, &bodies, "NOOP");
    let r = a.command("FETCH 1:* (UID BODY.PEEK[])").expect_ok("FETCH");
    assert_eq!(fetched(&r).len(), view.len(), "{}", r.text());
    follow(&mut view, &r, &bodies, "a fetch after the expunges");
    a.logout();
    b.logout();
}

/// `(seq, uid)` of each FETCH answer whose ENVELOPE names `message N`,
/// with that N; panics on an answer naming another message than its UID's.
fn listed(r: &Response, number_of: &BTreeMap<u32, usize>, what: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for line in &r.untagged {
        let text = line.text_only();
        let Some(rest) = text.strip_prefix("* ") else {
            continue;
        };
        let Some((seq, after)) = rest.split_once(' ') else {
            continue;
        };
        if !after.to_ascii_uppercase().starts_with("FETCH (") || !after.contains("ENVELOPE") {
            continue;
        }
        let uid: u32 = after
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .skip_while(|w| !w.eq_ignore_ascii_case("UID"))
            .nth(1)
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no UID in {text}"));
        let n = number_of[&uid];
        assert!(
            after.contains(&format!("\"message {n}\"")),
            "{what}: UID {uid} answered with another message's ENVELOPE: {text}"
        );
        out.push((seq.parse().expect("a sequence number"), uid));
    }
    out
}

/// A listing long enough that writ fetches summaries while the provider
/// still answers its probe (pipelined, cold cache: each round over a
/// mailbox of its own), while another session expunges: every answer
/// carries its own message's ENVELOPE under the number the client gives
/// it, each message once; a FETCH by sequence number carries no EXPUNGE;
/// the next listing (warm) agrees.
#[test]
fn a_long_cold_listing_while_another_session_expunges_answers_each_message_as_itself() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("conc-listing");
    let mut b = p.imap(&user);
    b.command("CREATE Other").expect_ok("CREATE");
    let mut number_of = BTreeMap::new();
    let mut views: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for i in 1..=300 {
        let m = message(i);
        // Mostly sealed; every seventh plaintext (the provider's own).
        let stored = if i % 7 == 0 { m } else { proxy.seal(&m) };
        for mailbox in ["INBOX", "Other"] {
            let uid = p.imap_append(&user, mailbox, &stored);
            // The same UIDs in both mailboxes (both new).
            number_of.insert(uid, i);
            views.entry(mailbox).or_default().push(uid);
        }
    }
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    for (round, mailbox, command, at) in [
        (
            "a UID FETCH",
            "INBOX",
            "UID FETCH 1:* (UID FLAGS ENVELOPE)",
            [20, 150, 290],
        ),
        (
            "a FETCH by sequence number",
            "Other",
            "FETCH 1:* (UID ENVELOPE)",
            [10, 100, 200],
        ),
    ] {
        let view = views.get_mut(mailbox).expect("a mailbox");
        let gone = at.map(|i| view[i]);
        a.select(mailbox).expect_ok("SELECT through writ");
        b.select(mailbox).expect_ok("SELECT at Dovecot");
        let start = std::sync::Barrier::new(2);
        let r = std::thread::scope(|s| {
            let b = &mut b;
            let start = &start;
            let expunger = s.spawn(move || {
                start.wait();
                for uid in gone {
                    b.command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
                        .expect_ok("STORE");
                    b.command("EXPUNGE").expect_ok("EXPUNGE");
                }
            });
            start.wait();
            let r = a.command(command);
            expunger.join().expect("the expunging session");
            r
        });
        // OK, or OK [EXPUNGEISSUED] when an expunged message was reached.
        assert!(r.is_ok(), "{round}: {}", r.text());
        if command.starts_with("FETCH") {
            assert!(
                expunges(&r).is_empty(),
                "{round}: EXPUNGE during a FETCH by sequence number:\n{}",
                r.text()
            );
        }
        // In order: an EXPUNGE renumbers what follows it.
        let mut seen = std::collections::BTreeSet::new();
        for line in &r.untagged {
            let one = Response {
                untagged: vec![line.clone()],
                tagged: r.tagged.clone(),
                status: r.status.clone(),
            };
            for n in expunges(&one) {
                assert!(n as usize <= view.len(), "{round}: EXPUNGE of unknown {n}");
                view.remove(n as usize - 1);
            }
            for (seq, uid) in listed(&one, &number_of, round) {
                assert_eq!(
                    view.get(seq as usize - 1).copied(),
                    Some(uid),
                    "{round}: message {seq} answered with UID {uid}"
                );
                assert!(seen.insert(uid), "{round}: UID {uid} answered twice");
            }
        }
        // Every message the client still numbers is answered, unless
        // expunged meanwhile (then Dovecot may leave it out, too).
        for uid in view.iter() {
            assert!(
                seen.contains(uid) || gone.contains(uid),
                "{round}: UID {uid} not answered:\n{}",
                r.text()
            );
        }
        // No status line of writ's own reached the client.
        assert!(
            !r.text().contains("writ."),
            "{round}: one of writ's tags reached the client:\n{}",
            r.text()
        );
        let r = a.command("NOOP").expect_ok("NOOP");
        for n in expunges(&r) {
            view.remove(n as usize - 1);
        }
        for uid in gone {
            assert!(!view.contains(&uid), "{round}: UID {uid} still numbered");
        }
        // Warm now: exactly the messages left, each as itself, in any
        // order (RFC 3501): writ answers cached, opened and plaintext
        // messages as each is ready.
        let r = a
            .command("UID FETCH 1:* (UID ENVELOPE)")
            .expect_ok("a warm listing");
        let mut listed: Vec<(u32, u32)> = listed(&r, &number_of, round);
        listed.sort_unstable();
        let numbered: Vec<(u32, u32)> = (1..).zip(view.iter().copied()).collect();
        assert_eq!(listed, numbered, "{round}: the warm listing");
    }
    // The UID FETCH was INBOX's first listing: its summaries were asked
    // for with the probe, while the other session expunged; nothing else
    // was.
    assert_eq!(listed_ahead(&proxy, "first"), 1.0);
    a.logout();
    b.logout();
}

/// Listings whose summaries writ asked for with its probe, of `listing`
/// (`first`, `new_mail`).
fn listed_ahead(proxy: &ImapProxy, listing: &str) -> f64 {
    proxy
        .writ
        .metric("writ_imap_listed_ahead_total", &[("listing", listing)])
}

/// A message whose summary (part 1) is longer than `parts` suggest:
/// `parts` attachments, each named.
fn many_parts(i: usize, parts: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: message {i}\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <c{i}@example.test>\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    )
    .into_bytes();
    for part in 0..parts {
        m.extend(
            format!(
                "--b\r\nContent-Type: text/plain; name=\"part{part}.txt\"\r\n\
                 Content-Disposition: attachment; filename=\"part{part}.txt\"\r\n\r\nx\r\n"
            )
            .into_bytes(),
        );
    }
    m.extend(b"--b--\r\n");
    m
}

/// A folder's first listing through writ, as after writ starts: its
/// summaries are asked for with the probe (part 1 up to 16 KiB; one
/// summary longer, one plaintext message), once. Every message is
/// answered once as itself, and again from the cache; a plaintext folder
/// has its part 1s asked for once, and never on its next listings.
#[test]
fn a_first_listing_asks_for_summaries_ahead_once_and_answers_each_message_as_itself() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("conc-first");
    let mut number_of = BTreeMap::new();
    for i in 1..=40 {
        let m = match i {
            // About 40 KiB of summary: more than the first listing asks.
            9 => many_parts(i, 400),
            _ => message(i),
        };
        let stored = if i == 17 { m } else { proxy.seal(&m) };
        number_of.insert(p.imap_append(&user, "INBOX", &stored), i);
    }
    let mut b = p.imap(&user);
    b.command("CREATE Plain").expect_ok("CREATE");
    let mut plain_of = BTreeMap::new();
    for i in 1..=10 {
        plain_of.insert(p.imap_append(&user, "Plain", &message(i)), i);
    }
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT through writ");
    let listing = "UID FETCH 1:* (UID FLAGS ENVELOPE)";
    let want: Vec<(u32, u32)> = (1..=40).zip(number_of.keys().copied()).collect();
    for (round, ahead) in [
        ("the first listing", 1.0),
        ("the next, from the cache", 1.0),
    ] {
        let r = a.command(listing).expect_ok(round);
        assert!(!r.text().contains("writ."), "{round}: {}", r.text());
        let mut got = listed(&r, &number_of, round);
        got.sort_unstable();
        assert_eq!(got, want, "{round}: {}", r.text());
        assert_eq!(listed_ahead(&proxy, "first"), ahead, "{round}");
    }
    a.select("Plain").expect_ok("SELECT through writ");
    let want: Vec<(u32, u32)> = (1..=10).zip(plain_of.keys().copied()).collect();
    for round in ["a plaintext folder's first listing", "its next"] {
        let r = a.command(listing).expect_ok(round);
        let mut got = listed(&r, &plain_of, round);
        got.sort_unstable();
        assert_eq!(got, want, "{round}: {}", r.text());
        assert_eq!(listed_ahead(&proxy, "first"), 2.0, "{round}");
    }
    assert_eq!(listed_ahead(&proxy, "new_mail"), 0.0);
    a.logout();
    b.logout();
}

/// New mail, as a client syncs it: a folder listed once (writ's cache
/// warm), then messages appended by another session (sealed ones, a
/// plaintext one, a large sealed one), then `UID FETCH <first new>:*`
/// through writ, whose summaries writ asks for right behind its probe
/// (one of them longer than it asks for at first).
/// Every new message is answered once with its own ENVELOPE, the old ones
/// not at all; a second such listing answers them from the cache.
#[test]
fn new_mail_is_listed_through_writ_each_message_once_as_itself() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("conc-newmail");
    let mut number_of = BTreeMap::new();
    let append = |number_of: &mut BTreeMap<u32, usize>, i: usize, sealed: bool, big: bool| {
        let mut m = message(i);
        if i == 27 {
            // Many parts: a summary longer than the 64 KiB of part 1 the
            // speculative command asks for (fetched whole afterwards).
            m = many_parts(i, 1500);
        }
        if big {
            // Part 1 of the sealed message (its summary) stays small; the
            // payload is large.
            m.extend(
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"
                    .repeat(40_000),
            );
        }
        let stored = if sealed { proxy.seal(&m) } else { m };
        let uid = p.imap_append(&user, "INBOX", &stored);
        number_of.insert(uid, i);
        uid
    };
    for i in 1..=10 {
        append(&mut number_of, i, true, false);
    }
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT through writ");
    let r = a
        .command("UID FETCH 1:* (UID FLAGS ENVELOPE)")
        .expect_ok("the first listing");
    assert_eq!(listed(&r, &number_of, "the first listing").len(), 10);
    // New mail: sealed, one plaintext, one large sealed.
    let first_new = append(&mut number_of, 11, true, false);
    for i in 12..=30 {
        append(&mut number_of, i, i != 20, i == 25);
    }
    let r = a.command("NOOP").expect_ok("NOOP");
    assert!(r.text().contains("* 30 EXISTS"), "{}", r.text());
    for round in ["new mail", "the same again, from the cache"] {
        let r = a
            .command(&format!("UID FETCH {first_new}:* (UID FLAGS ENVELOPE)"))
            .expect_ok(round);
        assert!(!r.text().contains("writ."), "{round}: {}", r.text());
        let mut got: Vec<(u32, u32)> = listed(&r, &number_of, round);
        got.sort_unstable();
        let want: Vec<(u32, u32)> = (11..=30).map(|seq| (seq, first_new + seq - 11)).collect();
        assert_eq!(got, want, "{round}: {}", r.text());
    }
    a.logout();
}
