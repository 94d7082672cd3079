//! Moving messages onto the active epoch, in place at the provider:
//! `writ mailbox seal` (plaintext → sealed) and `writ mailbox reseal`
//! (sealed under an old epoch → sealed under the active one); the sweep
//! of `writ serve` ([`crate::sweep`]) seals the UIDs it found with
//! [`Mover::run_uids`].
//!
//! One batch, in the only order that cannot lose a message:
//!
//! 1. FETCH the originals; build each sealed copy (same flags, same
//!    INTERNALDATE), mark it with its copy token ([`super::copies`]) and
//!    note what the original opens to (its SHA-256).
//! 2. Record the batch in the checkpoint ([`super::checkpoint`]).
//! 3. APPEND the copies (pipelined with LITERAL+).
//! 4. FETCH the copies back and check them: a copy counts only if it
//!    opens to exactly what the original opens to. A copy whose bytes are
//!    exactly those this run APPENDed under its token is the copy writ
//!    sealed from that original, and counts without being opened again,
//!    but for one per chunk read back, opened in full as a sample of the
//!    batch's sealing; every other copy (found after a crash, or changed by
//!    the provider) is opened in full ([`super::sealing`]).
//! 5. Only then set `\Deleted` on those originals and `UID EXPUNGE` them
//!    (RFC 4315); a copy that failed step 4 is removed instead.
//! 6. Clear the batch from the checkpoint; an APPEND that got no answer
//!    stays recorded as unanswered.
//!
//! A run starts by looking for the copies of a batch still recorded (the
//! last run died between 2 and 6) and of every unanswered APPEND, by their
//! tokens: a copy of an original that already has one is a duplicate and
//! goes; an original whose copy is there is expunged, not sealed again. An
//! original sealed again while an APPEND of it is unanswered is recorded
//! under both tokens, so a copy the provider stores late (it had stalled,
//! or the answer timed out) is found and removed by a later run.
//!
//! Invariant: a message is removed only when another copy that opens to
//! the same bytes is present (or it is a copy carrying our token that does
//! not open to its original): opened and compared, or byte for byte the
//! sealed copy this run made of it, in a chunk whose sample opened to its
//! original. An original is sealed only from an answer the client found
//! whole (its `RFC822.SIZE` long; never `NIL`, empty or partial): any
//! other is that message's failure and it stays. Nothing is marked or
//! expunged once the provider announces a UIDVALIDITY other than the one
//! the mailbox was selected with ([`ClientError::UidValidityChanged`]: the
//! mailbox stops).
//!
//! One run per mailbox at a time, on any gateway: a run first takes the
//! mailbox's lease from the checkpoint store ([`super::checkpoint::Store`];
//! a lock file on files, a renewed row on PostgreSQL), and stops before
//! recording a batch or removing anything once it can no longer be sure
//! the lease is its own. A gateway taking over after a dead one resumes
//! from the shared checkpoint exactly as a run on the same machine would.
//!
//! Overlap. Batches are pipelined, one connection per mailbox: batch N+1's
//! originals are FETCHed in the same flight as batch N's APPENDs (the
//! FETCH first) and sealed on blocking threads ([`super::sealing`]) while
//! the provider stores, and writ checks and expunges, batch N; step 4's
//! header scan and the FETCH of the copies also go in one flight, and the
//! copies are checked in parallel. Still only one batch is ever recorded
//! and APPENDed at a time: batch N+1 is recorded (step 2) only after batch
//! N is cleared (step 6), so everything above holds unchanged. A run that
//! dies loses at most batch N+1's sealed copies, which exist only in
//! memory (nothing of them reached the provider or the checkpoint).
//!
//! Memory per mailbox: at most two batches at once, the one at the
//! provider (its sealed copies until written, then its copies read back)
//! and the next (its originals while they are sealed, then its copies):
//! about `batch` × (original + 2 × sealed copy) bytes, plus one FETCH
//! answer being read (capped by the client). The provider holds at most
//! one batch of unanswered APPENDs per mailbox.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::book::{Answered, Book};
use super::checkpoint::{Checkpoint, CheckpointError, InFlight, Lease, Store};
use super::client::{Appending, Client, ClientError, FetchAnswer, Fetched};
use super::copies;
use super::login::Credentials;
use super::retry::{Backoff, Transient};
use super::scan::{self, Seen};
use super::sealing::{AppendedCopies, Crypto};
use crate::envelope::Sealer;
use crate::imap::upstream::Target;
use crate::keys::Unlocked;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "the provider does not offer UIDPLUS, so writ cannot expunge exactly the originals it \
         replaced; --allow-expunge-all makes it use EXPUNGE, which also removes every other \
         message marked \\Deleted in that mailbox"
    )]
    NoUidplus,
    #[error("the system's random number generator failed; check the system, then run again")]
    Random,
    #[error(
        "{count} original(s) with a verified sealed copy could not be expunged (another session \
         keeps changing them?); run the job again: it removes them then"
    )]
    OriginalsRemain { count: usize },
}

