//! Answering sealed messages from the cache, a chunk at a time, as the
//! client drains its output, the cache read off the session.
//!
//! Once the probe is over, the sealed messages wait in
//! [`FetchPlan::cached`] ([`Phase::Cached`]); no command of writ's is in
//! flight but a listing's pipelined ones. A listing (no body section)
//! starts sooner: a chunk of [`EARLY_BATCH`] is submitted as soon as the
//! probe has answered that many sealed messages, and those it cannot
//! answer are fetched at once ([`FetchPlan::early_fetch`]), while the
//! probe goes on. The session asks for the next answers ([`FetchPlan::more`])
//! only when everything composed before has been written to the client.
//! Each chunk is one job ([`chunk`]) on the plan's runner (the
//! process-wide pool, [`super::opening`]): it looks up at most
//! [`LOOKUP_BATCH`] messages in the cache (one index read transaction,
//! [`crate::imap::cache::Cache::lookup`], and the sealed bodies when a
//! body is asked for), decrypts what it found and composes the answers,
//! stopping once [`CACHE_CHUNK_BYTES`] are composed (at least one
//! message, whatever its size). When a chunk is taken, the next one is
//! submitted at once, so the pool composes it while the client is sent
//! the one taken; the session takes it when it asks for more and the job
//! is done ([`FetchPlan::more`], [`FetchPlan::poll`]), and never waits for
//! it. So a FETCH of a whole cached folder holds two chunks (one being
//! written, one composed ahead), each with the message that crosses it,
//! in memory, never the folder, and no cache read or decryption runs in
//! `Session::advance`.
//!
//! Invariants:
//!
//! - One chunk is outstanding per plan at most. Once the session asked
//!   for it, [`FetchPlan::has_more`] is false and [`FetchPlan::working`]
//!   true until it is taken (the connection waits for the job's wake, it
//!   does not spin); before, it is composed ahead and not taken.
//! - Answers go in UID order (the probe's), as before; the messages the
//!   cache could not answer are fetched from the provider afterwards
//!   ([`FetchPlan::sealed_fetch`]); those the chunk did not reach go back
//!   to the head of the queue; a job that panicked sends its messages to
//!   the provider.
//! - The job composes from copies of what the probe found; the answer is
//!   numbered with the message's sequence number when taken, and a message
//!   expunged meanwhile ([`FetchPlan::on_expunge`]) is no longer among the
//!   probed ones and is skipped.
//! - A message remembered as undecryptable under the keys offered now is
//!   left to the plain phase (shown as stored).
//! - Once a BINARY section was refused, no later message is answered (as
//!   Dovecot): the job composes nothing after a refusal and hands the rest
//!   back; the plan drops what is left once it has taken the refusal (not
//!   when the refusing message was expunged meanwhile and so never
//!   answered: then the rest is composed by the next chunk).

use std::num::NonZeroU32;

use imap_next::imap_types::core::{IString, NString};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName};

use super::opening::Pending;
use super::work::{Composed, Source, compose};
use super::{CacheRef, EARLY_BATCH, FetchPlan, Output, Phase, fetch};
use crate::admin::names;
use crate::imap::answer::{self, Item, Need};
use crate::imap::cache::{Known, MessageKey};

/// Bytes of answers composed from the cache per [`FetchPlan::more`]
/// (the message that crosses it is answered whole).
pub const CACHE_CHUNK_BYTES: usize = 512 * 1024;

/// Messages looked up in the cache per chunk, at most.
const LOOKUP_BATCH: usize = 256;

/// A chunk submitted to the pool: its messages, in order, and the job's
/// verdict for each (same order) once it is done.
pub(super) struct Chunk {
    uids: Vec<NonZeroU32>,
    found: Pending<Vec<Found>>,
    /// The session asked for it: taken as soon as it is done.
    asked: bool,
}

impl Chunk {
    /// A chunk of `uids` whose verdicts come from `found` (tests).
    #[cfg(test)]
    pub(super) fn new(uids: Vec<NonZeroU32>, found: Pending<Vec<Found>>) -> Chunk {
        Chunk {
            uids,
            found,
            asked: true,
        }
    }
}

/// What a chunk's job made of one message.
pub(super) enum Found {
    /// Its items, composed from the cache's entry.
    Answered(Composed),
    /// The cache cannot answer it (no entry, no body, or a summary
    /// without the header an item needs): fetched from the provider.
    Missing,
    /// Remembered as undecryptable under the keys offered now: shown as
    /// stored (the plain phase).
    Undecryptable,
    /// The chunk was full, or a BINARY section of an earlier message was
    /// refused, before it: back to the queue.
    NotReached,
    /// Expunged before the chunk was submitted: answered by nothing.
    Dropped,
}

