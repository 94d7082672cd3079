//! The sweep (`[sweep]` in `writ serve`): plaintext that reached the
//! provider without passing through writ (webmail, phone apps, the
//! provider's own Sent copies, deliveries inside the provider) is sealed
//! in place, continuously.
//!
//! - [`ledger`]: per mailbox, how far the sweep has looked and which
//!   plaintext it found (pure).
//! - [`account`]: one round over an account's mailboxes, and the loop that
//!   repeats it (woken by a watcher, else every `poll_secs`, backing off
//!   after provider errors).
//! - [`notify`]: the account's watcher that wakes its loop: NOTIFY where
//!   the provider offers it (every mailbox, one connection), else
//! - [`idle`]: IDLE watchers on the `idle` mailboxes.
//!
//! The sealing itself is the mailbox-job engine's
//! ([`crate::jobs::mover::Mover::run_uids`]): flags and INTERNALDATE kept,
//! an original expunged only once its copy was read back and opens to it,
//! a checkpoint per mailbox (in `[sweep] dir`, or in the shared database
//! with `[state] backend = "postgres"`) so that a `writ serve` killed at
//! any instant loses and duplicates nothing once it, or another gateway,
//! runs again.
//!
//! Several gateways may all run the sweep over the same accounts on one
//! database: each mover run takes the mailbox's lease
//! ([`crate::jobs::checkpoint`]), so one gateway at a time seals a mailbox;
//! the others skip it for that round (their ledgers keep the plaintext
//! they found pending, and find it sealed or gone when they next get the
//! lease).
//!
//! Invariants:
//! - `writ serve` checks the sweep's `[state]` settings at start (a bad
//!   one stops start-up), but connects its checkpoint store (the
//!   database, and its migration) only on the sweep's own thread
//!   ([`Prepared::start`]): a database that is down or failing over delays
//!   the sweep, never the relay's or the proxy's listeners. Each failed
//!   attempt is logged once (the database named without its password) and
//!   retried after the `[jobs]` backoff (`backoff_ms`, doubled each time,
//!   at most a minute) until it succeeds or shutdown; meanwhile
//!   `writ_sweep_running` is 0, and 1 once the accounts are swept.
//! - The sweep runs on a thread of its own with a single-threaded
//!   runtime: its sealing (CPU), checkpoint writes (fsync or the
//!   database), lease heartbeats and token commands never hold a thread
//!   that serves clients.
//! - Bounded work per round: at most `max_scan_per_round` messages looked
//!   at and `max_per_round` sealed per mailbox, at most
//!   [`account::MAX_MAILBOXES`] mailboxes per account.
//! - Every wait is bounded: provider I/O by the provider timeout, an IDLE
//!   or a wait for NOTIFY events by `poll_secs`, a token command by [`TOKEN_COMMAND_TIMEOUT`], a pause
//!   by `max_backoff_secs`; shutdown is seen at each of them (a mover run
//!   in progress gets `serve.grace_secs`, then is dropped, which the
//!   checkpoint makes as safe as a crash).
//! - Mailboxes named in `skip` or with a special use in
//!   `skip_special_use` (default: Drafts, `\Drafts`) are never touched.

pub mod account;
pub mod idle;
pub mod ledger;
pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::names;
use crate::config::SweepConfig;
use crate::envelope::Sealer;
use crate::imap::upstream::Target;
use crate::jobs::checkpoint::Store;
use crate::jobs::client::ClientError;
use crate::jobs::login::{Credentials, LoginError, SecretSource};
use crate::jobs::mover::{Kind, Mover, Progress};
use crate::jobs::retry::Backoff;
use crate::keys::Unlocked;
use crate::state::CheckpointBackend;

/// A token command that has not printed its token by then is given up on
/// for this round (it keeps running on its blocking thread until it exits).
pub const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of one mover run inside a round (the round itself is retried
/// with the sweep's own backoff).
const MOVER_RETRIES: u32 = 2;

/// Why a round or a watch failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Job(#[from] crate::jobs::mover::JobError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("the token command did not answer within {} s", TOKEN_COMMAND_TIMEOUT.as_secs())]
    TokenTimeout,
    #[error("the provider does not offer IDLE; the mailbox is polled instead")]
    NoIdle,
    #[error("stopping")]
    Stopping,
    #[error(
        "the provider is Gmail (X-GM-EXT-1), whose folders are labels: sweeping every folder \
         would seal each message once per label and leave its original in All Mail; set \
         [sweep] mailboxes = [\"[Gmail]/All Mail\"] (see the README's Gmail paragraph)"
    )]
    Labels,
}

