//! What writ asks the provider for a folder listing, against real Dovecot
//! behind a recording proxy ([`FaultProxy`] without faults):
//!
//! - a warm listing (the cache knows every sealed message) sends the
//!   provider the probe, which asks for the marker fields
//!   (`BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]`, which Dovecot
//!   answers from its index) and never the whole stored header
//!   (`BODY.PEEK[HEADER]`, for which Dovecot reads every message file),
//!   and the answers are those of the cold listing and of Dovecot over
//!   the same mail in plaintext, fields the provider put above the
//!   marker (a `Received:` line) included;
//! - a sealed message replaced under the same UID after a UIDVALIDITY
//!   change (the folder deleted and made again) is answered as the new
//!   message, never from the old message's cache entry: the cache key
//!   holds the marker fields, not the rest of the stored header, so only
//!   the UIDVALIDITY tells these two apart.

mod common;

use std::net::SocketAddr;

use common::imap::Response;
use common::imap_proxy::ImapProxy;
use common::{FaultProxy, Faults, Imap, provider};

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

const M1: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: first\r\n\
Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <p1@example.test>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nThe first message.\r\n";
const M2: &[u8] = b"From: c@example.test\r\nTo: d@example.test\r\nSubject: the second, longer\r\n\
Date: Fri, 27 Nov 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe second message is longer than the first.\r\n";
const M3: &[u8] = b"From: e@example.test\r\nSubject: plaintext\r\n\r\nStored as it is.\r\n";

/// A field a provider puts above the marker when it delivers.
const RECEIVED: &[u8] =
    b"Received: from mx.example.test by provider.example.test; Fri, 27 Nov 2026 08:00:01 +0000\r\n";

const LISTING: &str = "UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)";

/// The untagged lines of a response, `\Recent` left out (which session
/// sees a message first is not the point here) and the case of Dovecot's
/// `"TEXT"` media type folded (a difference of its own, issue 11 item 4).
fn answers(r: &Response) -> Vec<String> {
    r.untagged
        .iter()
        .map(|l| {
            String::from_utf8_lossy(&l.raw())
                .replace(" \\Recent", "")
                .replace("\\Recent ", "")
                .replace("\\Recent", "")
                .replace("(\"TEXT\" ", "(\"text\" ")
        })
        .collect()
}

/// The first lines of the FETCH commands writ sent the provider after
/// `from` commands had gone through the proxy.
fn fetches_after(faults: &FaultProxy, from: usize) -> Vec<String> {
    faults.events()[from..]
        .iter()
        .filter(|e| e.command == "FETCH" || e.command == "UID FETCH")
        .map(|e| e.line.clone())
        .collect()
}

