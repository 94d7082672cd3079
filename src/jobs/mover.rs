//! Moving messages onto the active epoch, in place at the provider:
//! `writ mailbox seal` (plaintext → sealed) and `writ mailbox reseal`
//! (sealed under an old epoch → sealed under the active one).
//!
//! One batch, in the only order that cannot lose a message:
//!
//! 1. FETCH the originals; build each sealed copy (same flags, same
//!    INTERNALDATE) and note what the original opens to (its SHA-256).
//! 2. Record the batch in the checkpoint ([`super::checkpoint`]).
//! 3. APPEND the copies (pipelined with LITERAL+).
//! 4. FETCH the copies back and open them: a copy counts only if it opens
//!    to exactly what the original opens to.
//! 5. Only then set `\Deleted` on those originals and `UID EXPUNGE` them
//!    (RFC 4315); a copy that failed step 4 is removed instead.
//! 6. Clear the batch from the checkpoint.
//!
//! A run that finds a batch still recorded (the last run died between 2
//! and 6) does 4–6 for it first, finding the copies by INTERNALDATE and
//! content hash among the messages APPENDed since: at most one duplicate
//! exists, and it goes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::checkpoint::{Checkpoint, CheckpointError, InFlight, sha256_hex};
use super::client::{Appending, Client, ClientError, Fetched};
use super::login::Credentials;
use super::retry::{Backoff, Transient};
use super::scan::{self, Seen};
use crate::envelope::{self, Sealed, Sealer};
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
}

