//! A job's progress per account and mailbox, on disk, so that a job
//! killed at any instant continues where it stopped.
//!
//! The file matters most for the batch that was in flight: before a
//! batch's sealed copies are APPENDed, the checkpoint records each
//! original (UID, INTERNALDATE, SHA-256 of what it opens to), the token
//! its copy carries (`X-Writ: ...; copy=<token>`, see [`super::copies`])
//! and the lowest UID a copy can get. A run that finds such a record looks
//! for copies carrying those tokens: an original whose copy is there is
//! expunged, not sealed again.
//!
//! An APPEND the provider never answered (the job was killed, the
//! connection cut, the answer timed out) may still be stored later: a
//! provider process that stalled stores it whenever it resumes. Its token
//! therefore stays in [`Checkpoint::unanswered`] until a copy carrying it
//! is found (and kept, or removed as a duplicate of the copy kept for that
//! original). Only a tagged answer (`OK`: the copy is found; `NO`: no copy
//! exists) or a found copy accounts for an APPEND. At most
//! [`MAX_UNANSWERED`] such tokens are kept per mailbox; past that the
//! oldest are dropped with a warning (a copy that lands after that stays
//! as a duplicate).
//!
//! The record is only trusted while the mailbox's UIDVALIDITY is the one
//! it was written under.
//!
//! Where checkpoints live is a [`Store`]: [`Files`] (JSON files, written
//! atomically: temp file, fsync, rename, 0600; the default) or, with
//! `[state] backend = "postgres"`, rows in the shared database
//! (`crate::state::PgCheckpoints`) so that any gateway can resume a job
//! another one started. The job logic ([`super::mover`]) is the same for
//! both; only loading and saving differ.
//!
//! Leases. Before a run works on a mailbox it takes the mailbox's
//! [`Lease`] from the store, keyed by account and mailbox (INBOX in any
//! case is INBOX, RFC 3501 §5.1: [`lease_mailbox`]) whatever the job, so
//! one run at a time works on a mailbox. On files it is an exclusive lock
//! (`flock`, [`std::fs::File::try_lock`]) on `<hash>.lock` in the store's
//! directory, held by the run's open file until it ends (the kernel drops
//! it when the process dies, however it dies): a second run on the same
//! mailbox and store, in this process or another, is refused with one line
//! naming the holder's process id ([`CheckpointError::Locked`]). The lock
//! is taken in both file stores of the config (`[jobs] dir` and `[sweep]
//! dir`, each keeping its own checkpoints), so a `writ mailbox` run and
//! the sweep exclude each other too. On PostgreSQL it is a row per
//! (account, mailbox) naming the gateway and an expiry, renewed by a
//! heartbeat while the run goes on: a second run, on any gateway, is
//! refused with one line naming the holder and the expiry
//! ([`CheckpointError::Leased`]). A gateway that dies stops renewing; once
//! its lease expires another run takes the mailbox over and resumes from
//! the checkpoint (the batch in flight and the unanswered APPENDs above:
//! a copy the dead gateway's APPEND stores late is found by its token like
//! any unanswered APPEND). A run that cannot renew in time stops before its
//! next write ([`Lease::check`], [`CheckpointError::LeaseLost`]), and a
//! save on PostgreSQL is refused unless the lease is still held (checked
//! in the same transaction).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ring::digest::{SHA256, digest};

