//! A throwaway local mail provider: Postfix (SMTP) delivering over LMTP into
//! Dovecot (IMAP, Maildir), on loopback, in a temporary directory, on free
//! ports. The servers are run by `scripts/provider run`, whose standard input
//! is a pipe held by this process: when the test process exits, for whatever
//! reason, the pipe closes and the script stops both servers and removes the
//! directory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::imap::{Imap, Response, quote};
use super::process::collect_output;
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

/// The provider's Dovecot master user: an administrator who logs in to IMAP
/// as any [`User`] with the login name `<user>*<master>` (see
/// [`Master::login_for`]) and the master's own password. It cannot log in
/// as itself, and a master login names a user that exists (`pass = yes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    /// `writadmin`.
    pub name: String,
    /// Made for each run of the provider.
    pub password: String,
    /// A file holding exactly [`Master::password`] (no newline, mode 0600).
    pub password_file: PathBuf,
}

impl Master {
    /// The IMAP login name with which this master user acts as `user`:
    /// `alice*writadmin`.
    pub fn login_for(&self, user: &User) -> String {
        format!("{}{MASTER_SEPARATOR}{}", user.name, self.name)
    }
}

/// Dovecot's `auth_master_user_separator` in the provider.
pub const MASTER_SEPARATOR: char = '*';

/// The provider's master user name (scripts/provider).
pub const MASTER_NAME: &str = "writadmin";

/// The `kid` of the provider's OAuth2 token signing key (HS256). Dovecot
/// reads the key from `oauth2/keys/default/HS256/<kid>` (base64).
pub const OAUTH2_KEY_ID: &str = "writ-test";

