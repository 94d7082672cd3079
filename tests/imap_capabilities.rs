//! Capabilities writ keeps correct over sealed mail (issue 11, item 2),
//! each held to Dovecot as the oracle: the corpus is stored sealed in one
//! user's INBOX and in plaintext in another's, in the same order and with
//! the same flags; each command run through writ over the sealed copies
//! must give what it gives straight at Dovecot over the plaintext ones
//! (`imap_capabilities.py`, over imaplib).

mod common;

use std::net::SocketAddr;

use common::corpus::{eml_files, has_lone_cr};
use common::imap::Imap;
use common::imap_proxy::ImapProxy;
use common::python;
use common::{Provider, User, provider};

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

/// Messages made for SORT and THREAD: replies and forwards with list
/// tags, subjects equal once their base is taken, dates in several zones,
/// missing or broken dates, addresses with names, groups, encoded words
/// and none, References and In-Reply-To chains with missing parents.
fn threaded() -> Vec<(String, Vec<u8>)> {
    let m = |i: usize, head: &str, body: &str| {
        (
            format!("generated/{i}"),
            format!("{head}Message-ID: <m{i}@example.test>\r\n\r\n{body}\r\n").into_bytes(),
        )
    };
    vec![
        m(
            1,
            "From: Carol <carol@example.test>\r\nTo: dave@example.test\r\nSubject: Plans for the week\r\nDate: Mon, 3 Mar 2025 09:00:00 +0100\r\n",
            "first",
        ),
        m(
            2,
            "From: alice@example.test\r\nTo: Zed <zed@example.test>\r\nCc: bob@example.test\r\nSubject: Re: Plans for the week\r\nDate: Mon, 3 Mar 2025 08:30:00 +0000\r\nIn-Reply-To: <m1@example.test>\r\nReferences: <m1@example.test>\r\n",
            "a reply",
        ),
        m(
            3,
            "From: =?UTF-8?Q?=C3=89mile?= <emile@example.test>\r\nTo: undisclosed-recipients:;\r\nSubject: [team] RE: [fwd: Plans for the week]\r\nDate: Sun, 2 Mar 2025 23:00:00 -0800\r\nReferences: <m1@example.test> <m2@example.test>\r\n",
            "tagged",
        ),
        m(
            4,
            "From: bob@example.test\r\nTo: carol@example.test\r\nSubject: Fwd: Budget (fwd)\r\nDate: not a date\r\n",
            "broken date",
        ),
        m(
            5,
            "From: Bob <BOB@example.test>\r\nTo: carol@example.test\r\nSubject: budget\r\n",
            "no date",
        ),
        m(
            6,
            "From: zed@example.test\r\nTo: alice@example.test\r\nCc: =?ISO-8859-1?Q?J=F6rg?= <jorg@example.test>\r\nSubject: Re: Budget\r\nDate: Tue, 4 Mar 2025 10:00:00 +0000\r\nIn-Reply-To: <missing@example.test>\r\nReferences: <missing@example.test>\r\n",
            "reply to a missing parent",
        ),
        m(
            7,
            "From: dave@example.test\r\nSubject: Re: Re: budget\r\nDate: Tue, 4 Mar 2025 10:00:00 +0000\r\nReferences: <missing@example.test> <m6@example.test>\r\n",
            "same date as 6",
        ),
        m(
            8,
            "From: \"Quoted, Name\" <quoted@example.test>\r\nTo: a@b, c@d\r\nSubject: [list] \r\nDate: Wed, 5 Mar 2025 12:00:00 +0530\r\n",
            "blob only",
        ),
        m(
            9,
            "From: <>\r\nSubject: =?UTF-8?B?w4ljb2xl?= =?UTF-8?B?IGV0IHZpZQ==?=\r\nDate: Wed, 5 Mar 2025 06:30:00 +0000\r\n",
            "encoded subject",
        ),
        m(
            10,
            "Subject: Re:\r\nDate: Thu, 6 Mar 2025 00:00:00 +0000\r\nIn-Reply-To: <m9@example.test>\r\n",
            "no from",
        ),
        m(
            11,
            "From: amy@example.test\r\nSubject: plans for the WEEK\r\nDate: Fri, 7 Mar 2025 00:00:00 +0000\r\nReferences: <m3@example.test>\r\n",
            "case",
        ),
        m(
            12,
            "From: amy@example.test\r\nSubject: Budget\r\nDate: Fri, 7 Mar 2025 00:00:00 +0000\r\n",
            "subject only thread",
        ),
    ]
}

/// The search corpus (varied subjects, dates, addresses, charsets) and
/// the threaded messages.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = eml_files("search")
        .into_iter()
        .filter(|(_, m)| !has_lone_cr(m))
        .collect();
    assert!(out.len() >= 40, "corpus missing: {} messages", out.len());
    out.extend(threaded());
    out
}

/// INTERNALDATEs given at APPEND, in turn: ties and zones for ARRIVAL.
const INTERNAL_DATES: [&str; 5] = [
    "15-Jan-2024 23:30:00 -0800",
    "16-Jan-2024 07:30:00 +0000",
    "01-Jun-2024 12:00:00 +0000",
    "15-Jan-2024 23:30:00 -0800",
    "02-Jan-2024 04:30:00 +0530",
];

/// Flags set on both copies alike, so that flag keys mix with content.
const FLAGS: &[&str] = &[
    "STORE 1:7 +FLAGS (\\Seen)",
    "STORE 3,9,12:14 +FLAGS (\\Flagged)",
    "STORE 20:22 +FLAGS ($Label1)",
];

