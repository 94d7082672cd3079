//! Mailbox-job checkpoints and their leases in PostgreSQL: the
//! [`crate::jobs::checkpoint::Store`] of `[state] backend = "postgres"`,
//! shared by every gateway (`writ mailbox seal|reseal` and the sweep).
//!
//! Tables (migration 3): `writ_job_checkpoint`, one row per (account,
//! mailbox, job) holding the checkpoint in the files' JSON format, and
//! `writ_mailbox_lease`, one row per (account, mailbox): the gateway that
//! holds it, a random holder token per run, and the expiry.
//!
//! Invariants:
//! - Every time is the database's clock (`now()`), never a gateway's, so
//!   gateways with skewed clocks agree on who holds a lease.
//! - A lease is taken only when there is none or it has expired (one
//!   `INSERT ... ON CONFLICT DO UPDATE ... WHERE expires <= now()`): two
//!   runs never both get it.
//! - A checkpoint is saved only in a transaction that first locks the
//!   run's lease row and finds it unexpired and still its own: a run whose
//!   lease was taken over writes nothing, and a run taking over waits for
//!   a save in progress, then reads it.
//! - The heartbeat renews every third of `lease_secs`, each renewal
//!   bounded by a third of it; the run knows the lease is its own only
//!   until `lease_secs` after the last renewal it *sent* that succeeded
//!   ([`LeaseClock`]), so it stops before another gateway can take over.
//! - The mailbox name INBOX is one lease whatever its case (RFC 3501).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Db, StateError};
use crate::jobs::checkpoint::{Checkpoint, CheckpointError, Lease, LeaseClock, Pending, Store};

pub use crate::config::{MAX_LEASE_SECS, MIN_LEASE_SECS};

/// Checkpoints and leases in the shared database.
pub struct PgCheckpoints {
    db: Db,
    lease: Duration,
}

/// The lease key of a mailbox: INBOX in any case is INBOX.
fn lease_mailbox(mailbox: &str) -> &str {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        mailbox
    }
}

/// A random holder token (128 bits, hex).
fn holder_token() -> Option<String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(crate::hash::hex(&bytes))
}

impl PgCheckpoints {
    /// Checkpoints in `db`, leases of `lease_secs` (clamped to
    /// [`MIN_LEASE_SECS`]..=[`MAX_LEASE_SECS`]).
    pub fn new(db: Db, lease_secs: u64) -> PgCheckpoints {
        PgCheckpoints {
            db,
            lease: Duration::from_secs(lease_secs.clamp(MIN_LEASE_SECS, MAX_LEASE_SECS)),
        }
    }

    fn state_err(
        &self,
        account: &str,
        mailbox: &str,
    ) -> impl Fn(StateError) -> CheckpointError + use<> {
        let (account, mailbox) = (account.to_string(), mailbox.to_string());
        move |e| CheckpointError::State {
            account: account.clone(),
            mailbox: mailbox.clone(),
            source: Box::new(e),
        }
    }

    async fn take(&self, account: &str, mailbox: &str) -> Result<Lease, CheckpointError> {
        let fail = self.state_err(account, mailbox);
        let key = lease_mailbox(mailbox);
        let holder = holder_token().ok_or_else(|| {
            fail(StateError::Config(
                "the system's random number generator failed".into(),
            ))
        })?;
        let secs = self.lease.as_secs_f64();
        let client = self.db.client().await.map_err(&fail)?;
        let db_err = |e| fail(self.db.err()(e));
        // The row may expire or go between the two statements: look again.
        for _ in 0..3 {
            let sent = Instant::now();
            let taken = client
                .query_opt(
                    "INSERT INTO writ_mailbox_lease (account, mailbox, gateway, holder, expires)
                     VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                     ON CONFLICT (account, mailbox) DO UPDATE
                         SET gateway = EXCLUDED.gateway, holder = EXCLUDED.holder,
                             expires = EXCLUDED.expires
                         WHERE writ_mailbox_lease.expires <= now()
                     RETURNING holder",
                    &[&account, &key, &self.db.gateway(), &holder, &secs],
                )
                .await
                .map_err(db_err)?;
            if taken.is_some() {
                let clock = LeaseClock::new(sent + self.lease);
                let heartbeat = tokio::spawn(heartbeat(
                    self.db.clone(),
                    account.to_string(),
                    key.to_string(),
                    holder.clone(),
                    self.lease,
                    clock.clone(),
                ));
                return Ok(Lease::shared(account, mailbox, holder, clock, heartbeat));
            }
            let held = client
                .query_opt(
                    "SELECT gateway,
                            to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                     FROM writ_mailbox_lease
                     WHERE account = $1 AND mailbox = $2 AND expires > now()",
                    &[&account, &key],
                )
                .await
                .map_err(db_err)?;
            if let Some(row) = held {
                return Err(CheckpointError::Leased {
                    account: account.to_string(),
                    mailbox: mailbox.to_string(),
                    gateway: row.get(0),
                    until: row.get(1),
                });
            }
        }
        Err(fail(StateError::Config(
            "the mailbox lease kept changing hands; run again".into(),
        )))
    }

