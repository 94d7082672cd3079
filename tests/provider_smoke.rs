//! The test provider works end to end: mail submitted with a real client
//! (swaks) to Postfix arrives over LMTP in Dovecot and reads back over IMAP,
//! and IMAP APPEND stores exactly the bytes given.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{DOMAIN, Imap, Smtp, provider};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn unique_marker(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos:x}", std::process::id())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn swaks_to_postfix_arrives_in_dovecot_over_imap() {
    let p = provider();
    let user = p.new_user("smoke");
    let marker = unique_marker("body-marker");
    let subject = unique_marker("subject");
    let body = format!("first line {marker}\r\nsecond line: caf\u{e9}, not quoted-printable\r\n");

    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", p.smtp_port)])
        .args(["--from", "sender@elsewhere.test"])
        .args(["--to", &user.address])
        .args(["--header", &format!("Subject: {subject}")])
        .args(["--body", &body])
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && transcript.contains("<-  250 2.0.0 Ok: queued"),
        "swaks failed ({}):\n{transcript}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let messages = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(messages.len(), 1, "exactly one message delivered");
    let stored = &messages[0];
    let text = String::from_utf8_lossy(stored);
    assert!(
        contains(stored, format!("\r\nSubject: {subject}\r\n").as_bytes()),
        "Subject missing:\n{text}"
    );
    // The body arrives byte for byte: separated from the header by the empty
    // line, 8-bit UTF-8 intact (no MIME conversion on the way).
    assert!(
        contains(stored, format!("\r\n\r\n{body}").as_bytes()),
        "body not stored verbatim:\n{text}"
    );
    // It really went Postfix -> LMTP -> Dovecot.
    assert!(
        text.contains("with LMTP"),
        "no LMTP Received header:\n{text}"
    );
    assert!(
        text.contains("(Postfix) with ESMTP"),
        "no Postfix Received header:\n{text}"
    );
    assert!(
        text.contains(&format!("Delivered-To: {}", user.address)),
        "{text}"
    );

    // ENVELOPE and BODYSTRUCTURE through the raw command helper.
    let response = p.imap_command(&user, "INBOX", "UID FETCH 1:* (UID ENVELOPE BODYSTRUCTURE)");
    assert!(response.is_ok(), "{response:?}");
    let raw = response.text();
    assert!(raw.contains(&subject), "ENVELOPE lacks the subject: {raw}");
    assert!(
        raw.contains("NIL \"sender\" \"elsewhere.test\""),
        "ENVELOPE from: {raw}"
    );
    assert!(
        raw.contains("BODYSTRUCTURE (\"text\" \"plain\""),
        "BODYSTRUCTURE: {raw}"
    );
}

#[test]
fn imap_append_then_fetch_returns_exact_bytes() {
    let p = provider();
    let user = p.new_user("append");
    let marker = unique_marker("append-marker");
    let mut message = format!(
        "From: Alice <alice@{DOMAIN}>\r\nTo: Bob <bob@{DOMAIN}>\r\n\
         Subject: {marker}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         {marker}\r\n.leading dot\r\n\r\ntrailing spaces   \r\n"
    )
    .into_bytes();
    // 8-bit bytes and a long line survive too.
    message.extend_from_slice("gr\u{fc}\u{df}e \u{1f512}\r\n".as_bytes());
    message.extend_from_slice(&[b'x'; 5000]);
    message.extend_from_slice(b"\r\n");

    let uid = p.imap_append(&user, "INBOX", &message);
    let second = p.imap_append(&user, "Archive/2026", b"Subject: two\r\n\r\nsecond\r\n");
    assert!(uid > 0 && second > 0);

    let inbox = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(inbox.len(), 1);
    assert!(
        inbox[0] == message,
        "APPENDed bytes changed:\n{}",
        String::from_utf8_lossy(&inbox[0])
    );
    let archive = p.imap_fetch_all(&user, "Archive/2026");
    assert_eq!(archive, vec![b"Subject: two\r\n\r\nsecond\r\n".to_vec()]);
    // wait_for_messages returns at once when the messages are there.
    assert_eq!(
        p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT),
        inbox
    );
}

#[test]
fn users_are_separate_and_need_their_password() {
    let p = provider();
    let a = p.new_user("Sep.A");
    let b = p.new_user("sep.a");
    assert_ne!(a.name, b.name);
    assert!(a.address.ends_with("@example.test"), "{a:?}");
    p.imap_append(&a, "INBOX", b"Subject: only a\r\n\r\na\r\n");
    assert_eq!(p.imap_fetch_all(&b, "INBOX"), Vec::<Vec<u8>>::new());

    // The full address works as a login; a wrong password does not.
    let mut imap = Imap::connect(p.imap_addr()).unwrap();
    assert!(imap.login(&a.address, &a.password).is_ok());
    imap.logout();
    let mut imap = Imap::connect(p.imap_addr()).unwrap();
    let refused = imap.login(&a.name, &b.password);
    assert_eq!(refused.status, "NO", "{refused:?}");
}