/// A user with `messages` in INBOX, sealed when `proxy` is given.
fn user_with(
    p: &Provider,
    prefix: &str,
    messages: &[(String, Vec<u8>)],
    proxy: Option<&ImapProxy>,
) -> User {
    let user = p.new_user(prefix);
    let mut imap = p.imap(&user);
    for (i, (_, m)) in messages.iter().enumerate() {
        let stored = match proxy {
            Some(proxy) => proxy.seal(m),
            None => m.clone(),
        };
        let date = INTERNAL_DATES[i % INTERNAL_DATES.len()];
        imap.command_with_literal(&format!("APPEND INBOX () \"{date}\""), &stored, "")
            .expect_ok("APPEND");
    }
    imap.select("INBOX").expect_ok("SELECT");
    if messages.len() < 22 {
        imap.logout();
        return user;
    }
    for f in FLAGS {
        imap.command(f).expect_ok("STORE");
    }
    imap.logout();
    user
}

const ORACLE: &str = include_str!("imap_capabilities.py");

/// Runs `commands` through writ and straight at Dovecot; all must agree.
fn oracle(proxy: &ImapProxy, plain: &User, sealed: &User, commands: &[&str]) -> String {
    let p = provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("commands");
    let list: String = commands.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(&file, list).expect("write commands");
    let out = python::ok(
        ORACLE,
        [
            proxy.script_args(Some(p.imap_addr()), proxy.imap, &[plain, sealed]),
            vec![file.display().to_string()],
        ]
        .concat(),
    );
    println!("{out}");
    assert!(out.contains("ALL SAME"), "{out}");
    out
}

struct World {
    proxy: ImapProxy,
    plain: User,
    sealed: User,
}

fn world(name: &str) -> World {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let messages = corpus();
    let plain = user_with(p, &format!("{name}-plain"), &messages, None);
    let sealed = user_with(p, &format!("{name}-sealed"), &messages, Some(&proxy));
    World {
        proxy,
        plain,
        sealed,
    }
}

fn capabilities_through(w: &World) -> String {
    let mut imap = Imap::login_to(w.proxy.imap, &w.sealed.name, &w.sealed.password);
    let caps = imap.command("CAPABILITY").expect_ok("CAPABILITY").text();
    imap.logout();
    caps
}

#[test]
fn esearch_through_writ_answers_as_dovecot() {
    let w = world("esearch");
    let caps = capabilities_through(&w);
    assert!(caps.contains(" ESEARCH"), "{caps}");
    oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            // Content keys: evaluated by writ over the opened messages.
            "SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT the",
            "UID SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT the",
            "SEARCH RETURN () FROM example",
            "UID SEARCH RETURN (ALL) BODY a",
            "SEARCH RETURN (COUNT) TEXT message",
            "UID SEARCH RETURN (MAX COUNT) NOT SEEN TEXT the",
            "SEARCH RETURN (MIN) SUBJECT zzznomatchzzz",
            "UID SEARCH RETURN (MIN MAX ALL) SUBJECT zzznomatchzzz",
            "SEARCH RETURN (count min) LARGER 1000",
            "UID SEARCH RETURN (ALL) OR FLAGGED SENTBEFORE 1-Jan-2010",
            "SEARCH RETURN (MIN MAX) CHARSET UTF-8 HEADER Message-ID e",
            // No content keys: the provider's SEARCH, answered as ESEARCH.
            "SEARCH RETURN (COUNT) UNSEEN",
            "UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED",
            "SEARCH RETURN () 2:30 KEYWORD $Label1",
            "UID SEARCH RETURN (ALL) UID 5:*",
            "SEARCH RETURN (MIN) DELETED",
            "SEARCH RETURN (MIN) CHARSET X-NO-SUCH-CHARSET ALL",
            "UID SEARCH RETURN (COUNT MAX) MODSEQ 1",
            // MIN and MAX alone answer the MODSEQ of the messages they
            // return (imaptest's esearch-condstore): changed out of order.
            "STORE 1 +FLAGS ($WritOrder)",
            "STORE 3 +FLAGS ($WritOrder)",
            "STORE 2 +FLAGS ($WritOrder)",
            "SEARCH RETURN (MIN) 1:3 MODSEQ \"/flags/$WritOrder\" all 1",
            "SEARCH RETURN (MAX) 1:3 MODSEQ \"/flags/$WritOrder\" all 1",
            "SEARCH RETURN (MIN MAX) 2:3 MODSEQ 1",
            "UID SEARCH RETURN (MIN) 1:3 MODSEQ 1",
            "UID SEARCH RETURN (MAX) 1:* MODSEQ 1",
            "SEARCH RETURN (MIN COUNT) 1:3 MODSEQ 1",
            "SEARCH RETURN (MIN) 1:3 DELETED MODSEQ 1",
            // Plain SEARCH still answered as before.
            "SEARCH SUBJECT the",
            "UID SEARCH FLAGGED",
        ],
    );
}

