//! The IMAP proxy's FETCH side at its edges, against real Dovecot: \Seen
//! reported as Dovecot reports it, sealed messages that are not what they
//! say (a payload that disagrees with its summary, garbage armor) shown
//! as stored, consistently, and remembered so they are not downloaded at
//! every listing, and a marker of another format version makes the whole
//! message undecryptable, its listing included. Nesting: a sealed
//! message's BODYSTRUCTURE nested 96 deep is answered as Dovecot answers
//! for its plaintext; a plaintext one that deep (which writ's IMAP parser
//! cannot read from the provider) ends the FETCH NO, and the session and
//! others go on.

mod common;

use std::net::SocketAddr;

use common::imap::Response;
use common::imap_proxy::ImapProxy;
use common::{FaultProxy, Faults, Imap, provider};

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "max_literal_size = 50000000\n",
    )
}

const M1: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: first\r\n\
Date: Fri, 27 Nov 2026 08:00:00 +0000\r\n\r\nThe first message.\r\n";
const M2: &[u8] = b"From: c@example.test\r\nTo: d@example.test\r\nSubject: the second, longer\r\n\
Date: Fri, 27 Nov 2026 09:00:00 +0000\r\n\r\nThe second message is longer than the first.\r\n";

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// The payload part's body (the armor) of a sealed message: its bounds.
fn payload_bounds(sealed: &[u8]) -> (usize, usize) {
    let start = find(sealed, b"filename=\"message.age\"\r\n\r\n") + 26;
    let end_marker = b"-----END AGE ENCRYPTED FILE-----\r\n";
    let end = start + find(&sealed[start..], end_marker) + end_marker.len();
    (start, end)
}

/// The values of `RFC822.SIZE` in a response, by sequence number.
fn sizes(r: &Response) -> Vec<u64> {
    let mut by_seq: Vec<(u32, u64)> = r
        .untagged
        .iter()
        .filter_map(|l| {
            let t = l.text_only();
            let seq = t.strip_prefix("* ")?.split(' ').next()?.parse().ok()?;
            let at = t.find("RFC822.SIZE ")? + "RFC822.SIZE ".len();
            let size = t[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some((seq, size))
        })
        .collect();
    by_seq.sort();
    by_seq.into_iter().map(|(_, size)| size).collect()
}

/// Does a FETCH response in `r` report FLAGS with \Seen?
fn reports_seen(r: &Response) -> bool {
    r.untagged.iter().any(|l| {
        let t = l.text_only();
        t.find("FLAGS (")
            .and_then(|at| t[at..].split(')').next().map(|f| f.contains("\\Seen")))
            .unwrap_or(false)
    })
}

#[test]
fn a_fetch_of_the_header_without_peek_reports_seen_as_dovecot_does() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("edge-seen");
    p.imap_append(&user, "INBOX", M1);
    p.imap_append(&user, "INBOX", &proxy.seal(M2));
    let twin = p.new_user("edge-seen-plain");
    p.imap_append(&twin, "INBOX", M1);

    let mut direct = p.imap(&twin);
    direct.select("INBOX").expect_ok("SELECT");
    let dovecot = direct.command("FETCH 1 (BODY[HEADER])").expect_ok("FETCH");
    assert!(reports_seen(&dovecot), "{dovecot:?}");

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    for (n, what) in [(1, "plaintext"), (2, "sealed")] {
        let r = a
            .command(&format!("FETCH {n} (BODY[HEADER])"))
            .expect_ok("FETCH");
        assert!(
            reports_seen(&r),
            "{what}: \\Seen set but not reported:\n{}",
            r.text()
        );
        let header = &r.fetch_literals("BODY[HEADER]")[0].1;
        let expected = if n == 1 { M1 } else { M2 };
        assert!(expected.starts_with(header), "{what}: {header:?}");
        // Set, and stored at the provider.
        let flags = a.command(&format!("FETCH {n} (FLAGS)")).expect_ok("FETCH");
        assert!(flags.text().contains("\\Seen"), "{what}: {flags:?}");
        // Already seen: no FLAGS unasked, as Dovecot.
        let again = a
            .command(&format!("FETCH {n} (BODY[HEADER])"))
            .expect_ok("FETCH");
        assert!(!again.text().contains("FLAGS"), "{what}: {again:?}");
    }
    a.logout();
    direct.logout();
}