/// What the job needs of one probed message: copies, so the plan keeps
/// its own for an expunge meanwhile.
struct Asked {
    key: MessageKey,
    items: Vec<MessageDataItem<'static>>,
    seen: bool,
    /// The epoch of its marker and the identities offered for it.
    epoch: Option<String>,
    offered: usize,
}

impl FetchPlan {
    /// Whether answers are waiting to be composed from the cache and no
    /// chunk is being composed: the session calls [`FetchPlan::more`] once
    /// what it has is written.
    pub fn has_more(&self) -> bool {
        match self.phase {
            Phase::Cached { .. } => self.from_cache.as_ref().is_none_or(|c| !c.asked),
            // A listing's lookup submitted while the probe is answered.
            Phase::Probe => self.from_cache.as_ref().is_some_and(|c| !c.asked),
            _ => false,
        }
    }

    /// A chunk being composed that the session asked for.
    pub(super) fn awaited_chunk(&self) -> bool {
        self.from_cache.as_ref().is_some_and(|c| c.asked)
    }

    /// The next chunk of answers from the cache (about
    /// [`CACHE_CHUNK_BYTES`]), if it is composed already (submitted now
    /// when it is not yet); else it comes with [`FetchPlan::poll`] once
    /// done. When the cache has answered all it can, the plan moves on (a
    /// command for the rest, or the tagged status).
    pub fn more(&mut self) -> Vec<Output> {
        if !self.has_more() {
            return Vec::new();
        }
        if self.from_cache.is_none() {
            let out = self.submit_chunk();
            if self.from_cache.is_none() {
                return out;
            }
        }
        if let Some(c) = self.from_cache.as_mut() {
            c.asked = true;
        }
        self.take_chunk()
    }

    /// Submits the job for the next chunk (nothing taken yet); when the
    /// cache has nothing left to answer, the plan moves on instead.
    pub(super) fn submit_chunk(&mut self) -> Vec<Output> {
        let (payload, batch) = match self.phase {
            Phase::Cached { payload } => (payload, LOOKUP_BATCH),
            // A listing's probe is being answered: a lookup once a batch
            // is queued; the rest when the probe is over.
            Phase::Probe if self.pipelined => {
                if self.cached.len() < EARLY_BATCH || self.cache.is_none() {
                    return Vec::new();
                }
                (false, EARLY_BATCH)
            }
            _ => return Vec::new(),
        };
        let Some(cache) = self.cache.clone().filter(|_| !self.cached.is_empty()) else {
            self.uncached.extend(self.cached.drain(..));
            return self.next_phase();
        };
        let n = self.cached.len().min(batch);
        let uids: Vec<NonZeroU32> = self.cached.drain(..n).collect();
        if self.refused.get().is_some() {
            // Dovecot answers no message after a BINARY refusal.
            let dropped: Vec<NonZeroU32> = uids.iter().chain(&self.cached).copied().collect();
            for uid in &dropped {
                self.forget(uid);
            }
            self.cached.clear();
            return self.next_phase();
        }
        let asked: Vec<Option<Asked>> = uids
            .iter()
            .map(|uid| {
                let p = self.probed.get(uid)?;
                Some(Asked {
                    key: p.key,
                    items: p.items.clone(),
                    seen: p.seen,
                    epoch: p.sealed.as_ref().map(|d| d.epoch.clone()),
                    offered: p.offered,
                })
            })
            .collect();
        let wanted = self.wanted.clone();
        let job = move || chunk(&cache, &wanted, payload, asked);
        let found = match &self.keys {
            Some((_, runner)) => runner.spawn(job),
            None => Pending::ready(job()),
        };
        self.from_cache = Some(Chunk {
            uids,
            found,
            asked: false,
        });
        Vec::new()
    }

