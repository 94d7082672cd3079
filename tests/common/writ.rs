//! `writ serve` as a child process, for integration tests of the relay.
//!
//! - [`TestKeys`]: a keyring made with `writ keys init` (low scrypt work
//!   factor, passphrase in a file), which tests can unlock to open what the
//!   relay sealed.
//! - [`WritConfig`]: a config builder; [`WritConfig::relay`] is a relay
//!   listener for 127.0.0.1 in front of the harness provider's Postfix.
//!   Listener kinds, TLS files, policy, limits and the provider connection
//!   can all be changed; anything else goes into [`WritConfig::extra_toml`].
//! - [`Writ`]: the running server on free loopback ports, ready (its
//!   listeners bound) when [`Writ::start`] returns, killed when dropped.
//!   [`Writ::log`] is its stderr, for failure messages; [`Writ::sigterm`]
//!   and [`Writ::wait_exit`] test shutdown; [`Writ::healthz`],
//!   [`Writ::metrics`] read the admin endpoint.
//!
//! Readiness is polled (no sleeping for a fixed time): `writ serve` logs each
//! bound listener address once its socket is bound, and the admin endpoint
//! must answer an HTTP request.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use ::writ::keys::{Keyring, Unlocked};

use super::hsm::{self, SoftHsm};
use super::process::output_with_stdin;
use super::provider::Provider;

/// The writ binary under test.
pub const WRIT: &str = env!("CARGO_BIN_EXE_writ");

/// The passphrase of every [`TestKeys`] keyring.
pub const PASSPHRASE: &str = "relay test passphrase";

/// How long `writ serve` may take to bind its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Start-up attempts: a retry picks new ports if one was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A keyring in its own temporary directory.
pub struct TestKeys {
    tmp: tempfile::TempDir,
    /// Unlocked once: scrypt is slow in a debug build.
    unlocked: OnceLock<Unlocked>,
    /// The token holding the key that wraps the epochs
    /// ([`TestKeys::on_token`]); `None`: a passphrase keyring.
    token: Option<SoftHsm>,
}

impl TestKeys {
    /// `writ keys init` with a low work factor and [`PASSPHRASE`].
    #[track_caller]
    pub fn new() -> TestKeys {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::write(tmp.path().join("passphrase"), format!("{PASSPHRASE}\n")).unwrap();
        let out = Command::new(WRIT)
            .env_remove("WRIT_PASSPHRASE_FILE")
            .arg("--keys")
            .arg(tmp.path().join("keys"))
            .arg("--passphrase-file")
            .arg(tmp.path().join("passphrase"))
            .args(["keys", "init", "--work-factor", "10"])
            .current_dir(tmp.path())
            .output()
            .expect("run writ keys init");
        assert!(
            out.status.success(),
            "writ keys init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestKeys {
            tmp,
            unlocked: OnceLock::new(),
            token: None,
        }
    }

    /// `writ keys init --token` on a SoftHSM2 token of its own: unlocking
    /// needs the token and its PIN ([`TestKeys::unlock_args`],
    /// [`TestKeys::unlock_env`]).
    #[track_caller]
    pub fn on_token() -> TestKeys {
        let tmp = tempfile::tempdir().expect("temp dir");
        let hsm = SoftHsm::new();
        let out = Command::new(WRIT)
            .env_remove("WRIT_PASSPHRASE_FILE")
            .env_remove("WRIT_PIN_FILE")
            .env("SOFTHSM2_CONF", hsm.conf())
            .arg("--keys")
            .arg(tmp.path().join("keys"))
            .args(["keys", "init", "--token", hsm::TOKEN, "--token-module"])
            .arg(hsm::MODULE)
            .arg("--pin-file")
            .arg(hsm.pin_file())
            .current_dir(tmp.path())
            .output()
            .expect("run writ keys init --token");
        assert!(
            out.status.success(),
            "writ keys init --token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestKeys {
            tmp,
            unlocked: OnceLock::new(),
            token: Some(hsm),
        }
    }