/// Times [`Mover::check_replaced_gone`] deletes originals again.
const EXPUNGE_ATTEMPTS: usize = 2;

impl Transient for JobError {
    fn is_transient(&self) -> bool {
        matches!(self, JobError::Client(e) if e.is_transient())
            || matches!(self, JobError::OriginalsRemain { .. })
    }
}

/// Which messages a job moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Plaintext messages.
    Seal,
    /// Messages sealed under this epoch.
    Reseal { from: String },
}

impl Kind {
    /// The checkpoint's job name.
    pub fn name(&self) -> String {
        match self {
            Kind::Seal => "seal".into(),
            Kind::Reseal { from } => format!("reseal:{from}"),
        }
    }

    /// An original of this job: for sealing, plaintext, or a message that
    /// looks sealed under an epoch `sealer` does not know (anyone can
    /// write the marker: it is sealed, not left as plaintext for good);
    /// for resealing, one sealed under `from`.
    fn is_original(&self, seen: &Seen, sealer: &Sealer) -> bool {
        match self {
            Kind::Seal => seen.epoch.as_deref().is_none_or(|e| !sealer.knows(e)),
            Kind::Reseal { from } => seen.epoch.as_deref() == Some(from),
        }
    }
}

/// Told as a job goes, for a progress bar or log lines.
pub trait Progress: Send + Sync {
    fn found(&self, account: &str, mailbox: &str, messages: u64);
    fn moved(&self, messages: u64);
    fn retrying(&self, account: &str, mailbox: &str, attempt: u32, why: &ClientError);
}

/// A message left as it was, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub uid: u32,
    pub why: String,
}

/// What a job did to one mailbox.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MailboxReport {
    pub account: String,
    pub mailbox: String,
    /// Messages to move when the (last) run started.
    pub found: u64,
    pub moved: u64,
    /// Originals whose copy a crashed run had already stored.
    pub duplicates_removed: u64,
    pub failed: Vec<Failure>,
    pub retries: u32,
}

/// Everything a job needs, shared by the mailboxes it works on.
pub struct Mover {
    pub kind: Kind,
    pub target: Target,
    pub sealer: Sealer,
    pub keys: Arc<Unlocked>,
    /// Where checkpoints and leases live (files, or the shared database).
    pub checkpoints: Arc<dyn Store>,
    pub batch: usize,
    pub retries: u32,
    pub backoff: Duration,
    pub allow_expunge_all: bool,
    pub dry_run: bool,
    pub progress: Arc<dyn Progress>,
}

/// What resolving a recorded batch found.
#[derive(Default)]
struct Resolved {
    moved: u64,
    duplicates: u64,
    /// Originals of the batch still there without a verified copy.
    unmatched: Vec<u32>,
}

impl Mover {
    /// Works on one mailbox until done, retrying after transient provider
    /// failures with exponential backoff.
    pub async fn run_mailbox(
        &self,
        creds: &Credentials,
        mailbox: &str,
    ) -> Result<MailboxReport, JobError> {
        self.run_scoped(creds, mailbox, None).await
    }

    /// As [`Mover::run_mailbox`], but moves only the originals among
    /// `uids` (the sweep's bounded round); a batch a dead run left and
    /// unanswered APPENDs are resolved all the same, so `&[]` resolves
    /// only.
    pub async fn run_uids(
        &self,
        creds: &Credentials,
        mailbox: &str,
        uids: &[u32],
    ) -> Result<MailboxReport, JobError> {
        self.run_scoped(creds, mailbox, Some(uids)).await
    }

    async fn run_scoped(
        &self,
        creds: &Credentials,
        mailbox: &str,
        only: Option<&[u32]>,
    ) -> Result<MailboxReport, JobError> {
        // A dry run changes nothing: it needs no lease.
        let lease = if self.dry_run {
            Lease::local(&creds.user, mailbox)
        } else {
            self.checkpoints.lease(&creds.user, mailbox).await?
        };
        let result = self.run_leased(creds, mailbox, only, &lease).await;
        self.checkpoints.release(lease).await;
        result
    }