    /// The chunk's answers if the session asked for it and its job is
    /// done (never waits), the next chunk submitted at once; then the
    /// next phase once the cache has answered all it can.
    pub(super) fn take_chunk(&mut self) -> Vec<Output> {
        let Some(c) = self.from_cache.as_mut().filter(|c| c.asked) else {
            return Vec::new();
        };
        let Some(found) = c.found.take() else {
            return Vec::new();
        };
        let Some(Chunk { uids, .. }) = self.from_cache.take() else {
            return Vec::new();
        };
        let found = found.unwrap_or_else(|| {
            tracing::warn!("composing answers from the cache failed; the provider is asked");
            Vec::new()
        });
        let mut out = Vec::new();
        let mut back = Vec::new();
        let mut found = found.into_iter();
        for uid in uids {
            match found.next().unwrap_or(Found::Missing) {
                Found::Answered(composed) => {
                    let Some(probed) = self.forget(&uid) else {
                        continue;
                    };
                    metrics::counter!(names::IMAP_CACHE_HITS_TOTAL).increment(1);
                    let mut items = self.absorb(composed);
                    super::items::refresh(&mut items, &probed.items);
                    out.extend(fetch(probed.seq, items));
                }
                Found::Missing => self.uncached.push(uid),
                Found::Undecryptable => {
                    if let Some(p) = self.probed.get_mut(&uid) {
                        p.sealed = None;
                    }
                }
                Found::NotReached => back.push(uid),
                Found::Dropped => {
                    self.forget(&uid);
                }
            }
        }
        for uid in back.into_iter().rev() {
            self.cached.push_front(uid);
        }
        // Those the cache could not answer, pipelined (a listing).
        out.extend(self.early_fetch());
        // Composed ahead while this chunk is written to the client.
        out.extend(self.submit_chunk());
        out
    }
}

/// The job: looks up `asked` in the cache and composes their answers
/// until [`CACHE_CHUNK_BYTES`]; one verdict per message, in order.
fn chunk(
    c: &CacheRef,
    wanted: &[MessageDataItemName<'static>],
    payload: bool,
    asked: Vec<Option<Asked>>,
) -> Vec<Found> {
    let keys: Vec<MessageKey> = asked.iter().flatten().map(|a| a.key).collect();
    let mut known = c.cache.lookup(&c.mailbox, &keys).into_iter();
    let mut composed = 0usize;
    let mut refused = false;
    asked
        .into_iter()
        .map(|a| {
            let Some(a) = a else {
                // Expunged before it was asked: nothing to answer.
                return Found::Dropped;
            };
            let known = known.next().flatten();
            if refused || composed >= CACHE_CHUNK_BYTES {
                // After a refusal: back to the queue, dropped there once
                // the plan took the refusal (not if the refusing message
                // was expunged meanwhile, and so never answered).
                return Found::NotReached;
            }
            let cached = match known.as_deref() {
                Some(Known::Summary(cached)) => cached,
                Some(Known::Undecryptable(why)) => {
                    let now = a.epoch.as_deref() == Some(why.epoch.as_str())
                        && why.identities == a.offered;
                    return if now {
                        Found::Undecryptable
                    } else {
                        Found::Missing
                    };
                }
                None => return Found::Missing,
            };
            let source = Source::cached(cached);
            // Made listing items need no tree: a warm listing parses none.
            let needs_tree = payload
                || wanted
                    .iter()
                    .any(|i| !answer::from_provider(i) && !cached.listing().made(i));
            if needs_tree {
                let Some(tree) = source.tree() else {
                    // An entry that does not parse: fetched and stored again.
                    return Found::Missing;
                };
                if !payload
                    && wanted
                        .iter()
                        .any(|i| answer::need(i, Some(tree)) == Need::Payload)
                {
                    // A summary without the whole header needs the body.
                    return Found::Missing;
                }
            }
            let body = if payload {
                let Some(body) = c.cache.body(&c.mailbox, a.key) else {
                    return Found::Missing;
                };
                Some(body)
            } else {
                None
            };
            let answer = compose(wanted, &a.items, a.seen, &source, body.as_deref());
            refused = answer.refusal.is_some();
            composed += weight(&answer.items);
            Found::Answered(answer)
        })
        .collect()
}

/// About the bytes `items` take on the wire.
fn weight(items: &[Item]) -> usize {
    const ITEM: usize = 32;
    let nstring = |n: &NString<'_>| match &n.0 {
        Some(IString::Literal(l)) => l.as_ref().len(),
        Some(IString::Quoted(q)) => q.inner().len(),
        None => 0,
    };
    items
        .iter()
        .map(|i| {
            ITEM + match i {
                Item::Written(bytes) => bytes.len(),
                Item::Typed(
                    MessageDataItem::BodyExt { data, .. }
                    | MessageDataItem::Rfc822(data)
                    | MessageDataItem::Rfc822Header(data)
                    | MessageDataItem::Rfc822Text(data),
                ) => nstring(data),
                Item::Typed(_) => 0,
            }
        })
        .sum()
}