/// SEARCHRES (RFC 5182): `$` saved by SEARCH and UID SEARCH (content
/// keys over sealed mail evaluated by writ, the rest by the provider),
/// then named by FETCH, STORE, COPY, SEARCH (alone, inside OR and NOT, as
/// `UID $`), by sequence number and by UID; SAVE with MIN/MAX; an empty
/// `$`; a failed SAVE search; `$` as a string; another client expunging
/// saved messages; UNSELECT emptying `$`. Every answer as Dovecot's.
#[test]
fn searchres_through_writ_answers_as_dovecot() {
    let w = world("searchres");
    let caps = capabilities_through(&w);
    assert!(caps.contains(" SEARCHRES"), "{caps}");
    oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            // Saved by the provider's search; nothing answered for SAVE alone.
            "SEARCH RETURN (SAVE) FLAGGED",
            "FETCH $ (FLAGS)",
            "UID FETCH $ (FLAGS RFC822.SIZE)",
            "SEARCH $",
            "UID SEARCH UID $",
            "SEARCH NOT $",
            "SEARCH OR $ SUBJECT the",
            "UID SEARCH $ SUBJECT the",
            // Saved by writ's search over the opened messages.
            "SEARCH RETURN (SAVE) SUBJECT the",
            "FETCH $ (UID FLAGS)",
            "UID SEARCH RETURN (SAVE ALL) TEXT message",
            "FETCH $ (UID)",
            "SEARCH RETURN (SAVE MIN) FROM example",
            "UID FETCH $ (UID)",
            "UID SEARCH RETURN (MAX SAVE) FROM example",
            "FETCH $ (UID)",
            "SEARCH RETURN (SAVE MIN MAX) BODY a",
            "UID FETCH $ (UID)",
            "SEARCH RETURN (SAVE COUNT MIN) SUBJECT the",
            "FETCH $ (UID)",
            // Saved by SORT (ESORT): the set, whatever its order; MIN and
            // MAX alone the first and last in sort order.
            "SORT RETURN (SAVE) (DATE) UTF-8 SUBJECT the",
            "FETCH $ (UID)",
            "UID SORT RETURN (SAVE MIN) (REVERSE DATE) UTF-8 ALL",
            "UID FETCH $ (UID)",
            "SORT RETURN (SAVE MAX COUNT) (SUBJECT) UTF-8 FLAGGED",
            "SEARCH $",
            "UID SORT RETURN (MAX SAVE) (ARRIVAL) UTF-8 FROM example",
            "SEARCH $",
            // Changed through `$`, by number and by UID.
            "SEARCH RETURN (SAVE) 2:6",
            "STORE $ +FLAGS (\\Answered)",
            "UID STORE $ -FLAGS.SILENT (\\Answered)",
            "FETCH 1:8 (FLAGS)",
            "COPY $ INBOX",
            "UID SEARCH RETURN (SAVE) 1:3",
            "UID COPY $ INBOX",
            // `$` as a string is a string.
            "SEARCH SUBJECT $",
            "SEARCH KEYWORD $",
            // Nothing saved.
            "SEARCH RETURN (SAVE) SUBJECT zzznomatchzzz",
            "FETCH $ (FLAGS)",
            "UID FETCH $ (FLAGS)",
            "SEARCH $",
            "UID STORE $ +FLAGS (\\Seen)",
            "COPY $ NoSuchMailbox",
            "UID MOVE $ NoSuchMailbox",
            // A failed SAVE search empties it.
            "SEARCH RETURN (SAVE) 1:4",
            "SEARCH RETURN (SAVE) CHARSET X-NO-SUCH-CHARSET ALL",
            "SEARCH $",
            "SEARCH RETURN (SAVE) 1:4",
            "SEARCH RETURN (SAVE) NOSUCHKEY",
            "SEARCH $",
            // `$` where a number stands.
            "SEARCH RETURN (SAVE) 1:4",
            "SEARCH LARGER $",
            "SEARCH $",
            // Another client expunges saved messages.
            "SEARCH RETURN (SAVE) 5:9",
            "OTHER STORE 6:7 +FLAGS (\\Deleted)",
            "OTHER EXPUNGE",
            "NOOP",
            "FETCH $ (UID FLAGS)",
            "SEARCH $",
            // ... and while the client names `$` by number: writ's `SEARCH
            // UID` and the FETCH come before the provider tells of it.
            "SEARCH RETURN (SAVE) 10:14",
            "OTHER CREATE Moved",
            "OTHER MOVE 11:12 Moved",
            "FETCH $ (UID FLAGS)",
            "STORE $ +FLAGS (\\Answered)",
            "NOOP",
            "FETCH $ (UID FLAGS)",
            // UNSELECT empties it (SELECT and EXAMINE too: their
            // UIDVALIDITY differs between the two users, see the session's
            // tests); with no mailbox selected `$` is refused as Dovecot does.
            "UID SEARCH RETURN (SAVE) 1:*",
            "UNSELECT",
            "UID FETCH $ (FLAGS)",
            "FETCH $ (FLAGS)",
            "SEARCH $",
        ],
    );
}

/// FETCHes the provider answers itself (flags, dates) pipelined with
/// FETCHes writ answers over sealed mail, a STORE and a SEARCH, in one
/// write: every answer as Dovecot's, none taken by another command.
#[test]
fn pipelined_flag_syncs_and_listings_answer_as_dovecot() {
    let pipelined = b"f1 UID FETCH 1:* (FLAGS INTERNALDATE)\r\n\
          f2 FETCH 1:10 (ENVELOPE RFC822.SIZE)\r\n\
          f3 UID STORE 2:5 +FLAGS (\\Answered)\r\n\
          f4 FETCH 1:* (UID FLAGS)\r\n\
          f5 UID FETCH 3:6 (UID BODYSTRUCTURE)\r\n\
          f6 SEARCH ANSWERED SUBJECT the\r\n";
    let (dovecot, writ, _w, through) = pipelined_both("flagsync", &corpus(), pipelined, 6);
    assert!(
        dovecot.0.iter().any(|l| l.contains("INTERNALDATE")) && dovecot.0.len() > 100,
        "{dovecot:?}"
    );
    assert_eq!(writ, dovecot);
    through.logout();
}

/// SEARCHRES under load and abuse: a SAVE search with the commands that
/// use `$` pipelined behind it in one write answers as Dovecot does;
/// too many `$`s, or a `$` beside the set writ marks it with, are refused
/// BAD and the session goes on; another session is served meanwhile.
#[test]
fn pipelined_and_hostile_dollars_answer_as_dovecot_or_bad() {
    let pipelined = b"p1 SEARCH RETURN (SAVE) SUBJECT the\r\n\
          p2 FETCH $ (UID)\r\n\
          p3 UID STORE $ +FLAGS.SILENT (\\Answered)\r\n\
          p4 SEARCH ANSWERED\r\n\
          p5 UID SEARCH RETURN (SAVE) FLAGGED\r\n\
          p6 SEARCH OR $ ANSWERED\r\n";
    let (dovecot, writ, w, mut through) = pipelined_both("searchres-pipe", &corpus(), pipelined, 6);
    assert!(
        dovecot
            .0
            .iter()
            .any(|l| l.starts_with("* 21 FETCH (UID 21)")),
        "{dovecot:?}"
    );
    assert_eq!(writ, dovecot);

    let mut other = Imap::login_to(w.proxy.imap, &w.sealed.name, &w.sealed.password);
    other.select("INBOX").expect_ok("SELECT");
    let many = format!("SEARCH {}", vec!["$"; 65].join(" "));
    for command in [
        many.as_str(),
        "SEARCH $ 4294967295:4294967295",
        "UID SEARCH UID $ SUBJECT 4294967295:4294967295",
        "SEARCH YOUNGER $",
    ] {
        let r = through.command(command);
        assert!(r.text().contains(" BAD "), "{command}: {}", r.text());
        let r = other
            .command("UID SEARCH RETURN (COUNT) FLAGGED")
            .expect_ok("other");
        assert!(r.text().contains("COUNT 5"), "{}", r.text());
    }
    // `$` is still what p5 saved.
    let r = through.command("UID SEARCH $").expect_ok("SEARCH $");
    assert!(r.text().contains("* SEARCH 3 9 12 13 14"), "{}", r.text());
    through.logout();
    other.logout();
}

