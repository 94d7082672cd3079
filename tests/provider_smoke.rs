//! The test provider works end to end: mail submitted with a real client
//! (swaks) to Postfix arrives over LMTP in Dovecot and reads back over IMAP,
//! and IMAP APPEND stores exactly the bytes given.

mod common;

use std::process::Command;
use std::time::Duration;

use common::mail::{contains, unique};
use common::{DOMAIN, Imap, Smtp, provider};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn swaks_to_postfix_arrives_in_dovecot_over_imap() {
    let p = provider();
    let user = p.new_user("smoke");
    let marker = unique("body-marker");
    let subject = unique("subject");
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
    let marker = unique("append-marker");
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
    let marker = unique("smtp-marker");
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
    let external = format!("{}@elsewhere.test", unique("far"));
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

// --- Administrators: the Dovecot master user -------------------------------

#[test]
fn master_user_logs_in_as_any_user_with_the_master_password() {
    let p = provider();
    let user = p.new_user("mastered");
    let other = p.new_user("mastered-other");
    let master = p.master();
    assert_eq!(master.name, "writadmin");
    assert_eq!(master.login_for(&user), format!("{}*writadmin", user.name));
    assert_eq!(
        std::fs::read(&master.password_file).unwrap(),
        master.password.as_bytes(),
        "the password file holds exactly the password"
    );

    // What the user stores, the master login sees, and the other way round.
    let mine = b"Subject: stored by the user\r\n\r\nmine\r\n".to_vec();
    p.imap_append(&user, "INBOX", &mine);
    let mut admin = p.imap_as_master(&user);
    admin.select("INBOX").expect_ok("SELECT as master");
    let seen: Vec<Vec<u8>> = admin.fetch_all().into_iter().map(|(_, m)| m).collect();
    assert_eq!(seen, vec![mine.clone()]);
    let theirs = b"Subject: stored by the admin\r\n\r\ntheirs\r\n".to_vec();
    admin.append("INBOX", &theirs).expect_ok("APPEND as master");
    admin.logout();
    assert_eq!(p.imap_fetch_all(&user, "INBOX"), vec![mine, theirs]);
    // Only that user's mailbox.
    assert_eq!(p.imap_fetch_all(&other, "INBOX"), Vec::<Vec<u8>>::new());

    // SASL PLAIN with the user as authorization identity works too.
    let plain = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}\0{}\0{}",
            user.name, master.name, master.password
        ))
    };
    let (mut imap, response) = p.imap_authenticate("PLAIN", &plain);
    assert!(response.is_ok(), "{response:?}");
    assert_eq!(
        imap.select("INBOX").expect_ok("SELECT").exists(),
        Some(2),
        "not the user's INBOX"
    );
    imap.logout();

    // The address works as the login part too.
    let mut imap = Imap::connect(p.imap_addr()).unwrap();
    let ok = imap.login(&format!("{}*writadmin", user.address), &master.password);
    assert!(ok.is_ok(), "{ok:?}");
    imap.logout();

    let refused = |login: &str, password: &str| {
        let mut imap = Imap::connect(p.imap_addr()).unwrap();
        let response = imap.login(login, password);
        assert_eq!(response.status, "NO", "{login}: {response:?}");
    };
    // A wrong master password, the user's own password, another user's.
    refused(&master.login_for(&user), "wrong-password");
    refused(&master.login_for(&user), &user.password);
    refused(&master.login_for(&user), &other.password);
    // The master user cannot log in as itself, nor as a user that does not
    // exist.
    refused(&master.name, &master.password);
    refused("nosuchuser*writadmin", &master.password);
}

// --- OAuth2 bearer tokens: AUTHENTICATE XOAUTH2 / OAUTHBEARER -------------