    /// The options that unlock this keyring on a `writ` command line:
    /// `--passphrase-file` or, on a token, `--pin-file`.
    pub fn unlock_args(&self) -> Vec<String> {
        match &self.token {
            None => vec![
                "--passphrase-file".into(),
                self.passphrase_file().display().to_string(),
            ],
            Some(hsm) => vec!["--pin-file".into(), hsm.pin_file().display().to_string()],
        }
    }

    /// The environment a `writ` command needs besides
    /// [`TestKeys::unlock_args`]: on a token, `SOFTHSM2_CONF`.
    pub fn unlock_env(&self) -> Vec<(String, String)> {
        match &self.token {
            None => Vec::new(),
            Some(hsm) => vec![("SOFTHSM2_CONF".into(), hsm.conf().display().to_string())],
        }
    }

    /// The keyring directory.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    /// A file holding [`PASSPHRASE`].
    pub fn passphrase_file(&self) -> PathBuf {
        self.tmp.path().join("passphrase")
    }

    /// Every epoch identity, for `writ::envelope::open` (unlocked on first
    /// use; epochs added later are not seen).
    #[track_caller]
    pub fn unlock(&self) -> &Unlocked {
        assert!(
            self.token.is_none(),
            "a token keyring opens through the CLI (TestKeys::open)"
        );
        self.unlocked.get_or_init(|| {
            let keyring = Keyring::load(&self.dir()).expect("load the test keyring");
            keyring
                .unlock(&secrecy::SecretString::from(PASSPHRASE.to_string()))
                .expect("unlock the test keyring")
        })
    }

    /// Opens a sealed message with the library: the fields the provider put
    /// above `X-Writ`, then the original byte for byte.
    #[track_caller]
    pub fn open(&self, stored: &[u8]) -> Vec<u8> {
        if self.token.is_some() {
            // The library would need SOFTHSM2_CONF in this process's
            // environment; the CLI gets it in its own.
            return self.open_cli(stored);
        }
        let mut out = Vec::new();
        ::writ::envelope::open(stored, self.unlock(), &mut out).unwrap_or_else(|e| {
            panic!(
                "cannot open a stored message ({e}):\n{}",
                String::from_utf8_lossy(stored)
            )
        });
        out
    }

    /// Opens a sealed message with `writ open` (the CLI), stdin to stdout.
    #[track_caller]
    pub fn open_cli(&self, stored: &[u8]) -> Vec<u8> {
        let out = output_with_stdin(
            Command::new(WRIT)
                .env_remove("WRIT_PASSPHRASE_FILE")
                .env_remove("WRIT_PIN_FILE")
                .envs(self.unlock_env())
                .arg("--keys")
                .arg(self.dir())
                .args(self.unlock_args())
                .arg("open")
                .current_dir(self.tmp.path()),
            stored,
        )
        .expect("run writ open");
        assert!(
            out.status.success(),
            "writ open failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        TestKeys::new()
    }
}

/// One `[[smtp.listeners]]` entry.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// `relay`, `submission` or `submissions`.
    pub kind: String,
    /// `None`: a free loopback port is picked at start.
    pub port: Option<u16>,
    pub allowed_networks: Vec<String>,
    /// `proxy_protocol_from` (empty: the PROXY protocol is off).
    pub proxy_protocol_from: Vec<String>,
}

/// `[provider.smtp]`
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    pub address: String,
    /// `plain`, `starttls` or `implicit`.
    pub security: String,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub timeout_secs: Option<u64>,
}

