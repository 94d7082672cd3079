//! `[auth]` end to end: inbound SPF, DKIM, DMARC and ARC verification on a
//! relay listener before sealing, and writ's ARC set over the sealed
//! message, against real components only: a DNS server started here on
//! loopback (Debian's dnsmasq serving the SPF, DKIM and DMARC records of
//! the test domains), messages signed by an independent signer (dkimpy's
//! `dkimsign`), the real local provider, and the stored sealed message
//! checked by an independent verifier (dkimpy's `arcverify`).
//!
//! - pass, fail and none are recorded in the outer header's
//!   Authentication-Results of writ's authserv-id; a forged one claiming
//!   writ's authserv-id is removed, another service's kept;
//! - a message whose DKIM passed before sealing has a valid ARC chain at
//!   the provider (`arcverify`: `cv=pass`), and still opens to the original;
//!   a message that arrives with a valid chain (sealed by dkimpy's
//!   `arcsign`) gets writ's set as the next instance, `cv=pass`;
//! - `dmarc = "enforce"`: `p=reject` failures get 550 5.7.1 and nothing
//!   reaches the provider; `p=quarantine` failures are marked outside;
//! - hostile: hundreds of DKIM signatures and ARC sets make at most
//!   `MAX_DKIM_SIGNATURES` key lookups and none for the ARC chain; a
//!   message whose key lookups hang does not stop another session from
//!   being served.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::dns::{Dns, arc_sign, arc_verify, dkim_sign, rsa_key};
use common::mail::{DELIVERY_TIMEOUT, contains, message, unique};
use common::provider;
use common::smtp::send;
use common::writ::{Writ, WritConfig};

const AUTHSERV_ID: &str = "mx.writ.test";

/// The DNS server, keys and writ of one test.
struct Env {
    dns: Dns,
    writ: Writ,
    dkim_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `dmarc`: `[auth] dmarc`; `forward`: domains sent to another server.
    fn start(dmarc: &str, timeout_secs: u64, forward: &[(&str, SocketAddr)]) -> Env {
        Env::start_with(dmarc, timeout_secs, forward, "", false)
    }

    /// Also: `auth_extra`, more `[auth]` keys; `proxy`: the relay listener
    /// takes PROXY headers from 127.0.0.1 and clients from 192.0.2.0/24.
    fn start_with(
        dmarc: &str,
        timeout_secs: u64,
        forward: &[(&str, SocketAddr)],
        auth_extra: &str,
        proxy: bool,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (dkim_key, dkim_p) = rsa_key(dir.path(), "dkim");
        let (arc_key, arc_p) = rsa_key(dir.path(), "arc");
        let key_record = |p: &str| format!("v=DKIM1; k=rsa; p={p}");
        let r = |n: &str, v: String| (n.to_string(), v);
        let records = vec![
            r("good.test", "v=spf1 ip4:127.0.0.1 -all".into()),
            r("sel1._domainkey.good.test", key_record(&dkim_p)),
            r("_dmarc.good.test", "v=DMARC1; p=reject".into()),
            r("bad.test", "v=spf1 ip4:192.0.2.1 -all".into()),
            r("sel1._domainkey.bad.test", key_record(&dkim_p)),
            r("_dmarc.bad.test", "v=DMARC1; p=reject".into()),
            r("quar.test", "v=spf1 ip4:192.0.2.1 -all".into()),
            r("_dmarc.quar.test", "v=DMARC1; p=quarantine".into()),
            r("arc1._domainkey.sealer.test", key_record(&arc_p)),
            r("sel1._domainkey.fwd.test", key_record(&dkim_p)),
        ];
        let dns = Dns::start(&records, forward);
        let mut cfg = WritConfig::relay(provider().smtp_addr());
        cfg.extra_toml = format!(
            "\n[auth]\nenabled = true\nauthserv_id = \"{AUTHSERV_ID}\"\n\
             dns_servers = [\"{}\"]\ndns_timeout_secs = 1\ntimeout_secs = {timeout_secs}\n\
             dmarc = \"{dmarc}\"\n{auth_extra}\n\
             [auth.arc]\nenabled = true\ndomain = \"sealer.test\"\nselector = \"arc1\"\n\
             key_file = \"{}\"\n",
            dns.addr,
            arc_key.display()
        );
        if proxy {
            let relay = &mut cfg.listeners[0];
            relay.allowed_networks = vec!["127.0.0.1".into(), "192.0.2.0/24".into()];
            relay.proxy_protocol_from = vec!["127.0.0.1".into()];
        }
        let writ = Writ::start(&cfg);
        Env {
            dns,
            writ,
            dkim_key,
            _dir: dir,
        }
    }

