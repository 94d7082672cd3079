//! One account's sweep: rounds over its mailboxes, repeated when its
//! watcher (NOTIFY or IDLE, [`super::notify`]) wakes it, every `poll_secs` otherwise, at once while work is
//! left over, and after a pause that doubles per failure when the
//! provider fails.
//!
//! A round: log in; LIST (dropping what is skipped); per mailbox EXAMINE,
//! then a header scan of the UIDs that arrived since the last look (at
//! most `max_scan_per_round`); log out. Then per mailbox with plaintext
//! (or a batch a dead run left in its checkpoint) one mover run over at
//! most `max_per_round` of those UIDs; a mailbox whose lease another
//! gateway holds is left to it for that round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;
use tokio::sync::{Notify, watch};

use super::ledger::Ledger;
use super::{Sweep, SweepError, pause, stopping};
use crate::admin::names;
use crate::jobs::checkpoint::CheckpointError;
use crate::jobs::client::{Client, ClientError};
use crate::jobs::login::Credentials;
use crate::jobs::mover::JobError;
use crate::jobs::scan;

/// Mailboxes swept per account, at most (the first ones LIST names).
pub const MAX_MAILBOXES: usize = 1000;

/// What one round left behind.
struct Outcome {
    /// Work is left over (a bound was hit): the next round follows at once.
    more: bool,
    /// Mailboxes left this round on an error of their own (the others
    /// were swept): counted as errors, not backed off.
    stopped: u64,
}

/// An account's ledgers, one per mailbox swept.
#[derive(Default)]
struct Books {
    ledgers: HashMap<String, Ledger>,
}

