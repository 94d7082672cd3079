//! The SEARCH plan's work off the session: each message is looked up in
//! the cache, opened (through [`crate::imap::opened`], the FETCH plan's
//! way) and held against the criteria as a job on the pool, so a large
//! SEARCH BODY over sealed mail holds no runtime thread.
//!
//! Invariants:
//!
//! - A job computes everything that reads the message (the match, the
//!   SORT values, what THREAD needs); the plan only records the verdict,
//!   under the message's sequence number at that time (an EXPUNGE may
//!   have renumbered it meanwhile).
//! - At most [`in_flight`](crate::imap::fetch::opening::in_flight) jobs
//!   are outstanding per plan ([`SearchPlan::saturated`]: the session
//!   stops reading the provider meanwhile); a phase's tagged status is
//!   held until its jobs are done.
//! - A message stays in `pending` until its verdict is taken: one the
//!   cache or its summary could not answer goes on to the next phase, one
//!   that did not open is searched as stored.

use std::num::NonZeroU32;
use std::sync::Arc;

use super::{Meta, SearchPlan};
use crate::admin::names;
use crate::envelope::{self, Keys, Summary};
use crate::imap::fetch::Output;
use crate::imap::fetch::opening::Runner;
use crate::imap::opened::Target;
use crate::imap::search::{Candidate, Search};
use crate::imap::session::SharedKeys;
use crate::imap::{sort, thread};

/// What a job found of one message.
pub(super) enum Verdict {
    /// Held against the criteria: how it matched (`None`: it did not).
    Judged(Option<Matched>),
    /// Not answerable yet (not cached, a summary without the header): the
    /// next phase fetches more of it.
    Unanswered,
    /// It does not open: searched as stored from now on.
    AsStored,
}

/// A matching message, with what the answer needs of it.
pub(super) enum Matched {
    Found,
    Sorted(Vec<sort::Value>),
    Threaded(Box<thread::Message>),
}

type Job = Box<dyn FnOnce(&(dyn Keys + Send + Sync)) -> Verdict + Send>;

/// What holding a message against the criteria needs, for a job.
struct Judge {
    search: Arc<Search>,
    sort: Option<Arc<sort::Program>>,
    threads: bool,
    uid: bool,
    max_seq: u32,
    max_uid: u32,
}

impl Judge {
    fn judge(
        &self,
        uid: NonZeroU32,
        meta: &Meta,
        size: u64,
        message: &[u8],
        summary: Option<&Summary>,
    ) -> Option<Matched> {
        let candidate = Candidate {
            seq: meta.seq,
            uid,
            max_seq: self.max_seq,
            max_uid: self.max_uid,
            flags: &meta.flags,
            recent: meta.recent,
            internal_date: meta.internal_date.as_ref(),
            size,
            modseq: None,
            message,
            summary,
        };
        if !self.search.matches(&candidate) {
            return None;
        }
        let internal = || meta.internal_date.as_ref().map(|d| d.as_ref().timestamp());
        if self.threads {
            let id = if self.uid { uid } else { meta.seq };
            let m = thread::Message::new(message, uid, meta.seq, id, internal());
            return Some(Matched::Threaded(Box::new(m)));
        }
        Some(match &self.sort {
            Some(program) => Matched::Sorted(program.values(message, size, internal())),
            None => Matched::Found,
        })
    }
}

impl SearchPlan {
    /// Opens and searches messages with `keys` through `runner` (the
    /// process-wide pool).
    pub fn opening_with(mut self, keys: SharedKeys, runner: Runner) -> SearchPlan {
        self.keys = Some((keys, runner));
        self
    }

    fn judge(&self) -> Judge {
        Judge {
            search: Arc::clone(&self.search),
            sort: self.sort.clone(),
            threads: self.threads.is_some(),
            uid: self.uid,
            max_seq: self.max_seq,
            max_uid: self.max_uid,
        }
    }

    /// Runs `job`, which works on a message of `bytes`, through the
    /// plan's runner (heavy past
    /// [`crate::imap::fetch::opening::HEAVY_BYTES`]), or at once with
    /// `keys`.
    pub(super) fn submit(
        &mut self,
        uid: NonZeroU32,
        bytes: usize,
        keys: &(dyn Keys + Send + Sync),
        job: Job,
    ) {
        let pending = crate::imap::fetch::opening::with_keys(self.keys.as_ref(), keys, bytes, job);
        self.work.push(uid, pending);
    }

    /// Holds `message` (a plaintext message, or its header) against the
    /// criteria as it is.
    pub(super) fn judge_job(&self, meta: &Meta, uid: NonZeroU32, message: Vec<u8>) -> Job {
        let judge = self.judge();
        let meta = meta.clone();
        Box::new(move |_| Verdict::Judged(judge.judge(uid, &meta, meta.size, &message, None)))
    }

