//! `writ` commands that work on a mailbox at the harness provider (`writ
//! mailbox ...`, `writ keys retire`, `writ disclose --account`): [`Jobs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::provider::User;
use super::writ::{TestKeys, WRIT};

/// The `[provider.imap]` lines for the harness provider's plain IMAP port.
pub const PLAIN: &str = "security = \"plain\"";

/// A keyring ([`TestKeys`]) and a working directory with `writ.toml`: the
/// keyring, `[provider.imap]` and, for jobs, `[jobs]` with checkpoints in
/// `jobs/`.
pub struct Jobs {
    pub keys: TestKeys,
    tmp: tempfile::TempDir,
}

impl Jobs {
    /// The provider's IMAP at `imap` in plain text, a 20 s timeout, 20 ms
    /// back-off between retries.
    pub fn new(imap: SocketAddr) -> Jobs {
        Jobs::with_provider(imap, PLAIN)
    }

    /// Like [`Jobs::new`]; `provider` holds the `[provider.imap]` lines
    /// besides the address and the timeout.
    pub fn with_provider(imap: SocketAddr, provider: &str) -> Jobs {
        Jobs::with_config(
            imap,
            &format!("{provider}\ntimeout_secs = 20"),
            Some("backoff_ms = 20"),
        )
    }

    /// See [`Jobs::configure`].
    pub fn with_config(imap: SocketAddr, provider: &str, jobs: Option<&str>) -> Jobs {
        let env = Jobs {
            keys: TestKeys::new(),
            tmp: tempfile::tempdir().unwrap(),
        };
        env.configure(imap, provider, jobs);
        env
    }

    /// (Re)writes `writ.toml`: the provider's IMAP at `imap` with the
    /// `provider` lines, and a `[jobs]` section with the `jobs` lines if
    /// given. The keyring and the checkpoints stay.
    pub fn configure(&self, imap: SocketAddr, provider: &str, jobs: Option<&str>) {
        let mut config = format!(
            "[keys]\ndir = {:?}\n\n[provider.imap]\naddress = \"{imap}\"\n{provider}\n",
            self.keys.dir().display().to_string(),
        );
        if let Some(jobs) = jobs {
            config += &format!(
                "\n[jobs]\ndir = {:?}\n{jobs}\n",
                self.checkpoints().display().to_string(),
            );
        }
        std::fs::write(self.config(), config).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.path("writ.toml")
    }

    /// The working directory.
    pub fn dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// `rel` in the working directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Where jobs keep their checkpoints.
    pub fn checkpoints(&self) -> PathBuf {
        self.path("jobs")
    }

    /// Writes `user`'s password to a file; returns its path.
    pub fn password_file(&self, user: &User) -> PathBuf {
        let p = self.path(&format!("{}.password", user.name));
        std::fs::write(&p, format!("{}\n", user.password)).unwrap();
        p
    }

    /// `writ --config writ.toml --passphrase-file KEYS ARGS` in the working
    /// directory, with no passphrase file or provider password from the
    /// environment, `USER=tester` and stdin closed; not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WRIT);
        c.env_remove("WRIT_PASSPHRASE_FILE")
            .env_remove("WRIT_PROVIDER_PASSWORD")
            .env("USER", "tester")
            .arg("--config")
            .arg(self.config())
            .arg("--passphrase-file")
            .arg(self.keys.passphrase_file())
            .args(args)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `writ ARGS --account USER --password-file F`.
    pub fn run_as(&self, user: &User, args: &[&str]) -> Output {
        let pw = self.password_file(user).display().to_string();
        let mut all = args.to_vec();
        all.extend(["--account", &user.name, "--password-file", &pw]);
        self.run(&all)
    }

    /// `writ mailbox SUB --account USER --password-file F ARGS`, not
    /// started yet.
    pub fn job_command(&self, user: &User, sub: &str, args: &[&str]) -> Command {
        let pw = self.password_file(user).display().to_string();
        self.command(&mailbox_args(
            sub,
            &user.name,
            &["--password-file", &pw],
            args,
        ))
    }

    /// Runs `writ mailbox SUB --account USER --password-file F ARGS`.
    pub fn job(&self, user: &User, sub: &str, args: &[&str]) -> Output {
        self.job_command(user, sub, args).output().unwrap()
    }

    /// Expects `out` to be a success; returns its stdout.
    #[track_caller]
    pub fn ok(&self, out: Output) -> String {
        assert!(
            out.status.success(),
            "writ failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// `mailbox SUB --account ACCOUNT CREDENTIALS... ARGS...`
pub fn mailbox_args<'a>(
    sub: &'a str,
    account: &'a str,
    credentials: &[&'a str],
    args: &[&'a str],
) -> Vec<&'a str> {
    let mut all = vec!["mailbox", sub, "--account", account];
    all.extend_from_slice(credentials);
    all.extend_from_slice(args);
    all
}