#[test]
fn oauth2_tokens_log_in_with_xoauth2_and_oauthbearer() {
    use common::provider::{oauthbearer, xoauth2};
    let p = provider();
    let user = p.new_user("bearer");
    let other = p.new_user("bearer-other");
    p.imap_append(&user, "INBOX", b"Subject: for the bearer\r\n\r\nx\r\n");

    let greeting = Imap::connect(p.imap_addr()).unwrap().greeting.text_only();
    assert!(
        greeting.contains("AUTH=XOAUTH2") && greeting.contains("AUTH=OAUTHBEARER"),
        "{greeting}"
    );

    let token = p.oauth2_token(&user);
    assert_eq!(token.split('.').count(), 3, "{token}");
    for (mechanism, initial) in [
        ("XOAUTH2", xoauth2(&user.address, &token)),
        ("XOAUTH2", xoauth2(&user.name, &token)),
        ("OAUTHBEARER", oauthbearer(&user.address, &token)),
    ] {
        let (mut imap, response) = p.imap_authenticate(mechanism, &initial);
        assert!(response.is_ok(), "{mechanism}: {response:?}");
        let select = imap.select("INBOX").expect_ok("SELECT after XOAUTH2");
        assert_eq!(select.exists(), Some(1), "{select:?}");
        imap.logout();
    }

    let refused = |what: &str, mechanism: &str, initial: String| {
        let (_imap, response) = p.imap_authenticate(mechanism, &initial);
        assert_eq!(response.status, "NO", "{what}: {response:?}");
    };
    refused(
        "expired",
        "XOAUTH2",
        xoauth2(&user.address, &p.oauth2_expired_token(&user)),
    );
    refused(
        "wrong signature",
        "XOAUTH2",
        xoauth2(&user.address, &p.oauth2_forged_token(&user)),
    );
    refused(
        "expired (OAUTHBEARER)",
        "OAUTHBEARER",
        oauthbearer(&user.address, &p.oauth2_expired_token(&user)),
    );
    refused(
        "someone else's token",
        "XOAUTH2",
        xoauth2(&other.address, &token),
    );
    refused(
        "a password as bearer token",
        "XOAUTH2",
        xoauth2(&user.address, &user.password),
    );
    // And a token is no password.
    let mut imap = Imap::connect(p.imap_addr()).unwrap();
    assert_eq!(imap.login(&user.name, &token).status, "NO");
    // Passwords keep working.
    p.imap(&user).logout();

    // A real client: Python's imaplib.
    let script = r#"
import imaplib, sys
port, user, good, expired = sys.argv[1:]
def auth(token):
    c = imaplib.IMAP4("127.0.0.1", int(port))
    try:
        typ, _ = c.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
        typ, data = c.select("INBOX")
        print("ok", typ, data[0].decode())
        c.logout()
    except imaplib.IMAP4.error as e:
        print("refused", e)
auth(good)
auth(expired)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(p.imap_port.to_string())
        .args([&user.address, &token, &p.oauth2_expired_token(&user)])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"ok OK 1"), "{stdout}");
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.starts_with("refused") && l.contains("AUTHENTICATIONFAILED")),
        "{stdout}"
    );
}

// --- doveadm kick ------------------------------------------------------------

#[test]
fn kick_ends_a_users_sessions_with_bye() {
    let p = provider();
    let user = p.new_user("kicked");
    let bystander = p.new_user("kick-bystander");
    let mut first = p.imap(&user);
    first.select("INBOX").expect_ok("SELECT");
    let mut second = p.imap_as_master(&user);
    let mut other = p.imap(&bystander);

    assert!(p.kick(&user), "no session kicked");
    for imap in [&mut first, &mut second] {
        let bye = imap.read_line().expect("BYE before the close");
        assert!(bye.text_only().starts_with("* BYE "), "{bye:?}");
        assert!(imap.read_line().is_err(), "connection still open");
    }
    // Other users' sessions go on.
    other.command("NOOP").expect_ok("NOOP");
    other.logout();
    let nobody = p.new_user("kick-nobody");
    assert!(!p.kick(&nobody), "kicked a user without sessions");
}