#[test]
fn a_payload_that_disagrees_with_its_summary_is_shown_as_stored_consistently() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("edge-size");
    // M1's summary with M2's payload: both open with the proxy's keys.
    let first = proxy.seal(M1);
    let second = proxy.seal(M2);
    let (a0, a1) = payload_bounds(&first);
    let (b0, b1) = payload_bounds(&second);
    let stored = [&first[..a0], &second[b0..b1], &first[a1..]].concat();
    p.imap_append(&user, "INBOX", &stored);
    let as_stored = p.imap_fetch_all(&user, "INBOX").remove(0);
    let stored_size = as_stored.len() as u64;

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    // Before the payload is opened, the summary is all writ knows.
    let listed = a.command("FETCH 1 (RFC822.SIZE)").expect_ok("FETCH");
    assert_eq!(sizes(&listed), [M1.len() as u64], "{listed:?}");
    let before = proxy
        .writ
        .metric("writ_open_failures_total", &[("reason", "damaged")]);
    let whole = a
        .command("FETCH 1 (RFC822.SIZE BODY.PEEK[])")
        .expect_ok("FETCH");
    let body = &whole.fetch_literals("BODY[]")[0].1;
    assert!(
        *body == as_stored,
        "the stored message is not shown as stored"
    );
    assert_eq!(sizes(&whole), [stored_size], "{}", whole.text());
    // From now on the same message, with the same size, every time.
    for command in [
        "FETCH 1 (RFC822.SIZE BODYSTRUCTURE)",
        "UID FETCH 1:* (RFC822.SIZE)",
    ] {
        let r = a.command(command).expect_ok(command);
        assert_eq!(sizes(&r), [stored_size], "{command}: {}", r.text());
        assert!(
            !r.text().contains("\"plain\""),
            "{command}: the summary's structure: {}",
            r.text()
        );
    }
    let after = proxy
        .writ
        .metric("writ_open_failures_total", &[("reason", "damaged")]);
    assert_eq!(after, before + 1.0, "counted once");
    a.logout();
}

#[test]
fn garbage_armor_is_downloaded_once_and_then_shown_as_stored() {
    let p = provider();
    let faults = FaultProxy::start(p.imap_addr(), Faults::new());
    let proxy = proxy(faults.addr());
    let user = p.new_user("edge-garbage");
    // A real marker, a summary part of 3 MB armor that is not age.
    let sealed = proxy.seal(M1);
    let start = find(&sealed, b"Key: ");
    let start = start + find(&sealed[start..], b"\r\n\r\n") + 4;
    let end = start + find(&sealed[start..], b"--");
    let mut garbage = b"-----BEGIN AGE ENCRYPTED FILE-----\r\n".to_vec();
    let mut x: u32 = 12345;
    while garbage.len() < 3_000_000 {
        for _ in 0..64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            garbage.push(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(x >> 16) as usize % 64],
            );
        }
        garbage.extend_from_slice(b"\r\n");
    }
    garbage.extend_from_slice(b"-----END AGE ENCRYPTED FILE-----\r\n");
    let stored = [&sealed[..start], &garbage[..], &sealed[end..]].concat();
    p.imap_append(&user, "INBOX", &stored);
    p.imap_append(&user, "INBOX", &proxy.seal(M2));

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    let fetches = |f: &FaultProxy| f.count("FETCH") + f.count("UID FETCH");
    let listing = "FETCH 1:* (RFC822.SIZE ENVELOPE)";
    let r = a.command(listing).expect_ok("the first listing");
    let first = sizes(&r);
    assert_eq!(first[1], M2.len() as u64, "{}", r.text());
    let after_first = fetches(&faults);
    for round in 0..2 {
        let r = a.command(listing).expect_ok("a later listing");
        assert_eq!(sizes(&r), first, "round {round}: {}", r.text());
        let now = fetches(&faults);
        // The probe, and the ENVELOPE of the message shown as stored
        // (the probe leaves ENVELOPE out): the summaries come from the
        // cache, the garbage is not downloaded again.
        assert_eq!(now, after_first + 2 * (round + 1), "round {round}");
    }
    let body = a.command("FETCH 1 (BODY.PEEK[])").expect_ok("FETCH");
    assert_eq!(body.fetch_literals("BODY[]")[0].1.len() as u64, first[0]);
    a.logout();
}

