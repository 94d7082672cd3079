//! The relay listener of `writ serve` end to end, against the real local
//! provider (Postfix -> LMTP -> Dovecot): real clients (swaks, Python's
//! smtplib, a Postfix MTA with writ as its relayhost) send through writ,
//! and what Dovecot stores is sealed: no Subject or body in the stored
//! bytes, an X-Writ marker, and it opens to the original byte for byte.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::mail::{
    DELIVERY_TIMEOUT, assert_sealed_original, contains, marker_offset, message, unique,
};
use common::mta::{Mta, MtaConfig};
use common::writ::{Writ, WritConfig};
use common::{Smtp, provider, smtp};

#[test]
fn swaks_through_the_relay_is_stored_sealed_and_opens_byte_exact() {
    let p = provider();
    let user = p.new_user("swaks");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let subject = unique("swaks-subject");
    let marker = unique("swaks-body");
    let original = message(
        "sender@elsewhere.test",
        &user.address,
        &subject,
        &marker,
        &format!("{}@elsewhere.test", unique("swaks-id")),
    );
    // swaks ends the data with CRLF "." CRLF after the file's last byte,
    // adding a line break of its own: the file leaves out the last CRLF.
    let data = writ.dir().join("message.eml");
    std::fs::write(&data, original.strip_suffix(b"\r\n").unwrap()).unwrap();

    let out = Command::new("swaks")
        .args(["--server", &writ.relay_addr().to_string()])
        .args(["--ehlo", "client.test"])
        .args(["--from", "sender@elsewhere.test"])
        .args(["--to", &user.address])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed ({}):\n{transcript}\n{}\n--- writ log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        writ.log()
    );
    // writ greets and answers EHLO itself, then mirrors the provider.
    assert!(
        transcript.contains("<-  220 writ.test ESMTP"),
        "{transcript}"
    );
    assert!(transcript.contains("<-  250-SIZE"), "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 Ok: queued as"),
        "the final reply is the provider's:\n{transcript}"
    );

    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    let keys = writ.test_keys();
    let opened = assert_sealed_original(keys, &stored[0], &original, &[&subject, &marker]);
    // The CLI opens it the same way.
    assert_eq!(keys.open_cli(&stored[0]), opened);
    // The routing fields stay readable for the provider.
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains(&format!("To: <{}>", user.address)), "{text}");
    assert!(text.contains("Delivered-To: "), "{text}");
}

#[test]
fn python_smtplib_through_the_relay_is_stored_sealed() {
    let p = provider();
    let alice = p.new_user("py-alice");
    let bob = p.new_user("py-bob");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let subject = unique("py-subject");
    let marker = unique("py-body");
    let original = message(
        "sender@elsewhere.test",
        &alice.address,
        &subject,
        &marker,
        &format!("{}@elsewhere.test", unique("py-id")),
    );
    let data = writ.dir().join("message.eml");
    std::fs::write(&data, &original).unwrap();
    let script = r#"
import smtplib, sys
port, path, *rcpts = sys.argv[1:]
msg = open(path, "rb").read()
with smtplib.SMTP("127.0.0.1", int(port), local_hostname="py.client.test", timeout=30) as s:
    code, _ = s.ehlo()
    assert code == 250, code
    assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("size"), s.esmtp_features
    refused = s.sendmail("sender@elsewhere.test", rcpts, msg, mail_options=["BODY=8BITMIME"])
    assert refused == {}, refused
print("sent")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(writ.relay_addr().port().to_string())
        .arg(&data)
        .arg(&alice.address)
        .arg(&bob.address)
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sent"),
        "smtplib failed ({}):\n{}\n{}\n--- writ log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        writ.log()
    );
    let keys = writ.test_keys();
    for user in [&alice, &bob] {
        let stored = p.wait_for_messages(user, "INBOX", 1, DELIVERY_TIMEOUT);
        assert_eq!(stored.len(), 1, "{}", user.name);
        assert_sealed_original(keys, &stored[0], &original, &[&subject, &marker]);
        let text = String::from_utf8_lossy(&stored[0]);
        assert!(
            text.contains(&format!("Delivered-To: {}", user.address)),
            "{text}"
        );
    }
}