/// Hostile RETURN options: over the cap, unknown, malformed, or on a
/// command that then fails to parse. Each is answered BAD, the session
/// goes on, a later command with the same tag is not taken for an ESEARCH,
/// and another session is served meanwhile.
#[test]
fn hostile_return_options_are_refused_and_sessions_go_on() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with(p, "esearch-hostile", &corpus()[..3], Some(&proxy));
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    let mut other = Imap::login_to(proxy.imap, &user.name, &user.password);
    other.select("INBOX").expect_ok("SELECT");
    let many = format!("SEARCH RETURN ({}) ALL", ["MIN"; 5000].join(" "));
    for command in [
        many.as_str(),
        "SEARCH RETURN (PARTIAL 1:5) ALL",
        "SEARCH RETURN (MIN ALL",
        "UID SEARCH RETURN (MIN) NOSUCHKEY 1",
    ] {
        let r = imap.command(command);
        assert!(r.text().contains(" BAD "), "{command}: {}", r.text());
        let r = other
            .command("UID SEARCH RETURN (COUNT) ALL")
            .expect_ok("other");
        assert!(r.text().contains("COUNT 3"), "{}", r.text());
    }
    // The tag of the refused command, reused: a plain SEARCH answer.
    imap.write_raw(b"t1 UID SEARCH RETURN (MIN) NOSUCHKEY 1\r\n")
        .expect("write");
    let r = imap.read_response("t1").expect("answer");
    assert!(r.text().contains("t1 BAD"), "{}", r.text());
    imap.write_raw(b"t1 UID SEARCH ALL\r\n").expect("write");
    let r = imap.read_response("t1").expect("answer");
    assert!(r.text().contains("* SEARCH 1 2 3"), "{}", r.text());
    assert!(!r.text().contains("ESEARCH"), "{}", r.text());
    imap.logout();
    other.logout();
}

#[test]
fn sort_and_esort_through_writ_order_as_dovecot() {
    let w = world("sort");
    let caps = capabilities_through(&w);
    assert!(caps.contains(" SORT ") && caps.contains(" ESORT"), "{caps}");
    assert!(caps.contains(" SORT=DISPLAY"), "{caps}");
    oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            "SORT (SUBJECT) UTF-8 ALL",
            "SORT (REVERSE SUBJECT) UTF-8 ALL",
            "UID SORT (FROM) UTF-8 ALL",
            "SORT (REVERSE FROM DATE) UTF-8 ALL",
            "SORT (TO REVERSE DATE) UTF-8 ALL",
            "SORT (CC) UTF-8 ALL",
            "UID SORT (REVERSE CC SUBJECT) UTF-8 ALL",
            "SORT (DATE) UTF-8 ALL",
            "SORT (REVERSE DATE) UTF-8 ALL",
            "SORT (ARRIVAL) UTF-8 ALL",
            "UID SORT (REVERSE ARRIVAL) UTF-8 ALL",
            "SORT (SIZE) UTF-8 ALL",
            "UID SORT (REVERSE SIZE SUBJECT) UTF-8 ALL",
            "SORT (SUBJECT DATE) UTF-8 UNSEEN",
            "SORT (SUBJECT) UTF-8 BODY the",
            "SORT (FROM SUBJECT) US-ASCII FLAGGED",
            "SORT (DATE) UTF-8 SUBJECT zzznomatchzzz",
            "SORT (ARRIVAL SIZE DATE SUBJECT FROM TO CC REVERSE ARRIVAL) UTF-8 ALL",
            "SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL",
            "UID SORT RETURN (ALL) (REVERSE SUBJECT) UTF-8 NOT SEEN",
            "SORT RETURN (COUNT) (SUBJECT) UTF-8 SUBJECT budget",
            "SORT RETURN () (FROM) UTF-8 1:20",
            "SORT (DATE) X-NO-SUCH-CHARSET ALL",
        ],
    );
}

/// Hostile SORTs and THREADs: too many keys, too many search keys, an
/// algorithm writ does not offer; each BAD, and the session and
/// another one go on.
#[test]
fn hostile_sorts_are_refused_and_sessions_go_on() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with(p, "sort-hostile", &corpus()[..3], Some(&proxy));
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    let mut other = Imap::login_to(proxy.imap, &user.name, &user.password);
    other.select("INBOX").expect_ok("SELECT");
    let keys = format!("SORT ({}) UTF-8 ALL", ["SIZE"; 10].join(" "));
    let search = format!("SORT (SIZE) UTF-8 {}", ["SUBJECT x"; 65].join(" "));
    let thread = format!(
        "THREAD ORDEREDSUBJECT UTF-8 {}",
        ["NOT SEEN"; 200].join(" ")
    );
    for (command, why) in [
        (keys.as_str(), "at most 9"),
        (search.as_str(), "at most 64"),
        (thread.as_str(), "at most 256"),
        ("THREAD X-UNKNOWN UTF-8 ALL", "not offered"),
    ] {
        let r = imap.command(command);
        assert!(
            r.text().contains(" BAD ") && r.text().contains(why),
            "{command}: {}",
            r.text()
        );
        let r = other
            .command("SORT (REVERSE SIZE) UTF-8 ALL")
            .expect_ok("other");
        assert!(r.text().contains("* SORT "), "{}", r.text());
    }
    imap.logout();
    other.logout();
}