/// Everything that goes into the config file of one `writ serve`.
#[derive(Clone, Debug)]
pub struct WritConfig {
    pub listeners: Vec<ListenerSpec>,
    pub hostname: String,
    pub protected_domains: Vec<String>,
    /// `smtp.external`: `plaintext`, `reject` or `seal` (unset: default).
    pub external: Option<String>,
    pub directory: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Other `[smtp]` keys, as (key, TOML value) pairs:
    /// `("max_message_size", "1000")`.
    pub smtp_options: Vec<(String, String)>,
    pub provider: Option<ProviderSpec>,
    /// Run the admin endpoint on a free port.
    pub admin: bool,
    pub grace_secs: Option<u64>,
    /// Other `[serve]` keys, as (key, TOML value) pairs.
    pub serve_options: Vec<(String, String)>,
    /// An existing keyring; `None`: [`Writ::start`] makes one.
    pub keys_dir: Option<PathBuf>,
    /// Appended to the file verbatim (whole tables such as `[seal]`).
    pub extra_toml: String,
    /// `[log] level`: "info" unless changed. Readiness is read from the
    /// log at "info" and more verbose; otherwise each listener is polled
    /// with a TCP connection (which counts as an SMTP session in /metrics).
    pub log_level: String,
    /// Give `writ serve` the keyring passphrase (`--passphrase-file`): the
    /// IMAP proxy unlocks the keyring at start.
    pub unlock: bool,
    /// `WRIT_LOG` for `writ serve` (unset when `None`).
    pub writ_log: Option<String>,
    /// More environment for `writ serve` (an HSM keyring's `SOFTHSM2_CONF`
    /// and `WRIT_PIN_FILE`).
    pub serve_env: Vec<(String, String)>,
    /// Run `writ serve` with at most this many open files (`RLIMIT_NOFILE`,
    /// set by prlimit(1), which then execs writ: the pid is writ's).
    pub max_open_files: Option<u64>,
}

impl WritConfig {
    /// A relay listener for 127.0.0.1, protecting the harness domain,
    /// relaying in plain SMTP to `provider_smtp` (the harness Postfix), with
    /// the admin endpoint.
    pub fn relay(provider_smtp: SocketAddr) -> WritConfig {
        WritConfig {
            listeners: vec![ListenerSpec {
                kind: "relay".into(),
                port: None,
                allowed_networks: vec!["127.0.0.1".into()],
                proxy_protocol_from: Vec::new(),
            }],
            hostname: "writ.test".into(),
            protected_domains: vec![super::provider::DOMAIN.into()],
            external: None,
            directory: None,
            tls_cert: None,
            tls_key: None,
            smtp_options: Vec::new(),
            provider: Some(ProviderSpec {
                address: provider_smtp.to_string(),
                security: "plain".into(),
                ca_file: None,
                server_name: None,
                timeout_secs: Some(30),
            }),
            admin: true,
            grace_secs: Some(10),
            serve_options: Vec::new(),
            keys_dir: None,
            extra_toml: String::new(),
            log_level: "info".into(),
            unlock: false,
            writ_log: None,
            serve_env: Vec::new(),
            max_open_files: None,
        }
    }

    /// A `submission` listener for any client (STARTTLS with `tls_cert` and
    /// `tls_key`, AUTH passed through), protecting the harness domain,
    /// relaying to the provider's submission port over STARTTLS verified
    /// against the provider's CA, with the admin endpoint.
    pub fn submission(p: &Provider, tls_cert: PathBuf, tls_key: PathBuf) -> WritConfig {
        let mut cfg = WritConfig::relay(p.submission_addr());
        cfg.listeners.clear();
        let mut cfg = cfg.listener("submission", &[]);
        cfg.tls_cert = Some(tls_cert);
        cfg.tls_key = Some(tls_key);
        let provider = cfg.provider.as_mut().unwrap();
        provider.security = "starttls".into();
        provider.ca_file = Some(p.ca_file());
        cfg
    }

    /// Adds a listener of `kind` on a free port.
    pub fn listener(mut self, kind: &str, allowed_networks: &[&str]) -> WritConfig {
        self.listeners.push(ListenerSpec {
            kind: kind.into(),
            port: None,
            allowed_networks: allowed_networks.iter().map(|s| s.to_string()).collect(),
            proxy_protocol_from: Vec::new(),
        });
        self
    }

    /// Sets an `[smtp]` key to a TOML value (replacing an earlier setting).
    pub fn smtp(mut self, key: &str, toml_value: &str) -> WritConfig {
        self.smtp_options.retain(|(k, _)| k != key);
        self.smtp_options.push((key.into(), toml_value.into()));
        self
    }

    pub fn external(mut self, policy: &str) -> WritConfig {
        self.external = Some(policy.into());
        self
    }

    pub fn keys(mut self, keys: &TestKeys) -> WritConfig {
        self.keys_dir = Some(keys.dir());
        self
    }

