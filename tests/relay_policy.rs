//! Who writ seals for, refuses or passes on, against the real provider:
//! external recipients as `smtp.external` says (plaintext, reject, sealed
//! to a directory key), one class per transaction (452 4.5.3), the relay
//! listener never an open relay, allowed client networks, and a provider
//! that refuses one recipient (its reply mirrored, the others delivered).
//!
//! External policy applies on the submission listener (the relay listener
//! refuses every external recipient), so those tests go through STARTTLS
//! and AUTH, passed through to the provider's own submission port.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::mail::{DELIVERY_TIMEOUT, contains, unique};
use common::mta::{Mta, MtaConfig};
use common::provider::Provider;
use common::python;
use common::writ::{TestKeys, Writ, WritConfig, age_decrypt, age_keygen, payload_armor};
use common::{DOMAIN, Smtp, User, provider};

fn message(to: &str, subject: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: <sender@{DOMAIN}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{}@{DOMAIN}>\r\n\
         \r\nbody {marker}\r\n",
        unique("id")
    )
    .into_bytes()
}

/// [`WritConfig::submission`] with the provider's own certificate.
fn submission_config(p: &Provider) -> WritConfig {
    WritConfig::submission(p, p.cert_file(), p.dir.join("tls/key.pem"))
}

/// One SMTP reply as Python reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: u16,
    text: String,
}

/// The replies of one transaction.
#[derive(Debug)]
struct Outcome {
    mail: Answer,
    rcpts: Vec<Answer>,
    /// The reply to the end of data, if DATA was sent (some RCPT accepted).
    data: Option<Answer>,
}

/// Runs transactions in one session with Python's smtplib: EHLO, STARTTLS
/// (verifying writ's certificate with `ca`) and AUTH when `login` is given,
/// then for each (recipients, message): MAIL, each RCPT, and DATA if any
/// recipient was accepted.
#[track_caller]
fn python_session(
    addr: SocketAddr,
    ca: Option<&std::path::Path>,
    login: Option<&User>,
    source: &str,
    transactions: &[(Vec<String>, Vec<u8>)],
) -> Vec<Outcome> {
    const SCRIPT: &str = r#"
import json, smtplib, ssl, sys
spec = json.load(sys.stdin)
s = smtplib.SMTP("127.0.0.1", spec["port"], timeout=30,
                 local_hostname="py.client.test",
                 source_address=(spec["source"], 0))
s.ehlo()
if spec["ca"]:
    ctx = ssl.create_default_context(cafile=spec["ca"])
    s.starttls(context=ctx)
    s.ehlo()
if spec["user"]:
    s.login(spec["user"], spec["password"])
out = []
for t in spec["transactions"]:
    r = {}
    code, text = s.mail("sender@example.test")
    r["mail"] = [code, text.decode()]
    r["rcpts"] = []
    for to in t["rcpts"]:
        code, text = s.rcpt(to)
        r["rcpts"].append([code, text.decode()])
    r["data"] = None
    if any(c < 300 for c, _ in r["rcpts"]):
        code, text = s.data(bytes.fromhex(t["message"]))
        r["data"] = [code, text.decode()]
    else:
        s.rset()
    out.append(r)
s.quit()
print(json.dumps(out))
"#;
    let spec = serde_json::json!({
        "port": addr.port(),
        "source": source,
        "ca": ca.map(|c| c.display().to_string()),
        "user": login.map(|u| u.name.clone()),
        "password": login.map(|u| u.password.clone()),
        "transactions": transactions.iter().map(|(rcpts, m)| serde_json::json!({
            "rcpts": rcpts,
            "message": python::hex(m),
        })).collect::<Vec<_>>(),
    });
    let out = python::run_with_input(SCRIPT, &[], spec.to_string().as_bytes());
    assert!(
        out.status.success(),
        "smtplib session failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer = |a: &serde_json::Value| Answer {
        code: a[0].as_u64().unwrap() as u16,
        text: a[1].as_str().unwrap().to_string(),
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| Outcome {
            mail: answer(&t["mail"]),
            rcpts: t["rcpts"].as_array().unwrap().iter().map(answer).collect(),
            data: (!t["data"].is_null()).then(|| answer(&t["data"])),
        })
        .collect()
}