#[test]
fn postfix_with_writ_as_relayhost_delivers_sealed() {
    let p = provider();
    let user = p.new_user("mta");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let mta = Mta::start(&MtaConfig::relaying_to(writ.relay_addr()));
    let subject = unique("mta-subject");
    let marker = unique("mta-body");
    let original = message(
        "sender@org.test",
        &user.address,
        &subject,
        &marker,
        &format!("{}@org.test", unique("mta-id")),
    );
    let queued = smtp::send(
        mta.smtp_addr(),
        "sender@org.test",
        &[&user.address],
        &original,
    )
    .unwrap_or_else(|r| panic!("the MTA refused the message: {r:?}\n{}", mta.diagnostics()));
    assert_eq!(queued.code, 250, "{queued:?}");

    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    for s in [&subject, &marker] {
        assert!(
            !contains(stored, s.as_bytes()),
            "{s} readable in the stored message"
        );
    }
    // Opened: the provider's fields above the marker, the MTA's own trace
    // field (it is what writ received), then the original byte for byte.
    let at = marker_offset(stored);
    let opened = writ.test_keys().open(stored);
    assert!(opened.starts_with(&stored[..at]), "provider fields first");
    assert!(
        opened.ends_with(&original),
        "the original at the end:\n{}",
        String::from_utf8_lossy(&opened)
    );
    let added = String::from_utf8_lossy(&opened[at..opened.len() - original.len()]).into_owned();
    assert!(
        added.starts_with("Received: from ")
            && added.contains(&format!("by {}.mta.test (Postfix)", mta.instance))
            && added.lines().skip(1).all(|l| l.starts_with([' ', '\t'])),
        "only the MTA's Received field lies between the marker and the original:\n{added}"
    );
    // The MTA spoke to writ and got the provider's final reply back.
    let log = std::fs::read_to_string(mta.dir.join("postfix.log")).unwrap_or_default();
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", writ.relay_addr().port());
    assert!(
        log.lines()
            .any(|l| l.contains(&relay) && l.contains("status=sent (250 2.0.0 Ok: queued as")),
        "the MTA log shows no delivery through writ:\n{}",
        mta.diagnostics()
    );
}

/// The Message-ID of an (opened) message.
fn message_id(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next()?;
    header
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(str::to_string)
}