    fn signed(&self, msg: &[u8], domain: &str) -> Vec<u8> {
        dkim_sign(msg, "sel1", domain, &self.dkim_key)
    }
}

/// A message from `from` to `to` with a unique subject and Message-ID.
fn mail(from: &str, to: &str) -> Vec<u8> {
    let domain = from.rsplit_once('@').unwrap().1;
    message(
        from,
        to,
        &unique("auth-subject"),
        &unique("auth-body"),
        &format!("{}@{domain}", unique("auth-id")),
    )
}

/// The stored message's outer header, folded lines joined.
fn outer(stored: &[u8]) -> String {
    let text = String::from_utf8_lossy(stored);
    let end = text.find("\r\n\r\n").expect("a header");
    text[..end].replace("\r\n\t", " ").replace("\r\n ", " ")
}

/// The outer header's Authentication-Results fields of `id`.
fn results_of(outer: &str, id: &str) -> Vec<String> {
    outer
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("authentication-results:")
                .is_some_and(|v| v.trim_start().starts_with(id))
        })
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn only_result(stored: &[u8]) -> String {
    let o = outer(stored);
    let found = results_of(&o, AUTHSERV_ID);
    assert_eq!(found.len(), 1, "one Authentication-Results of writ's: {o}");
    found[0].clone()
}

#[track_caller]
fn has_all(field: &str, words: &[&str]) {
    for w in words {
        assert!(field.contains(w), "{w} in {field}");
    }
}

#[test]
fn pass_fail_and_none_are_recorded_outside_and_a_dkim_pass_has_a_valid_arc_chain() {
    let p = provider();
    let env = Env::start("monitor", 20, &[]);
    let user = p.new_user("auth");
    let relay = env.writ.relay_addr();

    // pass: signed by good.test, sent from its SPF-authorised address;
    // above the signature, a forged result of writ's authserv-id and
    // another service's.
    let forged = unique("forged");
    let good_signed = env.signed(&mail("sender@good.test", &user.address), "good.test");
    let mut good = format!(
        "Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={forged}\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n"
    )
    .into_bytes();
    good.extend_from_slice(&good_signed);
    send(relay, "sender@good.test", &[&user.address], &good)
        .unwrap_or_else(|r| panic!("{}\n{}", r.text(), env.writ.log()));

    // fail: signed, then the (signed) Subject changed; SPF says -all.
    let signed = env.signed(&mail("sender@bad.test", &user.address), "bad.test");
    let text = String::from_utf8(signed).unwrap();
    let tampered = text.replacen("Subject: auth-subject", "Subject: changed-subject", 1);
    assert_ne!(text, tampered);
    send(
        relay,
        "sender@bad.test",
        &[&user.address],
        tampered.as_bytes(),
    )
    .unwrap_or_else(|r| panic!("monitor delivers: {}", r.text()));

    // none: no records, no signature; below a line that starts with a
    // lone CR (which ends no header), a forged result of writ's
    // authserv-id and a forged scanner verdict.
    let forged_below_cr = unique("forged-below-cr");
    let plain = mail("sender@none.test", &user.address);
    let first_line = plain.windows(2).position(|w| w == b"\r\n").expect("a line") + 2;
    let mut none = plain[..first_line].to_vec();
    none.extend(
        format!(
            "\rX: y\r\nAuthentication-Results: {AUTHSERV_ID}; dmarc=pass header.from={forged_below_cr}\r\n"
        )
        .bytes(),
    );
    none.extend_from_slice(&plain[first_line..]);
    send(relay, "sender@none.test", &[&user.address], &none)
        .unwrap_or_else(|r| panic!("{}", r.text()));

    let stored = p.wait_for_messages(&user, "INBOX", 3, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 3);

    let pass = only_result(&stored[0]);
    has_all(
        &pass,
        &["dkim=pass", "@good.test", "spf=pass", "dmarc=pass"],
    );
    let o = outer(&stored[0]);
    assert!(
        !results_of(&o, "other.example").is_empty(),
        "another service's result stays: {o}"
    );
    assert!(
        !contains(&stored[0], forged.as_bytes()),
        "forged result removed"
    );
    let verdict = arc_verify(&stored[0], &env.dns);
    assert!(verdict.contains("cv=pass"), "arcverify: {verdict}\n{o}");
    assert!(
        o.contains("ARC-Seal: i=1;") && o.contains("d=sealer.test"),
        "writ's ARC set: {o}"
    );
    let aar = o
        .lines()
        .find(|l| l.starts_with("ARC-Authentication-Results:"))
        .expect("ARC-Authentication-Results");
    has_all(aar, &["i=1", AUTHSERV_ID, "dkim=pass"]);
    // Still the sealed original inside: the sender's signature and text.
    let opened = env.writ.test_keys().open(&stored[0]);
    assert!(
        contains(&opened, &good_signed),
        "the signed original, byte for byte"
    );
    assert!(!contains(&opened, forged.as_bytes()));

    let fail = only_result(&stored[1]);
    has_all(&fail, &["dkim=fail", "spf=fail", "dmarc=fail"]);
    assert!(
        !contains(&stored[2], forged_below_cr.as_bytes()),
        "the forged result below a lone CR is removed: {}",
        outer(&stored[2])
    );
    let none = only_result(&stored[2]);
    // No signature: no dkim= entry (mail-auth writes none).
    has_all(&none, &["spf=none", "dmarc=none", "arc=none"]);
    assert!(!none.contains("dkim="), "{none}");
}