/// ESEARCH, ESORT, SORT and SEARCH pipelined in one write, some with
/// content keys (writ's plans) and some without (the provider's SEARCH):
/// each answer carries its own tag and form, in order, as Dovecot's
/// answers to the same write over the plaintext copies.
/// INBOX selected, `pipelined` written at once, and the answers up to
/// `commands` tagged ones. Dovecot may answer pipelined commands out of
/// order: the answers are compared as a set of untagged lines and each
/// tag's status word (the texts are each server's own).
fn pipelined_answers(
    imap: &mut Imap,
    pipelined: &[u8],
    commands: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    imap.select("INBOX").expect_ok("SELECT");
    imap.write_raw(pipelined).expect("write");
    let mut untagged = Vec::new();
    let mut status = Vec::new();
    while status.len() < commands {
        let line = imap.read_line().expect("answer").text_only();
        if line.starts_with('*') {
            untagged.push(line);
        } else {
            let mut words = line.split_whitespace();
            let tag = words.next().unwrap_or_default().to_owned();
            status.push((tag, words.next().unwrap_or_default().to_owned()));
        }
    }
    untagged.sort();
    status.sort();
    (untagged, status)
}

type Answers = (Vec<String>, Vec<(String, String)>);

/// `pipelined` (`commands` commands) written at once straight at Dovecot
/// over plaintext copies of `messages` and through writ over sealed ones:
/// Dovecot's answers, writ's, and writ's world with its connection still
/// open.
fn pipelined_both(
    name: &str,
    messages: &[(String, Vec<u8>)],
    pipelined: &[u8],
    commands: usize,
) -> (Answers, Answers, World, Imap) {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with(p, &format!("{name}-plain"), messages, None);
    let sealed = user_with(p, &format!("{name}-sealed"), messages, Some(&proxy));
    let mut direct = Imap::login_to(p.imap_addr(), &plain.name, &plain.password);
    let dovecot = pipelined_answers(&mut direct, pipelined, commands);
    direct.logout();
    let mut through = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    let writ = pipelined_answers(&mut through, pipelined, commands);
    let w = World {
        proxy,
        plain,
        sealed,
    };
    (dovecot, writ, w, through)
}

#[test]
fn pipelined_esearch_and_esort_keep_their_own_tags_and_forms() {
    let pipelined = b"p1 SEARCH RETURN (MIN) SUBJECT budget\r\n\
          p2 UID SORT RETURN (COUNT ALL) (SUBJECT) UTF-8 ALL\r\n\
          p3 SEARCH SUBJECT budget\r\n\
          p4 UID SEARCH RETURN (MAX) ALL\r\n\
          p5 SORT (REVERSE DATE) UTF-8 SUBJECT budget\r\n\
          p6 SEARCH RETURN (ALL) ALL\r\n";
    let (dovecot, writ, _w, through) = pipelined_both("esearch-pipe", &threaded(), pipelined, 6);
    assert!(
        dovecot
            .0
            .iter()
            .any(|l| l.starts_with("* ESEARCH (TAG \"p1\")")),
        "{dovecot:?}"
    );
    assert_eq!(writ, dovecot);
    through.logout();
}

/// Commands that pass straight through (no message content): ID,
/// NAMESPACE, the QUOTA commands, LIST with SPECIAL-USE attributes,
/// STATUS, answered through writ as Dovecot answers them.
#[test]
fn pass_through_commands_answer_as_dovecot() {
    let w = world("passthrough");
    let caps = capabilities_through(&w);
    for withheld in ["STATUS=SIZE", "NOTIFY", "PREVIEW"] {
        assert!(!caps.contains(withheld), "{withheld} offered: {caps}");
    }
    oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            "ID NIL",
            "ID (\"name\" \"imaplib\" \"version\" \"3\")",
            "NAMESPACE",
            "GETQUOTAROOT INBOX",
            "LIST \"\" \"*\"",
            "LSUB \"\" \"*\"",
            "STATUS INBOX (MESSAGES UIDNEXT UNSEEN RECENT)",
        ],
    );
    // What is withheld is refused, not answered by the provider from the
    // sealed messages' outer headers.
    let mut imap = Imap::login_to(w.proxy.imap, &w.sealed.name, &w.sealed.password);
    imap.select("INBOX").expect_ok("SELECT");
    for command in [
        "SEARCH RETURN (PARTIAL 1:5) ALL",
        "UID THREAD X-UNKNOWN UTF-8 ALL",
    ] {
        let r = imap.command(command);
        assert!(r.text().contains(" BAD "), "{command}: {}", r.text());
        assert!(!r.text().contains("* THREAD"), "{command}: {}", r.text());
    }
    imap.logout();
}

#[test]
fn thread_orderedsubject_through_writ_answers_as_dovecot() {
    let w = world("thread");
    let caps = capabilities_through(&w);
    assert!(caps.contains(" THREAD=ORDEREDSUBJECT"), "{caps}");
    oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            "THREAD ORDEREDSUBJECT UTF-8 ALL",
            "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
            "THREAD ORDEREDSUBJECT UTF-8 UNSEEN",
            "UID THREAD ORDEREDSUBJECT UTF-8 BODY the",
            "THREAD ORDEREDSUBJECT US-ASCII SUBJECT budget",
            "THREAD ORDEREDSUBJECT UTF-8 SUBJECT zzznomatchzzz",
            "THREAD ORDEREDSUBJECT UTF-8 OR FLAGGED 50:*",
        ],
    );
}

