//! The bookkeeping of one resolve ([`super::mover`] steps 4–6): which
//! originals a batch in flight and the unanswered APPENDs account for,
//! which copy tokens are awaited, and the checkpoint that results (no batch
//! in flight; every awaited APPEND whose copy was not found is
//! unanswered, with the copy kept for its original). Pure: no I/O.
//!
//! Invariant: at most [`MAX_UNANSWERED`] unanswered APPENDs are recorded;
//! past that the oldest are forgotten with a warning.

use std::collections::{HashMap, HashSet};

use super::checkpoint::{Checkpoint, MAX_UNANSWERED, Unanswered};

/// How the provider answered the APPENDs of the batch in flight.
#[derive(Default)]
pub(super) struct Answered {
    /// UIDs of the copies (APPENDUID).
    pub(super) copies: Vec<u32>,
    /// Some APPEND was stored without APPENDUID: its copy is searched for.
    pub(super) uid_unknown: bool,
    /// Tokens of APPENDs refused: no copy of them exists.
    pub(super) refused: HashSet<String>,
}

/// One original with copies to account for, during a resolve.
pub(super) struct Original {
    pub(super) uid: u32,
    pub(super) internal_date: Option<i64>,
    sha256: String,
    /// The copy kept for it by an earlier run (from the checkpoint).
    pub(super) kept_before: Option<u32>,
    /// The copy kept for it, verified by this resolve.
    pub(super) verified: Option<u32>,
    /// In the batch in flight (not only an unanswered APPEND).
    pub(super) in_flight: bool,
}

impl Original {
    pub(super) fn kept(&self) -> Option<u32> {
        self.verified.or(self.kept_before)
    }

    /// A fetched message opens to what this original opens to.
    pub(super) fn matches(&self, hash: Option<&String>, date: Option<i64>) -> bool {
        Some(&self.sha256) == hash
            && (self.internal_date.is_none() || date.is_none() || self.internal_date == date)
    }
}

/// The originals a resolve accounts for, and the tokens of their copies
/// it waits for.
pub(super) struct Book {
    pub(super) originals: Vec<Original>,
    /// Awaited token → index in `originals`.
    pub(super) tokens: HashMap<String, usize>,
    /// Originals of a batch recorded without tokens.
    pub(super) legacy: Vec<usize>,
    /// The lowest UID an awaited copy can have, if any is awaited.
    pub(super) search_from: Option<u32>,
    /// Unanswered APPENDs this resolve does not look at, kept as they are.
    pub(super) untouched: Vec<Unanswered>,
    /// `(token, original, from_uid)` of every awaited APPEND, oldest first.
    pub(super) awaited: Vec<(String, usize, u32)>,
    /// Tokens whose copy was found.
    pub(super) found: HashSet<String>,
}

impl Book {
    /// At the start of a run (`answered` None) every unanswered APPEND is
    /// looked at; after a batch only those of its originals.
    pub(super) fn of(cp: &Checkpoint, answered: Option<&Answered>) -> Book {
        let mut book = Book {
            originals: Vec::new(),
            tokens: HashMap::new(),
            legacy: Vec::new(),
            search_from: None,
            untouched: Vec::new(),
            awaited: Vec::new(),
            found: HashSet::new(),
        };
        let in_batch: HashSet<u32> = cp.in_flight.iter().map(|i| i.uid).collect();
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut entry = |book: &mut Book, uid: u32, date: Option<i64>, sha: &str| {
            *index.entry(uid).or_insert_with(|| {
                book.originals.push(Original {
                    uid,
                    internal_date: date,
                    sha256: sha.to_string(),
                    kept_before: None,
                    verified: None,
                    in_flight: false,
                });
                book.originals.len() - 1
            })
        };
        for u in &cp.unanswered {
            if answered.is_some() && !in_batch.contains(&u.uid) {
                book.untouched.push(u.clone());
                continue;
            }
            let n = entry(&mut book, u.uid, u.internal_date, &u.sha256);
            book.originals[n].kept_before = book.originals[n].kept_before.or(u.kept);
            book.awaited.push((u.token.clone(), n, u.from_uid));
            book.search_from = Some(book.search_from.map_or(u.from_uid, |f| f.min(u.from_uid)));
        }
        let refused = answered.map(|a| &a.refused);
        for i in &cp.in_flight {
            let n = entry(&mut book, i.uid, i.internal_date, &i.sha256);
            book.originals[n].in_flight = true;
            match &i.token {
                Some(t) if refused.is_some_and(|r| r.contains(t)) => {}
                Some(t) => {
                    book.awaited.push((t.clone(), n, cp.copies_from_uid));
                    let from = cp.copies_from_uid;
                    book.search_from = Some(book.search_from.map_or(from, |f| f.min(from)));
                }
                None => book.legacy.push(n),
            }
        }
        book.tokens = book
            .awaited
            .iter()
            .map(|(t, n, _)| (t.clone(), *n))
            .collect();
        book
    }

    /// Which original a fetched message may be a copy of: by its token, or
    /// (no token, a legacy batch) by what it opens to. Marks the token
    /// found.
    pub(super) fn original_of(
        &mut self,
        token: Option<&str>,
        hash: Option<&String>,
        date: Option<i64>,
    ) -> Option<usize> {
        match token {
            Some(t) => {
                let n = *self.tokens.get(t)?;
                self.found.insert(t.to_string());
                Some(n)
            }
            None => {
                let matching = |&&n: &&usize| self.originals[n].matches(hash, date);
                let unclaimed = self
                    .legacy
                    .iter()
                    .filter(matching)
                    .find(|&&n| self.originals[n].kept().is_none());
                unclaimed
                    .or_else(|| self.legacy.iter().find(matching))
                    .copied()
            }
        }
    }

    /// The checkpoint after this resolve: no batch in flight; every
    /// awaited APPEND whose copy was not found is unanswered, with the
    /// copy kept for its original.
    pub(super) fn record(self, cp: &mut Checkpoint) {
        let mut unanswered = self.untouched;
        for (token, n, from_uid) in self.awaited {
            if self.found.contains(&token) {
                continue;
            }
            let o = &self.originals[n];
            unanswered.push(Unanswered {
                token,
                uid: o.uid,
                internal_date: o.internal_date,
                sha256: o.sha256.clone(),
                kept: o.kept(),
                from_uid,
            });
        }
        if unanswered.len() > MAX_UNANSWERED {
            let dropped = unanswered.len() - MAX_UNANSWERED;
            tracing::warn!(
                account = %cp.account, mailbox = %cp.mailbox, dropped,
                "too many unanswered APPENDs recorded; the oldest are forgotten (a copy the \
                 provider stores for them later stays as a duplicate)"
            );
            unanswered.drain(..dropped);
        }
        cp.unanswered = unanswered;
        cp.in_flight.clear();
    }
}