#[test]
fn a_marker_of_another_format_version_is_undecryptable_in_listings_too() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("edge-version");
    // A real sealed message whose marker names a version writ does not
    // implement: FORMAT.md section 15 makes the whole message
    // undecryptable, summary included.
    let sealed = proxy.seal(M1);
    let at = find(&sealed, b"X-Writ: v=1;");
    let mut stored = sealed.clone();
    stored[at + 10] = b'2';
    p.imap_append(&user, "INBOX", &stored);
    let as_stored = p.imap_fetch_all(&user, "INBOX").remove(0);

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    // The listing (answered from part 1 for a readable message) shows the
    // stored message, as BODY[] does.
    let listed = a
        .command("FETCH 1 (RFC822.SIZE ENVELOPE)")
        .expect_ok("FETCH");
    assert_eq!(
        sizes(&listed),
        [as_stored.len() as u64],
        "{}",
        listed.text()
    );
    assert!(!listed.text().contains("\"first\""), "{}", listed.text());
    let whole = a.command("FETCH 1 (BODY.PEEK[])").expect_ok("FETCH");
    assert!(whole.fetch_literals("BODY[]")[0].1 == as_stored);
    // SEARCH reads it as stored too: the sealed Subject is not found.
    let found = a.command("SEARCH SUBJECT first").expect_ok("SEARCH");
    assert!(!found.text().contains("SEARCH 1"), "{}", found.text());
    a.logout();
}

#[test]
fn deep_nesting_sealed_is_answered_and_plaintext_ends_the_fetch_no() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let deep = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/sections/96-deep-mixed.eml"),
    )
    .expect("corpus message");
    let user = p.new_user("edge-deep");
    p.imap_append(&user, "INBOX", &proxy.seal(&deep));
    p.imap_append(&user, "INBOX", &deep);
    p.imap_append(&user, "INBOX", M1);
    let twin = p.new_user("edge-deep-plain");
    p.imap_append(&twin, "INBOX", &deep);
    let mut direct = p.imap(&twin);
    direct.select("INBOX").expect_ok("SELECT");
    let dovecot = direct.command("FETCH 1 (BODYSTRUCTURE)").expect_ok("FETCH");

    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    // Sealed: byte for byte what Dovecot says of the plaintext.
    let sealed = a.command("FETCH 1 (BODYSTRUCTURE)").expect_ok("FETCH");
    assert_eq!(sealed.untagged.len(), 1, "{}", sealed.text());
    assert_eq!(sealed.untagged[0].raw(), dovecot.untagged[0].raw());
    // Plaintext that deep: not answered, the FETCH says so, the rest is.
    let all = a.command("FETCH 1:3 (UID BODYSTRUCTURE)");
    assert_eq!(all.status, "NO", "{}", all.text());
    let answered: Vec<String> = all.untagged.iter().map(|l| l.text_only()).collect();
    assert!(
        answered
            .iter()
            .any(|l| l.starts_with("* 1 FETCH (UID 1 BODYSTRUCTURE ((\"message\"")),
        "{answered:?}"
    );
    assert!(
        answered
            .iter()
            .any(|l| l.starts_with("* 3 FETCH (UID 3 BODYSTRUCTURE (")),
        "{answered:?}"
    );
    assert!(
        !answered.iter().any(|l| l.starts_with("* 2 FETCH")),
        "{answered:?}"
    );
    // The session goes on, and so do others.
    a.command("NOOP").expect_ok("NOOP");
    let mut b = Imap::login_to(proxy.imap, &user.name, &user.password);
    b.select("INBOX").expect_ok("SELECT");
    b.command("FETCH 3 (BODYSTRUCTURE)").expect_ok("FETCH");
    b.logout();
    a.logout();
    direct.logout();
}
