//! What the writ process itself guards, whatever runs inside it:
//!
//! - no core dumps and no ptrace dumpability (the unlocked epoch keys live
//!   in its memory): `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0 from the start
//!   of every command, read back from /proc;
//! - no credentials or message content in the log at any `WRIT_LOG`
//!   setting, even ones naming the protocol libraries' targets: a real
//!   SMTP AUTH and send, then an IMAP login and fetch through writ.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::mail::{DELIVERY_TIMEOUT, message, unique};
use common::provider;
use common::python;
use common::smtp::Client;
use common::tls::test_tls;
use common::writ::{TestKeys, WRIT, Writ, WritConfig, free_port};

/// The soft and hard "Max core file size" of a process.
fn core_limit(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))?;
    let mut words = line["Max core file size".len()..].split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

#[test]
fn writ_serve_runs_without_core_dumps() {
    let p = provider();
    let writ = Writ::start(&WritConfig::relay(p.smtp_addr()));
    assert_eq!(
        core_limit(writ.pid()),
        Some(("0".into(), "0".into())),
        "RLIMIT_CORE of writ serve"
    );
}

/// `PR_SET_DUMPABLE` 0 shows as /proc/PID/* owned by root while the process
/// runs as another user: `writ seal` (waiting for its message on stdin)
/// started as nobody.
#[test]
fn every_command_is_undumpable_from_the_start() {
    let keys = TestKeys::new();
    let home = keys.dir().parent().unwrap().to_path_buf();
    // nobody must read the keyring's public part (a test keyring).
    let status = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", WRIT])
        .arg("--keys")
        .arg(keys.dir())
        .arg("seal")
        .current_dir(&home)
        .env_remove("WRIT_PASSPHRASE_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run setpriv (util-linux)");
    let pid = child.id();
    let proc_dir = format!("/proc/{pid}");
    let writ = Path::new(WRIT).canonicalize().unwrap();
    // setpriv becomes writ in place (exec); poll until writ has started
    // and set its limits, or give up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let exe = std::fs::read_link(format!("{proc_dir}/exe")).ok();
        // The files in it, that is: the directory's own inode keeps the
        // owner it had when first looked up.
        let owner = std::fs::metadata(format!("{proc_dir}/status"))
            .map(|m| m.uid())
            .ok();
        let core = core_limit(pid);
        let state = (exe, owner, core);
        let hardened = state.0.as_deref() == Some(writ.as_path())
            && state.1 == Some(0)
            && state.2 == Some(("0".into(), "0".into()));
        if hardened || Instant::now() >= deadline {
            break state;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("writ seal exited early ({status}): {err}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(state.0.as_deref(), Some(writ.as_path()), "writ started");
    assert_eq!(
        state.1,
        Some(0),
        "/proc/{pid}/status is owned by uid {:?}, not root: the process is dumpable",
        state.1
    );
    assert_eq!(state.2, Some(("0".into(), "0".into())), "RLIMIT_CORE");
}

/// Sends a message through writ's submissions listener (AUTH PLAIN) and
/// AUTH LOGIN on a second session, then logs in over IMAP through writ and
/// fetches it opened; returns what must never be logged.
fn exercise(p: &common::Provider, writ_log: &str) -> (Writ, Vec<String>) {
    let tls = test_tls("writ log test CA");
    let user = p.new_user("logsecret");
    let (imaps, imap) = (free_port(), free_port());
    let mut cfg =
        WritConfig::submission(p, tls.cert.clone(), tls.key.clone()).listener("submissions", &[]);
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {cert:?}\ntls_key = {key:?}\n\n\
         [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap}\"\n\n\
         [[imap.listeners]]\nkind = \"imaps\"\nlisten = \"127.0.0.1:{imaps}\"\n\n\
         [provider.imap]\naddress = \"{upstream}\"\nsecurity = \"plain\"\n",
        cert = tls.cert.display().to_string(),
        key = tls.key.display().to_string(),
        upstream = p.imap_addr(),
    );
    cfg.unlock = true;
    cfg.writ_log = Some(writ_log.into());
    let writ = Writ::start(&cfg);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let plain = b64(&format!("\0{}\0{}", user.address, user.password));
    let subject = unique("log-subject");
    let marker = unique("log-body");

    let mut c = Client::implicit_tls(writ.addr("submissions"), &tls.ca_der).unwrap();
    assert_eq!(c.command("EHLO log.test").unwrap().code, 250);
    let auth = c.command(&format!("AUTH PLAIN {plain}")).unwrap();
    assert_eq!(auth.code, 235, "{auth:?}\n{}", writ.log());
    for line in [
        format!("MAIL FROM:<{}>", user.address),
        format!("RCPT TO:<{}>", user.address),
    ] {
        assert_eq!(c.command(&line).unwrap().code, 250, "{line}");
    }
    assert_eq!(c.command("DATA").unwrap().code, 354);
    let original = message(
        &user.address,
        &user.address,
        &subject,
        &marker,
        &unique("id"),
    );
    let mut wire = String::from_utf8(original)
        .unwrap()
        .replace("\r\n.", "\r\n..");
    wire.push_str(".\r\n");
    c.write_raw(wire.as_bytes()).unwrap();
    assert_eq!(c.read_reply().unwrap().code, 250);
    let _ = c.command("QUIT");

    // AUTH LOGIN, step by step.
    let mut c = Client::starttls(writ.addr("submission"), &tls.ca_der).unwrap();
    assert_eq!(c.command("EHLO log.test").unwrap().code, 250);
    assert_eq!(c.command("AUTH LOGIN").unwrap().code, 334);
    assert_eq!(c.command(&b64(&user.address)).unwrap().code, 334);
    assert_eq!(c.command(&b64(&user.password)).unwrap().code, 235);
    let _ = c.command("QUIT");

    p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    let script = r#"
import imaplib, ssl, sys
port, ca, user, password = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
with imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx, timeout=30) as m:
    m.login(user, password)
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY[])")
    assert typ == "OK", (typ, data)
    sys.stdout.write(data[0][1].decode("utf-8", "replace"))
"#;
    let imaps_addr = SocketAddr::from(([127, 0, 0, 1], imaps));
    let fetched = python::succeeded(
        &python::run(
            script,
            [
                imaps_addr.port().to_string(),
                tls.ca.display().to_string(),
                user.name.clone(),
                user.password.clone(),
            ],
        ),
        || writ.log(),
    );
    assert!(
        fetched.contains(&marker) && fetched.contains(&subject),
        "writ opened the message for the IMAP client:\n{fetched}"
    );
    let secrets = vec![
        user.password.clone(),
        plain,
        b64(&user.password),
        subject,
        marker,
    ];
    (writ, secrets)
}

#[track_caller]
fn assert_log_free_of(writ: &Writ, writ_log: &str, secrets: &[String]) {
    let log = writ.log();
    assert!(log.contains("listener ready"), "{log}");
    for s in secrets {
        assert!(
            !log.contains(s.as_str()),
            "WRIT_LOG={writ_log}: {s:?} is in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(s.as_str()))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn writ_log_trace_prints_no_credentials_or_mail() {
    let p = provider();
    for filter in [
        "trace",
        "imap_next=trace,imap_codec=trace,trace",
        "imap_next::stream=trace,rustls=trace,tokio_rustls=trace,hyper=trace,writ=trace",
    ] {
        let (writ, secrets) = exercise(p, filter);
        assert_log_free_of(&writ, filter, &secrets);
    }
}