/// Waits until `user`'s INBOX holds a message with `Delivered-To: address`
/// and returns it (the INBOX may hold other tests' mail too).
#[track_caller]
fn wait_for_delivered_to(p: &Provider, user: &User, address: &str) -> Vec<u8> {
    let needle = format!("Delivered-To: {address}\r\n");
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let all = p.imap_fetch_all(user, "INBOX");
        if let Some(m) = all.into_iter().find(|m| contains(m, needle.as_bytes())) {
            return m;
        }
        if Instant::now() >= deadline {
            panic!(
                "no message for {address} in {}'s INBOX\n{}",
                user.name,
                p.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn external_plaintext_reaches_the_provider_as_sent() {
    let p = provider();
    let sender = p.new_user("ext-plain");
    let world = p.world();
    let writ = Writ::start(&submission_config(p).external("plaintext"));
    let external = format!("{}@partner.test", unique("friend"));
    let subject = unique("plain-subject");
    let marker = unique("plain-body");
    let original = message(&external, &subject, &marker);
    let outcome = python_session(
        writ.addr("submission"),
        Some(&p.ca_file()),
        Some(&sender),
        "127.0.0.1",
        &[(vec![external.clone()], original.clone())],
    );
    assert_eq!(outcome[0].rcpts[0].code, 250, "{outcome:?}\n{}", writ.log());
    assert_eq!(outcome[0].data.as_ref().map(|a| a.code), Some(250));

    let stored = wait_for_delivered_to(p, world, &Provider::world_address(&external));
    assert!(
        !contains(&stored, b"X-Writ:") && stored.ends_with(&original),
        "external mail stored as sent:\n{}",
        String::from_utf8_lossy(&stored)
    );
    assert!(contains(&stored, subject.as_bytes()));
}

#[test]
fn external_reject_refuses_with_550_and_keeps_the_protected_recipient() {
    let p = provider();
    let sender = p.new_user("ext-reject");
    let colleague = p.new_user("colleague");
    let writ = Writ::start(&submission_config(p).external("reject"));
    let external = format!("{}@partner.test", unique("friend"));
    let marker = unique("reject-body");
    let original = message(&colleague.address, "rejected", &marker);
    let outcome = python_session(
        writ.addr("submission"),
        Some(&p.ca_file()),
        Some(&sender),
        "127.0.0.1",
        &[(
            vec![external.clone(), colleague.address.clone()],
            original.clone(),
        )],
    );
    let r = &outcome[0];
    assert_eq!(r.mail.code, 250, "{r:?}");
    assert_eq!(r.rcpts[0].code, 550, "{r:?}");
    assert!(r.rcpts[0].text.starts_with("5.7.1"), "{r:?}");
    assert_eq!(r.rcpts[1].code, 250, "{r:?}");
    assert_eq!(r.data.as_ref().map(|a| a.code), Some(250), "{r:?}");
    let stored = p.wait_for_messages(&colleague, "INBOX", 1, DELIVERY_TIMEOUT);
    assert!(contains(&stored[0], b"X-Writ:") && !contains(&stored[0], marker.as_bytes()));
    let opened = writ.test_keys().open(&stored[0]);
    assert!(opened.ends_with(&original));
}

#[test]
fn external_seal_uses_the_directory_key_and_refuses_unknown_recipients() {
    let p = provider();
    let sender = p.new_user("ext-seal");
    let world = p.world();
    let tmp = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(tmp.path(), "friend.key");
    let external = format!("{}@partner.test", unique("friend"));
    let unknown = format!("{}@partner.test", unique("stranger"));
    let directory = tmp.path().join("directory.toml");
    std::fs::write(&directory, format!("\"{external}\" = \"{recipient}\"\n")).unwrap();
    let mut cfg = submission_config(p).external("seal");
    cfg.directory = Some(directory);
    let writ = Writ::start(&cfg);
    let subject = unique("seal-subject");
    let marker = unique("seal-body");
    let original = message(&external, &subject, &marker);
    let outcome = python_session(
        writ.addr("submission"),
        Some(&p.ca_file()),
        Some(&sender),
        "127.0.0.1",
        &[(vec![unknown.clone(), external.clone()], original.clone())],
    );
    let r = &outcome[0];
    assert_eq!(r.rcpts[0].code, 550, "no key for {unknown}: {r:?}");
    assert!(r.rcpts[0].text.starts_with("5.7.1"), "{r:?}");
    assert_eq!(r.rcpts[1].code, 250, "{r:?}");
    assert_eq!(r.data.as_ref().map(|a| a.code), Some(250), "{r:?}");

    let stored = wait_for_delivered_to(p, world, &Provider::world_address(&external));
    for s in [&subject, &marker] {
        assert!(!contains(&stored, s.as_bytes()), "{s} readable");
    }
    assert!(contains(&stored, b"X-Writ:"));
    // The recipient's own key opens the payload with the reference age CLI.
    assert_eq!(age_decrypt(&identity, &payload_armor(&stored)), original);
    // The organisation's keyring cannot: it was sealed to the recipient only.
    let mut out = Vec::new();
    let unlocked = writ.test_keys().unlock();
    assert!(writ::envelope::open(&stored[..], unlocked, &mut out).is_err());
}

#[test]
fn one_class_per_transaction_the_other_class_gets_452_then_goes_alone() {
    let p = provider();
    let sender = p.new_user("mixed");
    let colleague = p.new_user("mixed-colleague");
    let world = p.world();
    let writ = Writ::start(&submission_config(p).external("plaintext"));
    let external = format!("{}@partner.test", unique("friend"));
    let marker = unique("mixed-body");
    let original = message(&colleague.address, "mixed", &marker);
    let outcome = python_session(
        writ.addr("submission"),
        Some(&p.ca_file()),
        Some(&sender),
        "127.0.0.1",
        &[
            // Protected first: the external one is deferred.
            (
                vec![colleague.address.clone(), external.clone()],
                original.clone(),
            ),
            // As an RFC 5321 client does: the deferred one alone.
            (vec![external.clone()], original.clone()),
            // External first: now the protected one is deferred.
            (
                vec![external.clone(), colleague.address.clone()],
                original.clone(),
            ),
        ],
    );
    let deferred = |a: &Answer| a.code == 452 && a.text.starts_with("4.5.3");
    assert_eq!(outcome[0].rcpts[0].code, 250, "{outcome:?}");
    assert!(deferred(&outcome[0].rcpts[1]), "{outcome:?}");
    assert_eq!(outcome[0].data.as_ref().map(|a| a.code), Some(250));
    assert_eq!(outcome[1].rcpts[0].code, 250, "{outcome:?}");
    assert_eq!(outcome[1].data.as_ref().map(|a| a.code), Some(250));
    assert_eq!(outcome[2].rcpts[0].code, 250, "{outcome:?}");
    assert!(deferred(&outcome[2].rcpts[1]), "{outcome:?}");
    assert_eq!(outcome[2].data.as_ref().map(|a| a.code), Some(250));

    // The colleague's copy is sealed (one message: the third transaction
    // deferred them), the external copies (two) are plaintext.
    let sealed = p.wait_for_messages(&colleague, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(sealed.len(), 1);
    assert!(!contains(&sealed[0], marker.as_bytes()));
    assert!(writ.test_keys().open(&sealed[0]).ends_with(&original));
    let address = Provider::world_address(&external);
    let plain = wait_for_delivered_to(p, world, &address);
    assert!(plain.ends_with(&original) && !contains(&plain, b"X-Writ:"));
}

#[test]
fn relay_listener_is_never_an_open_relay() {
    let p = provider();
    let user = p.new_user("openrelay");
    // Even with external = "plaintext", the relay listener takes protected
    // recipients only.
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()).external("plaintext"));
    let mut smtp = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(smtp.command("EHLO mta.test").unwrap().code, 250);
    assert_eq!(
        smtp.command("MAIL FROM:<spammer@elsewhere.test>")
            .unwrap()
            .code,
        250
    );
    for victim in [
        "victim@elsewhere.test",
        "victim@example.test.evil.test",
        "\"victim@example.test\"@elsewhere.test",
    ] {
        let r = smtp.command(&format!("RCPT TO:<{victim}>")).unwrap();
        assert_eq!(r.code, 550, "{victim}: {r:?}");
        assert!(r.text().starts_with("5.7.1"), "{victim}: {r:?}");
    }
    // No recipient accepted: DATA is refused, nothing can be sent.
    let r = smtp.command("DATA").unwrap();
    assert_eq!(r.code / 100, 5, "{r:?}");
    // The protected one in the same session still works.
    assert_eq!(smtp.command("RSET").unwrap().code, 250);
    assert_eq!(
        smtp.command("MAIL FROM:<a@elsewhere.test>").unwrap().code,
        250
    );
    let r = smtp
        .command(&format!("RCPT TO:<{}>", user.address))
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    smtp.quit();
}

#[test]
fn relay_listener_refuses_clients_outside_allowed_networks() {
    let p = provider();
    let user = p.new_user("allowed");
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.listeners[0].allowed_networks = vec!["127.0.0.2/32".into()];
    let writ = Writ::start(&cfg);

    // From 127.0.0.1: refused at the greeting, the connection closed.
    let mut refused = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(refused.greeting.code, 554, "{:?}", refused.greeting);
    assert!(refused.greeting.text().starts_with("5.7.1"));
    assert!(
        refused.command("EHLO x").is_err(),
        "the refused connection is closed"
    );

    // From 127.0.0.2: served and delivered sealed.
    let marker = unique("allowed-body");
    let original = message(&user.address, "allowed", &marker);
    let outcome = python_session(
        writ.relay_addr(),
        None,
        None,
        "127.0.0.2",
        &[(vec![user.address.clone()], original.clone())],
    );
    assert_eq!(
        outcome[0].data.as_ref().map(|a| a.code),
        Some(250),
        "{outcome:?}"
    );
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert!(!contains(&stored[0], marker.as_bytes()));
    assert!(writ.test_keys().open(&stored[0]).ends_with(&original));
}

#[test]
fn provider_refusing_one_recipient_refuses_only_that_one_with_its_own_reply() {
    let p = provider();
    let alice = p.new_user("rcpt-alice");
    let bob = p.new_user("rcpt-bob");
    let nobody = format!("{}@{DOMAIN}", unique("nobody"));
    let why = unique("no-such-user");
    // A provider that knows its users: this MTA refuses `nobody` at RCPT
    // and passes the rest on to the harness provider.
    let gate = Mta::start(&MtaConfig {
        reject: vec![(nobody.clone(), format!("550 5.1.1 {why}"))],
        ..MtaConfig::relaying_to(p.smtp_addr())
    });
    let keys = TestKeys::new();
    let mut cfg = WritConfig::relay(gate.smtp_addr()).keys(&keys);
    cfg.provider.as_mut().unwrap().address = gate.smtp_addr().to_string();
    let writ = Writ::start(&cfg);

    // The provider's own answer to that RCPT, asked directly.
    let mut direct = Smtp::connect(gate.smtp_addr()).unwrap();
    direct.command("EHLO oracle.test").unwrap();
    direct.command("MAIL FROM:<sender@elsewhere.test>").unwrap();
    let oracle = direct.command(&format!("RCPT TO:<{nobody}>")).unwrap();
    direct.quit();
    assert_eq!(oracle.code, 550, "{oracle:?}");
    assert!(oracle.text().contains(&why), "{oracle:?}");

    let marker = unique("rcpt-body");
    let original = message(&alice.address, "one refused", &marker);
    let outcome = python_session(
        writ.relay_addr(),
        None,
        None,
        "127.0.0.1",
        &[(
            vec![alice.address.clone(), nobody.clone(), bob.address.clone()],
            original.clone(),
        )],
    );
    let r = &outcome[0];
    assert_eq!(r.mail.code, 250, "{r:?}");
    assert_eq!(r.rcpts[0].code, 250, "{r:?}");
    assert_eq!(
        r.rcpts[1],
        Answer {
            code: oracle.code,
            text: oracle.text()
        },
        "writ mirrors the provider's reply"
    );
    assert_eq!(r.rcpts[2].code, 250, "{r:?}");
    assert_eq!(r.data.as_ref().map(|a| a.code), Some(250), "{r:?}");
    for user in [&alice, &bob] {
        let stored = p.wait_for_messages(user, "INBOX", 1, DELIVERY_TIMEOUT);
        assert_eq!(stored.len(), 1);
        assert!(!contains(&stored[0], marker.as_bytes()));
        assert!(keys.open(&stored[0]).ends_with(&original));
    }
}

/// One authenticated submission session with smtplib that sends MAIL,
/// RCPT, DATA and then `data` raw (no end marker added): with `close`, the
/// client then disappears; otherwise it sends the end marker. Returns the
/// reply to DATA and, without `close`, the final reply.
#[track_caller]
fn raw_data_session(
    writ: &Writ,
    p: &Provider,
    login: &User,
    rcpt: &str,
    data: &[u8],
    close: bool,
) -> Vec<Answer> {
    const SCRIPT: &str = r#"
import json, smtplib, ssl, sys
spec = json.load(sys.stdin)
s = smtplib.SMTP("127.0.0.1", spec["port"], timeout=30, local_hostname="raw.client.test")
s.ehlo()
s.starttls(context=ssl.create_default_context(cafile=spec["ca"]))
s.ehlo()
s.login(spec["user"], spec["password"])
assert s.mail("sender@example.test")[0] == 250
assert s.rcpt(spec["rcpt"])[0] == 250
s.putcmd("data")
out = [list(s.getreply())]
s.send(bytes.fromhex(spec["data"]))
if spec["close"]:
    s.sock.close()
else:
    s.send(b".\r\n")
    out.append(list(s.getreply()))
    s.quit()
print(json.dumps([[c, t.decode()] for c, t in out]))
"#;
    let spec = serde_json::json!({
        "port": writ.addr("submission").port(),
        "ca": p.ca_file().display().to_string(),
        "user": login.name,
        "password": login.password,
        "rcpt": rcpt,
        "data": python::hex(data),
        "close": close,
    });
    let out = python::run_with_input(SCRIPT, &[], spec.to_string().as_bytes());
    assert!(
        out.status.success(),
        "smtplib failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        writ.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| Answer {
            code: a[0].as_u64().unwrap() as u16,
            text: a[1].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn plaintext_lockstep_delivers_nothing_when_the_client_dies_or_the_data_is_bad() {
    let p = provider();
    let sender = p.new_user("lockstep");
    let world = p.world();
    let writ = Writ::start(&submission_config(p).external("plaintext"));
    let gone = format!("{}@partner.test", unique("gone"));
    let bad = format!("{}@partner.test", unique("bad"));

    // Plaintext is streamed to the provider as it arrives (its 354 is the
    // client's); the client vanishes in the middle of a big message.
    let mut partial = message(&gone, "partial", &unique("partial"));
    for i in 0..5000 {
        partial.extend_from_slice(format!("streamed line {i}\r\n").as_bytes());
    }
    let r = raw_data_session(&writ, p, &sender, &gone, &partial, true);
    assert_eq!(r[0].code, 354, "{r:?}");

    // Bare LF in streamed data: refused, and the provider's DATA abandoned.
    let bad_data = format!("Subject: bare\r\n\r\nfirst\nsecond {}\r\n", unique("lf"));
    let r = raw_data_session(&writ, p, &sender, &bad, bad_data.as_bytes(), false);
    assert_eq!(r[0].code, 354, "{r:?}");
    assert_eq!(r[1].code, 554, "{r:?}");
    assert!(r[1].text.starts_with("5.6.0"), "{r:?}");

    wait_until_idle(&writ);
    // Then complete messages to both: these are the only copies stored.
    let good_gone = message(&gone, "good", &unique("good-gone"));
    let good_bad = message(&bad, "good", &unique("good-bad"));
    let outcome = python_session(
        writ.addr("submission"),
        Some(&p.ca_file()),
        Some(&sender),
        "127.0.0.1",
        &[
            (vec![gone.clone()], good_gone.clone()),
            (vec![bad.clone()], good_bad.clone()),
        ],
    );
    assert!(
        outcome
            .iter()
            .all(|o| o.data.as_ref().is_some_and(|a| a.code == 250))
    );
    for (rcpt, good) in [(&gone, &good_gone), (&bad, &good_bad)] {
        let address = Provider::world_address(rcpt);
        let stored = wait_for_delivered_to(p, world, &address);
        assert!(stored.ends_with(good));
        let needle = format!("Delivered-To: {address}\r\n");
        let copies = p
            .imap_fetch_all(world, "INBOX")
            .into_iter()
            .filter(|m| contains(m, needle.as_bytes()))
            .count();
        assert_eq!(copies, 1, "only the complete message for {rcpt}");
    }
}

/// Polls /metrics until no SMTP session is open.
#[track_caller]
fn wait_until_idle(writ: &Writ) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while writ.metric("writ_smtp_sessions_active", &[]) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "sessions still open:\n{}",
            writ.metrics()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn provider_refusing_the_sealed_data_is_the_clients_final_reply() {
    let p = provider();
    let user = p.new_user("toobig");
    // The provider takes messages up to 20 000 octets: the plaintext fits
    // (and passes MAIL ... SIZE=), the sealed message does not.
    let limit = 20_000usize;
    let gate = Mta::start(&MtaConfig {
        main_cf: format!("message_size_limit = {limit}"),
        ..MtaConfig::relaying_to(p.smtp_addr())
    });
    let writ = Writ::start(&WritConfig::relay(gate.smtp_addr()));
    let mut original = message(&user.address, "big", &unique("big"));
    while original.len() < limit - 2_000 {
        original.extend_from_slice(b"a line to make the message almost as big as allowed\r\n");
    }
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO mta.test").unwrap();
    let r = s
        .command(&format!(
            "MAIL FROM:<a@elsewhere.test> SIZE={}",
            original.len()
        ))
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    let r = s.command(&format!("RCPT TO:<{}>", user.address)).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(s.command("DATA").unwrap().code, 354);
    let r = s.send_data(&original).unwrap();
    // The provider's own refusal, mirrored: permanent, about the size.
    assert_eq!(r.code, 552, "{r:?}\n{}", gate.diagnostics());
    assert!(r.text().starts_with("5.3.4"), "{r:?}");
    // A small message in the same session still goes through.
    let marker = unique("small");
    s.command("MAIL FROM:<a@elsewhere.test>").unwrap();
    s.command(&format!("RCPT TO:<{}>", user.address)).unwrap();
    assert_eq!(s.command("DATA").unwrap().code, 354);
    let small = message(&user.address, "small", &marker);
    assert_eq!(s.send_data(&small).unwrap().code, 250);
    s.quit();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    assert!(writ.test_keys().open(&stored[0]).ends_with(&small));
}