use crate::keys::atomic;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read the checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the checkpoint {path} is damaged ({why}); move it away to start that mailbox afresh \
         (a duplicate left by a crash will then stay)"
    )]
    Damaged { path: PathBuf, why: String },
    #[error("cannot write the checkpoint {path}: {why}")]
    Write { path: PathBuf, why: String },
    /// Another run (on this gateway or another) holds the mailbox.
    #[error(
        "{account} {mailbox} is being worked on by gateway {gateway} (its lease runs until \
         {until}); run again later, or once that lease has expired if that gateway is gone"
    )]
    Leased {
        account: String,
        mailbox: String,
        gateway: String,
        until: String,
    },
    /// The lease could not be renewed in time: another gateway may own
    /// the mailbox now.
    #[error(
        "the lease on {account} {mailbox} was lost (not renewed in time: check the database); \
         stopped before changing anything more, run again to resume"
    )]
    LeaseLost { account: String, mailbox: String },
    /// Another run on this machine holds the mailbox's lock file.
    #[error(
        "{account} {mailbox} is being worked on by another run ({holder}, holding {path}); run \
         again once it has finished"
    )]
    Locked {
        account: String,
        mailbox: String,
        holder: String,
        path: PathBuf,
    },
    #[error("cannot lock {path} for {account} {mailbox}: {why}")]
    Lock {
        account: String,
        mailbox: String,
        path: PathBuf,
        why: String,
    },
    #[error("checkpoint of {account} {mailbox}: {source}")]
    State {
        account: String,
        mailbox: String,
        #[source]
        source: Box<crate::state::StateError>,
    },
    #[error("the checkpoint of {account} {mailbox} in the database is damaged ({why})")]
    DamagedRow {
        account: String,
        mailbox: String,
        why: String,
    },
}

/// A future a [`Store`] returns.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, CheckpointError>> + Send + 'a>>;

/// Where checkpoints and leases live: files, or a database several
/// gateways share.
pub trait Store: Send + Sync {
    /// Takes the lease on `account`/`mailbox` for one run (all jobs on a
    /// mailbox share it), or says who holds it.
    fn lease<'a>(&'a self, account: &'a str, mailbox: &'a str) -> Pending<'a, Lease>;
    /// The checkpoint for this mailbox and job, or a fresh one.
    fn load<'a>(
        &'a self,
        account: &'a str,
        mailbox: &'a str,
        job: &'a str,
    ) -> Pending<'a, Checkpoint>;
    /// Saves `cp` (stamping `updated`), refused if `lease` is lost.
    fn save<'a>(&'a self, cp: &'a mut Checkpoint, lease: &'a Lease) -> Pending<'a, ()>;
    /// Gives the lease back (best effort: an unreleased lease expires).
    fn release(&self, lease: Lease) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Checkpoints as files in a directory; a lease is a lock file there and
/// in every directory of `also_locks` (the other file store of this
/// config: `[jobs] dir` for the sweep, `[sweep] dir` for a job), so that
/// the sweep and `writ mailbox` runs never work on one mailbox together.
pub struct Files(pub PathBuf, pub Vec<PathBuf>);

impl Store for Files {
    fn lease<'a>(&'a self, account: &'a str, mailbox: &'a str) -> Pending<'a, Lease> {
        Box::pin(async move {
            let mut dirs: Vec<PathBuf> = std::iter::once(&self.0)
                .chain(&self.1)
                .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
                .collect();
            // One order for every run: two runs never wait on each other
            // crosswise (a lock is tried, never awaited, all the same).
            dirs.sort();
            dirs.dedup();
            let mut locks = Vec::with_capacity(dirs.len());
            for dir in &dirs {
                let lease = Lease::locked(dir, account, mailbox)?;
                let mut lease = lease;
                locks.append(&mut lease._lock);
            }
            Ok(Lease {
                account: account.to_string(),
                mailbox: mailbox.to_string(),
                shared: None,
                _lock: locks,
            })
        })
    }

    fn load<'a>(
        &'a self,
        account: &'a str,
        mailbox: &'a str,
        job: &'a str,
    ) -> Pending<'a, Checkpoint> {
        Box::pin(async move { Checkpoint::load(&self.0, account, mailbox, job) })
    }

    fn save<'a>(&'a self, cp: &'a mut Checkpoint, _: &'a Lease) -> Pending<'a, ()> {
        Box::pin(async move { cp.save(&self.0) })
    }

    fn release(&self, _: Lease) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// How long a shared lease is known to be ours, kept by its heartbeat.
#[derive(Debug)]
pub struct LeaseClock {
    /// Ours until then (measured from before the renewal was sent);
    /// `None` once lost.
    until: Mutex<Option<Instant>>,
}

impl LeaseClock {
    pub fn new(until: Instant) -> Arc<LeaseClock> {
        Arc::new(LeaseClock {
            until: Mutex::new(Some(until)),
        })
    }