/// What the sweep seals with and opens its copies with; replaced when
/// `writ serve` reloads the keyring (SIGHUP after `writ keys rotate`).
pub struct SweepKeys {
    pub sealer: Sealer,
    pub unlocked: Arc<Unlocked>,
}

/// Everything the sweep needs, shared by its accounts.
pub struct Sweep {
    pub config: SweepConfig,
    pub target: Target,
    keys: watch::Receiver<Arc<SweepKeys>>,
    /// Where the mover's checkpoints and leases live: `[sweep] dir`, or
    /// the shared database on `[state] backend = "postgres"`.
    pub checkpoints: Arc<dyn Store>,
    /// Messages per mover batch (`[jobs] batch`).
    batch: usize,
    /// The mover's first pause between its own retries (`[jobs] backoff_ms`).
    mover_backoff: Duration,
    /// How long a mover run in progress may go on after shutdown began.
    pub grace: Duration,
}

/// Logs the mover's retries (the mover counts its own work).
struct Quiet;

impl Progress for Quiet {
    fn found(&self, _: &str, _: &str, _: u64) {}
    fn moved(&self, _: u64) {}
    fn retrying(&self, account: &str, mailbox: &str, attempt: u32, why: &ClientError) {
        tracing::info!(account, mailbox, attempt, error = %why, "sweep: retrying");
    }
}

impl Sweep {
    /// The sweep for `config`, sealing and reading copies back with the
    /// latest `keys`, checkpoints in `checkpoints`; `jobs` gives the batch
    /// size and the mover's backoff.
    pub fn new(
        config: &SweepConfig,
        target: Target,
        keys: watch::Receiver<Arc<SweepKeys>>,
        checkpoints: Arc<dyn Store>,
        jobs: &crate::config::JobsConfig,
        grace: Duration,
    ) -> Sweep {
        Sweep {
            config: config.clone(),
            target,
            keys,
            checkpoints,
            batch: jobs.batch.clamp(1, 1000),
            mover_backoff: Duration::from_millis(jobs.backoff_ms),
            grace,
        }
    }

    /// Is `epoch` one of the keyring's (a message marked with any other is
    /// plaintext to seal: anyone can write the marker)?
    pub fn knows(&self, epoch: &str) -> bool {
        self.keys.borrow().sealer.knows(epoch)
    }

    /// The mailbox-job engine with the current keys.
    pub fn mover(&self) -> Mover {
        let keys = self.keys.borrow().clone();
        Mover {
            kind: Kind::Seal,
            target: self.target.clone(),
            sealer: keys.sealer.clone(),
            keys: keys.unlocked.clone(),
            checkpoints: self.checkpoints.clone(),
            batch: self.batch,
            retries: MOVER_RETRIES,
            backoff: self.mover_backoff,
            allow_expunge_all: self.config.allow_expunge_all,
            dry_run: false,
            progress: Arc::new(Quiet),
        }
    }