    async fn run_leased(
        &self,
        creds: &Credentials,
        mailbox: &str,
        only: Option<&[u32]>,
        lease: &Lease,
    ) -> Result<MailboxReport, JobError> {
        let job = self.kind.name();
        let before = self.checkpoints.load(&creds.user, mailbox, &job).await?;
        let backoff = Backoff {
            retries: self.retries,
            first: self.backoff,
        };
        let mut retries = 0;
        let result = backoff
            .run(
                || self.run_once(creds, mailbox, only, lease),
                |attempt, e: &JobError| {
                    retries = attempt;
                    if let JobError::Client(c) = e {
                        self.progress.retrying(&creds.user, mailbox, attempt, c);
                    }
                },
            )
            .await;
        let mut report = result?;
        report.retries = retries;
        // Work done by attempts that then failed is in the checkpoint.
        let after = self.checkpoints.load(&creds.user, mailbox, &job).await?;
        if !self.dry_run && (before.uidvalidity == 0 || before.uidvalidity == after.uidvalidity) {
            report.moved = after.moved.saturating_sub(before.moved);
            report.duplicates_removed = after
                .duplicates_removed
                .saturating_sub(before.duplicates_removed);
        }
        Ok(report)
    }

    /// One attempt at the whole mailbox; a retry starts over from the
    /// checkpoint, so the report counts this attempt's work plus what the
    /// checkpoint says earlier attempts did.
    async fn run_once(
        &self,
        creds: &Credentials,
        mailbox: &str,
        only: Option<&[u32]>,
        lease: &Lease,
    ) -> Result<MailboxReport, JobError> {
        let mut report = MailboxReport {
            account: creds.user.clone(),
            mailbox: mailbox.to_string(),
            ..MailboxReport::default()
        };
        let report = &mut report;
        let mut client = Client::login(&self.target, creds).await?;
        let crypto = Arc::new(Crypto {
            kind: self.kind.clone(),
            sealer: self.sealer.clone(),
            keys: Arc::clone(&self.keys),
        });
        let expunge_all = !client.has_capability("UIDPLUS");
        if expunge_all && !self.allow_expunge_all && !self.dry_run {
            return Err(JobError::NoUidplus);
        }
        let selected = client.select(mailbox, self.dry_run).await?;
        let job = self.kind.name();
        let mut cp = self.checkpoints.load(&creds.user, mailbox, &job).await?;
        if cp.uidvalidity != selected.uidvalidity {
            if !cp.in_flight.is_empty() || !cp.unanswered.is_empty() {
                tracing::warn!(
                    account = %creds.user, mailbox,
                    "UIDVALIDITY changed since the last run: its unanswered APPENDs cannot be \
                     matched, a duplicate they left stays"
                );
            }
            cp = Checkpoint {
                account: creds.user.clone(),
                mailbox: mailbox.to_string(),
                job,
                uidvalidity: selected.uidvalidity,
                ..Checkpoint::default()
            };
        }
        if !self.dry_run && (!cp.in_flight.is_empty() || !cp.unanswered.is_empty()) {
            let r = self
                .resolve(&mut client, &crypto, &mut cp, None, expunge_all, lease)
                .await?;
            report.moved += r.moved;
            report.duplicates_removed += r.duplicates;
            self.progress.moved(r.moved);
            self.checkpoints.save(&mut cp, lease).await?;
        }

        let originals: Vec<u32> = match (&self.kind, only) {
            (_, Some(uids)) => scan::scan(&mut client, uids).await?,
            (Kind::Seal, None) => scan::scan_all(&mut client).await?,
            (Kind::Reseal { from }, None) => scan::sealed_under(&mut client, from).await?,
        }
        .into_iter()
        .filter(|s| self.kind.is_original(s, &self.sealer))
        .map(|s| s.uid)
        .collect();
        report.found = originals.len() as u64;
        self.progress
            .found(&creds.user, mailbox, originals.len() as u64);
        if self.dry_run {
            client.logout().await;
            return Ok(std::mem::take(report));
        }
        // Earlier attempts' failures are tried again.
        report.failed.clear();
        let mut next_uid = selected.uidnext;
        let mut chunks = originals.chunks(self.batch.max(1));
        // The first batch is fetched and sealed before anything is stored;
        // each later one while the provider stores the one before it.
        let mut sealing = match chunks.next() {
            Some(first) => {
                let fetched = whole(client.uid_fetch(first, &[]).await?, report);
                Some(crypto.seal_batch(fetched, copies::batch_id().ok_or(JobError::Random)?))
            }
            None => None,
        };
        while let Some(batch) = sealing.take() {
            let mut prepared = Vec::new();
            for p in batch.finish().await? {
                match p {
                    Ok(Some(p)) => prepared.push(p),
                    Ok(None) => {}
                    Err(failure) => report.failed.push(failure),
                }
            }
            let next = chunks.next();
            if prepared.is_empty() {
                if let Some(next) = next {
                    let fetched = whole(client.uid_fetch(next, &[]).await?, report);
                    let id = copies::batch_id().ok_or(JobError::Random)?;
                    sealing = Some(crypto.seal_batch(fetched, id));
                }
                continue;
            }
            cp.in_flight = prepared.iter().map(|p| p.intent.clone()).collect();
            let appended: Arc<AppendedCopies> =
                Arc::new(prepared.iter().filter_map(|p| p.appended()).collect());
            cp.copies_from_uid = next_uid;
            // On shared state, refused unless the lease is still ours:
            // nothing is APPENDed then.
            self.checkpoints.save(&mut cp, lease).await?;

            let (intents, appendings): (Vec<InFlight>, Vec<Appending>) = prepared
                .into_iter()
                .map(|p| (p.intent, p.appending))
                .unzip();
            // One flight: the next batch's FETCH, then this batch's APPENDs.
            // The next batch seals while the provider stores this one.
            let fetch_next = match next {
                Some(next) => client.start_fetch(next, &[])?,
                None => None,
            };
            let appends = client.start_appends(mailbox, appendings)?;
            if let Some(fetch_next) = fetch_next {
                let fetched = whole(client.finish_fetch(fetch_next).await?, report);
                let id = copies::batch_id().ok_or(JobError::Random)?;
                sealing = Some(crypto.seal_batch(fetched, id));
            }
            let results = client.finish_appends(appends).await?;
            let mut answered = Answered::default();
            let mut transient = None;
            let mut refused = Vec::new();
            for (intent, result) in intents.iter().zip(results) {
                match result {
                    Ok(Some(uid)) => answered.copies.push(uid),
                    Ok(None) => answered.uid_unknown = true,
                    Err(e) => {
                        // A tagged NO: nothing was stored.
                        answered.refused.extend(intent.token.clone());
                        if e.is_transient() {
                            transient = Some(e);
                        } else {
                            refused.push(Failure {
                                uid: intent.uid,
                                why: e.to_string(),
                            });
                        }
                    }
                }
            }
            if let Some(&max) = answered.copies.iter().max() {
                next_uid = next_uid.max(max.saturating_add(1));
            }
            let r = self
                .resolve(
                    &mut client,
                    &crypto,
                    &mut cp,
                    Some((&answered, &appended)),
                    expunge_all,
                    lease,
                )
                .await?;
            report.moved += r.moved;
            report.duplicates_removed += r.duplicates;
            self.progress.moved(r.moved);
            self.checkpoints.save(&mut cp, lease).await?;
            if let Some(e) = transient {
                // Back off; the next attempt starts from what is left.
                return Err(e.into());
            }
            let refused_uids: HashSet<u32> = refused.iter().map(|f| f.uid).collect();
            report.failed.extend(refused);
            for uid in r.unmatched {
                if !refused_uids.contains(&uid) {
                    report.failed.push(Failure {
                        uid,
                        why: "no sealed copy of it that opens to the original was found; the \
                              original stays"
                            .into(),
                    });
                }
            }
        }
        client.logout().await;
        Ok(std::mem::take(report))
    }

