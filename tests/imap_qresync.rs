//! QRESYNC (RFC 7162) through writ, and sessions shaped like real clients'
//! (issue 11, items 2 and 6), with Dovecot as the oracle: the same
//! sessions run straight at Dovecot over plaintext copies and through writ
//! over the same messages, most of them sealed ([`SCRIPT`]); the
//! transcripts must match.
//!
//! - the resync: `ENABLE QRESYNC`, `SELECT ... (QRESYNC (...))` with known
//!   UIDs and sequence match data, `UID FETCH ... (CHANGEDSINCE n
//!   VANISHED)`, after another client flagged, expunged and appended;
//!   VANISHED during a UID FETCH writ answers with commands of its own and
//!   during IDLE; the client's own `UID EXPUNGE`;
//! - a Thunderbird-like session: LIST with special-use attributes,
//!   COMPRESS, ID, CONDSTORE then a QRESYNC resync, IDLE seeing a new
//!   message and an expunge;
//! - Apple Mail's `UID SEARCH 1:* NOT DELETED` and `UID SEARCH UNDELETED
//!   BODY x`;
//! - hostile QRESYNC parameters (malformed: BAD as Dovecot says; known
//!   UIDs as long as a command may be), while another session keeps being
//!   served; a set over writ's sequence-set cap is refused by writ.

mod common;

use std::net::SocketAddr;
use std::thread;

use common::corpus::{eml_files, has_lone_cr};
use common::imap_proxy::ImapProxy;
use common::{Imap, Provider, User, provider, python};

const SCRIPT: &str = include_str!("imap_qresync.py");

/// Folders a desktop client finds (and their special-use attributes, set
/// by the provider's configuration).
const FOLDERS: &[&str] = &["Archive", "Drafts", "Sent", "Junk", "Trash", "Lists/rust"];

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

/// The 13 messages of `tests/corpus/imap/`, in order (UIDs 1 to 13).
fn messages() -> Vec<Vec<u8>> {
    let out: Vec<Vec<u8>> = eml_files("imap")
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| !has_lone_cr(m))
        .collect();
    assert_eq!(out.len(), 13, "the scenarios number the corpus' messages");
    out
}

/// A user with the messages in INBOX and the folders of [`FOLDERS`]. With
/// `proxy`, two messages in three are sealed to its keyring and the third
/// left in plaintext (mail from before writ), so both kinds share the
/// mailbox writ resyncs.
fn user_with(p: &Provider, prefix: &str, proxy: Option<&ImapProxy>) -> User {
    let user = p.new_user(prefix);
    let mut imap = p.imap(&user);
    for folder in FOLDERS {
        imap.command(&format!("CREATE {folder}"))
            .expect_ok("CREATE");
        imap.command(&format!("SUBSCRIBE {folder}"))
            .expect_ok("SUBSCRIBE");
    }
    for (i, m) in messages().into_iter().enumerate() {
        let stored = match proxy {
            Some(proxy) if i % 3 != 2 => proxy.seal(&m),
            _ => m,
        };
        imap.append("INBOX", &stored).expect_ok("APPEND");
    }
    imap.logout();
    user
}

/// Runs `scenario` of [`SCRIPT`] at Dovecot (plaintext user) and through
/// writ (sealed user); panics unless the transcripts match.
fn same_as_dovecot(scenario: &str, name: &str) {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with(p, &format!("{name}-plain"), None);
    let sealed = user_with(p, &format!("{name}-sealed"), Some(&proxy));
    let mut args = vec![
        scenario.to_string(),
        p.imap_addr().port().to_string(),
        proxy.imap.port().to_string(),
    ];
    for u in [&plain, &sealed] {
        args.push(u.name.clone());
        args.push(u.password.clone());
    }
    let out = python::ok(SCRIPT, args);
    println!("{out}");
    assert!(out.contains("ALL SAME"), "{out}");
    // Nothing sealed reached the client: the transcripts are the
    // plaintext's (checked above), and the marker never shows.
    assert!(!out.contains("X-Writ"), "{out}");
}

#[test]
fn qresync_resync_through_writ_answers_as_dovecot() {
    same_as_dovecot("qresync", "qr");
}

#[test]
fn a_thunderbird_like_session_through_writ_answers_as_dovecot() {
    same_as_dovecot("thunderbird", "tb");
}

#[test]
fn apple_mail_searches_for_undeleted_mail_answer_as_dovecot() {
    same_as_dovecot("apple", "am");
}

/// Malformed QRESYNC parameters are answered BAD (as Dovecot answers
/// them) and a known-UID set as long as a command may be is answered as
/// Dovecot answers it; meanwhile another session's listing through writ
/// keeps coming, unchanged.
#[test]
fn hostile_qresync_parameters_are_answered_as_dovecot_and_others_are_served() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with(p, "qrh-plain", None);
    let sealed = user_with(p, "qrh-sealed", Some(&proxy));
    let other = user_with(p, "qrh-other", Some(&proxy));
    let expected = messages();
    let (addr, name, password) = (proxy.imap, other.name.clone(), other.password.clone());
    let served = thread::spawn(move || {
        let mut imap = Imap::login_to(addr, &name, &password);
        imap.select("INBOX").expect_ok("SELECT");
        let mut rounds = 0;
        // Until the hostile session is over (it signals by a flag on the
        // other user's message 1: see below), and at least 5 rounds.
        loop {
            let got: Vec<Vec<u8>> = imap.fetch_all().into_iter().map(|(_, m)| m).collect();
            assert_eq!(got, expected, "the other session's listing changed");
            rounds += 1;
            let r = imap.command("FETCH 1 (FLAGS)").expect_ok("FETCH FLAGS");
            if rounds >= 5 && r.text().contains("$Done") {
                break;
            }
        }
        imap.logout();
        rounds
    });
    let mut args = vec![
        "hostile".to_string(),
        p.imap_addr().port().to_string(),
        proxy.imap.port().to_string(),
    ];
    for u in [&plain, &sealed] {
        args.push(u.name.clone());
        args.push(u.password.clone());
    }
    let out = python::ok(SCRIPT, args);
    println!("{out}");
    assert!(out.contains("ALL SAME"), "{out}");
    // Over writ's cap on sequence-set elements (16384): refused by writ
    // before parsing; the session goes on.
    let mut imap = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    imap.command("ENABLE QRESYNC").expect_ok("ENABLE");
    let set = vec!["1"; 20_000].join(",");
    let r = imap.command(&format!("SELECT INBOX (QRESYNC (1 1 {set}))"));
    assert!(
        r.text().contains(" BAD ") && r.text().contains("Sequence set too large"),
        "{}",
        r.text()
    );
    imap.select("INBOX").expect_ok("SELECT after the refusal");
    imap.logout();
    let mut mark = p.imap(&other);
    mark.select("INBOX").expect_ok("SELECT");
    mark.command("STORE 1 +FLAGS ($Done)").expect_ok("STORE");
    mark.logout();
    let rounds = served.join().expect("the other session");
    assert!(rounds >= 5);
}