    /// The config file text: listener `i` on its own port or else
    /// `ports[i]`, and `admin` for the admin endpoint.
    pub fn render(&self, ports: &[u16], admin: Option<u16>, keys_dir: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[keys]\ndir = {}\n", q(&keys_dir.display().to_string()));
        let _ = writeln!(t, "[log]\nlevel = {}\n", q(&self.log_level));
        let _ = writeln!(t, "[serve]");
        if let Some(g) = self.grace_secs {
            let _ = writeln!(t, "grace_secs = {g}");
        }
        if let Some(a) = admin {
            let _ = writeln!(t, "admin_listen = \"127.0.0.1:{a}\"");
        }
        for (k, v) in &self.serve_options {
            let _ = writeln!(t, "{k} = {v}");
        }
        let _ = writeln!(t, "\n[smtp]\nhostname = {}", q(&self.hostname));
        let _ = writeln!(t, "protected_domains = {}", list(&self.protected_domains));
        if let Some(e) = &self.external {
            let _ = writeln!(t, "external = {}", q(e));
        }
        for (key, path) in [
            ("directory", &self.directory),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            if let Some(p) = path {
                let _ = writeln!(t, "{key} = {}", q(&p.display().to_string()));
            }
        }
        for (k, v) in &self.smtp_options {
            let _ = writeln!(t, "{k} = {v}");
        }
        for (l, &free) in self.listeners.iter().zip(ports) {
            let port = l.port.unwrap_or(free);
            let _ = writeln!(
                t,
                "\n[[smtp.listeners]]\nkind = {}\nlisten = \"127.0.0.1:{port}\"",
                q(&l.kind)
            );
            if !l.allowed_networks.is_empty() {
                let _ = writeln!(t, "allowed_networks = {}", list(&l.allowed_networks));
            }
            if !l.proxy_protocol_from.is_empty() {
                let _ = writeln!(t, "proxy_protocol_from = {}", list(&l.proxy_protocol_from));
            }
        }
        if let Some(p) = &self.provider {
            let _ = writeln!(
                t,
                "\n[provider.smtp]\naddress = {}\nsecurity = {}",
                q(&p.address),
                q(&p.security)
            );
            if let Some(ca) = &p.ca_file {
                let _ = writeln!(t, "ca_file = {}", q(&ca.display().to_string()));
            }
            if let Some(n) = &p.server_name {
                let _ = writeln!(t, "server_name = {}", q(n));
            }
            if let Some(s) = p.timeout_secs {
                let _ = writeln!(t, "timeout_secs = {s}");
            }
        }
        t.push('\n');
        t.push_str(&self.extra_toml);
        t
    }
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Bytes a child wrote to a pipe, collected by a reader thread.
type Captured = Arc<Mutex<Vec<u8>>>;

/// A running `writ serve`, killed when dropped.
pub struct Writ {
    child: Child,
    /// Config file and (unless given) keyring.
    tmp: tempfile::TempDir,
    /// The keyring made for this server when the config named none.
    pub keys: Option<TestKeys>,
    pub keys_dir: PathBuf,
    pub config_path: PathBuf,
    /// Each listener's kind and address, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    stderr: Captured,
    exit: Option<ExitStatus>,
}

impl Writ {
    /// `message` sealed by `writ seal` (the CLI) with this gateway's
    /// keyring: what an already-sealed message looks like to the relay.
    pub fn seal_with_cli(&self, message: &[u8]) -> Vec<u8> {
        let out = output_with_stdin(
            Command::new(WRIT)
                .env_remove("WRIT_PASSPHRASE_FILE")
                .arg("--keys")
                .arg(&self.keys_dir)
                .arg("seal")
                .current_dir(self.dir()),
            message,
        )
        .expect("run writ seal");
        assert!(
            out.status.success(),
            "writ seal: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Starts `writ serve` and waits until every listener is bound (and the
    /// admin endpoint answers). Panics with the log if it does not start.
    #[track_caller]
    pub fn start(cfg: &WritConfig) -> Writ {
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Writ::try_start(cfg) {
                Ok(w) => return w,
                Err(e) => {
                    let _ = writeln!(failures, "--- attempt {attempt}:\n{e}");
                }
            }
        }
        panic!("writ serve did not start:\n{failures}");
    }

    /// One start attempt; `Err` carries the exit status and log.
    pub fn try_start(cfg: &WritConfig) -> Result<Writ, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (keys, keys_dir) = match &cfg.keys_dir {
            Some(d) => (None, d.clone()),
            None => {
                let k = TestKeys::new();
                let d = k.dir();
                (Some(k), d)
            }
        };
        let ports: Vec<u16> = {
            let held: Vec<TcpListener> = cfg
                .listeners
                .iter()
                .map(|_| free_listener())
                .chain(cfg.admin.then(free_listener))
                .collect();
            held.iter()
                .map(|l| l.local_addr().expect("local addr").port())
                .collect()
        };
        let listener_ports: Vec<u16> = cfg
            .listeners
            .iter()
            .zip(&ports)
            .map(|(l, &free)| l.port.unwrap_or(free))
            .collect();
        let admin_port = cfg.admin.then(|| ports[cfg.listeners.len()]);
        let config_path = tmp.path().join("writ.toml");
        std::fs::write(
            &config_path,
            cfg.render(&listener_ports, admin_port, &keys_dir),
        )
        .map_err(|e| e.to_string())?;
        let passphrase_file = keys_dir.join("..").join("passphrase");
        let unlock_args: Vec<String> = if cfg.unlock {
            let file = match &keys {
                Some(k) => k.passphrase_file(),
                None => passphrase_file,
            };
            vec!["--passphrase-file".into(), file.display().to_string()]
        } else {
            Vec::new()
        };
        let unlock_args: Vec<&str> = unlock_args.iter().map(String::as_str).collect();
        let (child, stderr) = spawn_serve(
            &config_path,
            tmp.path(),
            &unlock_args,
            cfg.writ_log.as_deref(),
            &cfg.serve_env,
            cfg.max_open_files,
        )?;
        let mut writ = Writ {
            child,
            tmp,
            keys,
            keys_dir,
            config_path,
            listeners: cfg
                .listeners
                .iter()
                .zip(&listener_ports)
                .map(|(l, &p)| (l.kind.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, p))))
                .collect(),
            admin: admin_port.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
            stderr,
            exit: None,
        };
        let quiet = !matches!(cfg.log_level.as_str(), "info" | "debug" | "trace");
        match writ.wait_ready(quiet) {
            Ok(()) => Ok(writ),
            Err(e) => Err(format!(
                "{e}\n--- config\n{}\n--- writ serve log\n{}",
                std::fs::read_to_string(&writ.config_path).unwrap_or_default(),
                writ.log()
            )),
        }
    }

    /// Polls until the log names every listener address (or, when the log
    /// level hides that line, until each accepts a TCP connection) and the
    /// admin endpoint answers HTTP.
    fn wait_ready(&mut self, quiet: bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addresses: Vec<String> = self.listeners.iter().map(|(_, a)| a.to_string()).collect();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                self.exit = Some(status);
                return Err(format!("writ serve exited early ({status})"));
            }
            let log = self.log();
            let bound = addresses.iter().all(|a| {
                if quiet {
                    return a.parse().is_ok_and(|a: SocketAddr| {
                        TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
                    });
                }
                log.lines().any(|l| {
                    l.contains("listener ready")
                        && l.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                            .any(|word| word == a)
                })
            });
            let admin_ok = match self.admin {
                None => true,
                Some(a) => bound && http_get(a, "/metrics").is_ok(),
            };
            if bound && admin_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of the first listener of `kind`.
    #[track_caller]
    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {kind} listener configured"))
    }

    /// The first relay listener.
    pub fn relay_addr(&self) -> SocketAddr {
        self.addr("relay")
    }

    /// The keyring this server seals to (its own, if the config named none).
    #[track_caller]
    pub fn test_keys(&self) -> &TestKeys {
        self.keys
            .as_ref()
            .expect("this writ uses a keyring given in its config: use that TestKeys")
    }

    /// The temporary directory holding the config.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything `writ serve` wrote to stderr so far.
    pub fn log(&self) -> String {
        let bytes = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// Sends SIGTERM.
    #[track_caller]
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL, as a crash or a lost machine: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// Has the process exited? (Does not block.)
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the process to exit; panics with the log after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "writ serve still running {timeout:?} later; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET /healthz`: status code and body.
    #[track_caller]
    pub fn healthz(&self) -> (u16, String) {
        let admin = self.admin.expect("admin endpoint configured");
        http_get(admin, "/healthz").unwrap_or_else(|e| panic!("GET /healthz: {e}\n{}", self.log()))
    }

    /// `GET /metrics` (Prometheus text).
    #[track_caller]
    pub fn metrics(&self) -> String {
        let admin = self.admin.expect("admin endpoint configured");
        let (status, body) = http_get(admin, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log()));
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The sum of the samples of metric `name` whose labels include all of
    /// `labels` (0 when there is none).
    #[track_caller]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }
}