/// Messages made for THREAD=REFERENCES: replies by References and by
/// In-Reply-To only (References winning over In-Reply-To), missing
/// parents (dummies with one and with several children), a duplicate
/// Message-ID, References loops (two messages naming each other, a
/// message naming itself, an ID repeated), IDs that are not IDs, a
/// message without Message-ID, equal dates, roots gathered by base
/// subject (a dummy, a non-reply, two non-replies under a new dummy).
fn reference_threads() -> Vec<(String, Vec<u8>)> {
    let m = |i: usize, head: &str| {
        (
            format!("references/{i}"),
            format!("{head}From: r{i}@example.test\r\n\r\nbody {i}\r\n").into_bytes(),
        )
    };
    let date = |d: u32| format!("Date: Mon, {d} Apr 2025 10:00:00 +0000\r\n");
    vec![
        m(
            1,
            &format!("Message-ID: <r1@t>\r\nSubject: Launch\r\n{}", date(1)),
        ),
        m(
            2,
            &format!(
                "Message-ID: <r2@t>\r\nSubject: Re: Launch\r\nReferences: <r1@t>\r\n{}",
                date(3)
            ),
        ),
        m(
            3,
            &format!(
                "Message-ID: <r3@t>\r\nSubject: Re: Launch\r\nIn-Reply-To: <r2@t>\r\n{}",
                date(2)
            ),
        ),
        m(
            4,
            &format!(
                "Message-ID: <r4@t>\r\nSubject: RE: Launch\r\nReferences: <r1@t> <r2@t>\r\n <r3@t>\r\nIn-Reply-To: <r2@t>\r\n{}",
                date(4)
            ),
        ),
        m(
            5,
            &format!(
                "Message-ID: <r5@t>\r\nSubject: Orphans\r\nReferences: <missing2@t>\r\n{}",
                date(6)
            ),
        ),
        m(
            6,
            &format!(
                "Message-ID: <r6@t>\r\nSubject: Re: Orphans\r\nIn-Reply-To: <missing2@t>\r\n{}",
                date(5)
            ),
        ),
        m(
            7,
            &format!("Message-ID: <r1@t>\r\nSubject: Launch\r\n{}", date(7)),
        ),
        m(
            8,
            &format!(
                "Message-ID: <l1@t>\r\nSubject: Loop\r\nReferences: <l2@t>\r\n{}",
                date(8)
            ),
        ),
        m(
            9,
            &format!(
                "Message-ID: <l2@t>\r\nSubject: Re: Loop\r\nReferences: <l1@t>\r\n{}",
                date(9)
            ),
        ),
        m(
            10,
            &format!(
                "Message-ID: <s@t>\r\nSubject: Self\r\nReferences: <s@t>\r\n{}",
                date(10)
            ),
        ),
        m(
            11,
            &format!(
                "Message-ID: <x3@t>\r\nSubject: Repeat\r\nReferences: <x1@t> <x2@t> <x1@t>\r\n{}",
                date(11)
            ),
        ),
        m(
            12,
            &format!(
                "Message-ID: <r12@t>\r\nSubject: Fwd: Orphans\r\n{}",
                date(12)
            ),
        ),
        m(
            13,
            &format!(
                "Message-ID: <w1@t>\r\nSubject: Weekly report\r\n{}",
                date(13)
            ),
        ),
        m(
            14,
            &format!(
                "Message-ID: <w2@t>\r\nSubject: Weekly report\r\n{}",
                date(14)
            ),
        ),
        m(
            15,
            &format!(
                "Message-ID: <w3@t>\r\nSubject: Re: Weekly report\r\n{}",
                date(15)
            ),
        ),
        m(
            16,
            &format!("Subject: no id\r\nIn-Reply-To: <w1@t>\r\n{}", date(16)),
        ),
        m(
            17,
            &format!(
                "Message-ID: <r17@t>\r\nSubject: odd ids\r\nReferences: <nohost> junk <w3@t>\r\n{}",
                date(16)
            ),
        ),
        m(
            18,
            &format!(
                "Message-ID: <  r18 @t>\r\nSubject: spaced\r\nReferences: <w3@t>\r\n{}",
                date(16)
            ),
        ),
        m(
            19,
            "Message-ID: <r19@t>\r\nSubject: Re: spaced\r\nIn-Reply-To: <r18@t>\r\n",
        ),
        m(
            20,
            &format!(
                "Message-ID: <r20@t>\r\nSubject: Late parent\r\n{}",
                date(20)
            ),
        ),
        m(
            21,
            &format!(
                "Message-ID: <r21@t>\r\nSubject: Re: Late parent\r\nReferences: <r20@t> <r22@t>\r\n{}",
                date(21)
            ),
        ),
        m(
            22,
            &format!(
                "Message-ID: <r22@t>\r\nSubject: Unrelated\r\nReferences: <other@t>\r\n{}",
                date(19)
            ),
        ),
    ]
}

#[test]
fn thread_references_through_writ_answers_as_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let mut messages = corpus();
    messages.extend(reference_threads());
    let plain = user_with(p, "references-plain", &messages, None);
    let sealed = user_with(p, "references-sealed", &messages, Some(&proxy));
    let w = World {
        proxy,
        plain,
        sealed,
    };
    let caps = capabilities_through(&w);
    assert!(caps.contains(" THREAD=REFERENCES"), "{caps}");
    assert!(caps.contains(" THREAD=REFS"), "{caps}");
    let out = oracle(
        &w.proxy,
        &w.plain,
        &w.sealed,
        &[
            "THREAD REFERENCES UTF-8 ALL",
            "UID THREAD REFERENCES UTF-8 ALL",
            "THREAD REFERENCES UTF-8 UNSEEN",
            "THREAD REFERENCES UTF-8 SUBJECT launch",
            "UID THREAD REFERENCES UTF-8 BODY body",
            "THREAD REFERENCES US-ASCII NOT SUBJECT re",
            "THREAD REFERENCES UTF-8 SUBJECT zzznomatchzzz",
            "THREAD REFERENCES UTF-8 OR FLAGGED 50:*",
            "UID THREAD REFERENCES UTF-8 1:30",
            "THREAD REFERENCES X-NO-SUCH-CHARSET ALL",
        ],
    );
    // The corpus gives threads, not only single messages.
    assert!(out.contains("* THREAD (") && out.contains(" ("), "{out}");
}