#[test]
fn a_message_arriving_with_an_arc_chain_gets_writs_set_as_the_next_instance() {
    let p = provider();
    let env = Env::start("monitor", 20, &[]);
    let user = p.new_user("arcchain");
    // A forwarder verified good.test's signature and sealed i=1.
    let mut forwarded =
        b"Authentication-Results: fwd.test; dkim=pass header.d=good.test\r\n".to_vec();
    forwarded.extend_from_slice(&env.signed(&mail("sender@good.test", &user.address), "good.test"));
    let forwarded = arc_sign(&forwarded, "sel1", "fwd.test", &env.dkim_key, "fwd.test");
    assert!(arc_verify(&forwarded, &env.dns).contains("cv=pass"));
    send(
        env.writ.relay_addr(),
        "sender@good.test",
        &[&user.address],
        &forwarded,
    )
    .unwrap_or_else(|r| panic!("{}", r.text()));
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let result = only_result(&stored[0]);
    has_all(&result, &["arc=pass", "dkim=pass"]);
    let o = outer(&stored[0]);
    assert!(o.contains("ARC-Seal: i=2;") && o.contains("cv=pass"), "{o}");
    let verdict = arc_verify(&stored[0], &env.dns);
    assert!(verdict.contains("cv=pass"), "arcverify: {verdict}\n{o}");
}

#[test]
fn enforce_refuses_dmarc_reject_with_5xx_before_the_provider_and_marks_quarantine() {
    let p = provider();
    let env = Env::start("enforce", 20, &[]);
    let user = p.new_user("dmarc");
    let relay = env.writ.relay_addr();

    let rejected = env.signed(&mail("sender@bad.test", &user.address), "bad.test");
    let rejected = String::from_utf8(rejected).unwrap().replacen(
        "Subject: auth-subject",
        "Subject: changed-subject",
        1,
    );
    let rejected_id = rejected
        .lines()
        .find(|l| l.starts_with("Message-ID:"))
        .unwrap()
        .to_string();
    let r = send(
        relay,
        "sender@bad.test",
        &[&user.address],
        rejected.as_bytes(),
    )
    .expect_err("p=reject failure refused");
    assert_eq!(r.code, 550, "{}", r.text());
    assert!(r.text().contains("5.7.1"), "{}", r.text());

    send(
        relay,
        "sender@quar.test",
        &[&user.address],
        &mail("sender@quar.test", &user.address),
    )
    .unwrap_or_else(|r| panic!("quarantine delivers: {}", r.text()));

    // A passing message carrying a forged quarantine mark: removed.
    let mut good = b"X-DMARC-Quarantine: no\r\n".to_vec();
    good.extend_from_slice(&env.signed(&mail("sender@good.test", &user.address), "good.test"));
    send(relay, "sender@good.test", &[&user.address], &good)
        .unwrap_or_else(|r| panic!("{}", r.text()));

    // Once the last message is in, the refused one is not: it never
    // reached the provider.
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 2, "only the two delivered messages");
    for s in &stored {
        assert!(!contains(s, rejected_id.as_bytes()));
    }
    let quarantined = outer(&stored[0]);
    assert!(
        quarantined.contains("X-DMARC-Quarantine: yes; header.from=quar.test"),
        "{quarantined}"
    );
    has_all(
        &only_result(&stored[0]),
        &["dmarc=fail", "policy.dmarc=quarantine"],
    );
    let passed = outer(&stored[1]);
    assert!(!passed.contains("X-DMARC-Quarantine"), "{passed}");
    has_all(&only_result(&stored[1]), &["dkim=pass", "dmarc=pass"]);
    let verdicts = |dmarc: &str, action: &str| {
        env.writ.metric(
            "writ_auth_verdicts_total",
            &[("dmarc", dmarc), ("action", action)],
        )
    };
    assert_eq!(verdicts("fail", "reject"), 1.0);
    assert_eq!(verdicts("fail", "quarantine"), 1.0);
    assert_eq!(verdicts("pass", "deliver"), 1.0);
}

