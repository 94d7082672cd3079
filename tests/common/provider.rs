//! A throwaway local mail provider: Postfix (SMTP) delivering over LMTP into
//! Dovecot (IMAP, Maildir), on loopback, in a temporary directory, on free
//! ports. The servers are run by `scripts/provider run`, whose standard input
//! is a pipe held by this process: when the test process exits, for whatever
//! reason, the pipe closes and the script stops both servers and removes the
//! directory.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::imap::{Imap, Response, quote};
use super::smtp::{self, Reply, Smtp};

/// The mail domain the provider accepts (everything else is refused at RCPT).
pub const DOMAIN: &str = "example.test";

/// How long start-up may take before the harness gives up (normally ~0.2 s).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Start-up attempts; a retry picks new ports if one was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// The provider shared by all tests of this test binary, started on first use.
pub fn provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(Provider::start)
}

/// A mailbox user of the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name (`address` works as a login too).
    pub name: String,
    /// `name@example.test`.
    pub address: String,
    pub password: String,
}

/// A running provider. [`provider`] gives the shared one; [`Provider::start`]
/// a private one, stopped when dropped (for tests that take it down).
pub struct Provider {
    /// Postfix smtpd on 127.0.0.1: accepts mail for [`DOMAIN`] from anyone.
    pub smtp_port: u16,
    /// Postfix submission on 127.0.0.1, like a hosted provider's port 587:
    /// STARTTLS required (certificate verified by [`Provider::ca_file`]),
    /// AUTH PLAIN/LOGIN with a [`User`]'s name or address and password, only
    /// after STARTTLS; authenticated clients may send to any domain (mail
    /// for other domains lands in [`Provider::world`]'s mailbox).
    pub submission_port: u16,
    /// Dovecot IMAP on 127.0.0.1, plaintext LOGIN allowed, STARTTLS offered
    /// (certificate verified by [`Provider::ca_file`]).
    pub imap_port: u16,
    /// Dovecot IMAP with implicit TLS on 127.0.0.1 (same certificate).
    pub imaps_port: u16,
    /// Dovecot LMTP on 127.0.0.1 (what Postfix delivers to).
    pub lmtp_port: u16,
    /// The provider's directory (configs, logs, `mail/<user>/Maildir`).
    pub dir: PathBuf,
    /// Closing this pipe stops the servers.
    stdin: Option<ChildStdin>,
    child: Child,
    /// What the script printed (start-up line, failure reports).
    output: Arc<Mutex<Vec<u8>>>,
    next_user: AtomicU32,
    users_lock: Mutex<()>,
    world: OnceLock<User>,
}