/// Hostile threading: References loops (sealed messages), a References
/// chain 10,000 IDs deep (dummies, over messages of 100 References each)
/// and a 300-message In-Reply-To chain (plaintext, which writ threads
/// too: appended straight to the provider to keep the test fast). THREAD
/// answers, names every message once, and another session is served
/// while it runs.
#[test]
fn hostile_thread_references_is_bounded_and_sessions_go_on() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut plain: Vec<Vec<u8>> = Vec::new();
    // 101 messages, each naming 100 IDs of one chain, overlapping by one.
    for k in 0..101usize {
        let refs: String = (k * 99..k * 99 + 100)
            .map(|i| format!("<d{i}@t> "))
            .collect();
        plain.push(
            format!("Message-ID: <deep{k}@t>\r\nSubject: deep\r\nReferences: {refs}\r\n\r\nx\r\n")
                .into_bytes(),
        );
    }
    for i in 0..300usize {
        let parent = if i == 0 {
            String::new()
        } else {
            format!("In-Reply-To: <c{}@t>\r\n", i - 1)
        };
        plain.push(
            format!("Message-ID: <c{i}@t>\r\n{parent}Subject: chain\r\n\r\nx\r\n").into_bytes(),
        );
    }
    for i in 0..50usize {
        messages.push((
            format!("loop/{i}"),
            format!(
                "Message-ID: <o{i}@t>\r\nReferences: <o{}@t> <o{i}@t> <o{}@t>\r\n\r\nx\r\n",
                (i + 1) % 50,
                (i + 49) % 50
            )
            .into_bytes(),
        ));
    }
    let user = user_with(p, "references-hostile", &messages, Some(&proxy));
    let mut direct = p.imap(&user);
    for m in &plain {
        direct
            .command_with_literal("APPEND INBOX ()", m, "")
            .expect_ok("APPEND");
    }
    direct.logout();
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    let mut other = Imap::login_to(proxy.imap, &user.name, &user.password);
    other.select("INBOX").expect_ok("SELECT");
    imap.write_raw(b"h1 THREAD REFERENCES UTF-8 ALL\r\n")
        .expect("write");
    let r = other
        .command("SORT (REVERSE SIZE) UTF-8 SUBJECT deep")
        .expect_ok("other");
    assert!(r.text().contains("* SORT "), "{}", r.text());
    let r = imap.read_response("h1").expect("answer");
    assert!(r.text().contains("h1 OK"), "{}", r.text());
    let line = r
        .text()
        .lines()
        .find(|l| l.starts_with("* THREAD "))
        .expect("a THREAD line")
        .to_owned();
    let mut numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    numbers.sort();
    let expected: Vec<u32> = (1..=(messages.len() + plain.len()) as u32).collect();
    assert_eq!(numbers, expected, "each message once");
    // The session goes on.
    let r = imap
        .command("UID THREAD REFERENCES UTF-8 SUBJECT chain")
        .expect_ok("again");
    assert!(r.text().contains("* THREAD ("), "{}", r.text());
    imap.logout();
    other.logout();
}

/// Messages made for SORT=DISPLAY: display names quoted, encoded (and
/// encoded to nothing), with commas, as comments, missing (the address
/// sorts), groups, empty and broken addresses, missing From and To,
/// equal names (ties by sequence number), folded fields.
fn display_names() -> Vec<(String, Vec<u8>)> {
    let m = |i: usize, head: &str| {
        (
            format!("display/{i}"),
            format!(
                "{head}Message-ID: <n{i}@t>\r\nSubject: names {i}\r\nDate: Tue, {} May 2025 10:00:00 +0000\r\n\r\nbody {i}\r\n",
                1 + i % 5
            )
            .into_bytes(),
        )
    };
    let mut out = vec![
        m(
            1,
            "From: \"Zoe Quinn\" <aaa@example.test>\r\nTo: Bob <zzz@example.test>\r\n",
        ),
        m(
            2,
            "From: zoe quinn <b@example.test>\r\nTo: =?UTF-8?B?w4Z0aGVs?= <a@example.test>\r\n",
        ),
        m(
            3,
            "From: =?ISO-8859-1?Q?=C9lodie?= <e@example.test>\r\nTo: \"Last, First\" <f@example.test>, a@example.test\r\n",
        ),
        m(
            4,
            "From: plain@example.test (Comment Name)\r\nTo: undisclosed-recipients:;\r\n",
        ),
        m(
            5,
            "From: =?UTF-8?Q??= <empty@example.test>\r\nTo: \"\" <quoted-empty@example.test>\r\n",
        ),
        m(6, "To: nofrom@example.test\r\n"),
        m(7, "From: <>\r\n"),
        m(
            8,
            "From: Zoe Quinn <c@example.test>\r\nTo: team: x@example.test, y@example.test;\r\n",
        ),
        m(
            9,
            "From: \"Zoe\r\n Quinn\" <d@example.test>\r\nTo: Bob\r\n <bob@example.test>\r\n",
        ),
        m(
            10,
            "From: just-a-word\r\nTo: <@route.test:r@example.test>\r\n",
        ),
        m(
            11,
            "From: \"Anne \\\"Q\\\" Lee\" <q@example.test>\r\nTo: \r\n",
        ),
        m(
            12,
            "From: =?UTF-8?Q?=C3=A9mile?= =?UTF-8?Q?_Zola?= <z@example.test>\r\nTo: ZOE@example.test\r\n",
        ),
    ];
    // THREAD=REFS ties: a message root and two dummy roots (missing
    // parents) whose latest messages share a date; a dummy sorts as
    // UID 0, dummies by the first appearance of their ID.
    let tie = |i: usize, head: &str| {
        (
            format!("display/tie{i}"),
            format!(
                "{head}From: tie{i}@example.test\r\nSubject: tie {i}\r\nDate: Wed, 1 Jan 2031 00:00:00 +0000\r\n\r\nbody\r\n"
            )
            .into_bytes(),
        )
    };
    out.extend([
        tie(1, "Message-ID: <tie-root@t>\r\n"),
        tie(2, "Message-ID: <tie2@t>\r\nReferences: <tie-gone-a@t>\r\n"),
        tie(3, "Message-ID: <tie3@t>\r\nIn-Reply-To: <tie-gone-b@t>\r\n"),
        tie(4, "Message-ID: <tie4@t>\r\nReferences: <tie-gone-a@t>\r\n"),
    ]);
    out
}