#[test]
fn a_warm_listing_asks_the_provider_for_the_marker_fields_and_never_the_whole_header() {
    let p = provider();
    let faults = FaultProxy::start(p.imap_addr(), Faults::new());
    let proxy = proxy(faults.addr());
    let user = p.new_user("probe-warm");
    // The same three messages sealed (one with a provider's field above
    // the marker) and, for the oracle, in plaintext.
    let first = [RECEIVED, &proxy.seal(M1)[..]].concat();
    for (sealed, plain) in [
        (&first[..], [RECEIVED, M1].concat()),
        (&proxy.seal(M2)[..], M2.to_vec()),
        (M3, M3.to_vec()),
    ] {
        p.imap_append(&user, "Sealed", sealed);
        p.imap_append(&user, "Plain", &plain);
    }

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("Plain").expect_ok("SELECT Plain");
    let oracle = answers(&a.command(LISTING).expect_ok("the plaintext listing"));
    a.select("Sealed").expect_ok("SELECT Sealed");
    let before_cold = faults.events().len();
    let cold = a.command(LISTING).expect_ok("the cold listing");
    assert_eq!(answers(&cold), oracle, "the cold listing");
    let cold_fetches = fetches_after(&faults, before_cold);
    // Cold: the sealed messages' stored header (for the prefix) comes
    // with their summary, after the probe.
    assert!(
        cold_fetches
            .iter()
            .any(|l| l.contains("BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BODY.PEEK[1]")),
        "{cold_fetches:#?}"
    );

    for round in 0..2 {
        let before = faults.events().len();
        let warm = a.command(LISTING).expect_ok("a warm listing");
        assert_eq!(answers(&warm), oracle, "round {round}");
        let sent = fetches_after(&faults, before);
        // The probe, and the plaintext message's ENVELOPE and
        // BODYSTRUCTURE (the probe leaves them out); the sealed ones come
        // from the cache.
        assert_eq!(sent.len(), 2, "round {round}: {sent:#?}");
        assert!(
            sent[0].contains("BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]"),
            "round {round}: {sent:#?}"
        );
        assert!(
            sent.iter().all(|l| !l.contains("[HEADER]")),
            "round {round}: the whole header was asked for: {sent:#?}"
        );
        assert!(sent[1].contains("ENVELOPE BODYSTRUCTURE"), "{sent:#?}");
    }

    // The provider's field above the marker, answered from the cache.
    let before = faults.events().len();
    let r = a
        .command("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
        .expect_ok("the Received field");
    let got = r.fetch_literals("BODY[HEADER.FIELDS (RECEIVED)]");
    assert_eq!(got.len(), 1, "{}", r.text());
    assert_eq!(got[0].1, [RECEIVED, b"\r\n"].concat());
    assert_eq!(fetches_after(&faults, before).len(), 1, "only the probe");
    a.logout();
}

/// The RFC822.SIZE and Received field of message UID 1 in `mailbox`
/// through writ, and the mailbox's UIDVALIDITY.
fn first_message(proxy: &ImapProxy, user: &common::User, mailbox: &str) -> (u64, Vec<u8>, String) {
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    let selected = a.select(mailbox).expect_ok("SELECT");
    let validity = selected
        .text()
        .split("[UIDVALIDITY ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("UIDVALIDITY")
        .to_string();
    let r = a
        .command("UID FETCH 1 (UID RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
        .expect_ok("FETCH");
    let text = r.text();
    let at = text.find("RFC822.SIZE ").expect("RFC822.SIZE") + "RFC822.SIZE ".len();
    let size = text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .expect("a size");
    let received = r
        .fetch_literals("BODY[HEADER.FIELDS (RECEIVED)]")
        .pop()
        .expect("the Received field")
        .1;
    a.logout();
    (size, received, validity)
}

#[test]
fn a_message_replaced_under_the_same_uid_after_a_uidvalidity_change_is_not_served_from_the_old_entry()
 {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("probe-validity");
    // One sealed message, stored twice under UID 1 with different fields
    // above the marker: the marker fields (the cache key) are the same.
    let sealed = proxy.seal(M1);
    let before = b"Received: from a.example.test; Fri, 27 Nov 2026 08:00:01 +0000\r\n";
    let after =
        b"Received: from a much longer name.example.test; Sat, 28 Nov 2026 10:00:01 +0000\r\n";

    assert_eq!(
        p.imap_append(&user, "Replaced", &[&before[..], &sealed].concat()),
        1
    );
    let (size, received, old_validity) = first_message(&proxy, &user, "Replaced");
    assert_eq!(size, (before.len() + M1.len()) as u64);
    assert_eq!(received, [&before[..], b"\r\n"].concat());
    // Listed once more: now from the cache.
    let (size, received, _) = first_message(&proxy, &user, "Replaced");
    assert_eq!(size, (before.len() + M1.len()) as u64);
    assert_eq!(received, [&before[..], b"\r\n"].concat());

    // The folder goes and comes back with another message as UID 1.
    let mut direct = p.imap(&user);
    direct.command("DELETE Replaced").expect_ok("DELETE");
    direct.logout();
    assert_eq!(
        p.imap_append(&user, "Replaced", &[&after[..], &sealed].concat()),
        1
    );
    let (size, received, validity) = first_message(&proxy, &user, "Replaced");
    assert_ne!(
        validity, old_validity,
        "Dovecot gave the new folder a new UIDVALIDITY"
    );
    assert_eq!(size, (after.len() + M1.len()) as u64);
    assert_eq!(received, [&after[..], b"\r\n"].concat());
}