// --- Fault injection in front of the provider's IMAP -----------------------

use common::faults::{BYE, Fault, THROTTLED};
use common::{FaultProxy, Faults, When};

/// A connection through `proxy`, logged in as `user`.
fn via(proxy: &FaultProxy, user: &common::User) -> Imap {
    Imap::login_to(proxy.addr(), &user.name, &user.password)
}

#[test]
fn faults_throttle_the_first_append_with_a_synchronising_literal() {
    let p = provider();
    let user = p.new_user("throttled");
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new().throttle("APPEND", When::Nth(1)),
    );
    let mut imap = via(&proxy, &user);
    let message = b"Subject: throttled once\r\n\r\nbody\r\n";

    // The NO comes instead of the "+": the client never sends the literal.
    let first = imap.append("INBOX", message);
    assert_eq!(first.status, "NO", "{first:?}");
    assert!(
        first
            .tagged
            .text_only()
            .ends_with(&format!(" {THROTTLED}\r\n")),
        "{first:?}"
    );
    assert!(first.untagged.is_empty(), "{first:?}");
    // The session is in step: the retry goes through and is stored once.
    let second = imap.append("INBOX", message).expect_ok("second APPEND");
    assert!(second.append_uid().is_some(), "{second:?}");
    imap.command("NOOP").expect_ok("NOOP");
    imap.logout();
    assert_eq!(p.imap_fetch_all(&user, "INBOX"), vec![message.to_vec()]);

    assert_eq!(proxy.count("APPEND"), 2);
    assert_eq!(proxy.faulted("APPEND"), 1);
    assert_eq!(proxy.count("LOGIN"), 1);
    let events = proxy.events();
    let appends: Vec<_> = events.iter().filter(|e| e.command == "APPEND").collect();
    assert_eq!(
        appends[0].fault,
        Some(Fault::Answered(THROTTLED.to_string()))
    );
    assert_eq!(appends[1].fault, None);
    assert!(appends[1].at >= appends[0].at);
}

#[test]
fn faults_throttle_swallows_non_synchronising_literals() {
    let p = provider();
    let user = p.new_user("throttled-plus");
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new().throttle("APPEND", When::FirstK(2)),
    );
    let mut imap = via(&proxy, &user);

    // LITERAL+: the literal follows at once; the proxy reads and drops it.
    let tag = imap.tag();
    imap.write_raw(format!("{tag} APPEND INBOX {{9+}}\r\nSubject:1\r\n").as_bytes())
        .unwrap();
    let first = imap.read_response(&tag).unwrap();
    assert_eq!(first.status, "NO", "{first:?}");
    // MULTIAPPEND: several literals in one command, all dropped.
    let tag = imap.tag();
    imap.write_raw(
        format!("{tag} APPEND INBOX {{9+}}\r\nSubject:2 (\\Seen) {{9+}}\r\nSubject:3\r\n")
            .as_bytes(),
    )
    .unwrap();
    let second = imap.read_response(&tag).unwrap();
    assert!(second.tagged.text_only().contains(THROTTLED), "{second:?}");
    // The third goes through, literal and all.
    let tag = imap.tag();
    imap.write_raw(format!("{tag} APPEND INBOX {{9+}}\r\nSubject:4\r\n").as_bytes())
        .unwrap();
    let third = imap.read_response(&tag).unwrap();
    assert!(third.is_ok(), "{third:?}");
    imap.command("NOOP")
        .expect_ok("NOOP after swallowed literals");
    imap.logout();
    assert_eq!(
        p.imap_fetch_all(&user, "INBOX"),
        vec![b"Subject:4".to_vec()]
    );
    assert_eq!((proxy.count("APPEND"), proxy.faulted("APPEND")), (3, 2));
}