    /// Steps 4–6 for the batch recorded in `cp` (`sent`: how the provider
    /// answered its APPENDs, and what they sent) or, at the start of a run
    /// (`None`), for the batch a dead run left and every unanswered APPEND:
    /// find the copies by their tokens, check them, keep one per original,
    /// remove duplicates, expunge the originals that have a copy, and
    /// record what is still unanswered.
    async fn resolve(
        &self,
        client: &mut Client,
        crypto: &Arc<Crypto>,
        cp: &mut Checkpoint,
        sent: Option<(&Answered, &Arc<AppendedCopies>)>,
        expunge_all: bool,
        lease: &Lease,
    ) -> Result<Resolved, JobError> {
        let answered = sent.map(|(a, _)| a);
        // What a dead run APPENDed is opened in full: its bytes are unknown.
        let appended = match sent {
            Some((_, appended)) => Arc::clone(appended),
            None => Arc::new(AppendedCopies::new()),
        };
        let mut book = Book::of(cp, answered);
        let candidates = self.candidates(client, cp, &book, answered).await?;
        // One flight: the header scan of the originals and of the copies
        // kept earlier (which are still there?), then the first copies.
        let mut uids: Vec<u32> = book.originals.iter().map(|o| o.uid).collect();
        uids.extend(book.originals.iter().filter_map(|o| o.kept_before));
        let mut scans = Vec::new();
        for chunk in uids.chunks(scan::CHUNK) {
            scans.extend(client.start_fetch(chunk, scan::MARKER_FIELDS)?);
        }
        let mut copy_chunks = candidates.chunks(self.batch.max(1));
        let mut copies_pending = match copy_chunks.next() {
            Some(chunk) => client.start_fetch(chunk, &[])?,
            None => None,
        };
        let mut present_originals = HashSet::new();
        let mut present_copies = HashSet::new();
        for pending in scans {
            for s in client
                .finish_fetch(pending)
                .await?
                .messages
                .iter()
                .map(scan::seen)
            {
                if self.kind.is_original(&s, &self.sealer) {
                    present_originals.insert(s.uid);
                } else if s.epoch.is_some() {
                    present_copies.insert(s.uid);
                }
            }
        }
        let mut remove = Vec::new();
        let mut duplicates = 0;
        while let Some(pending) = copies_pending.take() {
            // A copy not read back whole is not checked: it counts for
            // nothing (and is found again by a later run).
            let fetched = client.finish_fetch(pending).await?.messages;
            // Checked on the job's threads, all of the chunk at once.
            let opening = crypto.check_copies(fetched, &appended);
            if let Some(chunk) = copy_chunks.next() {
                copies_pending = client.start_fetch(chunk, &[])?;
            }
            for c in opening.finish().await? {
                let (hash, date) = (c.sha256.as_ref(), c.internal_date);
                let Some(n) = book.original_of(c.token.as_deref(), hash, date) else {
                    continue;
                };
                let o = &mut book.originals[n];
                if !o.matches(hash, date) {
                    // It carries the token of our APPEND: ours, and wrong.
                    tracing::warn!(
                        uid = c.uid,
                        "a sealed copy did not open to its original; removed"
                    );
                    remove.push(c.uid);
                    continue;
                }
                let other_copy = o
                    .verified
                    .or(o.kept_before.filter(|k| present_copies.contains(k)));
                match other_copy {
                    Some(k) if k != c.uid => {
                        remove.push(c.uid);
                        duplicates += 1;
                    }
                    Some(_) => {}
                    None => o.verified = Some(c.uid),
                }
            }
        }
        let mut resolved = Resolved::default();
        for o in &book.originals {
            let present = present_originals.contains(&o.uid);
            match (o.verified, present) {
                (Some(_), true) => {
                    remove.push(o.uid);
                    resolved.moved += 1;
                    if answered.is_none() {
                        // Its copy was stored by a run that died.
                        duplicates += 1;
                    }
                }
                (Some(_), false) if o.kept_before.is_none() => resolved.moved += 1,
                (Some(_), false) => {}
                (None, true) if o.in_flight => resolved.unmatched.push(o.uid),
                (None, false) if o.in_flight && o.kept_before.is_none() => tracing::warn!(
                    uid = o.uid,
                    "an original of the last batch is gone and no copy of it was found \
                     (deleted by someone else?)"
                ),
                (None, _) => {}
            }
        }
        resolved.duplicates = duplicates;
        remove.sort_unstable();
        remove.dedup();
        // Nothing is removed by a run that may have lost the mailbox.
        lease.check()?;
        client.delete(&remove, expunge_all).await?;
        self.check_replaced_gone(client, &book, expunge_all, lease)
            .await?;
        book.record(cp);
        cp.moved += resolved.moved;
        cp.duplicates_removed += resolved.duplicates;
        Ok(resolved)
    }