/// The corpus with the display and reference messages added.
fn display_and_refs_corpus() -> Vec<(String, Vec<u8>)> {
    let mut messages = corpus();
    messages.extend(reference_threads());
    messages.extend(display_names());
    messages
}

/// A user whose INBOX holds `messages` sealed, but every third one in
/// plaintext (a mailbox from before writ, or mail that passed unsealed).
fn mixed_user(
    p: &Provider,
    prefix: &str,
    messages: &[(String, Vec<u8>)],
    proxy: &ImapProxy,
) -> User {
    let user = p.new_user(prefix);
    let mut imap = p.imap(&user);
    for (i, (_, m)) in messages.iter().enumerate() {
        let stored = if i % 3 == 2 { m.clone() } else { proxy.seal(m) };
        let date = INTERNAL_DATES[i % INTERNAL_DATES.len()];
        imap.command_with_literal(&format!("APPEND INBOX () \"{date}\""), &stored, "")
            .expect_ok("APPEND");
    }
    imap.select("INBOX").expect_ok("SELECT");
    for f in FLAGS {
        imap.command(f).expect_ok("STORE");
    }
    imap.logout();
    user
}

/// SORT=DISPLAY and THREAD=REFS through writ, over a mailbox of sealed
/// and plaintext messages, answer as Dovecot answers over the plaintext;
/// also after another client expunges messages (a thread's root, a
/// parent in a chain) and appends replies through writ (sealed there)
/// while both sessions stay selected.
#[test]
fn sort_display_and_thread_refs_through_writ_answer_as_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let messages = display_and_refs_corpus();
    let plain = user_with(p, "display-plain", &messages, None);
    let sealed = mixed_user(p, "display-mixed", &messages, &proxy);
    let w = World {
        proxy,
        plain,
        sealed,
    };
    let caps = capabilities_through(&w);
    assert!(caps.contains(" SORT=DISPLAY"), "{caps}");
    assert!(caps.contains(" THREAD=REFS"), "{caps}");
    let reply = |id: &str, parent: &str, day: u32| {
        format!(
            "From: \"Late Replier\" <late@example.test>\\r\\nTo: =?UTF-8?Q?Zo=C3=AB?= <zoe@example.test>\\r\\nMessage-ID: <{id}@t>\\r\\nReferences: {parent}\\r\\nSubject: Re: Launch\\r\\nDate: Sat, {day} Jun 2025 10:00:00 +0000\\r\\n\\r\\nlate\\r\\n"
        )
    };
    let appended = [
        format!("OTHER-APPEND {}", reply("late1", "<r1@t> <r2@t>", 7)),
        format!("OTHER-APPEND {}", reply("late2", "<missing2@t>", 8)),
        format!("OTHER-APPEND {}", reply("late3", "<nowhere@t>", 7)),
    ];
    let mut commands: Vec<&str> = vec![
        "SORT (DISPLAYFROM) UTF-8 ALL",
        "SORT (REVERSE DISPLAYFROM) UTF-8 ALL",
        "UID SORT (DISPLAYTO) UTF-8 ALL",
        "SORT (DISPLAYTO REVERSE DISPLAYFROM) UTF-8 ALL",
        "SORT (DISPLAYFROM DATE) UTF-8 SUBJECT names",
        "SORT (FROM DISPLAYFROM SUBJECT) UTF-8 ALL",
        "SORT RETURN (MIN MAX COUNT ALL) (DISPLAYFROM) UTF-8 ALL",
        "UID SORT RETURN (ALL) (REVERSE DISPLAYTO) UTF-8 NOT SEEN",
        "SORT (DISPLAYFROM) UTF-8 SUBJECT zzznomatchzzz",
        "THREAD REFS UTF-8 ALL",
        "UID THREAD REFS UTF-8 ALL",
        "THREAD REFS UTF-8 UNSEEN",
        "THREAD REFS UTF-8 SUBJECT launch",
        "UID THREAD REFS UTF-8 BODY body",
        "THREAD REFS US-ASCII NOT SUBJECT re",
        "THREAD refs UTF-8 OR FLAGGED 50:*",
        "THREAD REFS UTF-8 SUBJECT zzznomatchzzz",
        "THREAD REFS UTF-8 SUBJECT tie",
        "THREAD REFS X-NO-SUCH-CHARSET ALL",
        // Another client changes the mailbox: the root of the Launch
        // thread and a parent in the middle of a chain go, replies come.
        "OTHER UID STORE 1,45,63,64 +FLAGS (\\Deleted)",
        "OTHER EXPUNGE",
    ];
    commands.extend(appended.iter().map(String::as_str));
    commands.extend([
        "NOOP",
        "THREAD REFS UTF-8 ALL",
        "UID THREAD REFS UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
        "SORT (DISPLAYFROM) UTF-8 ALL",
        "UID SORT (REVERSE DISPLAYTO SUBJECT) UTF-8 ALL",
    ]);
    let out = oracle(&w.proxy, &w.plain, &w.sealed, &commands);
    assert!(out.contains("* THREAD (") && out.contains(" ("), "{out}");
    assert!(out.contains("appended by another client"), "{out}");
}