impl Transient for JobError {
    fn is_transient(&self) -> bool {
        matches!(self, JobError::Client(e) if e.is_transient())
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

    fn is_original(&self, seen: &Seen) -> bool {
        match self {
            Kind::Seal => seen.epoch.is_none(),
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
    pub checkpoints: PathBuf,
    pub batch: usize,
    pub retries: u32,
    pub backoff: Duration,
    pub allow_expunge_all: bool,
    pub dry_run: bool,
    pub progress: Arc<dyn Progress>,
}

/// A sealed copy ready to APPEND, and what it must open to.
struct Prepared {
    intent: InFlight,
    appending: Appending,
}

/// What resolving a recorded batch found.
#[derive(Default)]
struct Resolved {
    moved: u64,
    duplicates: u64,
    /// Originals still there without a verified copy.
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
        let job = self.kind.name();
        let before = Checkpoint::load(&self.checkpoints, &creds.user, mailbox, &job)?;
        let backoff = Backoff {
            retries: self.retries,
            first: self.backoff,
        };
        let mut retries = 0;
        let result = backoff
            .run(
                || self.run_once(creds, mailbox),
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
        let after = Checkpoint::load(&self.checkpoints, &creds.user, mailbox, &job)?;
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
    ) -> Result<MailboxReport, JobError> {
        let mut report = MailboxReport {
            account: creds.user.clone(),
            mailbox: mailbox.to_string(),
            ..MailboxReport::default()
        };
        let report = &mut report;
        let mut client = Client::login(&self.target, creds).await?;
        let expunge_all = !client.has_capability("UIDPLUS");
        if expunge_all && !self.allow_expunge_all && !self.dry_run {
            return Err(JobError::NoUidplus);
        }
        let selected = client.select(mailbox, self.dry_run).await?;
        let job = self.kind.name();
        let mut cp = Checkpoint::load(&self.checkpoints, &creds.user, mailbox, &job)?;
        if cp.uidvalidity != selected.uidvalidity {
            if !cp.in_flight.is_empty() {
                tracing::warn!(
                    account = %creds.user, mailbox,
                    "UIDVALIDITY changed since the last run: its last batch cannot be matched, \
                     a duplicate it left stays"
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
        if !self.dry_run && !cp.in_flight.is_empty() {
            let r = self.resolve(&mut client, &cp, None, expunge_all).await?;
            report.moved += r.moved;
            report.duplicates_removed += r.duplicates;
            self.progress.moved(r.moved);
            cp.in_flight.clear();
            cp.moved += r.moved;
            cp.duplicates_removed += r.duplicates;
            cp.save(&self.checkpoints)?;
        }

        let originals: Vec<u32> = match &self.kind {
            Kind::Seal => scan::scan_all(&mut client).await?,
            Kind::Reseal { from } => scan::sealed_under(&mut client, from).await?,
        }
        .into_iter()
        .filter(|s| self.kind.is_original(s))
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
        for chunk in originals.chunks(self.batch.max(1)) {
            let fetched = client.uid_fetch(chunk, &[]).await?;
            let mut prepared = Vec::with_capacity(fetched.len());
            for f in fetched {
                match self.prepare(f) {
                    Ok(Some(p)) => prepared.push(p),
                    Ok(None) => {}
                    Err(failure) => report.failed.push(failure),
                }
            }
            if prepared.is_empty() {
                continue;
            }
            cp.in_flight = prepared.iter().map(|p| p.intent.clone()).collect();
            cp.copies_from_uid = next_uid;
            cp.save(&self.checkpoints)?;

            let (intents, appendings): (Vec<InFlight>, Vec<Appending>) = prepared
                .into_iter()
                .map(|p| (p.intent, p.appending))
                .unzip();
            let results = client.append_many(mailbox, appendings).await?;
            let mut copies = Vec::new();
            let mut all_uids_known = true;
            let mut transient = None;
            let mut refused = Vec::new();
            for (intent, result) in intents.iter().zip(results) {
                match result {
                    Ok(Some(uid)) => copies.push(uid),
                    Ok(None) => all_uids_known = false,
                    Err(e) if e.is_transient() => transient = Some(e),
                    Err(e) => refused.push(Failure {
                        uid: intent.uid,
                        why: e.to_string(),
                    }),
                }
            }
            if let Some(&max) = copies.iter().max() {
                next_uid = next_uid.max(max + 1);
            }
            let hint = all_uids_known.then_some(copies.as_slice());
            let r = self.resolve(&mut client, &cp, hint, expunge_all).await?;
            report.moved += r.moved;
            self.progress.moved(r.moved);
            cp.in_flight.clear();
            cp.moved += r.moved;
            cp.duplicates_removed += r.duplicates;
            cp.save(&self.checkpoints)?;
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
                        why: "its sealed copy did not open to the original; the copy was removed"
                            .into(),
                    });
                }
            }
        }
        client.logout().await;
        Ok(std::mem::take(report))
    }

    /// The sealed copy of one original; `None` when there is nothing to do
    /// (it is no longer an original of this job).
    fn prepare(&self, f: Fetched) -> Result<Option<Prepared>, Failure> {
        let fail = |why: String| Failure { uid: f.uid, why };
        let head_end = envelope::header::header_end(&f.body).unwrap_or(f.body.len());
        let head = &f.body[..head_end];
        let detected = envelope::detect(head);
        let (content, message) = match (&self.kind, detected) {
            (Kind::Seal, None) => {
                let mut sealed = Vec::with_capacity(f.body.len() + f.body.len() / 3 + 4096);
                match self.sealer.seal(&f.body[..], &mut sealed) {
                    Ok(Sealed::Sealed { .. }) => {}
                    Ok(Sealed::AlreadySealed { .. }) => return Ok(None),
                    Err(e) => return Err(fail(format!("cannot seal it: {e}"))),
                }
                (f.body, sealed)
            }
            (Kind::Reseal { from }, Some(d)) if &d.epoch == from => {
                let mut opened = Vec::with_capacity(f.body.len());
                envelope::open(&f.body[..], &*self.keys, &mut opened)
                    .map_err(|e| fail(format!("cannot open it: {e}")))?;
                // Fields the provider put above the marker stay above it.
                let prefix = envelope::stored_prefix(head);
                let Some(m) = opened.get(prefix.len()..) else {
                    return Err(fail("it opened shorter than its stored prefix".into()));
                };
                let mut sealed = prefix.clone();
                match self.sealer.seal(m, &mut sealed) {
                    Ok(Sealed::Sealed { .. }) => {}
                    Ok(Sealed::AlreadySealed { .. }) => {
                        return Err(fail(
                            "it holds a sealed message inside; left as it is".into(),
                        ));
                    }
                    Err(e) => return Err(fail(format!("cannot seal it: {e}"))),
                }
                (opened, sealed)
            }
            _ => return Ok(None),
        };
        let internal_date = f.internal_date.as_ref().map(|d| d.as_ref().timestamp());
        Ok(Some(Prepared {
            intent: InFlight {
                uid: f.uid,
                internal_date,
                sha256: sha256_hex(&content),
            },
            appending: Appending {
                flags: f.flags,
                date: f.internal_date,
                message,
            },
        }))
    }

    /// Steps 4–5 for the batch recorded in `cp`: find and check the copies
    /// (by UID when APPENDUID gave them, else by INTERNALDATE among the
    /// messages stored since), then expunge the originals they replace.
    async fn resolve(
        &self,
        client: &mut Client,
        cp: &Checkpoint,
        appended: Option<&[u32]>,
        expunge_all: bool,
    ) -> Result<Resolved, JobError> {
        let intents = &cp.in_flight;
        let candidates: Vec<u32> = match appended {
            Some(uids) => uids.to_vec(),
            None => {
                let dates: HashSet<Option<i64>> = intents.iter().map(|i| i.internal_date).collect();
                scan::scan_from(client, cp.copies_from_uid)
                    .await?
                    .into_iter()
                    .filter(|s| s.epoch.is_some() && dates.contains(&s.internal_date))
                    .map(|s| s.uid)
                    .collect()
            }
        };
        let mut claimed: Vec<Option<u32>> = vec![None; intents.len()];
        let mut remove = Vec::new();
        let mut duplicates = 0;
        for chunk in candidates.chunks(self.batch.max(1)) {
            for f in client.uid_fetch(chunk, &[]).await? {
                let mut opened = Vec::with_capacity(f.body.len());
                let hash = envelope::open(&f.body[..], &*self.keys, &mut opened)
                    .ok()
                    .map(|_| sha256_hex(&opened));
                let date = f.internal_date.as_ref().map(|d| d.as_ref().timestamp());
                let matching = |i: &InFlight| {
                    Some(&i.sha256) == hash.as_ref()
                        && (i.internal_date.is_none() || date.is_none() || i.internal_date == date)
                };
                if let Some(n) =
                    (0..intents.len()).find(|&n| claimed[n].is_none() && matching(&intents[n]))
                {
                    claimed[n] = Some(f.uid);
                } else if intents.iter().any(matching) {
                    // A second copy of one original.
                    remove.push(f.uid);
                    duplicates += 1;
                } else if appended.is_some() {
                    // Ours (APPENDUID said so) and wrong: never keep it.
                    tracing::warn!(
                        uid = f.uid,
                        "a sealed copy did not open to its original; removed"
                    );
                    remove.push(f.uid);
                }
            }
        }
        // Which originals are still there, still originals.
        let original_uids: Vec<u32> = intents.iter().map(|i| i.uid).collect();
        let present: HashSet<u32> = scan::scan(client, &original_uids)
            .await?
            .into_iter()
            .filter(|s| self.kind.is_original(s))
            .map(|s| s.uid)
            .collect();
        let mut resolved = Resolved::default();
        for (intent, copy) in intents.iter().zip(&claimed) {
            match (copy, present.contains(&intent.uid)) {
                (Some(_), true) => {
                    remove.push(intent.uid);
                    resolved.moved += 1;
                    if appended.is_none() {
                        duplicates += 1;
                    }
                }
                (Some(_), false) => resolved.moved += 1,
                (None, true) => resolved.unmatched.push(intent.uid),
                (None, false) => tracing::warn!(
                    uid = intent.uid,
                    "an original of the last batch is gone and no copy of it was found \
                     (deleted by someone else?)"
                ),
            }
        }
        resolved.duplicates = duplicates;
        remove.sort_unstable();
        remove.dedup();
        client.delete(&remove, expunge_all).await?;
        Ok(resolved)
    }
}

/// Mailbox names: the given ones, or with `all` every selectable mailbox.
/// Logs in either way, so that wrong credentials are one clear error
/// before any work starts.
pub async fn mailboxes(
    target: &Target,
    creds: &Credentials,
    given: &[String],
    all: bool,
) -> Result<Vec<String>, ClientError> {
    let mut client = Client::login(target, creds).await?;
    let names = if all {
        client.list().await?
    } else {
        given.to_vec()
    };
    client.logout().await;
    Ok(names)
}
