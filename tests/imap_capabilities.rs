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

/// The search corpus (varied subjects, dates, addresses, charsets).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let out: Vec<(String, Vec<u8>)> = eml_files("search")
        .into_iter()
        .filter(|(_, m)| !has_lone_cr(m))
        .collect();
    assert!(out.len() >= 40, "corpus missing: {} messages", out.len());
    out
}

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
    for (_, m) in messages {
        let stored = match proxy {
            Some(proxy) => proxy.seal(m),
            None => m.clone(),
        };
        p.imap_append(&user, "INBOX", &stored);
    }
    if messages.len() < 22 {
        return user;
    }
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("SELECT");
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
            // Plain SEARCH still answered as before.
            "SEARCH SUBJECT the",
            "UID SEARCH FLAGGED",
        ],
    );
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
    let many = format!("SEARCH RETURN ({}) ALL", vec!["MIN"; 5000].join(" "));
    for command in [
        many.as_str(),
        "SEARCH RETURN (SAVE) ALL",
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