    /// Two tasks per account (its loop and its watcher), until `stop`.
    async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        metrics::gauge!(names::SWEEP_RUNNING).set(1.0);
        let mut tasks = tokio::task::JoinSet::new();
        tracing::info!(
            accounts = self.config.accounts.len(),
            poll_secs = self.config.poll_secs,
            bound_secs = self.config.bound_secs,
            "sweep started"
        );
        for user in &self.config.accounts {
            let wake = Arc::new(tokio::sync::Notify::new());
            tasks.spawn(notify::watch(
                self.clone(),
                user.clone(),
                wake.clone(),
                stop.clone(),
            ));
            tasks.spawn(account::run(self.clone(), user.clone(), wake, stop.clone()));
        }
        while tasks.join_next().await.is_some() {}
        metrics::gauge!(names::SWEEP_RUNNING).set(0.0);
        tracing::info!("sweep stopped");
    }

    /// The login for `user`, resolved now (a token command runs on a
    /// blocking thread, at most [`TOKEN_COMMAND_TIMEOUT`]).
    pub async fn credentials(&self, user: &str) -> Result<Credentials, SweepError> {
        let source = SecretSource {
            password_file: self.config.password_file.clone(),
            oauth2_token_file: self.config.oauth2_token_file.clone(),
            oauth2_token_command: self.config.oauth2_token_command.clone(),
        };
        let account = user.to_string();
        let resolving = tokio::task::spawn_blocking(move || source.resolve(&account));
        let secret = match tokio::time::timeout(TOKEN_COMMAND_TIMEOUT, resolving).await {
            Ok(Ok(secret)) => secret?,
            Ok(Err(_)) | Err(_) => return Err(SweepError::TokenTimeout),
        };
        Ok(Credentials {
            user: user.to_string(),
            master: self.config.master_user.clone(),
            separator: self.config.master_separator.clone(),
            secret,
        })
    }

    /// One more failure in a row for `account`: counted in
    /// `failures` and the sweep's error metric; the pause before trying
    /// again.
    fn failed(&self, account: &str, failures: &mut u32) -> Duration {
        *failures = failures.saturating_add(1);
        metrics::counter!(names::SWEEP_ERRORS_TOTAL, "account" => account.to_owned()).increment(1);
        self.backoff(*failures)
    }

    /// The pause after `failures` failures in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let first = Duration::from_secs(self.config.backoff_secs.max(1));
        first
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(Duration::from_secs(self.config.max_backoff_secs.max(1)))
    }
}

/// The sweep as `writ serve` prepared it: checked, its keys unlocked, its
/// checkpoint store not connected yet (the database may be down).
pub struct Prepared {
    pub config: SweepConfig,
    pub target: Target,
    pub keys: watch::Receiver<Arc<SweepKeys>>,
    /// Checked at start; connected by [`Prepared::start`].
    pub checkpoints: CheckpointBackend,
    pub jobs: crate::config::JobsConfig,
    pub grace: Duration,
}

impl Prepared {
    /// Starts the sweep on a thread of its own: it connects its checkpoint
    /// store (retrying while that fails), then sweeps. The returned
    /// receiver completes when it has stopped (after `stop` turned true).
    pub fn start(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done, finished) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        metrics::gauge!(names::SWEEP_RUNNING).set(0.0);
        std::thread::Builder::new()
            .name("writ-sweep".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Some(checkpoints) = self.connect(&mut stop).await else {
                        tracing::info!("sweep stopped before its checkpoint store was reached");
                        return;
                    };
                    let sweep = Sweep::new(
                        &self.config,
                        self.target,
                        self.keys,
                        checkpoints,
                        &self.jobs,
                        self.grace,
                    );
                    Arc::new(sweep).run(stop).await;
                });
                let _ = done.send(());
            })?;
        Ok(finished)
    }

    /// The checkpoint store, connected: tried until it succeeds (`None`:
    /// `stop` turned true first), each failure logged and followed by the
    /// `[jobs]` backoff.
    async fn connect(&self, stop: &mut watch::Receiver<bool>) -> Option<Arc<dyn Store>> {
        let backoff = Backoff {
            retries: u32::MAX,
            first: Duration::from_millis(self.jobs.backoff_ms.max(1)),
        };
        let mut attempt = 0u32;
        loop {
            if *stop.borrow() {
                return None;
            }
            let connected = tokio::select! {
                _ = stopping(stop) => return None,
                c = self.checkpoints.connect() => c,
            };
            match connected {
                Ok(store) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "sweep: checkpoint store reached");
                    }
                    return Some(store);
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let wait = backoff.pause(attempt);
                    tracing::warn!(
                        // Its causes say why (refused, timed out,
                        // authentication failed); none holds a password:
                        // `crate::state` names the database without it.
                        error = %crate::one_line(&e),
                        attempt,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "sweep: cannot reach its checkpoint store ([state]); not sweeping until \
                         it answers (the relay and the IMAP proxy are not affected)"
                    );
                    if !pause(stop, wait).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `pause`; false if `stop` turned true first.
pub async fn pause(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stopping(stop) => false,
        _ = tokio::time::sleep(pause) => true,
    }
}
