//! What every command shares: the loaded config, the resolved options,
//! audit recording and output.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use writ::config::{self, Config};
use writ::keys::Keyring;

pub mod approver;
pub mod audit;
pub mod disclose;
pub mod escrow;
pub mod keys;
pub mod mailbox;
pub mod message;
pub mod serve;

pub use keys::parse_recipient;
pub use message::{input, peek_header};

/// The most verbose level at which events and spans from outside writ's
/// own code (imap-next, imap-codec, rustls, hyper, tokio, ... and `log`
/// records) are ever printed, whatever `WRIT_LOG` says. Those libraries
/// log raw protocol bytes (LOGIN and AUTHENTICATE with passwords, FETCH
/// with opened mail) at debug and trace; writ's own events never carry
/// credentials or message content.
pub const LIBRARY_LOG_CAP: tracing::Level = tracing::Level::WARN;

/// May an event or span with this metadata be printed at all? writ's own
/// targets (`writ`, `writ::...`) as the filter says; anything else only at
/// [`LIBRARY_LOG_CAP`] or more severe. Applied after the `WRIT_LOG` filter,
/// so no directive (`imap_next=trace`, `rustls::conn=trace`,
/// `[span{field}]=trace`, plain `trace`) can turn library tracing back on.
pub fn loggable(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let ours = target == "writ" || target.starts_with("writ::");
    ours || *meta.level() <= LIBRARY_LOG_CAP
}

/// Logs to stderr: `WRIT_LOG` (an `EnvFilter`) when set and valid, else
/// `default` (such as `writ=info`); library output capped by [`loggable`].
pub fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, filter::filter_fn, fmt};
    let filter = EnvFilter::try_from_env("WRIT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(filter_fn(loggable));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The error and its causes on one line ([`writ::one_line`]).
pub fn one_line(e: &anyhow::Error) -> String {
    writ::one_line(e.as_ref())
}

/// What every command gets: the loaded config and the resolved options.
pub struct Context {
    pub config: Config,
    pub config_source: String,
    pub keys_dir: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    /// The token PIN of an HSM keyring (`--pin-file`, `WRIT_PIN_FILE`).
    pub pin_file: Option<PathBuf>,
    pub operator: String,
    /// The runtime the state backend's connections live on (made on first
    /// use, by commands that touch the audit chain).
    runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
    /// The audit chain on the configured backend (opened on first use).
    audit: std::sync::OnceLock<writ::state::AuditLog>,
}

impl Context {
    pub fn new(
        config_file: Option<&Path>,
        keys_dir: Option<PathBuf>,
        passphrase_file: Option<PathBuf>,
        pin_file: Option<PathBuf>,
        operator: Option<&str>,
    ) -> Result<Context> {
        let (config, config_source) = match config_file {
            Some(path) => (Config::load(path)?, path.display().to_string()),
            None => {
                let path = Path::new(config::DEFAULT_PATH);
                let source = if path.exists() {
                    path.display().to_string()
                } else {
                    format!("defaults ({} not found)", path.display())
                };
                (Config::load_or_default(path)?, source)
            }
        };
        let keys_dir = keys_dir.unwrap_or_else(|| config.keys.dir.clone());
        Ok(Context {
            config_source,
            keys_dir,
            passphrase_file,
            pin_file,
            operator: writ::audit::operator(operator, config.audit.operator.as_deref()),
            config,
            runtime: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Runs `future` to completion on this command's state runtime. Not
    /// from inside another runtime (the mailbox commands' own).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        if self.runtime.get().is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let _ = self.runtime.set(runtime);
        }
        let runtime = self.runtime.get().context("no async runtime")?;
        Ok(runtime.block_on(future))
    }

    /// The audit chain on the backend `[state]` names (PostgreSQL: connected
    /// and migrated on first use).
    pub fn audit_log(&self) -> Result<&writ::state::AuditLog> {
        if let Some(log) = self.audit.get() {
            return Ok(log);
        }
        let log = self.block_on(writ::state::AuditLog::open(
            &self.config.state,
            &self.keys_dir,
        ))??;
        Ok(self.audit.get_or_init(|| log))
    }

    /// Refuses unless an audit record can be appended: called before an
    /// operation that must be recorded changes anything.
    pub fn check_audit_writable(&self) -> Result<()> {
        let log = self.audit_log()?;
        self.block_on(log.check_writable())??;
        Ok(())
    }

    pub fn passphrase(&self, prompt: &str, confirm: bool) -> Result<secrecy::SecretString> {
        Ok(writ::keys::passphrase_from(
            self.passphrase_file.as_deref(),
            prompt,
            confirm,
        )?)
    }

    /// The token PIN (HSM keyring): `--pin-file`, `WRIT_PIN_FILE`, else
    /// the prompt.
    pub fn pin(&self) -> Result<secrecy::SecretString> {
        Ok(writ::keys::pin_from(
            self.pin_file.as_deref(),
            "Token PIN: ",
        )?)
    }

    /// Unlocks the keyring the way it is protected: the token PIN for an
    /// HSM keyring, else the passphrase.
    pub fn unlock(&self, keyring: &Keyring) -> Result<writ::keys::Unlocked> {
        if keyring.token().is_some() {
            Ok(keyring.unlock_on_token(&self.pin()?)?)
        } else {
            let passphrase = self.passphrase("Keyring passphrase: ", false)?;
            Ok(keyring.unlock(&passphrase)?)
        }
    }
}

/// Appends an audit record for an operation that has just succeeded.
pub fn audit_record(
    ctx: &Context,
    action: &str,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let log = ctx
        .audit_log()
        .with_context(|| format!("{action} done, but it could not be recorded in the audit log"))?;
    ctx.block_on(log.append(&ctx.operator, action, params))?
        .with_context(|| format!("{action} done, but it could not be recorded in the audit log"))?;
    Ok(())
}

/// Records an escrow operation in the keyring's audit log when there is
/// one; escrow works without a keyring (that is what it is for), so a
/// missing or unwritable log is a warning, not a failure.
pub fn audit_if_possible(
    ctx: &Context,
    action: &str,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) {
    if !Keyring::exists(&ctx.keys_dir) {
        eprintln!(
            "writ: warning: {action} is not recorded in an audit log: no keyring in {}",
            ctx.keys_dir.display()
        );
    } else if let Err(e) = ctx
        .audit_log()
        .and_then(|log| Ok(ctx.block_on(log.append(&ctx.operator, action, params))??))
    {
        eprintln!(
            "writ: warning: {action} is not recorded in an audit log: {}",
            one_line(&e)
        );
    }
}

/// Writes to stdout, turning a closed pipe into an error instead of the
/// panic `print!` would give.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("cannot use PostgreSQL db:5432/writ")]
        Db(#[source] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("state: {0}")]
        State(#[from] Inner),
    }

    #[test]
    fn a_cause_already_in_the_text_before_it_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = anyhow::Error::from(Outer::from(Inner::Db(io)));
        assert_eq!(
            super::one_line(&e),
            "state: cannot use PostgreSQL db:5432/writ: connection refused"
        );
        let plain = anyhow::anyhow!("a\nb").context("top");
        assert_eq!(super::one_line(&plain), "top: a b");
    }
}