    /// A renewal sent at some instant succeeded: ours until `until`.
    pub fn renewed(&self, until: Instant) {
        if let Ok(mut u) = self.until.lock()
            && u.is_some()
        {
            *u = Some(until);
        }
    }

    /// Someone else has it now.
    pub fn lost(&self) {
        if let Ok(mut u) = self.until.lock() {
            *u = None;
        }
    }

    fn held(&self) -> bool {
        self.until
            .lock()
            .ok()
            .and_then(|u| *u)
            .is_some_and(|u| Instant::now() < u)
    }
}

/// The lease key of a mailbox: INBOX in any case is INBOX (RFC 3501
/// §5.1); other names are case-sensitive.
pub fn lease_mailbox(mailbox: &str) -> &str {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        mailbox
    }
}

/// The lock file of `account`/`mailbox` in the file store `dir` (names
/// hashed, as checkpoints).
pub fn lock_path(dir: &Path, account: &str, mailbox: &str) -> PathBuf {
    let key = format!("{account}\0{}", lease_mailbox(mailbox));
    let hash = digest(&SHA256, key.as_bytes());
    dir.join(format!("{}.lock", crate::hash::hex(&hash.as_ref()[..16])))
}

/// The most of a lock file read to name its holder.
const MAX_HOLDER: u64 = 64;

/// One run's hold on a mailbox (see the module header). Dropping it stops
/// its heartbeat (the row then expires) or closes its lock file (the lock
/// goes with it).
pub struct Lease {
    pub account: String,
    pub mailbox: String,
    shared: Option<Shared>,
    /// The locked files of the file store, held until the lease goes.
    _lock: Vec<std::fs::File>,
}

struct Shared {
    holder: String,
    clock: Arc<LeaseClock>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// A lease that holds nothing: for a run that changes nothing (a dry
    /// run).
    pub fn local(account: &str, mailbox: &str) -> Lease {
        Lease {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            shared: None,
            _lock: Vec::new(),
        }
    }