impl Drop for Writ {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `writ serve` with `config` (and extra arguments) expecting it to
/// fail at start-up; returns its output (with a deadline, so a server that
/// does start is killed and reported).
#[track_caller]
pub fn serve_expecting_failure(config: &Path, args: &[&str]) -> Output {
    let dir = config.parent().unwrap_or(Path::new("."));
    let (mut child, stderr) = spawn_serve(config, dir, args, None, &[], None)
        .unwrap_or_else(|e| panic!("spawn writ serve: {e}"));
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "writ serve did not exit; log:\n{}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The pipe reader thread finishes at EOF, shortly after the exit: wait
    // for the last bytes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stderr) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let bytes = stderr.lock().unwrap().clone();
    Output {
        status,
        stdout: Vec::new(),
        stderr: bytes,
    }
}

fn spawn_serve(
    config: &Path,
    dir: &Path,
    args: &[&str],
    writ_log: Option<&str>,
    env: &[(String, String)],
    max_open_files: Option<u64>,
) -> Result<(Child, Captured), String> {
    let mut command = match max_open_files {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}")).arg(WRIT);
            c
        }
        None => Command::new(WRIT),
    };
    command.envs(env.iter().map(|(k, v)| (k, v)));
    match writ_log {
        Some(filter) => command.env("WRIT_LOG", filter),
        None => command.env_remove("WRIT_LOG"),
    };
    let mut child = command
        .env_remove("WRIT_PASSPHRASE_FILE")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {WRIT}: {e}"))?;
    let stderr = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut pipe) = child.stderr.take() {
        let out = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
    }
    Ok((child, stderr))
}