/// How long [`Provider::oauth2_token`]'s tokens are valid.
pub const OAUTH2_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

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
        let output = collect_output(&mut child);
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
        let guard = self.users_lock.lock().unwrap_or_else(|e| e.into_inner());
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
        drop(guard);
        let user = User {
            address: format!("{name}@{DOMAIN}"),
            name,
            password,
        };
        // The mail store is made now, as a provider has it ready when an
        // account exists: Dovecot creating a new user's INBOX and mailbox
        // list index in two sessions at once can deadlock on their fcntl
        // locks, and one session then panics ("Resource deadlock avoided")
        // and closes its client's connection.
        let mut imap = self.imap(&user);
        imap.select("INBOX").expect_ok("SELECT INBOX of a new user");
        imap.logout();
        user
    }

    /// The master user (administrator); see [`Master`].
    pub fn master(&self) -> Master {
        let password_file = self.dir.join("master.password");
        let password = std::fs::read_to_string(&password_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", password_file.display()));
        Master {
            name: MASTER_NAME.to_string(),
            password,
            password_file,
        }
    }

    /// A new IMAP connection in which the master user is logged in as
    /// `user` (`LOGIN user*writadmin <master password>`).
    #[track_caller]
    pub fn imap_as_master(&self, user: &User) -> Imap {
        let master = self.master();
        Imap::login_to(self.imap_addr(), &master.login_for(user), &master.password)
    }

    /// The HMAC-SHA256 key with which the provider checks OAuth2 bearer
    /// tokens (made for each run).
    pub fn oauth2_key(&self) -> Vec<u8> {
        use base64::Engine as _;
        let path = self
            .dir
            .join("oauth2/keys/default/HS256")
            .join(OAUTH2_KEY_ID);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap_or_else(|e| panic!("{} is not base64: {e}", path.display()))
    }

    /// A bearer token (JWT, HS256) with which `user` logs in to IMAP with
    /// `AUTHENTICATE XOAUTH2` or `OAUTHBEARER` (see [`xoauth2`],
    /// [`oauthbearer`]) for the next [`OAUTH2_TOKEN_LIFETIME`].
    pub fn oauth2_token(&self, user: &User) -> String {
        let now = unix_now();
        let exp = now + OAUTH2_TOKEN_LIFETIME.as_secs() as i64;
        jwt_hs256(
            &self.oauth2_key(),
            OAUTH2_KEY_ID,
            &token_claims(user, now, exp),
        )
    }

    /// A token like [`Provider::oauth2_token`]'s, issued two hours ago and
    /// expired an hour ago: the provider refuses it.
    pub fn oauth2_expired_token(&self, user: &User) -> String {
        let now = unix_now();
        jwt_hs256(
            &self.oauth2_key(),
            OAUTH2_KEY_ID,
            &token_claims(user, now - 7200, now - 3600),
        )
    }

    /// A token like [`Provider::oauth2_token`]'s (valid claims, right key
    /// id) signed with another key: the provider refuses it.
    pub fn oauth2_forged_token(&self, user: &User) -> String {
        let mut key = self.oauth2_key();
        key.iter_mut().for_each(|b| *b ^= 0x5a);
        let now = unix_now();
        let exp = now + OAUTH2_TOKEN_LIFETIME.as_secs() as i64;
        jwt_hs256(&key, OAUTH2_KEY_ID, &token_claims(user, now, exp))
    }

    /// A new connection, `AUTHENTICATE mechanism <initial response>`
    /// (SASL-IR; `initial` is base64, e.g. from [`xoauth2`]). A challenge
    /// (`+ ...`, how Dovecot reports a failed OAuth2 login) is answered
    /// with an empty response, as RFC 7628 asks. Returns the connection
    /// (logged in if the response is OK) and the response; its untagged
    /// lines include any challenge.
    #[track_caller]
    pub fn imap_authenticate(&self, mechanism: &str, initial: &str) -> (Imap, Response) {
        let mut imap = Imap::connect(self.imap_addr())
            .unwrap_or_else(|e| panic!("IMAP connect to {}: {e}", self.imap_addr()));
        let response = authenticate(&mut imap, mechanism, initial)
            .unwrap_or_else(|e| panic!("IMAP AUTHENTICATE {mechanism}: {e}"));
        (imap, response)
    }

    /// Ends every IMAP session of `user` (`doveadm kick`): Dovecot tells
    /// each `* BYE Server shutting down.` and closes it. Returns false if
    /// `user` had no session (Dovecot's anvil knows a session once the
    /// login has been answered).
    #[track_caller]
    pub fn kick(&self, user: &User) -> bool {
        let out = self.doveadm(&["kick", &user.name]);
        match out.status.code() {
            Some(0) => true,
            // EX_NOUSER: "no users kicked".
            Some(68) => false,
            _ => panic!(
                "doveadm kick {} failed ({}): {}{}",
                user.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Runs `doveadm -c <this provider's dovecot.conf> args...` (the
    /// provider's Dovecot has its own base_dir; plain `doveadm` would talk
    /// to the system's).
    pub fn doveadm(&self, args: &[&str]) -> std::process::Output {
        Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.join("dovecot/dovecot.conf"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run doveadm: {e}"))
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

/// The SASL XOAUTH2 initial response (base64) for `user` (login name or
/// address) with bearer `token`.
pub fn xoauth2(user: &str, token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The SASL OAUTHBEARER (RFC 7628) initial response (base64) for `user`
/// with bearer `token`.
pub fn oauthbearer(user: &str, token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("n,a={user},\x01auth=Bearer {token}\x01\x01"))
}

/// On an open connection: `AUTHENTICATE mechanism initial` (SASL-IR),
/// answering any challenge with an empty response; the tagged response
/// comes back with the challenges among its untagged lines.
pub fn authenticate(imap: &mut Imap, mechanism: &str, initial: &str) -> std::io::Result<Response> {
    let tag = imap.tag();
    imap.write_raw(format!("{tag} AUTHENTICATE {mechanism} {initial}\r\n").as_bytes())?;
    let mut untagged = Vec::new();
    loop {
        let line = imap.read_line()?;
        let first = line.text.first().cloned().unwrap_or_default();
        if first.starts_with(b"+") {
            untagged.push(line);
            imap.write_raw(b"\r\n")?;
            continue;
        }
        if first.starts_with(format!("{tag} ").as_bytes()) {
            let status = line
                .text_only()
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_ascii_uppercase();
            return Ok(Response {
                untagged,
                tagged: line,
                status,
            });
        }
        untagged.push(line);
    }
}

/// A JWT (RFC 7519) signed with HMAC-SHA256: header `{"alg":"HS256",
/// "typ":"JWT","kid":kid}`, payload `claims` (a JSON object).
pub fn jwt_hs256(key: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let signature = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64.encode(signature.as_ref()))
}

/// The claims the provider wants: `email` names the user (Dovecot compares
/// its local part with the SASL user's), `sub` must be present.
fn token_claims(user: &User, iat: i64, exp: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": "writ-test-provider",
        "sub": user.address,
        "email": user.address,
        "iat": iat,
        "exp": exp,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}