impl Provider {
    /// Starts a new provider, panicking with the servers' logs on failure.
    pub fn start() -> Provider {
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Provider::try_start() {
                Ok(provider) => return provider,
                Err(e) => {
                    let _ = writeln!(failures, "--- attempt {attempt}:\n{e}");
                }
            }
        }
        panic!("could not start the test mail provider (scripts/provider):\n{failures}");
    }

    fn try_start() -> Result<Provider, String> {
        let [smtp_port, submission_port, imap_port, imaps_port, lmtp_port] = free_ports();
        let dir = fresh_dir()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/provider");
        let mut child = Command::new(&script)
            .arg("run")
            .arg("--dir")
            .arg(&dir)
            .args(["--domain", DOMAIN])
            .args(["--smtp-port", &smtp_port.to_string()])
            .args(["--submission-port", &submission_port.to_string()])
            .args(["--imap-port", &imap_port.to_string()])
            .args(["--imaps-port", &imaps_port.to_string()])
            .args(["--lmtp-port", &lmtp_port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            thread::spawn(move || collect(pipe, &output));
        }
        let mut provider = Provider {
            smtp_port,
            submission_port,
            imap_port,
            imaps_port,
            lmtp_port,
            dir,
            stdin: child.stdin.take(),
            child,
            output,
            next_user: AtomicU32::new(1),
            users_lock: Mutex::new(()),
            world: OnceLock::new(),
        };
        match provider.wait_ready() {
            Ok(()) => Ok(provider),
            Err(e) => {
                let report = format!("{e}\n{}", provider.diagnostics());
                drop(provider);
                Err(report)
            }
        }
    }

    /// Polls until all four ports greet with this instance's banner.
    fn wait_ready(&mut self) -> Result<(), String> {
        let instance = self
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("provider dir has a UTF-8 name")
            .to_string();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("scripts/provider exited early ({status})"));
            }
            let Err(last) = self.check_banners(&instance) else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "servers not ready after {START_TIMEOUT:?}; last check: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_banners(&self, instance: &str) -> Result<(), String> {
        let smtp = Smtp::connect(self.smtp_addr()).map_err(|e| format!("SMTP: {e}"))?;
        if smtp.greeting.code != 220 || !smtp.greeting.text().contains(instance) {
            return Err(format!("SMTP greeting {:?}", smtp.greeting));
        }
        smtp.quit();
        let submission =
            Smtp::connect(self.submission_addr()).map_err(|e| format!("submission: {e}"))?;
        if submission.greeting.code != 220 || !submission.greeting.text().contains(instance) {
            return Err(format!("submission greeting {:?}", submission.greeting));
        }
        submission.quit();
        let lmtp = Smtp::connect(self.lmtp_addr()).map_err(|e| format!("LMTP: {e}"))?;
        if lmtp.greeting.code != 220 || !lmtp.greeting.text().contains(instance) {
            return Err(format!("LMTP greeting {:?}", lmtp.greeting));
        }
        lmtp.quit();
        let imap = Imap::connect(self.imap_addr()).map_err(|e| format!("IMAP: {e}"))?;
        if !imap.greeting.text_only().contains(instance) {
            return Err(format!("IMAP greeting {:?}", imap.greeting));
        }
        imap.logout();
        Ok(())
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.smtp_port))
    }

    pub fn submission_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.submission_port))
    }

    /// PEM certificate of the CA (made for this run) that signed the
    /// submission port's certificate, which is valid for `127.0.0.1`,
    /// `localhost` and `provider.example.test`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// PEM certificate of the submission port (signed by [`Provider::ca_file`]).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.imap_port))
    }

    pub fn imaps_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.imaps_port))
    }

    pub fn lmtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.lmtp_port))
    }

    /// A new user `<prefix><n>@example.test` with an empty INBOX, usable at
    /// once for IMAP login and SMTP delivery. `prefix` is lowercased and
    /// anything but `[a-z0-9._-]` is dropped.
    pub fn new_user(&self, prefix: &str) -> User {
        let mut clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        if !clean.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            clean.insert(0, 'u');
        }
        let n = self.next_user.fetch_add(1, Ordering::Relaxed);
        self.add_user(format!("{clean}{n}"), n)
    }

    /// The user "world", whose INBOX receives what authenticated clients of
    /// the submission port send to other domains, each copy with
    /// `Delivered-To: world+LOCAL=DOMAIN@example.test` for the original
    /// recipient `LOCAL@DOMAIN` (see [`Provider::world_address`]).
    pub fn world(&self) -> &User {
        self.world.get_or_init(|| {
            let n = self.next_user.fetch_add(1, Ordering::Relaxed);
            self.add_user("world".to_string(), n)
        })
    }

    /// The `Delivered-To` address under which mail for the external address
    /// `external` (`LOCAL@DOMAIN`) is stored in [`Provider::world`]'s INBOX.
    pub fn world_address(external: &str) -> String {
        let (local, domain) = external
            .rsplit_once('@')
            .unwrap_or_else(|| panic!("not an address: {external}"));
        format!("world+{local}={domain}@{DOMAIN}")
    }

    fn add_user(&self, name: String, n: u32) -> User {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let password = format!("pw-{n}-{nanos:x}");
        let _guard = self.users_lock.lock().unwrap_or_else(|e| e.into_inner());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/provider");
        let out = Command::new(&script)
            .arg("adduser")
            .arg(&self.dir)
            .args([&name, &password])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "provider adduser {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        User {
            address: format!("{name}@{DOMAIN}"),
            name,
            password,
        }
    }

    /// A new IMAP connection, logged in as `user`.
    #[track_caller]
    pub fn imap(&self, user: &User) -> Imap {
        Imap::login_to(self.imap_addr(), &user.name, &user.password)
    }

    /// APPENDs `message` to `mailbox` (created if missing); returns its UID.
    #[track_caller]
    pub fn imap_append(&self, user: &User, mailbox: &str, message: &[u8]) -> u32 {
        let mut imap = self.imap(user);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            // Fails harmlessly (NO) when the mailbox exists already.
            imap.command(&format!("CREATE {}", quote(mailbox)));
        }
        let response = imap.append(mailbox, message).expect_ok("APPEND");
        imap.logout();
        response
            .append_uid()
            .unwrap_or_else(|| panic!("APPEND without APPENDUID: {response:?}"))
    }

    /// The exact bytes (`BODY.PEEK[]`) of every message in `mailbox`, by UID.
    #[track_caller]
    pub fn imap_fetch_all(&self, user: &User, mailbox: &str) -> Vec<Vec<u8>> {
        let mut imap = self.imap(user);
        imap.select(mailbox).expect_ok("SELECT");
        let messages = imap.fetch_all();
        imap.logout();
        messages.into_iter().map(|(_, bytes)| bytes).collect()
    }

    /// Logs in, SELECTs `mailbox` and runs `command` (e.g. `"UID FETCH 1:*
    /// (ENVELOPE BODYSTRUCTURE)"`); returns the raw response, whatever its
    /// status. For several commands in one session use [`Provider::imap`].
    #[track_caller]
    pub fn imap_command(&self, user: &User, mailbox: &str, command: &str) -> Response {
        let mut imap = self.imap(user);
        imap.select(mailbox).expect_ok("SELECT");
        let response = imap.command(command);
        imap.logout();
        response
    }

    /// Polls (STATUS MESSAGES) until `mailbox` holds at least `n` messages,
    /// then returns the exact bytes of all of them, by UID. Panics after
    /// `timeout` with the count seen and the servers' log tails.
    #[track_caller]
    pub fn wait_for_messages(
        &self,
        user: &User,
        mailbox: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut imap = self.imap(user);
        let mut dropped = 0;
        loop {
            // This is the harness's own client talking to Dovecot (writ is
            // not on this path): if Dovecot drops the polling connection,
            // which happened once on a loaded CI machine, poll on a new one.
            let status = match imap.try_command(&format!("STATUS {} (MESSAGES)", quote(mailbox))) {
                Ok(status) => status,
                Err(e) if dropped < 3 && Instant::now() < deadline => {
                    dropped += 1;
                    eprintln!("provider: polling connection lost ({e}); reconnecting");
                    imap = self.imap(user);
                    continue;
                }
                Err(e) => panic!(
                    "IMAP STATUS while waiting for messages: {e}\n{}",
                    self.diagnostics()
                ),
            };
            let count = status.status_item("MESSAGES").unwrap_or(0) as usize;
            if status.is_ok() && count >= n {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {n} message(s) in {}/{mailbox}: \
                     have {count} ({:?})\n{}",
                    user.name,
                    status.tagged,
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        imap.select(mailbox).expect_ok("SELECT");
        let messages = imap.fetch_all();
        imap.logout();
        messages.into_iter().map(|(_, bytes)| bytes).collect()
    }

    /// Submits `message` to the provider's SMTP port (see [`smtp::send`]).
    #[track_caller]
    pub fn smtp_send(&self, from: &str, to: &[&str], message: &[u8]) -> Result<Reply, Reply> {
        smtp::send(self.smtp_addr(), from, to, message)
    }

    /// The last lines of the Postfix and Dovecot logs and the script's
    /// output, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for log in ["postfix.log", "dovecot.log"] {
            let path = self.dir.join(log);
            let _ = writeln!(out, "--- tail of {}", path.display());
            match std::fs::read(&path) {
                Ok(bytes) => out.push_str(&tail(&String::from_utf8_lossy(&bytes), 40)),
                Err(e) => {
                    let _ = writeln!(out, "({e})");
                }
            }
        }
        let script = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "--- scripts/provider output");
        out.push_str(&tail(&String::from_utf8_lossy(&script), 100));
        out
    }
}

impl Drop for Provider {
    /// Stops the servers and waits until the script has cleaned up.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Four distinct free loopback ports (held at once, so no duplicates).
fn free_ports() -> [u16; 5] {
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
    [port(0), port(1), port(2), port(3), port(4)]
}

/// A new directory under /tmp (Dovecot runs mail processes as `nobody`, who
/// must be able to reach it, so not under a private TMPDIR).
fn fresh_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(format!(
        "/tmp/writ-provider.{}.{n}.{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn collect(mut pipe: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(&buf[..n]);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}
