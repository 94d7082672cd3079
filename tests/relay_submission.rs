//! The `submission` (STARTTLS, port 587 style) and `submissions` (implicit
//! TLS, port 465 style) listeners of `writ serve`, end to end: real clients
//! (swaks, Python's smtplib, a raw socket with rustls) talk to writ, whose
//! upstream is the harness provider's submission port (STARTTLS verified
//! against the provider's CA, AUTH checked by Dovecot). The client's AUTH
//! is passed through: the provider accepts or refuses it, writ mirrors the
//! answer, and mail for a protected recipient is stored sealed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::mail::{self, DELIVERY_TIMEOUT, assert_sealed_original, contains, unique};
use common::python;
use common::tls::{TestTls, test_tls};
use common::writ::{TestKeys, Writ, WritConfig};
use common::{Provider, Reply, Smtp, User, provider};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The SASL PLAIN response for `user` / `password`.
fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// `writ serve` with a submission and a submissions listener, its own
/// certificate, protecting the harness domain, and the provider's
/// submission port as upstream (STARTTLS, verified against its CA).
struct Relay {
    writ: Writ,
    tls: TestTls,
}

impl Relay {
    #[track_caller]
    fn start(p: &Provider) -> Relay {
        Relay::start_with(p, |cfg| cfg)
    }

    /// Like [`Relay::start`], with `change` applied to the config.
    #[track_caller]
    fn start_with(p: &Provider, change: impl FnOnce(WritConfig) -> WritConfig) -> Relay {
        let tls = test_tls("writ submission test CA");
        let mut cfg = WritConfig::submission(p, tls.cert.clone(), tls.key.clone())
            .listener("submissions", &[]);
        // The most verbose level: credentials must not show up at any.
        cfg.log_level = "trace".into();
        let writ = Writ::start(&change(cfg));
        Relay { writ, tls }
    }

    fn submission(&self) -> SocketAddr {
        self.writ.addr("submission")
    }

    fn submissions(&self) -> SocketAddr {
        self.writ.addr("submissions")
    }

    fn keys(&self) -> &TestKeys {
        self.writ.test_keys()
    }

    /// No form of `user`'s password appears in writ's log.
    #[track_caller]
    fn assert_log_has_no_credentials(&self, users: &[&User]) {
        let secrets: Vec<String> = users.iter().map(|u| u.password.clone()).collect();
        self.assert_log_has_none_of(&secrets);
    }

    /// Neither these strings, nor their base64 forms, nor a SASL PLAIN
    /// response with them as the password appear in writ's log.
    #[track_caller]
    fn assert_log_has_none_of(&self, secrets: &[String]) {
        let log = self.writ.log();
        assert!(log.contains("listener ready"), "no log at all?\n{log}");
        for s in secrets {
            for form in [s.clone(), b64(s.as_bytes())] {
                assert!(
                    !log.contains(&form),
                    "writ's log contains {form:?} (from {s:?}):\n{log}"
                );
            }
        }
    }
}

/// [`mail::message`] with a Message-ID of its own.
fn message(from: &str, to: &str, subject: &str, marker: &str) -> Vec<u8> {
    mail::message(
        from,
        to,
        subject,
        marker,
        &format!("{}@example.test", unique("id")),
    )
}

/// One message from a user to another through writ: (sender, recipient,
/// relay, Subject, body marker, message, file): users `LABEL-from` and
/// `LABEL-to` of the test's own, writ in front of the provider, and the
/// message (a protected Subject `LABEL-subject-...`, a body marker
/// `LABEL-body-...`) in the file `LABEL.eml` in writ's directory.
#[track_caller]
fn submission_case(
    p: &Provider,
    label: &str,
) -> (User, User, Relay, String, String, Vec<u8>, PathBuf) {
    let sender = p.new_user(&format!("{label}-from"));
    let rcpt = p.new_user(&format!("{label}-to"));
    let relay = Relay::start(p);
    let subject = unique(&format!("{label}-subject"));
    let marker = unique(&format!("{label}-body"));
    let original = message(&sender.address, &rcpt.address, &subject, &marker);
    let data = relay.writ.dir().join(format!("{label}.eml"));
    std::fs::write(&data, &original).unwrap();
    (sender, rcpt, relay, subject, marker, original, data)
}