    /// The file store's lease: the exclusive lock on the mailbox's lock
    /// file in `dir`, or [`CheckpointError::Locked`] naming the process
    /// that holds it.
    pub fn locked(dir: &Path, account: &str, mailbox: &str) -> Result<Lease, CheckpointError> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = lock_path(dir, account, mailbox);
        let fail = |why: String| CheckpointError::Lock {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            path: path.clone(),
            why,
        };
        atomic::create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // It holds a process id only: readable, so that a run as
            // another user can lock it too (its directory is private).
            .mode(0o644)
            .open(&path);
        // A lock file another user made (a `writ mailbox` run as root in
        // the sweep's directory): locked through a read-only descriptor
        // all the same (flock needs no write access), if readable.
        let mut file = match opened {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                std::fs::File::open(&path).map_err(|_| fail(e.to_string()))?
            }
            other => other.map_err(|e| fail(e.to_string()))?,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(MAX_HOLDER).read_to_string(&mut text);
                let holder = match text.trim() {
                    pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("process {pid}")
                    }
                    _ => "another process".to_string(),
                };
                return Err(CheckpointError::Locked {
                    account: account.to_string(),
                    mailbox: mailbox.to_string(),
                    holder,
                    path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e.to_string())),
        }
        // Who holds it, for the next run's error (best effort: the lock,
        // not this text, is what keeps a second run out).
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(Lease {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            shared: None,
            _lock: vec![file],
        })
    }

    /// A lease held in shared state under `holder`, known to be ours
    /// while `clock` says so, renewed by `heartbeat`.
    pub fn shared(
        account: &str,
        mailbox: &str,
        holder: String,
        clock: Arc<LeaseClock>,
        heartbeat: tokio::task::JoinHandle<()>,
    ) -> Lease {
        Lease {
            account: account.to_string(),
            mailbox: mailbox.to_string(),
            shared: Some(Shared {
                holder,
                clock,
                heartbeat,
            }),
            _lock: Vec::new(),
        }
    }

    /// The holder token of a shared lease.
    pub fn holder(&self) -> Option<&str> {
        self.shared.as_ref().map(|s| s.holder.as_str())
    }

    /// Stops renewing (the run is over).
    pub fn stop_heartbeat(&self) {
        if let Some(s) = &self.shared {
            s.heartbeat.abort();
        }
    }

    /// Whether the run may still change the mailbox: always on files; on
    /// shared state while the lease is known to be ours.
    pub fn check(&self) -> Result<(), CheckpointError> {
        match &self.shared {
            Some(s) if !s.clock.held() => Err(CheckpointError::LeaseLost {
                account: self.account.clone(),
                mailbox: self.mailbox.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Unanswered APPENDs remembered per mailbox, at most: each costs a few
/// dozen bytes of checkpoint and is looked for by every later run (one
/// `UID SEARCH` for all of them).
pub const MAX_UNANSWERED: usize = 10_000;

/// One original whose sealed copy may already be at the provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    pub uid: u32,
    /// INTERNALDATE, seconds since the epoch: the copy carries the same.
    pub internal_date: Option<i64>,
    /// SHA-256 (hex) of what the original opens to (plaintext: itself).
    pub sha256: String,
    /// The `copy=` token its copy carries. `None` in checkpoints written
    /// before copies carried one: such a copy is found by INTERNALDATE and
    /// content hash among the messages from `copies_from_uid` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// An APPEND of a copy that was sent but never answered, for an original
/// no longer in flight: its copy may still be stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unanswered {
    /// The `copy=` token the copy carries.
    pub token: String,
    /// The original it copies.
    pub uid: u32,
    pub internal_date: Option<i64>,
    pub sha256: String,
    /// The UID of the copy kept for that original, once known: a copy
    /// carrying `token` is then a duplicate.
    pub kept: Option<u32>,
    /// The copy gets a UID from this one on.
    pub from_uid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub account: String,
    pub mailbox: String,
    /// `seal` or `reseal:<epoch>`.
    pub job: String,
    pub uidvalidity: u32,
    /// Copies of `in_flight` have UIDs from this one on.
    pub copies_from_uid: u32,
    pub in_flight: Vec<InFlight>,
    /// APPENDs never answered whose copies were not found yet, oldest
    /// first.
    #[serde(default)]
    pub unanswered: Vec<Unanswered>,
    /// Messages moved so far (all runs under this UIDVALIDITY).
    pub moved: u64,
    /// Duplicates left by a crash and removed.
    pub duplicates_removed: u64,
    pub updated: String,
}

/// Where the checkpoint of `account`/`mailbox` for `job` lives: names are
/// hashed, so any mailbox name makes a safe file name.
pub fn path(dir: &Path, account: &str, mailbox: &str, job: &str) -> PathBuf {
    let key = format!("{account}\0{mailbox}\0{job}");
    let hash = digest(&SHA256, key.as_bytes());
    dir.join(format!("{}.json", crate::hash::hex(&hash.as_ref()[..16])))
}

impl Checkpoint {
    /// Nothing done yet for this mailbox and job.
    pub fn fresh(account: &str, mailbox: &str, job: &str) -> Checkpoint {
        Checkpoint {
            account: account.into(),
            mailbox: mailbox.into(),
            job: job.into(),
            ..Checkpoint::default()
        }
    }

    /// Stamps `updated` and serialises (the files' and the rows' format).
    pub fn to_json(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        self.updated = crate::keys::now_rfc3339();
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        Ok(text)
    }

    /// The checkpoint for this mailbox and job in the file store `dir`, or
    /// a fresh one.
    pub fn load(
        dir: &Path,
        account: &str,
        mailbox: &str,
        job: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let path = path(dir, account, mailbox, job);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match Checkpoint::inbox_as_named_before(dir, account, mailbox, job)? {
                    Some(cp) => Ok(cp),
                    None => Ok(Checkpoint::fresh(account, mailbox, job)),
                };
            }
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let cp: Checkpoint =
            serde_json::from_slice(&text).map_err(|e| CheckpointError::Damaged {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if cp.account != account || cp.mailbox != mailbox || cp.job != job {
            return Err(CheckpointError::Damaged {
                path,
                why: "it names another account, mailbox or job".into(),
            });
        }
        Ok(cp)
    }

    /// INBOX's checkpoint as an older writ keyed it, by the name as the
    /// administrator wrote it (`--mailbox inbox`), now that INBOX in any
    /// case is one mailbox: moved to `mailbox`'s key, so a batch that
    /// older run left in flight is resolved, not sealed again. `None`
    /// when there is none (or `mailbox` is not INBOX).
    fn inbox_as_named_before(
        dir: &Path,
        account: &str,
        mailbox: &str,
        job: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            return Ok(None);
        }
        for casing in 0u8..32 {
            let name: String = "inbox"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if casing & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            if name == mailbox {
                continue;
            }
            let old = path(dir, account, &name, job);
            // Read here, not through `load`: a file gone meanwhile (another
            // run moved it) is no reason to look for INBOX under yet
            // another name.
            let text = match std::fs::read(&old) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CheckpointError::Read { path: old, source }),
            };
            let mut cp: Checkpoint =
                serde_json::from_slice(&text).map_err(|e| CheckpointError::Damaged {
                    path: old.clone(),
                    why: e.to_string(),
                })?;
            if cp.account != account || cp.mailbox != name || cp.job != job {
                return Err(CheckpointError::Damaged {
                    path: old,
                    why: "it names another account, mailbox or job".into(),
                });
            }
            cp.mailbox = mailbox.to_string();
            cp.save(dir)?;
            std::fs::remove_file(&old).map_err(|e| CheckpointError::Write {
                path: old.clone(),
                why: e.to_string(),
            })?;
            return Ok(Some(cp));
        }
        Ok(None)
    }

    pub fn save(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let path = path(dir, &self.account, &self.mailbox, &self.job);
        let fail = |why: String| CheckpointError::Write {
            path: path.clone(),
            why,
        };
        atomic::create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        let text = self.to_json().map_err(|e| fail(e.to_string()))?;
        atomic::write_atomic(&path, &text).map_err(|e| fail(e.to_string()))
    }
}

pub use crate::hash::sha256_hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Checkpoint::load(dir.path(), "alice", "INBOX", "seal").unwrap();
        assert_eq!(fresh.uidvalidity, 0);
        let mut cp = fresh.clone();
        cp.uidvalidity = 7;
        cp.in_flight.push(InFlight {
            uid: 3,
            internal_date: Some(1),
            sha256: sha256_hex(b"x"),
            token: Some("00ff.3".into()),
        });
        cp.unanswered.push(Unanswered {
            token: "00fe.3".into(),
            uid: 3,
            internal_date: None,
            sha256: sha256_hex(b"x"),
            kept: Some(9),
            from_uid: 5,
        });
        cp.save(dir.path()).unwrap();
        let back = Checkpoint::load(dir.path(), "alice", "INBOX", "seal").unwrap();
        assert_eq!(back.in_flight, cp.in_flight);
        assert_eq!(back.unanswered, cp.unanswered);
        assert_eq!(back.uidvalidity, 7);
        // Another mailbox or job has its own file.
        let other = Checkpoint::load(dir.path(), "alice", "INBOX", "reseal:00").unwrap();
        assert!(other.in_flight.is_empty());
    }

    #[test]
    fn inbox_as_an_older_run_named_it_is_found_under_inbox() {
        // An older writ keyed `--mailbox inbox` by the name as given, and
        // was killed with a batch in flight.
        let dir = tempfile::tempdir().unwrap();
        let mut old = Checkpoint::fresh("alice", "inbox", "seal");
        old.uidvalidity = 7;
        old.in_flight.push(InFlight {
            uid: 3,
            internal_date: None,
            sha256: sha256_hex(b"x"),
            token: Some("00ff.3".into()),
        });
        old.save(dir.path()).unwrap();
        let cp = Checkpoint::load(dir.path(), "alice", "INBOX", "seal").unwrap();
        assert_eq!((cp.mailbox.as_str(), cp.uidvalidity), ("INBOX", 7));
        assert_eq!(cp.in_flight, old.in_flight);
        // Moved: under INBOX's key now, the old file gone.
        assert!(path(dir.path(), "alice", "INBOX", "seal").exists());
        assert!(!path(dir.path(), "alice", "inbox", "seal").exists());
        // Another mailbox's is not taken for INBOX's.
        let mut other = Checkpoint::fresh("alice", "inboxes", "seal");
        other.uidvalidity = 9;
        other.save(dir.path()).unwrap();
        let cp = Checkpoint::load(dir.path(), "alice", "INBOX", "reseal:00").unwrap();
        assert_eq!(cp.uidvalidity, 0);
    }

    #[test]
    fn checkpoints_of_earlier_versions_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"account":"a","mailbox":"b","job":"seal","uidvalidity":3,
            "copies_from_uid":7,"in_flight":[{"uid":2,"internal_date":null,"sha256":"00"}],
            "moved":1,"duplicates_removed":0,"updated":"x"}"#;
        std::fs::write(path(dir.path(), "a", "b", "seal"), old).unwrap();
        let cp = Checkpoint::load(dir.path(), "a", "b", "seal").unwrap();
        assert_eq!(cp.in_flight[0].token, None);
        assert!(cp.unanswered.is_empty());
    }

    #[test]
    fn a_job_and_the_sweep_exclude_each_other_across_their_directories() {
        // `writ mailbox seal` keeps its checkpoints in [jobs] dir, the
        // sweep in [sweep] dir: each takes the mailbox's lock in both.
        let dir = tempfile::tempdir().unwrap();
        let (jobs, sweep) = (dir.path().join("jobs"), dir.path().join("sweep"));
        let job = Files(jobs.clone(), vec![sweep.clone()]);
        let sweeper = Files(sweep.clone(), vec![jobs.clone()]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let held = rt.block_on(job.lease("alice", "INBOX")).unwrap();
        let e = rt.block_on(sweeper.lease("alice", "inbox")).err().unwrap();
        assert!(matches!(e, CheckpointError::Locked { .. }), "{e}");
        // Another mailbox is free to the sweep meanwhile.
        let other = rt.block_on(sweeper.lease("alice", "Archive")).unwrap();
        drop(held);
        let _ = rt.block_on(sweeper.lease("alice", "INBOX")).unwrap();
        // And the other way round.
        let e = rt.block_on(job.lease("alice", "Archive")).err().unwrap();
        assert!(matches!(e, CheckpointError::Locked { .. }), "{e}");
        drop(other);
    }

    #[test]
    fn one_lease_per_mailbox_inbox_in_any_case_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("jobs");
        let held = Lease::locked(&store, "alice", "INBOX").unwrap();
        for name in ["INBOX", "inbox", "Inbox"] {
            let e = Lease::locked(&store, "alice", name).err().unwrap();
            assert!(matches!(e, CheckpointError::Locked { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("process {}", std::process::id()))
                    && text.contains("run again once it has finished")
                    && !text.contains('\n'),
                "{text}"
            );
        }
        // Other mailboxes and accounts are free; names other than INBOX
        // are case-sensitive.
        let other = Lease::locked(&store, "alice", "Archive").unwrap();
        let _ = Lease::locked(&store, "alice", "archive").unwrap();
        let _ = Lease::locked(&store, "bob", "INBOX").unwrap();
        drop(held);
        let _again = Lease::locked(&store, "alice", "inbox").unwrap();
        drop(other);
        // The lock file is readable (it holds a process id; a run as
        // another user locks it read-only), written by its owner only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lock_path(&store, "alice", "INBOX"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn damaged_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "a", "b", "seal");
        std::fs::write(&p, b"{not json").unwrap();
        let e = Checkpoint::load(dir.path(), "a", "b", "seal").unwrap_err();
        assert!(e.to_string().contains("move it away"), "{e}");
        // A file that names another mailbox is not used.
        let mut cp = Checkpoint::load(dir.path(), "x", "y", "seal").unwrap();
        cp.save(dir.path()).unwrap();
        std::fs::rename(path(dir.path(), "x", "y", "seal"), &p).unwrap();
        assert!(Checkpoint::load(dir.path(), "a", "b", "seal").is_err());
    }
}
