//! One user's large SEARCH over sealed mail holds no runtime thread: the
//! opening and the matching run on writ's pool, so another client is
//! answered meanwhile, even with the proxy's runtime cut to one worker
//! thread (`TOKIO_WORKER_THREADS=1`). Asserted by order only: the other
//! client's answer (itself a sealed message opened on the same pool) is
//! in before any byte of the SEARCH's answer has arrived.
//!
//! Real Dovecot behind writ; the clients are the test's own
//! (`common::imap`).

mod common;

use common::imap_proxy::ImapProxy;
use common::{Imap, provider};

/// Sealed messages the SEARCH goes through, and the size of each.
const MESSAGES: usize = 48;
const BODY_BYTES: usize = 256 * 1024;

fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: report {i}\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <w{i}@example.test>\r\n\r\n"
    )
    .into_bytes();
    let line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n";
    m.extend(line.repeat(BODY_BYTES / line.len()));
    // The word searched for is at the very end: each body is read whole.
    m.extend_from_slice(b"needle\r\n");
    m
}

#[test]
fn a_large_search_over_sealed_mail_does_not_hold_other_clients() {
    let p = provider();
    let user = p.new_user("work-search");
    let proxy = ImapProxy::start_with_env(
        &format!("{}timeout_secs = 60\n", ImapProxy::plain(p.imap_addr())),
        "",
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    {
        let mut up = p.imap(&user);
        for i in 0..MESSAGES {
            up.command_with_literal("APPEND INBOX", &proxy.seal(&message(i)), "")
                .expect_ok("APPEND");
        }
        up.logout();
    }
    let mut searcher = Imap::login_to(proxy.imap, &user.name, &user.password);
    searcher.command("EXAMINE INBOX").expect_ok("EXAMINE");
    let mut other = Imap::login_to(proxy.imap, &user.name, &user.password);
    other.command("EXAMINE INBOX").expect_ok("EXAMINE");

    // The large SEARCH goes out; its answer is not read yet.
    searcher
        .write_raw(b"s1 UID SEARCH BODY needle\r\n")
        .expect("send SEARCH");
    // Meanwhile the other client lists a sealed message (its summary is
    // opened on the same pool the SEARCH's work waits in).
    let listed = other
        .command("UID FETCH 1 (UID ENVELOPE)")
        .expect_ok("the other client's FETCH");
    assert!(
        listed.text().contains("report 0"),
        "the other client was not answered from the opened summary: {}",
        listed.text()
    );
    other.command("NOOP").expect_ok("the other client's NOOP");
    assert!(
        !searcher.has_input(),
        "the SEARCH was answered before the other client: it held the proxy"
    );

    // The SEARCH is answered in full all the same.
    let found = searcher.read_response("s1").expect("SEARCH answer");
    assert!(found.is_ok(), "{}", found.text());
    let all: Vec<String> = (1..=MESSAGES).map(|u| u.to_string()).collect();
    assert!(
        found
            .text()
            .contains(&format!("* SEARCH {}", all.join(" "))),
        "{}",
        found.text()
    );
    searcher.logout();
    other.logout();
}