#[test]
fn smtp_for_the_domain_is_delivered_other_domains_refused() {
    let p = provider();
    let user = p.new_user("smtp");
    let marker = unique_marker("smtp-marker");
    let message = format!(
        "From: x@elsewhere.test\r\nTo: {}\r\nSubject: dot test\r\n\r\n.{marker}\r\n..two dots\r\n",
        user.address
    );
    let reply = p
        .smtp_send("x@elsewhere.test", &[&user.address], message.as_bytes())
        .expect("accepted");
    assert_eq!(reply.code, 250, "{reply:?}");
    let messages = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    // Dot-stuffing undone by the server: the body is what we meant to send.
    let expected_body = format!("\r\n\r\n.{marker}\r\n..two dots\r\n");
    assert!(
        contains(&messages[0], expected_body.as_bytes()),
        "{}",
        String::from_utf8_lossy(&messages[0])
    );

    let refused = p
        .smtp_send(
            "x@elsewhere.test",
            &["someone@other.test"],
            b"Subject: no\r\n\r\nno\r\n",
        )
        .expect_err("relay to other domains refused");
    assert_eq!(refused.code, 554, "{refused:?}");
}

/// Runs swaks against the provider's submission port with STARTTLS and AUTH;
/// returns (success, transcript).
fn swaks_submission(user: &str, password: &str, mechanism: &str, to: &str) -> (bool, String) {
    let p = provider();
    let out = Command::new("swaks")
        .args(["--server", &p.submission_addr().to_string()])
        .arg("--tls")
        .args(["--auth", mechanism])
        .args(["--auth-user", user])
        .args(["--auth-password", password])
        .args(["--from", user])
        .args(["--to", to])
        .args(["--header", "Subject: submission smoke"])
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    let transcript = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), transcript)
}

#[test]
fn submission_port_authenticates_harness_users_after_starttls() {
    let p = provider();
    let user = p.new_user("subm");
    let other = p.new_user("subm-other");

    // The right password: STARTTLS, AUTH PLAIN, mail accepted and delivered.
    let (ok, transcript) = swaks_submission(&user.address, &user.password, "PLAIN", &other.address);
    assert!(ok, "swaks failed:\n{transcript}");
    assert!(
        transcript.contains("<~  235 2.7.0 Authentication successful"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<~  250 2.0.0 Ok: queued"),
        "{transcript}"
    );
    let messages = p.wait_for_messages(&other, "INBOX", 1, DELIVERY_TIMEOUT);
    let text = String::from_utf8_lossy(&messages[0]);
    // "ESMTPSA": received over TLS from an authenticated client.
    assert!(text.contains("with ESMTPSA"), "{text}");

    // The login name works as well as the address; AUTH LOGIN too.
    let (ok, transcript) = swaks_submission(&user.name, &user.password, "LOGIN", &other.address);
    assert!(ok, "swaks AUTH LOGIN failed:\n{transcript}");

    // A wrong password (another user's) is refused with 535 and nothing is sent.
    let (ok, transcript) =
        swaks_submission(&user.address, &other.password, "PLAIN", &other.address);
    assert!(!ok, "AUTH with a wrong password succeeded:\n{transcript}");
    assert!(
        transcript.contains("<~* 535 5.7.8"),
        "no 535 for a wrong password:\n{transcript}"
    );
    assert!(!transcript.contains("~> MAIL FROM"), "{transcript}");
}

#[test]
fn submission_port_requires_starttls_before_auth_and_mail() {
    let p = provider();
    let user = p.new_user("plain");
    let mut smtp = Smtp::connect(p.submission_addr()).expect("connect");
    let ehlo = smtp.command("EHLO client.test").expect("EHLO");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    let text = ehlo.text();
    assert!(text.contains("STARTTLS"), "{text}");
    assert!(
        !text.contains("AUTH"),
        "AUTH offered before STARTTLS: {text}"
    );
    let auth = smtp
        .command(&format!(
            "AUTH PLAIN {}",
            base64_plain(&user.address, &user.password)
        ))
        .expect("AUTH");
    assert!(auth.code >= 500, "AUTH before STARTTLS: {auth:?}");
    let mail = smtp
        .command(&format!("MAIL FROM:<{}>", user.address))
        .expect("MAIL");
    assert_eq!(mail.code, 530, "{mail:?}");
    assert!(mail.text().contains("STARTTLS"), "{mail:?}");
    smtp.quit();
}

#[test]
fn submission_port_certificate_verifies_against_the_ca_and_relays_for_users() {
    let p = provider();
    let user = p.new_user("py");
    let world = p.world();
    let external = format!("{}@elsewhere.test", unique_marker("far"));
    // Python's ssl verifies the chain and the name 127.0.0.1 against ca.pem;
    // an unauthenticated client may not send even to the provider's domain.
    let script = r#"
import smtplib, ssl, sys
host, port, cafile, user, password, external = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP(host, int(port), timeout=30)
s.starttls(context=ctx)
s.ehlo()
try:
    s.sendmail(user, [user], b"Subject: unauthenticated\r\n\r\nno\r\n")
    sys.exit("unauthenticated mail accepted")
except smtplib.SMTPRecipientsRefused as e:
    print("refused", e.recipients[user][0])
s.rset()
s.login(user, password)
refused = s.sendmail(user, [external], b"Subject: outbound\r\n\r\nto the world\r\n")
print("sent", refused)
s.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script, "127.0.0.1"])
        .arg(p.submission_port.to_string())
        .arg(p.ca_file())
        .args([&user.address, &user.password, &external])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused 554"), "{stdout}");
    assert!(stdout.contains("sent {}"), "{stdout}");

    // The external recipient's copy is in world's INBOX, addressed to it.
    let delivered_to = format!(
        "Delivered-To: {}",
        common::Provider::world_address(&external)
    );
    let deadline = std::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let inbox = p.imap_fetch_all(world, "INBOX");
        if inbox
            .iter()
            .any(|m| contains(m, delivered_to.as_bytes()) && contains(m, b"to the world"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no '{delivered_to}' in world's INBOX\n{}",
            p.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
