//! Verification of an audit chain one record line at a time
//! ([`ChainCheck`]): the rules [`super::verify`] applies to the file log,
//! applied the same way by the PostgreSQL state backend to its rows.
//!
//! Each line must carry a valid signature by the audit key, the next
//! sequence number and the SHA-256 of the line before; only the first
//! record begins a chain (a [`GENESIS_ACTIONS`] record naming the
//! keyring's oldest epoch). The signed head names how many records there
//! must be at least and the hash of that record.

use std::path::Path;

use ring::signature::{ED25519, UnparsedPublicKey};

use super::{
    GENESIS, GENESIS_ACTIONS, HEAD_DOMAIN, HEAD_FILE, Head, RECORD_DOMAIN, RESTART, Record,
    Verified, split_signed,
};
use crate::hash::sha256_hex;

/// Verification of a chain, one record line at a time: what [`verify`]
/// does for the file log and the PostgreSQL backend does for its rows, so
/// both check the same rules.
pub(crate) struct ChainCheck<'a> {
    /// The keyring directory (its oldest epoch must begin the chain).
    dir: &'a Path,
    key: UnparsedPublicKey<Vec<u8>>,
    /// SHA-256 of the last line checked.
    prev: String,
    /// Lines checked.
    pub(crate) count: u64,
    restarted: bool,
}

/// What is wrong with a head: itself, or the chain's tail (record number,
/// problem).
pub(crate) enum HeadProblem {
    Bad(String),
    TailCut(u64, String),
}

impl<'a> ChainCheck<'a> {
    pub(crate) fn new(dir: &'a Path, public_key: Vec<u8>) -> Self {
        ChainCheck {
            dir,
            key: UnparsedPublicKey::new(&ED25519, public_key),
            prev: GENESIS.to_string(),
            count: 0,
            restarted: false,
        }
    }

    /// Checks the next line (`cut`: it had no line end); on failure the
    /// record number and the problem.
    pub(crate) fn line(&mut self, raw: &[u8], cut: bool) -> Result<Record, (u64, String)> {
        let n = self.count + 1;
        let broken = |problem: &str| (n, problem.to_string());
        let line = std::str::from_utf8(raw).map_err(|_| broken("not text (altered or damaged)"))?;
        let Some((msg, sig)) = split_signed(RECORD_DOMAIN, line) else {
            return Err(broken(if cut {
                "cut short: the log was truncated"
            } else {
                "not a signed record (altered or damaged)"
            }));
        };
        if self.key.verify(&msg, &sig).is_err() {
            return Err(broken(if cut {
                "cut short: the log was truncated"
            } else {
                "signature does not match: the record was altered (or signed by another key)"
            }));
        }
        let record: Record = serde_json::from_str(line)
            .map_err(|_| broken("signed, but not a record this writ reads"))?;
        if record.seq != n {
            return Err((
                n,
                format!(
                    "holds record {} where record {n} belongs: records were deleted, inserted or reordered",
                    record.seq
                ),
            ));
        }
        if record.prev != self.prev {
            return Err((
                n,
                format!(
                    "does not follow line {} (its previous-record hash differs): records were deleted, inserted or reordered",
                    n - 1
                ),
            ));
        }
        if cut {
            return Err(broken("cut short (no line end): the log was truncated"));
        }
        check_place(self.dir, &record).map_err(|problem| (n, problem))?;
        self.restarted |= record.action == RESTART;
        self.prev = sha256_hex(raw);
        self.count = n;
        Ok(record)
    }

    /// Checks the head (its line without line end; None: there is none)
    /// against the lines checked so far. The head must be signed and name
    /// a record the chain has: a chain longer than the head is fine (a
    /// crash between appending and rewriting the head), a shorter one lost
    /// its tail.
    pub(crate) fn head(&self, line: Option<&str>) -> Result<(), HeadProblem> {
        let count = self.count;
        let Some(line) = line else {
            if count == 0 {
                return Ok(());
            }
            return Err(HeadProblem::Bad(format!(
                "missing, but the log holds {count} records (cannot tell whether its tail was cut)"
            )));
        };
        let bad = |problem: &str| HeadProblem::Bad(problem.to_string());
        let (msg, sig) =
            split_signed(HEAD_DOMAIN, line).ok_or_else(|| bad("damaged (not signed)"))?;
        self.key
            .verify(&msg, &sig)
            .map_err(|_| bad("signature does not match: the head was altered"))?;
        let head: Head = serde_json::from_str(line)
            .map_err(|_| bad("signed, but not a head this writ reads"))?;
        if head.records > count {
            return Err(HeadProblem::TailCut(
                count + 1,
                format!(
                    "missing: the log ends after {count} records but {HEAD_FILE} says {}: its tail was cut",
                    head.records
                ),
            ));
        }
        if head.records == count && head.last != self.prev {
            return Err(HeadProblem::Bad(format!(
                "names another record {count} than the log's last line"
            )));
        }
        Ok(())
    }

    /// What the checked chain is (call after [`ChainCheck::head`]).
    pub(crate) fn verified(&self) -> Verified {
        Verified {
            records: self.count,
            head: self.prev.clone(),
            restarted: self.restarted,
        }
    }
}

/// A chain's first record, and only its first, is the keyring's creation
/// (or the audit log's, see [`GENESIS_ACTIONS`]), and it names the
/// keyring's oldest epoch when the keyring in `dir` can be read.
fn check_place(dir: &Path, record: &Record) -> Result<(), String> {
    let beginning = GENESIS_ACTIONS.contains(&record.action.as_str());
    if record.seq == 1 && !beginning {
        return Err(format!(
            "is a {} record, not the keyring's creation (keys.init): the log's beginning is \
             missing, or a new log was begun without saying so",
            record.action
        ));
    }
    if record.seq > 1 && beginning {
        return Err(format!(
            "{} in the middle of the chain: a second log was spliced in",
            record.action
        ));
    }
    if record.seq == 1
        && let Some(named) = record.params.get("epoch").and_then(|v| v.as_str())
        && let Ok(keyring) = crate::keys::Keyring::load_epochs(dir)
        && let Some(oldest) = keyring.epochs().first()
        && oldest.id != named
    {
        return Err(format!(
            "begins the log of another keyring (epoch {named}; this keyring's first is {}): \
             the log was replaced",
            oldest.id
        ));
    }
    Ok(())
}