#[test]
fn faults_throttle_fetch_and_uid_fetch_for_a_real_client() {
    let p = provider();
    let user = p.new_user("throttled-fetch");
    p.imap_append(&user, "INBOX", b"Subject: fetched\r\n\r\nx\r\n");
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new()
            .throttle("UID FETCH", When::EveryNth(2))
            .throttle("FETCH", When::Nth(1))
            .throttle("APPEND", When::Nth(1)),
    );
    // Python's imaplib: synchronising literals for APPEND, NO as a result.
    let script = r#"
import imaplib, sys
port, user, password = sys.argv[1:]
c = imaplib.IMAP4("127.0.0.1", int(port))
c.login(user, password)
print("append", *[x.decode() if isinstance(x, bytes) else x for x in [c.append("INBOX", None, None, b"Subject: py\r\n\r\npy\r\n")[0]]])
print("append", c.append("INBOX", None, None, b"Subject: py\r\n\r\npy\r\n")[0])
c.select("INBOX")
for _ in range(3):
    typ, data = c.uid("FETCH", "1:*", "(UID)")
    print("uid fetch", typ, data[0].decode())
for _ in range(2):
    typ, data = c.fetch("1", "(FLAGS)")
    print("fetch", typ, data[0].decode())
c.logout()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(proxy.addr().port().to_string())
        .args([&user.name, &user.password])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "append NO", "{stdout}");
    assert_eq!(lines[1], "append OK", "{stdout}");
    assert!(lines[2].starts_with("uid fetch OK "), "{stdout}");
    assert_eq!(
        lines[3], "uid fetch NO [LIMIT] Too many requests",
        "{stdout}"
    );
    assert!(lines[4].starts_with("uid fetch OK "), "{stdout}");
    assert_eq!(lines[5], "fetch NO [LIMIT] Too many requests", "{stdout}");
    assert!(lines[6].starts_with("fetch OK "), "{stdout}");
    assert_eq!(proxy.count("UID FETCH"), 3);
    assert_eq!(proxy.faulted("UID FETCH"), 1);
    assert_eq!(proxy.count("FETCH"), 2);
    assert_eq!(p.imap_fetch_all(&user, "INBOX").len(), 2);
}

#[test]
fn faults_bye_ends_the_session_then_a_new_one_works() {
    let p = provider();
    let user = p.new_user("bye");
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new().bye("*", When::Nth(3)));
    let mut imap = via(&proxy, &user); // 1: LOGIN
    imap.select("INBOX").expect_ok("SELECT"); // 2
    let tag = imap.tag();
    imap.write_raw(format!("{tag} NOOP\r\n").as_bytes())
        .unwrap(); // 3
    let bye = imap.read_line().expect("BYE");
    assert_eq!(bye.text_only(), format!("{BYE}\r\n"));
    assert!(imap.read_line().is_err(), "still open after BYE");

    let mut again = via(&proxy, &user); // 4
    again.command("NOOP").expect_ok("NOOP on a new connection");
    again.logout();
    assert_eq!(proxy.connections(), 2);
    let events = proxy.events();
    assert_eq!(events[2].command, "NOOP");
    assert_eq!(events[2].fault, Some(Fault::Bye));
    assert_eq!(proxy.faulted("*"), 1);
}

#[test]
fn faults_cut_after_bytes_drops_the_connection_mid_append_without_bye() {
    let p = provider();
    let user = p.new_user("cut");
    let login = format!("T0001 LOGIN \"{}\" \"{}\"\r\n", user.name, user.password);
    let append = "T0002 APPEND \"INBOX\" {1000}\r\n";
    let budget = (login.len() + append.len() + 500) as u64;
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new().cut_after_bytes(budget, When::Nth(1)),
    );
    let mut imap = via(&proxy, &user);
    let message = [
        b"Subject: cut\r\n\r\n".as_slice(),
        &[b'x'; 1000 - 18],
        b"\r\n",
    ]
    .concat();
    assert_eq!(message.len(), 1000);
    let err = imap
        .try_command_with_literal("APPEND \"INBOX\"", &message, "")
        .expect_err("APPEND survived the cut");
    assert!(
        !err.to_string().contains("BYE"),
        "a BYE came before the cut: {err}"
    );

    // The second connection is not cut; nothing was stored by the first.
    let mut again = via(&proxy, &user);
    again.select("INBOX").expect_ok("SELECT");
    assert_eq!(again.fetch_all(), Vec::new());
    again
        .append("INBOX", &message)
        .expect_ok("APPEND on a new connection");
    again.logout();
    assert_eq!(p.imap_fetch_all(&user, "INBOX"), vec![message]);
    let events = proxy.events();
    assert_eq!(events[1].command, "APPEND");
    assert_eq!(events[1].fault, Some(Fault::CutAfterBytes));
    assert_eq!(proxy.count("APPEND"), 2);
}