#[test]
fn eight_concurrent_clients_times_fifty_messages_each_delivered_exactly_once() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 50;
    let p = provider();
    let user = p.new_user("many");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let run = unique("run");
    let originals: BTreeMap<String, Vec<u8>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (user, run, writ) = (&user, &run, &writ);
                scope.spawn(move || {
                    let mut sent = Vec::new();
                    let mut smtp = Smtp::connect(writ.relay_addr()).unwrap();
                    assert_eq!(smtp.command("EHLO many.test").unwrap().code, 250);
                    for m in 0..PER_CLIENT {
                        let id = format!("{run}-{c}-{m}@many.test");
                        let body = format!("client {c} message {m}");
                        let msg = message("many@many.test", &user.address, &body, &body, &id);
                        for line in [
                            "MAIL FROM:<many@many.test>".to_string(),
                            format!("RCPT TO:<{}>", user.address),
                        ] {
                            let r = smtp.command(&line).unwrap();
                            assert_eq!(r.code, 250, "{line}: {r:?}\n{}", writ.log());
                        }
                        assert_eq!(smtp.command("DATA").unwrap().code, 354);
                        let r = smtp.send_data(&msg).unwrap();
                        assert_eq!(r.code, 250, "client {c} message {m}: {r:?}");
                        sent.push((format!("<{id}>"), msg));
                    }
                    smtp.quit();
                    sent
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert_eq!(
        originals.len(),
        CLIENTS * PER_CLIENT,
        "distinct Message-IDs"
    );

    let stored = p.wait_for_messages(
        &user,
        "INBOX",
        CLIENTS * PER_CLIENT,
        Duration::from_secs(300),
    );
    assert_eq!(stored.len(), CLIENTS * PER_CLIENT, "no message twice");
    let keys = writ.test_keys();
    let mut seen = BTreeSet::new();
    for s in &stored {
        let opened = keys.open(s);
        let id = message_id(&opened).expect("a Message-ID");
        let original = originals
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected message {id}"));
        assert!(opened.ends_with(original), "{id} opens to its original");
        assert!(!contains(s, b"the secret is client"), "{id} sealed");
        assert!(seen.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(seen.len(), originals.len());
}

#[test]
fn metrics_count_sessions_and_messages() {
    let p = provider();
    let user = p.new_user("metrics");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let mut sealed_bytes = 0usize;
    let mut sealed = 0;
    // Session 1: two messages.
    let mut s1 = Smtp::connect(writ.relay_addr()).unwrap();
    s1.command("EHLO one.test").unwrap();
    // Session 2: a refused message (bare LF), then a good one.
    let mut s2 = Smtp::connect(writ.relay_addr()).unwrap();
    s2.command("EHLO two.test").unwrap();
    // Session 3: an open-relay attempt only.
    let mut s3 = Smtp::connect(writ.relay_addr()).unwrap();
    s3.command("EHLO three.test").unwrap();
    assert_eq!(writ.metric("writ_smtp_sessions_active", &[]), 3.0);

    let mut send = |s: &mut Smtp, data: &[u8]| -> u16 {
        s.command("MAIL FROM:<m@elsewhere.test>").unwrap();
        s.command(&format!("RCPT TO:<{}>", user.address)).unwrap();
        assert_eq!(s.command("DATA").unwrap().code, 354);
        let r = s.send_data(data).unwrap();
        if r.code == 250 {
            sealed += 1;
            sealed_bytes += data.len();
        }
        r.code
    };
    for n in 0..2 {
        let m = message(
            "m@elsewhere.test",
            &user.address,
            "s",
            &format!("one {n}"),
            &unique("m"),
        );
        assert_eq!(send(&mut s1, &m), 250);
    }
    assert_eq!(send(&mut s2, b"Subject: bare\n\nLF\r\n"), 554);
    let m = message("m@elsewhere.test", &user.address, "s", "two", &unique("m"));
    assert_eq!(send(&mut s2, &m), 250);
    s3.command("MAIL FROM:<m@elsewhere.test>").unwrap();
    assert_eq!(s3.command("RCPT TO:<x@elsewhere.test>").unwrap().code, 550);
    for s in [s1, s2, s3] {
        s.quit();
    }

    let text = writ.metrics();
    let m = |name: &str, labels: &[(&str, &str)]| common::writ::metric_value(&text, name, labels);
    assert_eq!(
        m("writ_smtp_sessions_total", &[("listener", "relay")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        m("writ_messages_total", &[("outcome", "sealed")]),
        sealed as f64,
        "{text}"
    );
    assert_eq!(sealed, 3);
    assert_eq!(
        m(
            "writ_messages_total",
            &[("outcome", "refused"), ("reason", "bad-data")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        m("writ_messages_total", &[("outcome", "relayed")]),
        0.0,
        "{text}"
    );
    assert_eq!(
        m("writ_message_bytes_total", &[("outcome", "sealed")]),
        sealed_bytes as f64,
        "{text}"
    );
    assert_eq!(m("writ_seal_seconds_count", &[]), sealed as f64, "{text}");
    assert!(
        m("writ_upstream_replies_total", &[("class", "2xx")]) >= 3.0 * sealed as f64,
        "{text}"
    );
    assert_eq!(
        m("writ_upstream_replies_total", &[("class", "5xx")]),
        0.0,
        "{text}"
    );
    // The sessions are over.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writ.metric("writ_smtp_sessions_active", &[]) != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions still active:\n{}",
            writ.metrics()
        );
        thread::sleep(Duration::from_millis(10));
    }
    p.wait_for_messages(&user, "INBOX", sealed, DELIVERY_TIMEOUT);
}

#[test]
fn dsn_and_smtputf8_parameters_reach_the_provider() {
    let p = provider();
    let sender = p.new_user("dsn-sender");
    let rcpt = p.new_user("dsn-rcpt");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let envid = unique("envid");
    let subject = unique("dsn-subject");
    let original = message(
        &sender.address,
        &rcpt.address,
        &subject,
        "dsn",
        &unique("dsn-id"),
    );
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    let ehlo = s.command("EHLO mta.test").unwrap();
    for ext in [
        "DSN",
        "SMTPUTF8",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.lines.iter().any(|l| l == ext), "{ext}: {ehlo:?}");
    }
    for line in [
        format!(
            "MAIL FROM:<{}> RET=HDRS ENVID={envid} BODY=8BITMIME",
            sender.address
        ),
        format!(
            "RCPT TO:<{}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{}",
            rcpt.address, rcpt.address
        ),
    ] {
        let r = s.command(&line).unwrap();
        assert_eq!(r.code, 250, "{line}: {r:?}");
    }
    assert_eq!(s.command("DATA").unwrap().code, 354);
    assert_eq!(s.send_data(&original).unwrap().code, 250);

    // An internationalised sender with SMTPUTF8 is taken by writ and the
    // provider. (Not delivered: the harness's Dovecot LMTP does not offer
    // SMTPUTF8, so the provider would bounce it.)
    let utf8_sender = "j\u{fc}rgen@elsewhere.test";
    let r = s
        .command(&format!("MAIL FROM:<{utf8_sender}> SMTPUTF8"))
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    let r = s.command(&format!("RCPT TO:<{}>", rcpt.address)).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(s.command("RSET").unwrap().code, 250);
    s.quit();

    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_sealed_original(writ.test_keys(), &stored[0], &original, &[&subject]);

    // The provider honoured ENVID, ORCPT and NOTIFY=SUCCESS: its delivery
    // report reached the sender, with the sealed header only (RET=HDRS).
    let reports = p.wait_for_messages(&sender, "INBOX", 1, DELIVERY_TIMEOUT);
    let report = String::from_utf8_lossy(&reports[0]);
    assert!(
        report.contains(&format!("Original-Envelope-Id: {envid}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("Original-Recipient: rfc822;{}", rcpt.address)),
        "{report}"
    );
    // Postfix reports an LMTP hand-off as "relayed".
    assert!(
        report.contains("Action: relayed") || report.contains("Action: delivered"),
        "{report}"
    );
    assert!(
        report.contains("X-Writ:") && !report.contains(&subject),
        "{report}"
    );
}

#[test]
fn unusual_messages_are_sealed_and_open_byte_exact() {
    let p = provider();
    let user = p.new_user("unusual");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let long_line = format!("Subject: long\r\n\r\n{}\r\n", "x".repeat(20_000));
    let mut eight_bit = b"Subject: 8bit\r\n\r\n".to_vec();
    eight_bit.extend((0x80u8..=0xff).chain(*b"\r\n"));
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 3 * 1024 * 1024 {
        big.extend_from_slice(b"a line of a big message, streamed and sealed in chunks\r\n");
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("header only", b"Subject: only a header\r\n".to_vec()),
        ("body only", b"\r\nno header at all\r\n".to_vec()),
        (
            "dot lines",
            b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n. x\r\n".to_vec(),
        ),
        ("lone CR", b"Subject: cr\r\n\r\na\rb\r\n\r\r\n".to_vec()),
        ("long line", long_line.into_bytes()),
        ("8-bit", eight_bit),
        ("3 MiB", big),
    ];
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO mta.test").unwrap();
    for (what, m) in &cases {
        assert_eq!(s.command("MAIL FROM:<a@elsewhere.test>").unwrap().code, 250);
        let r = s.command(&format!("RCPT TO:<{}>", user.address)).unwrap();
        assert_eq!(r.code, 250, "{what}: {r:?}");
        assert_eq!(s.command("DATA").unwrap().code, 354, "{what}");
        let r = s.send_data(m).unwrap();
        assert_eq!(r.code, 250, "{what}: {r:?}\n{}", writ.log());
        // One at a time, so the mailbox order is the sending order.
        p.wait_for_messages(
            &user,
            "INBOX",
            cases.iter().position(|c| c.0 == *what).unwrap() + 1,
            DELIVERY_TIMEOUT,
        );
    }
    s.quit();
    let stored = p.wait_for_messages(&user, "INBOX", cases.len(), DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), cases.len());
    for ((what, m), stored) in cases.iter().zip(&stored) {
        // What writ received: the data as sent, ending in a line break.
        let mut received = m.clone();
        if !received.is_empty() && !received.ends_with(b"\n") {
            received.extend_from_slice(b"\r\n");
        }
        let at = marker_offset(stored);
        let opened = writ.test_keys().open(stored);
        assert!(
            opened[..at] == stored[..at] && opened[at..] == received[..],
            "{what}: opened differs:\n{}",
            String::from_utf8_lossy(&opened[at..])
        );
    }
}

#[test]
fn postfix_uses_starttls_to_writ_when_the_relay_has_a_certificate() {
    let p = provider();
    let user = p.new_user("mta-tls");
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.tls_cert = Some(p.cert_file());
    cfg.tls_key = Some(p.dir.join("tls/key.pem"));
    let writ = Writ::start(&cfg);
    let mta = Mta::start(&MtaConfig {
        tls: true,
        ..MtaConfig::relaying_to(writ.relay_addr())
    });
    let marker = unique("mta-tls-body");
    let original = message(
        "sender@org.test",
        &user.address,
        "over TLS",
        &marker,
        &unique("mta-tls-id"),
    );
    smtp::send(
        mta.smtp_addr(),
        "sender@org.test",
        &[&user.address],
        &original,
    )
    .unwrap_or_else(|r| panic!("the MTA refused the message: {r:?}"));
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert!(!contains(&stored[0], marker.as_bytes()));
    assert!(writ.test_keys().open(&stored[0]).ends_with(&original));
    let log = std::fs::read_to_string(mta.dir.join("postfix.log")).unwrap_or_default();
    assert!(
        log.contains("TLS connection established to 127.0.0.1[127.0.0.1]"),
        "the MTA did not use TLS to writ:\n{}",
        mta.diagnostics()
    );
}

#[test]
fn pipelined_transactions_in_one_write_get_their_replies_in_order() {
    let p = provider();
    let user = p.new_user("pipelined");
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    let first = message(
        "a@elsewhere.test",
        &user.address,
        "one",
        "first",
        &unique("p1"),
    );
    let second = message(
        "a@elsewhere.test",
        &user.address,
        "two",
        "second",
        &unique("p2"),
    );
    let mut wire = b"EHLO pipe.test\r\n".to_vec();
    for (n, m) in [&first, &second].into_iter().enumerate() {
        wire.extend_from_slice(b"MAIL FROM:<a@elsewhere.test>\r\n");
        wire.extend_from_slice(format!("RCPT TO:<{}>\r\n", user.address).as_bytes());
        if n == 1 {
            // A refused recipient in the middle of the batch.
            wire.extend_from_slice(b"RCPT TO:<x@elsewhere.test>\r\n");
        }
        wire.extend_from_slice(b"DATA\r\n");
        // Dot-stuffed by hand (the message has a line starting with a dot).
        let text = String::from_utf8(m.clone()).unwrap();
        wire.extend_from_slice(text.replace("\r\n.", "\r\n..").as_bytes());
        wire.extend_from_slice(b".\r\n");
    }
    wire.extend_from_slice(b"QUIT\r\n");
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.write_raw(&wire).unwrap();
    let codes: Vec<u16> = (0..11).map(|_| s.read_reply().unwrap().code).collect();
    assert_eq!(
        codes,
        [250, 250, 250, 354, 250, 250, 250, 550, 354, 250, 221]
    );
    assert!(s.read_reply().is_err(), "closed after QUIT");
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    let keys = writ.test_keys();
    let opened: Vec<Vec<u8>> = stored.iter().map(|m| keys.open(m)).collect();
    for m in [&first, &second] {
        assert_eq!(
            opened.iter().filter(|o| o.ends_with(m)).count(),
            1,
            "each message once"
        );
    }
}