    /// Every original of `book` with a verified copy must be gone before
    /// the batch leaves the checkpoint: otherwise a later run would seal
    /// it again (a duplicate). Another session can undo the job's
    /// `\Deleted` between its STORE and its UID EXPUNGE (`STORE FLAGS`
    /// replaces flags), and a header scan racing another session's
    /// changes may miss an original: such originals are deleted again, at
    /// most [`EXPUNGE_ATTEMPTS`] times; past that the run fails
    /// (transiently) and keeps the batch, so the next run resolves it.
    async fn check_replaced_gone(
        &self,
        client: &mut Client,
        book: &Book,
        expunge_all: bool,
        lease: &Lease,
    ) -> Result<(), JobError> {
        let replaced: Vec<u32> = book
            .originals
            .iter()
            .filter(|o| o.verified.is_some())
            .map(|o| o.uid)
            .collect();
        for _ in 0..EXPUNGE_ATTEMPTS {
            let left = client.still_present(&replaced).await?;
            if left.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                count = left.len(),
                "originals with a verified copy are still there (changed by another session?); \
                 deleting them again"
            );
            lease.check()?;
            client.delete(&left, expunge_all).await?;
        }
        let left = client.still_present(&replaced).await?;
        if left.is_empty() {
            return Ok(());
        }
        Err(JobError::OriginalsRemain { count: left.len() })
    }

    /// The UIDs that may be copies `book` waits for: those APPENDUID named,
    /// those whose marker carries an awaited token, and for a batch
    /// recorded without tokens (by an earlier writ) the sealed messages
    /// with one of its INTERNALDATEs stored since.
    async fn candidates(
        &self,
        client: &mut Client,
        cp: &Checkpoint,
        book: &Book,
        answered: Option<&Answered>,
    ) -> Result<Vec<u32>, JobError> {
        let mut candidates: BTreeSet<u32> = answered
            .map(|a| a.copies.iter().copied().collect())
            .unwrap_or_default();
        let search_from = match answered {
            None => book.search_from,
            Some(a) if a.uid_unknown => Some(cp.copies_from_uid),
            Some(_) => None,
        };
        if let Some(from) = search_from.filter(|_| !book.tokens.is_empty()) {
            // Every message from there on, by its header fields: never the
            // provider's search, which may miss custom X- fields (a copy
            // not found would be made again, a duplicate).
            candidates.extend(
                scan::scan_from(client, from)
                    .await?
                    .into_iter()
                    .filter(|s| s.copy.as_ref().is_some_and(|t| book.tokens.contains_key(t)))
                    .map(|s| s.uid),
            );
        }
        if !book.legacy.is_empty() {
            let dates: HashSet<Option<i64>> = book
                .legacy
                .iter()
                .map(|&n| book.originals[n].internal_date)
                .collect();
            candidates.extend(
                scan::scan_from(client, cp.copies_from_uid)
                    .await?
                    .into_iter()
                    .filter(|s| {
                        s.epoch.is_some() && s.copy.is_none() && dates.contains(&s.internal_date)
                    })
                    .map(|s| s.uid),
            );
        }
        Ok(candidates.into_iter().collect())
    }
}

