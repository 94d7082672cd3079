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
//! Files are JSON, written atomically (temp file, fsync, rename), 0600.

use std::path::{Path, PathBuf};

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
    /// The checkpoint for this mailbox and job, or a fresh one.
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
                return Ok(Checkpoint {
                    account: account.into(),
                    mailbox: mailbox.into(),
                    job: job.into(),
                    ..Checkpoint::default()
                });
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

    pub fn save(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let path = path(dir, &self.account, &self.mailbox, &self.job);
        let fail = |why: String| CheckpointError::Write {
            path: path.clone(),
            why,
        };
        atomic::create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        self.updated = crate::keys::now_rfc3339();
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| fail(e.to_string()))?;
        text.push(b'\n');
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