#[test]
fn faults_cut_and_lost_reply() {
    let p = provider();
    let user = p.new_user("lost");
    let proxy = FaultProxy::start(
        p.imap_addr(),
        Faults::new()
            .lose_reply("APPEND", When::Nth(1))
            .cut("NOOP", When::Nth(1)),
    );
    // The server stores the message; the client only sees the connection go.
    let mut imap = via(&proxy, &user);
    let err = imap
        .try_command_with_literal("APPEND INBOX", b"Subject: done\r\n\r\n.\r\n", "")
        .expect_err("reply not withheld");
    assert!(!err.to_string().contains("OK"), "{err}");
    assert_eq!(p.imap_fetch_all(&user, "INBOX").len(), 1);
    // A cut NOOP: no answer, no BYE.
    let mut imap = via(&proxy, &user);
    let err = imap.try_command("NOOP").expect_err("NOOP answered");
    assert!(!err.to_string().contains("BYE"), "{err}");
    assert_eq!(proxy.faulted("*"), 2);
}

#[test]
fn faults_proxy_passes_authenticate_idle_and_literals_through() {
    use base64::Engine as _;
    let p = provider();
    let user = p.new_user("passthrough");
    let proxy = FaultProxy::start(p.imap_addr(), Faults::new());
    let mut imap = Imap::connect(proxy.addr()).unwrap();
    assert!(imap.greeting.text_only().contains("writ test provider"));
    // AUTHENTICATE PLAIN without an initial response: the credentials line
    // is SASL data, not a command.
    let tag = imap.tag();
    imap.write_raw(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())
        .unwrap();
    let challenge = imap.read_line().unwrap();
    assert!(challenge.text_only().starts_with('+'), "{challenge:?}");
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{}", user.name, user.password));
    imap.write_raw(format!("{credentials}\r\n").as_bytes())
        .unwrap();
    imap.read_response(&tag)
        .unwrap()
        .expect_ok("AUTHENTICATE PLAIN");
    // A LOGIN-style literal argument and a synchronising APPEND literal.
    imap.append("INBOX", b"Subject: through\r\n\r\n{5}\r\n")
        .expect_ok("APPEND");
    imap.select("INBOX").expect_ok("SELECT");
    // IDLE: "DONE" is not a command either.
    let tag = imap.tag();
    imap.write_raw(format!("{tag} IDLE\r\n").as_bytes())
        .unwrap();
    let idling = imap.read_line().unwrap();
    assert!(idling.text_only().starts_with('+'), "{idling:?}");
    imap.write_raw(b"DONE\r\n").unwrap();
    imap.read_response(&tag).unwrap().expect_ok("IDLE");
    let fetched = imap.fetch_all();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].1, b"Subject: through\r\n\r\n{5}\r\n");
    imap.logout();
    let commands: Vec<String> = proxy.events().into_iter().map(|e| e.command).collect();
    assert_eq!(
        commands,
        [
            "AUTHENTICATE",
            "APPEND",
            "SELECT",
            "IDLE",
            "UID FETCH",
            "LOGOUT"
        ]
    );
    assert_eq!(proxy.faulted("*"), 0);
}