/// A listener on a free loopback port (drop it to free the port).
pub fn free_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port")
}

/// A loopback port that was free a moment ago (nothing listens on it).
pub fn free_port() -> u16 {
    free_listener().local_addr().expect("local addr").port()
}

/// A minimal HTTP/1.1 GET: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("incomplete HTTP response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The sum of the samples of `name` in Prometheus text whose labels include
/// all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let have = |k: &str, v: &str| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        if labels.iter().all(|(k, v)| have(k, v))
            && let Ok(x) = value.trim().parse::<f64>()
        {
            sum += x;
        }
    }
    sum
}

/// An `age-keygen` identity in `dir`: (identity file, public recipient).
#[track_caller]
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("run age-keygen (scripts/install-deps installs age)");
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .trim()
        .to_string();
    (path, recipient)
}

/// `age -d -i identity`, panicking on failure.
#[track_caller]
pub fn age_decrypt(identity: &Path, armor: &[u8]) -> Vec<u8> {
    let out = output_with_stdin(Command::new("age").args(["-d", "-i"]).arg(identity), armor)
        .expect("run age");
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The armored payload (the last age block) of a stored sealed message.
#[track_caller]
pub fn payload_armor(stored: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(stored);
    let start = s
        .rfind("-----BEGIN AGE ENCRYPTED FILE-----")
        .expect("an armored age payload");
    let end = s
        .rfind("-----END AGE ENCRYPTED FILE-----")
        .expect("the end of the armored payload");
    format!("{}-----END AGE ENCRYPTED FILE-----\n", &s[start..end]).into_bytes()
}

/// Removes ANSI colour sequences (in case the log is coloured anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