/// Runs swaks; returns (exit success, stdout + stderr).
fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(args)
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    (
        out.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs a Python script with the arguments port (of `addr`), writ's CA,
/// `login`'s address and password, then `more`; panics with its output and
/// writ's log unless it exits 0. Returns stdout.
#[track_caller]
fn python_ok(
    relay: &Relay,
    script: &str,
    addr: SocketAddr,
    login: &User,
    more: &[String],
) -> String {
    let mut args = vec![
        addr.port().to_string(),
        relay.tls.ca.display().to_string(),
        login.address.clone(),
        login.password.clone(),
    ];
    args.extend_from_slice(more);
    python::succeeded(&python::run(script, &args), || {
        format!("\n--- writ log\n{}", relay.writ.log())
    })
}

/// Reads one SMTP reply from any buffered reader.
fn read_reply<R: BufRead>(r: &mut R) -> Reply {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read a reply line");
        assert!(n > 0, "connection closed; reply so far: {lines:?}");
        let line = line.trim_end_matches(['\r', '\n']);
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("malformed reply line {line:?}"));
        lines.push(line.get(4..).unwrap_or_default().to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Reply { code, lines };
        }
    }
}

/// A rustls client config trusting only `ca_der`.
fn client_config(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A raw SMTP client on writ's submission port after STARTTLS: every
/// command and reply under the test's control.
struct TlsClient {
    conn: BufReader<TlsStream>,
}

impl TlsClient {
    /// Connects, says EHLO, STARTTLS, verifies writ's certificate, EHLO.
    #[track_caller]
    fn starttls(relay: &Relay) -> TlsClient {
        let tcp = TcpStream::connect(relay.submission()).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(tcp.try_clone().unwrap());
        let mut writer = tcp.try_clone().unwrap();
        assert_eq!(read_reply(&mut reader).code, 220);
        writer
            .write_all(b"EHLO client.test\r\nSTARTTLS\r\n")
            .unwrap();
        assert_eq!(read_reply(&mut reader).code, 250);
        assert_eq!(read_reply(&mut reader).code, 220);
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(client_config(&relay.tls.ca_der), name).unwrap();
        let mut client = TlsClient {
            conn: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
        };
        let ehlo = client.command("EHLO client.test");
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        client
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.conn.get_mut().write_all(bytes).expect("write");
    }

    fn command(&mut self, line: &str) -> Reply {
        self.write_raw(format!("{line}\r\n").as_bytes());
        read_reply(&mut self.conn)
    }
}

#[test]
fn swaks_starttls_auth_plain_is_passed_through_and_mail_is_stored_sealed() {
    let p = provider();
    let (sender, rcpt, relay, subject, marker, original, data) = submission_case(p, "subm");
    // swaks adds a CRLF of its own before the final dot.
    std::fs::write(&data, original.strip_suffix(b"\r\n").unwrap()).unwrap();

    let (ok, transcript) = swaks(&[
        "--server",
        &relay.submission().to_string(),
        "--ehlo",
        "client.test",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        &sender.address,
        "--auth-password",
        &sender.password,
        "--from",
        &sender.address,
        "--to",
        &rcpt.address,
        "--data",
        &format!("@{}", data.display()),
    ]);
    assert!(
        ok,
        "swaks failed:\n{transcript}\n--- writ log\n{}",
        relay.writ.log()
    );
    let (before_tls, after_tls) = transcript
        .split_once(" -> STARTTLS")
        .unwrap_or_else(|| panic!("no STARTTLS sent:\n{transcript}"));
    // Before TLS: writ's own greeting and EHLO, STARTTLS offered, no AUTH.
    assert!(
        before_tls.contains("<-  220 writ.test ESMTP"),
        "{transcript}"
    );
    let ehlo_lines = |part: &str, prefix: &str| -> Vec<String> {
        part.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter(|l| l.starts_with("250"))
            .map(|l| l[4..].to_string())
            .collect()
    };
    let clear = ehlo_lines(before_tls, "<-  ");
    assert!(clear.iter().any(|l| l == "STARTTLS"), "{transcript}");
    assert!(
        !clear.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered before STARTTLS:\n{transcript}"
    );
    // After TLS: AUTH offered, no second STARTTLS; the provider's answers.
    let secure = ehlo_lines(after_tls, "<~  ");
    assert!(
        secure.iter().any(|l| l.starts_with("AUTH PLAIN LOGIN")),
        "{transcript}"
    );
    assert!(!secure.iter().any(|l| l == "STARTTLS"), "{transcript}");
    assert!(
        after_tls.contains("<~  235 2.7.0 Authentication successful"),
        "{transcript}"
    );
    assert!(
        after_tls.contains("<~  250 2.0.0 Ok: queued as"),
        "the final reply is the provider's:\n{transcript}"
    );

    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1);
    assert_sealed_original(relay.keys(), &stored[0], &original, &[&subject, &marker]);
    // The provider received it over TLS from an authenticated session (the
    // client's credentials, passed through): Postfix says "ESMTPSA".
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("with ESMTPSA"), "{text}");
    assert!(
        text.contains(&format!("Return-Path: <{}>", sender.address)),
        "{text}"
    );
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn wrong_password_gets_the_providers_535_and_auth_login_works() {
    let p = provider();
    let sender = p.new_user("login-from");
    let rcpt = p.new_user("login-to");
    let relay = Relay::start(p);
    let wrong = format!("{}-wrong", sender.password);

    // What the provider itself answers to a wrong password.
    let (ok, direct) = swaks(&[
        "--server",
        &p.submission_addr().to_string(),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        &sender.address,
        "--auth-password",
        &wrong,
        "--from",
        &sender.address,
        "--to",
        &rcpt.address,
    ]);
    assert!(!ok, "{direct}");
    let provider_535 = direct
        .lines()
        .find(|l| l.starts_with("<~* 535 "))
        .unwrap_or_else(|| panic!("no 535 from the provider:\n{direct}"))
        .to_string();

    // Through writ: the same reply, and nothing sent.
    let (ok, transcript) = swaks(&[
        "--server",
        &relay.submission().to_string(),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        &sender.address,
        "--auth-password",
        &wrong,
        "--from",
        &sender.address,
        "--to",
        &rcpt.address,
    ]);
    assert!(!ok, "AUTH with a wrong password succeeded:\n{transcript}");
    assert!(
        transcript.lines().any(|l| l == provider_535),
        "writ did not mirror the provider's {provider_535:?}:\n{transcript}"
    );
    assert!(!transcript.contains("~> MAIL FROM"), "{transcript}");

    // AUTH LOGIN (username and password each in its own 334 round).
    let marker = unique("login-body");
    let (ok, transcript) = swaks(&[
        "--server",
        &relay.submission().to_string(),
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        &sender.name,
        "--auth-password",
        &sender.password,
        "--from",
        &sender.address,
        "--to",
        &rcpt.address,
        "--body",
        &marker,
    ]);
    assert!(
        ok,
        "swaks AUTH LOGIN failed:\n{transcript}\n{}",
        relay.writ.log()
    );
    assert!(transcript.contains("~> AUTH LOGIN"), "{transcript}");
    assert!(transcript.contains("<~  334 "), "{transcript}");
    assert!(
        transcript.contains("<~  235 2.7.0 Authentication successful"),
        "{transcript}"
    );
    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 1, "only the authenticated message arrived");
    assert!(!contains(&stored[0], marker.as_bytes()), "body readable");
    assert!(
        contains(&relay.keys().open(&stored[0]), marker.as_bytes()),
        "the sealed message does not open to the body"
    );
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn pipelined_transactions_after_auth_are_relayed_in_lockstep() {
    let p = provider();
    let sender = p.new_user("pipe-from");
    let first = p.new_user("pipe-a");
    let second = p.new_user("pipe-b");
    let relay = Relay::start(p);
    let marker = unique("pipe-body");
    // swaks sends MAIL, both RCPTs and DATA in one write (PIPELINING).
    let (ok, transcript) = swaks(&[
        "--server",
        &relay.submission().to_string(),
        "--tls",
        "--pipeline",
        "--auth",
        "PLAIN",
        "--auth-user",
        &sender.address,
        "--auth-password",
        &sender.password,
        "--from",
        &sender.address,
        "--to",
        &format!("{},{}", first.address, second.address),
        "--body",
        &marker,
    ]);
    assert!(
        ok,
        "swaks --pipeline failed:\n{transcript}\n{}",
        relay.writ.log()
    );
    assert!(
        transcript.contains("<~  250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    for user in [&first, &second] {
        let stored = p.wait_for_messages(user, "INBOX", 1, DELIVERY_TIMEOUT);
        assert_eq!(stored.len(), 1, "{}", user.name);
        assert!(!contains(&stored[0], marker.as_bytes()), "body readable");
        assert!(contains(&relay.keys().open(&stored[0]), marker.as_bytes()));
    }

    // Two messages in one session (after a RSET in between): the provider
    // session stays authenticated from one transaction to the next.
    let mut c = TlsClient::starttls(&relay);
    let auth = c.command(&format!(
        "AUTH PLAIN {}",
        plain(&sender.address, &sender.password)
    ));
    assert_eq!(auth.code, 235, "{auth:?}");
    for (n, with_rset) in [(1, true), (2, false), (3, false)] {
        let mail = c.command(&format!("MAIL FROM:<{}>", sender.address));
        assert_eq!(mail.code, 250, "message {n}: {mail:?}");
        let rcpt = c.command(&format!("RCPT TO:<{}>", first.address));
        assert_eq!(rcpt.code, 250, "message {n}: {rcpt:?}");
        if with_rset {
            assert_eq!(c.command("RSET").code, 250);
            continue;
        }
        assert_eq!(c.command("DATA").code, 354);
        c.write_raw(format!("Subject: {n}\r\n\r\n{marker}-{n}\r\n.\r\n").as_bytes());
        let done = read_reply(&mut c.conn);
        assert_eq!(done.code, 250, "message {n}: {done:?}");
        assert!(done.text().contains("queued as"), "{done:?}");
    }
    assert_eq!(c.command("QUIT").code, 221);
    let stored = p.wait_for_messages(&first, "INBOX", 3, DELIVERY_TIMEOUT);
    assert_eq!(stored.len(), 3, "one from swaks, two from the session");
    for n in [2, 3] {
        let body = format!("{marker}-{n}");
        assert!(
            stored
                .iter()
                .any(|m| contains(&relay.keys().open(m), body.as_bytes())),
            "message {n} missing"
        );
    }
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn python_starttls_failed_login_then_auth_login_then_mail() {
    let p = provider();
    let (sender, rcpt, relay, subject, marker, original, data) = submission_case(p, "py");
    // One session: certificate verified against writ's CA; AUTH not offered
    // before STARTTLS; a wrong password is refused (535), then AUTH LOGIN
    // with an initial response succeeds in the same session.
    let script = r#"
import smtplib, ssl, sys
port, cafile, user, password, rcpt, path = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP("127.0.0.1", int(port), local_hostname="py.client.test", timeout=30)
s.ehlo()
assert s.has_extn("starttls"), s.esmtp_features
assert not s.has_extn("auth"), s.esmtp_features
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn("starttls"), s.esmtp_features
assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"], s.esmtp_features
try:
    s.login(user, password + "-wrong")
    sys.exit("a wrong password was accepted")
except smtplib.SMTPAuthenticationError as e:
    print("wrong", e.smtp_code, e.smtp_error.decode())
s.user, s.password = user, password
code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=True)
print("login", code)
refused = s.sendmail(user, [rcpt], open(path, "rb").read())
assert refused == {}, refused
s.quit()
print("sent")
"#;
    let stdout = python_ok(
        &relay,
        script,
        relay.submission(),
        &sender,
        &[rcpt.address.clone(), data.display().to_string()],
    );
    assert!(stdout.contains("wrong 535 5.7.8"), "{stdout}");
    assert!(stdout.contains("login 235"), "{stdout}");
    assert!(stdout.contains("sent"), "{stdout}");
    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_sealed_original(relay.keys(), &stored[0], &original, &[&subject, &marker]);
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn auth_and_mail_before_starttls_are_refused() {
    let p = provider();
    let user = p.new_user("early");
    let relay = Relay::start(p);
    let mut smtp = Smtp::connect(relay.submission()).expect("connect");
    assert_eq!(smtp.greeting.code, 220, "{:?}", smtp.greeting);
    let ehlo = smtp.command("EHLO client.test").expect("EHLO");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered in the clear: {ehlo:?}"
    );
    // Valid credentials, in the clear: refused, and not by the provider.
    let auth = smtp
        .command(&format!(
            "AUTH PLAIN {}",
            plain(&user.address, &user.password)
        ))
        .expect("AUTH PLAIN");
    assert_eq!(auth.code, 530, "{auth:?}");
    assert!(auth.text().starts_with("5.7.0"), "{auth:?}");
    let auth = smtp.command("AUTH LOGIN").expect("AUTH LOGIN");
    assert_eq!(auth.code, 530, "{auth:?}");
    // The session is not authenticated: MAIL needs AUTH first.
    let mail = smtp
        .command(&format!("MAIL FROM:<{}>", user.address))
        .expect("MAIL");
    assert_eq!(mail.code, 530, "{mail:?}");
    assert!(mail.text().starts_with("5.7.0"), "{mail:?}");
    let rcpt = smtp
        .command(&format!("RCPT TO:<{}>", user.address))
        .expect("RCPT");
    assert_eq!(rcpt.code, 503, "{rcpt:?}");
    // Still a working session.
    let noop = smtp.command("NOOP").expect("NOOP");
    assert_eq!(noop.code, 250, "{noop:?}");
    smtp.quit();
    relay.assert_log_has_no_credentials(&[&user]);
}

#[test]
fn sasl_exchanges_are_relayed_step_by_step_and_never_logged() {
    let p = provider();
    let user = p.new_user("sasl");
    let relay = Relay::start(p);
    let wrong = format!("{}-wrong", user.password);
    let token = format!("token-{}", unique("xoauth2"));
    let xoauth2 = b64(format!("user={}\x01auth=Bearer {token}\x01\x01", user.address).as_bytes());
    // Every exchange on one TLS session: XOAUTH2 with a token the provider
    // refuses (its error challenge, then the empty response that ends the
    // exchange), AUTH LOGIN cancelled with "*", AUTH LOGIN with a wrong
    // password, then AUTH PLAIN with an empty initial response and the
    // credentials on the 334 continuation.
    let script = r#"
import base64, smtplib, ssl, sys
port, cafile, user, password, wrong, xoauth2 = sys.argv[1:]
b64 = lambda s: base64.b64encode(s.encode()).decode()
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP("127.0.0.1", int(port), timeout=30)
s.starttls(context=ctx)
s.ehlo()
def show(label, reply):
    print(label, reply[0], reply[1].decode())
show("xoauth2", s.docmd("AUTH", "XOAUTH2 " + xoauth2))
show("xoauth2-end", s.docmd(""))
show("login", s.docmd("AUTH", "LOGIN"))
show("login-user", s.docmd(b64(user)))
show("login-cancel", s.docmd("*"))
show("login2", s.docmd("AUTH", "LOGIN"))
show("login2-user", s.docmd(b64(user)))
show("login2-wrong", s.docmd(b64(wrong)))
show("plain", s.docmd("AUTH", "PLAIN"))
show("plain-response", s.docmd(b64("\0" + user + "\0" + password)))
show("mail", s.docmd("MAIL", "FROM:<" + user + ">"))
show("rset", s.docmd("RSET"))
s.quit()
"#;
    let stdout = python_ok(
        &relay,
        script,
        relay.submission(),
        &user,
        &[wrong.clone(), xoauth2.clone()],
    );
    let reply = |label: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no {label} in:\n{stdout}"))
            .to_string()
    };
    // The provider's answers, step by step.
    // XOAUTH2 is passed through too: the provider's error challenge (334
    // with base64 JSON), then its refusal after the empty response.
    assert!(reply("xoauth2").starts_with("334 "), "{stdout}");
    assert!(reply("xoauth2-end").starts_with("535 5.7.8"), "{stdout}");
    assert_eq!(reply("login"), "334 VXNlcm5hbWU6", "{stdout}"); // "Username:"
    assert_eq!(reply("login-user"), "334 UGFzc3dvcmQ6", "{stdout}"); // "Password:"
    assert!(reply("login-cancel").starts_with("501 "), "{stdout}");
    assert!(reply("login2-wrong").starts_with("535 5.7.8"), "{stdout}");
    assert!(reply("plain").starts_with("334"), "{stdout}");
    assert!(reply("plain-response").starts_with("235 2.7.0"), "{stdout}");
    assert!(reply("mail").starts_with("250 "), "{stdout}");
    relay.assert_log_has_none_of(&[
        user.password.clone(),
        wrong.clone(),
        token.clone(),
        xoauth2.clone(),
        plain(&user.address, &user.password),
    ]);
}