/// Sweeps `user` until `stop`.
pub async fn run(
    sweep: Arc<Sweep>,
    user: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut books = Books::default();
    let mut failures = 0u32;
    let poll = Duration::from_secs(sweep.config.poll_secs.max(1));
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match round(&sweep, &user, &mut books, &mut stop).await {
            Ok(outcome) => {
                failures = 0;
                metrics::counter!(names::SWEEP_ROUNDS_TOTAL, "account" => user.clone())
                    .increment(1);
                if outcome.stopped > 0 {
                    metrics::counter!(names::SWEEP_ERRORS_TOTAL, "account" => user.clone())
                        .increment(outcome.stopped);
                }
                if outcome.more { Duration::ZERO } else { poll }
            }
            Err(SweepError::Stopping) => return,
            Err(e) => {
                let wait = sweep.failed(&user, &mut failures);
                tracing::warn!(
                    account = %user, error = %e, retry_in_secs = wait.as_secs(),
                    "sweep: round failed"
                );
                // Backing off: IDLE wake-ups wait too.
                if !pause(&mut stop, wait).await {
                    return;
                }
                continue;
            }
        };
        publish_oldest(&sweep, &user, &books);
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = stopping(&mut stop) => return,
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The oldest unsealed plaintext's age as a gauge; overdue plaintext
/// (older than `bound_secs`) is logged.
fn publish_oldest(sweep: &Sweep, user: &str, books: &Books) {
    let now = unix_now();
    let oldest = books.ledgers.values().filter_map(Ledger::oldest).min();
    let age = oldest.map_or(0, |o| now.saturating_sub(o).max(0));
    metrics::gauge!(names::SWEEP_OLDEST_SECONDS, "account" => user.to_string()).set(age as f64);
    let cutoff = now.saturating_sub(sweep.config.bound_secs as i64);
    let overdue: usize = books.ledgers.values().map(|l| l.older_than(cutoff)).sum();
    if overdue > 0 {
        tracing::warn!(
            account = %user, overdue, oldest_secs = age, bound_secs = sweep.config.bound_secs,
            "sweep: plaintext older than the bound is still unsealed"
        );
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One round over `user`'s mailboxes.
async fn round(
    sweep: &Sweep,
    user: &str,
    books: &mut Books,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, SweepError> {
    let creds = sweep.credentials(user).await?;
    let mut client = Client::login(&sweep.target, &creds).await?;
    if sweep.config.mailboxes.is_empty() && client.has_capability("X-GM-EXT-1") {
        // Gmail: folders are labels, so sealing every folder would seal a
        // message once per label and leave its original in All Mail (see
        // `writ mailbox seal --all`, refused there too).
        client.logout().await;
        return Err(SweepError::Labels);
    }
    let names = mailboxes(sweep, &mut client).await?;
    books.ledgers.retain(|name, _| names.contains(name));
    let mut behind = Vec::with_capacity(names.len());
    let mut failed = None;
    let mut stopped = 0u64;
    for name in &names {
        if *stop.borrow() {
            return Err(SweepError::Stopping);
        }
        let ledger = books.ledgers.entry(name.clone()).or_default();
        match look(sweep, user, &mut client, name, ledger).await {
            Ok(b) => behind.push(Some(b)),
            // Gone since LIST (another client deleted or renamed it, or
            // is still making it: the provider listed it a moment
            // early): nothing to sweep there now, and no error; a
            // mailbox that exists is looked at next round.
            Err(SweepError::Client(e)) if gone_since_list(&e) => {
                tracing::info!(account = %user, mailbox = %name, "sweep: mailbox gone since it was listed");
                behind.push(None);
            }
            // One mailbox the provider answers wrongly (or refuses to
            // select) is left this round; the others are still looked at
            // and sealed, and the round ends as failed once they are.
            Err(SweepError::Client(e)) if client_mailbox_only(&e) => {
                tracing::warn!(account = %user, mailbox = %name, error = %e, "sweep: mailbox not looked at this round");
                behind.push(None);
                let usable = matches!(e, ClientError::Refused { .. });
                failed.get_or_insert(SweepError::Client(e));
                stopped += 1;
                if !usable {
                    // A deadline or a cap passed: the session is spent.
                    client.logout().await;
                    client = Client::login(&sweep.target, &creds).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    client.logout().await;
    let mut more = false;
    for (name, behind) in names.iter().zip(behind) {
        let (Some(ledger), Some(behind)) = (books.ledgers.get_mut(name), behind) else {
            continue;
        };
        let due = match seal(sweep, &creds, name, ledger, stop).await {
            Ok(due) => due,
            // What stops one mailbox (a provider answering it wrongly)
            // does not keep the others unswept; the round still ends as
            // failed (counted, backed off) once they are done.
            Err(SweepError::Job(e)) if mailbox_only(&e) => {
                tracing::warn!(account = %user, mailbox = %name, error = %e, "sweep: mailbox stopped this round");
                failed.get_or_insert(SweepError::Job(e));
                stopped += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        // Left over: plaintext due now, or messages not looked at yet that
        // the pending cap lets in (plaintext waiting for a retry does not
        // make the sweep spin).
        more |= due || (behind && ledger.pending() < sweep.config.max_scan_per_round);
    }
    // Every mailbox failed: the account's round failed (backed off).
    // Some did: the others were swept, and the round goes on as usual
    // (a mailbox that always fails does not slow the account's others).
    match failed {
        Some(e) if stopped >= names.len() as u64 => Err(e),
        _ => Ok(Outcome { more, stopped }),
    }
}

/// An error that stops one mailbox's sealing and says nothing about the
/// others (the provider's answers for that mailbox), as opposed to the
/// connection, the login or the checkpoints.
fn mailbox_only(e: &JobError) -> bool {
    match e {
        JobError::Client(e) => client_mailbox_only(e),
        JobError::OriginalsRemain { .. } => true,
        _ => false,
    }
}

/// The provider says the mailbox does not exist (`NO [NONEXISTENT]`,
/// RFC 5530).
fn gone_since_list(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { code: Some(c), .. } if c.eq_ignore_ascii_case("NONEXISTENT"))
}

/// [`mailbox_only`] for the provider's answers themselves.
fn client_mailbox_only(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::UidValidity { .. }
            | ClientError::UidValidityChanged { .. }
            | ClientError::TooManyResponses(_)
            | ClientError::AnsweredTwice(_)
            | ClientError::Deadline(_)
            | ClientError::ScanShort { .. }
            | ClientError::Refused { .. }
    )
}

/// The mailboxes to sweep: those LIST names, minus the skipped ones, only
/// the configured ones if any are.
async fn mailboxes(sweep: &Sweep, client: &mut Client) -> Result<Vec<String>, SweepError> {
    let wanted = &sweep.config.mailboxes;
    let same = |a: &str, b: &str| {
        a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
    };
    Ok(client
        .list_with_attributes()
        .await?
        .into_iter()
        .filter(|(name, attributes)| !sweep.config.skips(name, attributes))
        .filter(|(name, _)| wanted.is_empty() || wanted.iter().any(|w| same(w, name)))
        .map(|(name, _)| name)
        .take(MAX_MAILBOXES)
        .collect())
}

/// Looks at what arrived in `name` since the last look; true if a bound
/// (messages per look, or plaintext pending) left some unlooked at.
async fn look(
    sweep: &Sweep,
    user: &str,
    client: &mut Client,
    name: &str,
    ledger: &mut Ledger,
) -> Result<bool, SweepError> {
    let selected = client.select(name, true).await?;
    ledger.selected(selected.uidvalidity);
    let max_scan = sweep.config.max_scan_per_round;
    if !ledger.has_new(selected.uidnext) {
        return Ok(false);
    }
    if ledger.pending() >= max_scan {
        return Ok(true);
    }
    let from = ledger.next_uid();
    let Ok(set) = SequenceSet::try_from(format!("{from}:*").as_str()) else {
        return Ok(false);
    };
    let found = client.uid_search(vec![SearchKey::Uid(set)]).await?;
    let looked_at = ledger.to_scan(&found, max_scan).to_vec();
    let complete = looked_at.len() == found.iter().filter(|&&u| u >= from).count();
    let seen = scan::scan(client, &looked_at).await?;
    let plaintext: Vec<(u32, Option<i64>)> = seen
        .iter()
        .filter(|s| s.epoch.as_deref().is_none_or(|e| !sweep.knows(e)))
        .map(|s| (s.uid, s.internal_date))
        .collect();
    let new = ledger.scanned(
        &looked_at,
        &plaintext,
        selected.uidnext,
        complete,
        unix_now(),
    );
    if new > 0 {
        metrics::counter!(names::SWEEP_FOUND_TOTAL, "account" => user.to_string()).increment(new);
        tracing::info!(account = %user, mailbox = %name, plaintext = new, "sweep: plaintext found");
    }
    Ok(!complete)
}

/// Seals up to `max_per_round` of the plaintext pending in `name` (and
/// resolves a batch a dead run left); true if some is left for the next
/// round.
async fn seal(
    sweep: &Sweep,
    creds: &Credentials,
    name: &str,
    ledger: &mut Ledger,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, SweepError> {
    let now = Instant::now();
    let uids = ledger.work(sweep.config.max_per_round, now);
    let cp = sweep
        .checkpoints
        .load(&creds.user, name, "seal")
        .await
        .map_err(JobError::from)?;
    let unresolved = !cp.in_flight.is_empty() || !cp.unanswered.is_empty();
    if uids.is_empty() && !unresolved {
        return Ok(false);
    }
    let mover = sweep.mover();
    let run = mover.run_uids(creds, name, &uids);
    tokio::pin!(run);
    let report = tokio::select! {
        r = &mut run => match r {
            Err(JobError::Checkpoint(CheckpointError::Leased { gateway, until, .. })) => {
                // Another gateway seals this mailbox now; what this ledger
                // found stays pending and is found sealed or gone later.
                tracing::info!(
                    account = %creds.user, mailbox = %name, %gateway, %until,
                    "sweep: another gateway holds the mailbox; left to it this round"
                );
                return Ok(false);
            }
            Err(JobError::Checkpoint(e @ CheckpointError::Locked { .. })) => {
                // Another run on this machine (`writ mailbox seal`, or a
                // second `writ serve` on the same directory) holds it:
                // the same, left to it this round.
                tracing::info!(
                    account = %creds.user, mailbox = %name, error = %e,
                    "sweep: another run holds the mailbox; left to it this round"
                );
                return Ok(false);
            }
            r => r?,
        },
        _ = async {
            stopping(stop).await;
            tokio::time::sleep(sweep.grace).await;
        } => {
            tracing::warn!(
                account = %creds.user, mailbox = %name,
                "sweep: shutdown grace over; the batch in flight is left to the checkpoint"
            );
            return Err(SweepError::Stopping);
        }
    };
    let left: Vec<u32> = report.failed.iter().map(|f| f.uid).collect();
    for f in &report.failed {
        tracing::warn!(
            account = %creds.user, mailbox = %name, uid = f.uid, why = %f.why,
            "sweep: a message was left as it was; tried again later"
        );
    }
    ledger.done(
        &uids,
        &left,
        now + Duration::from_secs(sweep.config.bound_secs.max(1)),
    );
    if report.moved > 0 {
        metrics::counter!(names::SWEEP_SEALED_TOTAL, "account" => creds.user.clone())
            .increment(report.moved);
        tracing::info!(
            account = %creds.user, mailbox = %name, sealed = report.moved,
            duplicates_removed = report.duplicates_removed, "sweep: sealed"
        );
    }
    Ok(!ledger.work(1, Instant::now()).is_empty())
}