/// The originals a FETCH answered whole; each one it did not is that
/// message's failure (it is left as it is: nothing is sealed from it).
fn whole(answer: FetchAnswer, report: &mut MailboxReport) -> Vec<Fetched> {
    for i in answer.incomplete {
        tracing::warn!(
            uid = i.uid,
            "the provider's answer for a message was not the whole message; left as it is"
        );
        report.failed.push(Failure {
            uid: i.uid,
            why: format!("{}; the original stays", i.why),
        });
    }
    answer.messages
}

/// The mailboxes of an account a job is to work on ([`mailboxes`]).
#[derive(Debug, Clone)]
pub struct Listed {
    pub names: Vec<String>,
    /// The provider offers X-GM-EXT-1: it is Gmail, whose folders are
    /// labels (a message is in the folder of each of its labels and in
    /// `[Gmail]/All Mail`; expunging it from a label's folder removes only
    /// that label).
    pub labels: bool,
}

/// Mailbox names: the given ones, or with `all` every selectable mailbox.
/// Logs in either way, so that wrong credentials are one clear error
/// before any work starts.
pub async fn mailboxes(
    target: &Target,
    creds: &Credentials,
    given: &[String],
    all: bool,
) -> Result<Listed, ClientError> {
    let mut client = Client::login(target, creds).await?;
    let names = if all {
        client.list().await?
    } else {
        given.to_vec()
    };
    let labels = client.has_capability("X-GM-EXT-1");
    client.logout().await;
    Ok(Listed { names, labels })
}