#[test]
fn losing_the_authenticated_provider_session_never_gives_a_permanent_refusal() {
    let p = provider();
    let user = p.new_user("lost");
    let colleague = p.new_user("lost-to");
    let relay = Relay::start_with(p, |cfg| cfg.external("plaintext"));
    let external = format!("{}@partner.test", unique("friend"));
    let mut c = TlsClient::starttls(&relay);
    let auth = c.command(&format!(
        "AUTH PLAIN {}",
        plain(&user.address, &user.password)
    ));
    assert_eq!(auth.code, 235, "{auth:?}");
    // A plaintext (external) message streams to the provider as it
    // arrives; a bare LF makes writ refuse it at the end, and abandon the
    // provider's DATA by closing that connection: the one the client's
    // AUTH authenticated.
    let mail = c.command(&format!("MAIL FROM:<{}>", user.address));
    assert_eq!(mail.code, 250, "{mail:?}");
    let rcpt = c.command(&format!("RCPT TO:<{external}>"));
    assert_eq!(rcpt.code, 250, "{rcpt:?}");
    let data = c.command("DATA");
    assert_eq!(data.code, 354, "{data:?}");
    c.write_raw(b"Subject: bare LF\nbody\r\n.\r\n");
    let refused = read_reply(&mut c.conn);
    assert_eq!(refused.code, 554, "{refused:?}");

    // The next transaction of this authenticated client must not be
    // refused for good (a new provider connection would be anonymous, and
    // the provider would refuse the recipient with a 5xx): writ says 4xx
    // (421: reconnect and authenticate again) or relays it properly.
    let mail = c.command(&format!("MAIL FROM:<{}>", user.address));
    assert!(
        mail.code == 250 || (400..500).contains(&mail.code),
        "MAIL after losing the provider session: {mail:?}\n{}",
        relay.writ.log()
    );
    if mail.code == 421 {
        let mut rest = String::new();
        let end = c.conn.read_line(&mut rest);
        assert!(
            matches!(end, Ok(0))
                || end.as_ref().is_err_and(|e| matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                )),
            "the connection stays open after 421: {end:?} {rest:?}"
        );
    }
    if mail.code == 250 {
        let rcpt = c.command(&format!("RCPT TO:<{}>", colleague.address));
        assert!(
            rcpt.code == 250 || (400..500).contains(&rcpt.code),
            "RCPT after losing the provider session: {rcpt:?}\n{}",
            relay.writ.log()
        );
    }

    // A new connection authenticates again and delivers.
    let mut c = TlsClient::starttls(&relay);
    let auth = c.command(&format!(
        "AUTH PLAIN {}",
        plain(&user.address, &user.password)
    ));
    assert_eq!(auth.code, 235, "{auth:?}");
    assert_eq!(
        c.command(&format!("MAIL FROM:<{}>", user.address)).code,
        250
    );
    assert_eq!(
        c.command(&format!("RCPT TO:<{}>", colleague.address)).code,
        250
    );
    assert_eq!(c.command("DATA").code, 354);
    let marker = unique("after-loss");
    c.write_raw(format!("Subject: again\r\n\r\n{marker}\r\n.\r\n").as_bytes());
    let done = read_reply(&mut c.conn);
    assert_eq!(done.code, 250, "{done:?}");
    let stored = p.wait_for_messages(&colleague, "INBOX", 1, DELIVERY_TIMEOUT);
    assert!(contains(&relay.keys().open(&stored[0]), marker.as_bytes()));
    relay.assert_log_has_no_credentials(&[&user]);
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let p = provider();
    let user = p.new_user("inject");
    let rcpt = p.new_user("inject-to");
    let relay = Relay::start(p);

    let tcp = TcpStream::connect(relay.submission()).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut plain_reader = BufReader::new(tcp.try_clone().unwrap());
    let mut plain_writer = tcp.try_clone().unwrap();
    assert_eq!(read_reply(&mut plain_reader).code, 220);
    plain_writer.write_all(b"EHLO client.test\r\n").unwrap();
    assert_eq!(read_reply(&mut plain_reader).code, 250);
    // One write: STARTTLS and, in the clear behind it, an attacker's
    // commands (with valid credentials, so that acting on them would show).
    let injected = format!(
        "STARTTLS\r\nEHLO evil.test\r\nAUTH PLAIN {}\r\nMAIL FROM:<evil@evil.test>\r\n",
        plain(&user.address, &user.password)
    );
    plain_writer.write_all(injected.as_bytes()).unwrap();
    let ready = read_reply(&mut plain_reader);
    assert_eq!(ready.code, 220, "{ready:?}");
    assert!(
        plain_reader.buffer().is_empty(),
        "bytes after the 220: {:?}",
        String::from_utf8_lossy(plain_reader.buffer())
    );
    drop(plain_reader);
    drop(plain_writer);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            relay.tls.ca_der.clone(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let command = |tls: &mut BufReader<rustls::StreamOwned<_, _>>, line: &str| {
        tls.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{line}: {e}\n{}", relay.writ.log()));
        read_reply(tls)
    };

    // Had the injected lines been run after the handshake, their replies
    // would answer these commands instead (the EHLO's, 235, 250).
    let ehlo = command(&mut tls, "EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines[0].contains("client.test"), "{ehlo:?}");
    let noop = command(&mut tls, "NOOP");
    assert_eq!((noop.code, noop.text()), (250, "2.0.0 OK".into()));
    // Not authenticated by the injected AUTH, no transaction from the
    // injected MAIL.
    let rcpt_first = command(&mut tls, &format!("RCPT TO:<{}>", rcpt.address));
    assert_eq!(rcpt_first.code, 503, "{rcpt_first:?}");
    let mail = command(&mut tls, &format!("MAIL FROM:<{}>", user.address));
    assert_eq!(mail.code, 530, "injected AUTH was acted on: {mail:?}");
    // The real AUTH, over TLS; then a fresh MAIL (no "nested MAIL").
    let auth = command(
        &mut tls,
        &format!("AUTH PLAIN {}", plain(&user.address, &user.password)),
    );
    assert_eq!(auth.code, 235, "{auth:?}");
    let mail = command(&mut tls, &format!("MAIL FROM:<{}>", user.address));
    assert_eq!(mail.code, 250, "{mail:?}");
    let rcpt_reply = command(&mut tls, &format!("RCPT TO:<{}>", rcpt.address));
    assert_eq!(rcpt_reply.code, 250, "{rcpt_reply:?}");
    let rset = command(&mut tls, "RSET");
    assert_eq!(rset.code, 250, "{rset:?}");
    let quit = command(&mut tls, "QUIT");
    assert_eq!(quit.code, 221, "{quit:?}");
    relay.assert_log_has_no_credentials(&[&user]);
}

#[test]
fn submissions_is_tls_from_the_first_byte() {
    let p = provider();
    let (sender, rcpt, relay, subject, marker, original, data) = submission_case(p, "ssl");
    let script = r#"
import smtplib, ssl, sys
port, cafile, user, password, rcpt, path = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP_SSL("127.0.0.1", int(port), context=ctx, timeout=30) as s:
    code, _ = s.ehlo("ssl.client.test")
    assert code == 250, code
    assert not s.has_extn("starttls"), s.esmtp_features
    assert s.has_extn("auth"), s.esmtp_features
    print("login", s.login(user, password)[0])
    refused = s.sendmail(user, [rcpt], open(path, "rb").read())
    assert refused == {}, refused
print("sent")
"#;
    let stdout = python_ok(
        &relay,
        script,
        relay.submissions(),
        &sender,
        &[rcpt.address.clone(), data.display().to_string()],
    );
    assert!(stdout.contains("login 235"), "{stdout}");
    assert!(stdout.contains("sent"), "{stdout}");
    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_sealed_original(relay.keys(), &stored[0], &original, &[&subject, &marker]);

    // A plaintext client gets no greeting and no reply: its EHLO is not a
    // TLS handshake, and writ closes the connection.
    let mut tcp = TcpStream::connect(relay.submissions()).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(b"EHLO plain.test\r\n").unwrap();
    let mut got = Vec::new();
    let end = tcp.read_to_end(&mut got);
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection was not closed: {end:?}"
    );
    assert!(
        !got.iter().take(1).any(u8::is_ascii_digit)
            && !contains(&got, b"220")
            && !contains(&got, b"250"),
        "a plaintext client got an SMTP reply: {:?}",
        String::from_utf8_lossy(&got)
    );
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn dsn_parameters_reach_the_provider() {
    let p = provider();
    let (sender, rcpt, relay, subject, marker, original, data) = submission_case(p, "dsn");
    let envid = unique("envid");
    let orcpt = format!("{}@example.test", unique("orig"));
    let script = r#"
import smtplib, ssl, sys
port, cafile, user, password, rcpt, envid, orcpt, path = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP("127.0.0.1", int(port), timeout=30)
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn("dsn"), s.esmtp_features
s.login(user, password)
print("mail", s.mail(user, ["RET=HDRS", "ENVID=" + envid])[0])
print("rcpt", s.rcpt(rcpt, ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;" + orcpt])[0])
print("data", s.data(open(path, "rb").read())[0])
s.quit()
"#;
    let stdout = python_ok(
        &relay,
        script,
        relay.submission(),
        &sender,
        &[
            rcpt.address.clone(),
            envid.clone(),
            orcpt.clone(),
            data.display().to_string(),
        ],
    );
    for expected in ["mail 250", "rcpt 250", "data 250"] {
        assert!(stdout.contains(expected), "{stdout}");
    }
    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_sealed_original(relay.keys(), &stored[0], &original, &[&subject, &marker]);

    // NOTIFY=SUCCESS: the provider reports the delivery to the sender, with
    // the ENVID and ORCPT it was given and, for RET=HDRS, only the header
    // of the (sealed) message.
    let reports = p.wait_for_messages(&sender, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(reports.len(), 1);
    let report = String::from_utf8_lossy(&reports[0]);
    for expected in [
        "report-type=delivery-status".to_string(),
        format!("Original-Envelope-Id: {envid}"),
        format!("Original-Recipient: rfc822;{orcpt}"),
        format!("Final-Recipient: rfc822; {}", rcpt.address),
        "Status: 2.0.0".to_string(),
        "Content-Type: text/rfc822-headers".to_string(),
    ] {
        assert!(report.contains(&expected), "no {expected:?} in:\n{report}");
    }
    assert!(
        !report.contains(&marker),
        "RET=HDRS returned the body:\n{report}"
    );
    assert!(!report.contains(&subject), "the Subject leaked:\n{report}");
    relay.assert_log_has_no_credentials(&[&sender]);
}

#[test]
fn smtputf8_and_8bitmime_are_advertised_and_forwarded() {
    let p = provider();
    let sender = p.new_user("utf8-from");
    let rcpt = p.new_user("utf8-to");
    let relay = Relay::start(p);
    // An envelope sender with a UTF-8 local part and domain (RFC 6531).
    let utf8_from = format!("j\u{f6}rg-\u{1f512}-{}@b\u{fc}ro.example", unique("u"));
    let subject = format!("Gr\u{fc}\u{df}e {}", unique("utf8-subject"));
    let marker = unique("utf8-body");
    let original = format!(
        "From: <{}>\r\n\
         To: <{}>\r\n\
         Subject: {subject}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {marker}: \u{3053}\u{3093}\u{306b}\u{3061}\u{306f} \u{1f30d}\r\n\
         na\u{ef}ve caf\u{e9}, sent by {utf8_from}\r\n",
        sender.address, rcpt.address
    )
    .into_bytes();
    let data = relay.writ.dir().join("utf8.eml");
    std::fs::write(&data, &original).unwrap();
    // Two transactions with SMTPUTF8 and BODY=8BITMIME: one from the
    // user's ASCII address, one from the UTF-8 address.
    let script = r#"
import smtplib, ssl, sys
port, cafile, user, password, utf8_from, rcpt, path = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP("127.0.0.1", int(port), timeout=30)
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn("smtputf8") and s.has_extn("8bitmime"), s.esmtp_features
s.login(user, password)
msg = open(path, "rb").read()
for frm in (user, utf8_from):
    print("mail", s.mail(frm, ["SMTPUTF8", "BODY=8BITMIME"])[0])
    print("rcpt", s.rcpt(rcpt)[0])
    code, text = s.data(msg)
    print("data", code, text.decode())
s.quit()
"#;
    let stdout = python_ok(
        &relay,
        script,
        relay.submission(),
        &sender,
        &[
            utf8_from.clone(),
            rcpt.address.clone(),
            data.display().to_string(),
        ],
    );
    assert_eq!(stdout.matches("mail 250").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("rcpt 250").count(), 2, "{stdout}");
    let queue_ids: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("data 250 2.0.0 Ok: queued as "))
        .collect();
    assert_eq!(queue_ids.len(), 2, "{stdout}");

    // The 8-bit UTF-8 message is stored sealed and opens byte for byte.
    let stored = p.wait_for_messages(&rcpt, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_sealed_original(relay.keys(), &stored[0], &original, &[&subject, &marker]);

    // The UTF-8 sender reached the provider verbatim: Postfix queued the
    // second message from it. (The harness cannot store that one: Dovecot
    // 2.3's LMTP does not offer SMTPUTF8, so Postfix bounces it there.)
    let log_path = p.dir.join("postfix.log");
    let expected = format!("{}: from=<{utf8_from}>", queue_ids[1]);
    let deadline = std::time::Instant::now() + DELIVERY_TIMEOUT;
    while !std::fs::read(&log_path)
        .map(|log| contains(&log, expected.as_bytes()))
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no {expected:?} in the provider's log\n{}",
            p.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.assert_log_has_no_credentials(&[&sender]);
}