#[test]
fn past_max_message_bytes_mail_is_delivered_unverified_even_under_enforce() {
    let p = provider();
    let env = Env::start_with("enforce", 20, &[], "max_message_bytes = 4000", false);
    let user = p.new_user("toolarge");
    // A p=reject failure, but too large to verify.
    let mut big = mail("sender@bad.test", &user.address);
    big.extend_from_slice("filler line of a large message\r\n".repeat(200).as_bytes());
    send(
        env.writ.relay_addr(),
        "sender@bad.test",
        &[&user.address],
        &big,
    )
    .unwrap_or_else(|r| panic!("delivered unverified: {}", r.text()));
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let result = only_result(&stored[0]);
    assert!(
        result.contains("none (message too large to verify)"),
        "{result}"
    );
    assert!(!outer(&stored[0]).contains("ARC-Seal"), "not ARC-sealed");
    assert_eq!(
        env.writ.metric(
            "writ_auth_verdicts_total",
            &[("dmarc", "unverified"), ("action", "too-large")]
        ),
        1.0
    );
}

/// One message through a PROXY v1 header claiming `client`: the reply to
/// the final dot.
fn send_via_proxy(relay: SocketAddr, client: &str, from: &str, to: &str, msg: &[u8]) -> String {
    let stream = TcpStream::connect(relay).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    w.write_all(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n").as_bytes())
        .unwrap();
    assert!(reply().starts_with("220"));
    for line in [
        "EHLO client.test".to_string(),
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
    ] {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with("250"), "{line}: {got}");
    }
    w.write_all(b"DATA\r\n").unwrap();
    assert!(reply().starts_with("354"));
    // Dot-stuffed (the messages end with CRLF).
    let mut data = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    w.write_all(&data).unwrap();
    let done = reply();
    let _ = w.write_all(b"QUIT\r\n");
    done
}

#[test]
fn concurrent_sessions_behind_a_proxy_each_get_their_own_results_for_their_real_client() {
    let p = provider();
    let env = Env::start_with("monitor", 20, &[], "", true);
    let user = p.new_user("authproxy");
    let relay = env.writ.relay_addr();
    // Behind the load balancer the client is 192.0.2.1: bad.test's SPF
    // (ip4:192.0.2.1) passes, good.test's (ip4:127.0.0.1) fails, so writ
    // must judge the PROXY header's address, not the TCP peer's.
    let senders = ["good.test", "bad.test", "none.test"];
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let domain = senders[i % 3];
            let from = format!("sender@{domain}");
            let plain = mail(&from, &user.address);
            let msg = if domain == "good.test" {
                env.signed(&plain, "good.test")
            } else {
                plain
            };
            let to = user.address.clone();
            std::thread::spawn(move || send_via_proxy(relay, "192.0.2.1", &from, &to, &msg))
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert!(r.starts_with("250"), "{r}");
    }
    let stored = p.wait_for_messages(&user, "INBOX", 6, DELIVERY_TIMEOUT);
    let mut seen = [0; 3];
    for s in &stored {
        let result = only_result(s);
        assert!(result.contains("smtp.remote-ip=192.0.2.1"), "{result}");
        let expect: &[&str] = if result.contains("header.from=good.test") {
            seen[0] += 1;
            &["dkim=pass", "spf=fail", "dmarc=pass"]
        } else if result.contains("header.from=bad.test") {
            seen[1] += 1;
            &["spf=pass", "dmarc=pass"]
        } else {
            seen[2] += 1;
            &["spf=none", "dmarc=none", "header.from=none.test"]
        };
        has_all(&result, expect);
    }
    assert_eq!(seen, [2, 2, 2], "each message has its own results");
}