    /// A sealed message as the probe found it (`header`: its stored
    /// header): answered from the cache if it can be.
    pub(super) fn lookup_job(&self, meta: &Meta, uid: NonZeroU32, header: Vec<u8>) -> Job {
        let judge = self.judge();
        let meta = meta.clone();
        let cache = self.cache.clone();
        let header_only = self.header_only;
        Box::new(move |keys| {
            let (Some(c), Some((marker, prefix, key))) = (cache.as_ref(), &meta.sealed) else {
                return Verdict::Unanswered;
            };
            let target = Target {
                keys,
                cache: Some(c),
                key: *key,
                marker,
                prefix,
            };
            if target.known_undecryptable() {
                return match header_only {
                    true => Verdict::Judged(judge.judge(uid, &meta, meta.size, &header, None)),
                    false => Verdict::AsStored,
                };
            }
            if header_only {
                if let Some(summary) = c.cache.summary(&c.mailbox, *key)
                    && let Some(h) = summary.root.header.as_deref()
                {
                    metrics::counter!(names::IMAP_CACHE_HITS_TOTAL).increment(1);
                    let size = envelope::view::rfc822_size(&summary);
                    return Verdict::Judged(judge.judge(uid, &meta, size, h, Some(&summary)));
                }
            } else if let Some((summary, Some(opened))) = c.cache.get(&c.mailbox, *key) {
                metrics::counter!(names::IMAP_CACHE_HITS_TOTAL).increment(1);
                let size = envelope::view::rfc822_size(&summary);
                return Verdict::Judged(judge.judge(uid, &meta, size, &opened, Some(&summary)));
            }
            Verdict::Unanswered
        })
    }

    /// Opens a sealed message's summary (part 1) and holds its header
    /// against the criteria.
    pub(super) fn summary_job(
        &self,
        meta: &Meta,
        uid: NonZeroU32,
        part1: Vec<u8>,
        mime: Vec<u8>,
    ) -> Job {
        let judge = self.judge();
        let meta = meta.clone();
        let cache = self.cache.clone();
        Box::new(move |keys| {
            let Some((marker, prefix, key)) = &meta.sealed else {
                return Verdict::Unanswered;
            };
            let target = Target {
                keys,
                cache: cache.as_ref(),
                key: *key,
                marker,
                prefix,
            };
            match target.summary(&part1, &mime) {
                Ok((summary, _)) => match summary.root.header.as_deref() {
                    Some(h) => {
                        let size = envelope::view::rfc822_size(&summary);
                        Verdict::Judged(judge.judge(uid, &meta, size, h, Some(&summary)))
                    }
                    // A header too long for the summary: the whole message.
                    None => Verdict::Unanswered,
                },
                Err(_) => Verdict::AsStored,
            }
        })
    }

    /// Opens a whole stored message if sealed and holds it against the
    /// criteria; one that does not open is searched as stored.
    pub(super) fn whole_job(&self, meta: &Meta, uid: NonZeroU32, stored: Vec<u8>) -> Job {
        let judge = self.judge();
        let meta = meta.clone();
        let cache = self.cache.clone();
        Box::new(move |keys| {
            let as_stored = || judge.judge(uid, &meta, meta.size, &stored, None);
            let Some((marker, prefix, key)) = &meta.sealed else {
                return Verdict::Judged(as_stored());
            };
            let target = Target {
                keys,
                cache: cache.as_ref(),
                key: *key,
                marker,
                prefix,
            };
            match target.whole(&stored) {
                Ok((summary, opened)) => {
                    let size = envelope::view::rfc822_size(&summary);
                    Verdict::Judged(judge.judge(uid, &meta, size, &opened, Some(&summary)))
                }
                Err(_) => Verdict::Judged(as_stored()),
            }
        })
    }

    /// Records the verdicts ready now, in the order submitted.
    pub(super) fn take_judged(&mut self) -> Vec<Output> {
        for (uid, verdict) in self.work.take_ready() {
            // A lost job (it panicked): the message is searched as stored.
            match verdict.unwrap_or(Verdict::AsStored) {
                Verdict::Judged(matched) => {
                    let Some(meta) = self.pending.remove(&uid) else {
                        // Expunged meanwhile: it matches nothing.
                        continue;
                    };
                    // Judged: it no longer weighs on the plan's budget.
                    self.pending_bytes =
                        self.pending_bytes.saturating_sub(super::meta_weight(&meta));
                    if let Some(matched) = matched {
                        self.record(uid, &meta, matched);
                    }
                }
                Verdict::Unanswered => {}
                Verdict::AsStored => {
                    if let Some(meta) = self.pending.get_mut(&uid) {
                        meta.sealed = None;
                    }
                }
            }
        }
        Vec::new()
    }

    fn record(&mut self, uid: NonZeroU32, meta: &Meta, matched: Matched) {
        let id = if self.uid { uid } else { meta.seq };
        match matched {
            Matched::Found => self.found.push(id),
            Matched::Sorted(values) => self.sorted.push(sort::Entry {
                values,
                seq: meta.seq,
                id,
            }),
            Matched::Threaded(mut m) => {
                if let Some(threads) = &mut self.threads {
                    m.seq = meta.seq;
                    m.id = id;
                    threads.push(*m);
                }
            }
        }
    }

    /// Too many jobs outstanding to read more of the provider's answers,
    /// or a phase's end waits for them.
    pub fn saturated(&self) -> bool {
        self.work.full() || self.held_status.is_some()
    }

    /// Jobs are running: the session is woken when one is done.
    pub fn working(&self) -> bool {
        !self.work.is_empty() || self.finishing.is_some()
    }

    /// Records what was judged meanwhile; once nothing is running, the
    /// held tagged status moves the plan on.
    pub fn poll(&mut self) -> Vec<Output> {
        if self.finishing.is_some() {
            // Every message is judged: the answer is being ordered.
            return self.take_finished();
        }
        let mut out = self.take_judged();
        if self.work.is_empty()
            && let Some(status) = self.held_status.take()
        {
            match self.on_status(status) {
                Ok(more) => out.extend(more),
                Err(_) => tracing::debug!("a held status no longer ends a phase"),
            }
        }
        out
    }
}