    async fn read(
        &self,
        account: &str,
        mailbox: &str,
        job: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let fail = self.state_err(account, mailbox);
        let client = self.db.client().await.map_err(&fail)?;
        let row = client
            .query_opt(
                "SELECT checkpoint FROM writ_job_checkpoint
                 WHERE account = $1 AND mailbox = $2 AND job = $3",
                &[&account, &mailbox, &job],
            )
            .await
            .map_err(|e| fail(self.db.err()(e)))?;
        let row = match row {
            Some(row) => Some(row),
            // INBOX's row as an older writ keyed it, by the name as the
            // administrator wrote it (`--mailbox inbox`): taken as INBOX's,
            // so a batch that run left in flight is resolved, not sealed
            // again; the next save writes it under INBOX (the old row is
            // left, never read again while INBOX's exists).
            None if mailbox.eq_ignore_ascii_case("INBOX") => client
                .query_opt(
                    "SELECT checkpoint FROM writ_job_checkpoint
                     WHERE account = $1 AND upper(mailbox) = 'INBOX' AND mailbox <> $2
                       AND job = $3
                     ORDER BY mailbox LIMIT 1",
                    &[&account, &mailbox, &job],
                )
                .await
                .map_err(|e| fail(self.db.err()(e)))?,
            None => None,
        };
        let Some(row) = row else {
            return Ok(Checkpoint::fresh(account, mailbox, job));
        };
        let text: String = row.get(0);
        let damaged = |why: String| CheckpointError::DamagedRow {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            why,
        };
        let mut cp: Checkpoint = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        let same_mailbox = cp.mailbox == mailbox
            || (mailbox.eq_ignore_ascii_case("INBOX") && cp.mailbox.eq_ignore_ascii_case("INBOX"));
        if cp.account != account || !same_mailbox || cp.job != job {
            return Err(damaged("it names another account, mailbox or job".into()));
        }
        cp.mailbox = mailbox.to_string();
        Ok(cp)
    }

    async fn write(&self, cp: &mut Checkpoint, lease: &Lease) -> Result<(), CheckpointError> {
        let fail = self.state_err(&cp.account, &cp.mailbox);
        let (account, mailbox) = (cp.account.clone(), cp.mailbox.clone());
        let lost = || CheckpointError::LeaseLost {
            account: account.clone(),
            mailbox: mailbox.clone(),
        };
        let holder = lease.holder().ok_or_else(lost)?.to_string();
        lease.check()?;
        let text = cp
            .to_json()
            .map_err(|e| fail(StateError::Config(format!("checkpoint: {e}"))))?;
        let text = String::from_utf8(text)
            .map_err(|e| fail(StateError::Config(format!("checkpoint: {e}"))))?;
        let mut client = self.db.client().await.map_err(&fail)?;
        let db_err = |e| fail(self.db.err()(e));
        let tx = client.transaction().await.map_err(db_err)?;
        let ours = tx
            .query_opt(
                "SELECT 1 FROM writ_mailbox_lease
                 WHERE account = $1 AND mailbox = $2 AND holder = $3 AND expires > now()
                 FOR UPDATE",
                &[&cp.account, &lease_mailbox(&cp.mailbox), &holder],
            )
            .await
            .map_err(db_err)?;
        if ours.is_none() {
            return Err(lost());
        }
        tx.execute(
            "INSERT INTO writ_job_checkpoint (account, mailbox, job, checkpoint, gateway)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, mailbox, job) DO UPDATE
                 SET checkpoint = EXCLUDED.checkpoint, gateway = EXCLUDED.gateway,
                     updated = now()",
            &[&cp.account, &cp.mailbox, &cp.job, &text, &self.db.gateway()],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn give_back(&self, lease: Lease) {
        let Some(holder) = lease.holder().map(str::to_string) else {
            return;
        };
        lease.stop_heartbeat();
        let release = async {
            let client = self.db.client().await.ok()?;
            client
                .execute(
                    "DELETE FROM writ_mailbox_lease
                     WHERE account = $1 AND mailbox = $2 AND holder = $3",
                    &[&lease.account, &lease_mailbox(&lease.mailbox), &holder],
                )
                .await
                .ok()
        };
        if tokio::time::timeout(self.lease / 3, release).await.is_err() {
            tracing::warn!(
                account = %lease.account, mailbox = %lease.mailbox,
                "the mailbox lease could not be given back; it expires by itself"
            );
        }
    }
}

/// Renews the lease every third of `lease` until aborted or lost.
async fn heartbeat(
    db: Db,
    account: String,
    mailbox: String,
    holder: String,
    lease: Duration,
    clock: Arc<LeaseClock>,
) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let renew = async {
            let client = db.client().await?;
            let rows = client
                .execute(
                    "UPDATE writ_mailbox_lease SET expires = now() + make_interval(secs => $4)
                     WHERE account = $1 AND mailbox = $2 AND holder = $3 AND expires > now()",
                    &[&account, &mailbox, &holder, &lease.as_secs_f64()],
                )
                .await
                .map_err(db.err())?;
            Ok::<_, StateError>(rows == 1)
        };
        match tokio::time::timeout(every, renew).await {
            Ok(Ok(true)) => clock.renewed(sent + lease),
            Ok(Ok(false)) => {
                clock.lost();
                tracing::warn!(
                    %account, %mailbox,
                    "the mailbox lease expired before it was renewed; the run stops"
                );
                return;
            }
            Ok(Err(e)) => tracing::warn!(
                %account, %mailbox, error = %e, "cannot renew the mailbox lease; trying again"
            ),
            Err(_) => tracing::warn!(
                %account, %mailbox, "renewing the mailbox lease timed out; trying again"
            ),
        }
    }
}

impl Store for PgCheckpoints {
    fn lease<'a>(&'a self, account: &'a str, mailbox: &'a str) -> Pending<'a, Lease> {
        Box::pin(self.take(account, mailbox))
    }

    fn load<'a>(
        &'a self,
        account: &'a str,
        mailbox: &'a str,
        job: &'a str,
    ) -> Pending<'a, Checkpoint> {
        Box::pin(self.read(account, mailbox, job))
    }

    fn save<'a>(&'a self, cp: &'a mut Checkpoint, lease: &'a Lease) -> Pending<'a, ()> {
        Box::pin(self.write(cp, lease))
    }

    fn release(&self, lease: Lease) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.give_back(lease))
    }
}