/// `count` DKIM-Signature fields for `domain` with selectors `prefix<n>`,
/// each with the body hash of `signed` (so that each would need its key
/// looked up), and `arc_sets` ARC sets.
fn hostile_fields(
    signed: &[u8],
    domain: &str,
    prefix: &str,
    count: usize,
    arc_sets: usize,
) -> Vec<u8> {
    let text = String::from_utf8_lossy(signed)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let bh = text
        .split("bh=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .expect("bh=")
        .trim()
        .to_string();
    let mut out = String::new();
    for i in 0..count {
        out.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={prefix}{i}; h=from:to:subject; bh={bh}; b=AAAA\r\n"
        ));
    }
    for i in 1..=arc_sets {
        out.push_str(&format!(
            "ARC-Seal: i={i}; a=rsa-sha256; cv={}; d=good.test; s=arcs{i}; b=AAAA\r\n\
             ARC-Message-Signature: i={i}; a=rsa-sha256; c=relaxed/relaxed; d=good.test; s=arcm{i}; h=from; bh={bh}; b=AAAA\r\n\
             ARC-Authentication-Results: i={i}; relay{i}.test; dkim=pass\r\n",
            if i == 1 { "none" } else { "pass" }
        ));
    }
    out.into_bytes()
}

#[test]
fn hundreds_of_signatures_are_capped_and_a_hanging_lookup_does_not_stop_other_sessions() {
    let p = provider();
    // Names under hang.test go to a server that never answers.
    let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let env = Env::start(
        "monitor",
        8,
        &[("hang.test", black_hole.local_addr().unwrap())],
    );
    let user = p.new_user("hostile");
    let relay = env.writ.relay_addr();

    // 300 signatures whose keys would each be looked up, 100 ARC sets.
    let signed = env.signed(&mail("sender@good.test", &user.address), "good.test");
    let mut many = hostile_fields(&signed, "good.test", "h", 300, 100);
    many.extend_from_slice(&signed);
    send(relay, "sender@good.test", &[&user.address], &many)
        .unwrap_or_else(|r| panic!("{}\n{}", r.text(), env.writ.log()));
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let result = only_result(&stored[0]);
    has_all(&result, &["arc=fail", "spf=pass"]);
    let log = env.dns.queries();
    let looked_up: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split("query[TXT] ").nth(1))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with('h') && n.ends_with("._domainkey.good.test"))
        .collect();
    assert!(
        !looked_up.is_empty() && looked_up.len() <= 10,
        "at most MAX_DKIM_SIGNATURES (10) key lookups, got {}: {looked_up:?}",
        looked_up.len()
    );
    assert!(
        !log.contains("arcs") && !log.contains("arcm"),
        "no lookups for a chain past the cap"
    );
    assert!(
        !outer(&stored[0]).contains("d=sealer.test"),
        "a chain past the cap is not extended"
    );

    // A message whose key lookups hang: another session is served while
    // it waits, and it is delivered `temperror` within timeout_secs.
    let mut hanging = hostile_fields(&signed, "hang.test", "k", 20, 0);
    hanging.extend_from_slice(&signed);
    let done = Arc::new(AtomicBool::new(false));
    let to = user.address.clone();
    let flag = done.clone();
    let slow = std::thread::spawn(move || {
        let r = send(relay, "sender@good.test", &[&to], &hanging);
        flag.store(true, Ordering::SeqCst);
        r
    });
    // The hanging lookups have started once the black hole gets a query.
    black_hole
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 512];
    black_hole
        .recv_from(&mut buf)
        .expect("writ looked up a hang.test key");
    send(
        relay,
        "sender@none.test",
        &[&user.address],
        &mail("sender@none.test", &user.address),
    )
    .unwrap_or_else(|r| panic!("other session: {}", r.text()));
    assert!(
        !done.load(Ordering::SeqCst),
        "the other session was served while the hanging one waited"
    );
    slow.join()
        .unwrap()
        .unwrap_or_else(|r| panic!("hanging message delivered: {}", r.text()));
    let stored = p.wait_for_messages(&user, "INBOX", 3, DELIVERY_TIMEOUT);
    let temp = stored
        .iter()
        .map(|s| only_result(s))
        .find(|r| r.contains("temperror"))
        .expect("the hanging message recorded temperror");
    assert!(temp.contains("dkim=temperror"), "{temp}");
}
