//! Answering sealed messages from the cache, a chunk at a time, as the
//! client drains its output.
//!
//! Once the probe is over, the sealed messages wait in
//! [`FetchPlan::cached`] ([`Phase::Cached`]); no command of writ's is in
//! flight. The session asks for the next answers ([`FetchPlan::more`])
//! only when everything composed before has been written to the client,
//! and each call composes at most [`CACHE_CHUNK_BYTES`] of answers (at
//! least one message, whatever its size). So a FETCH of a whole cached
//! folder holds one chunk, plus the one message that crosses it, in
//! memory, never the folder.
//!
//! Invariants:
//!
//! - Messages are looked up [`LOOKUP_BATCH`] at a time (one index read
//!   transaction each, [`Cache::lookup`]), so what the cache knows is held
//!   for one batch, not for the whole folder.
//! - Answers go in UID order (the probe's), as before; the messages the
//!   cache could not answer are fetched from the provider afterwards
//!   ([`FetchPlan::sealed_fetch`]).
//! - A message expunged meanwhile ([`FetchPlan::on_expunge`]) is no longer
//!   among the probed ones, and is skipped.
//! - A message remembered as undecryptable under the keys offered now is
//!   left to the plain phase (shown as stored).

use std::num::NonZeroU32;

use imap_next::imap_types::core::{IString, NString};
use imap_next::imap_types::fetch::MessageDataItem;
use imap_next::imap_types::response::Data;

use super::{FetchPlan, Output, Phase, fetch};
use crate::admin::names;
use crate::imap::answer::{self, Need};
use crate::imap::cache::Known;

/// Bytes of answers composed from the cache per [`FetchPlan::more`]
/// (the message that crosses it is answered whole).
pub const CACHE_CHUNK_BYTES: usize = 512 * 1024;

/// Messages looked up in the cache at once.
const LOOKUP_BATCH: usize = 256;

impl FetchPlan {
    /// Whether answers are waiting to be composed from the cache: the
    /// session calls [`FetchPlan::more`] once what it has is written.
    pub fn has_more(&self) -> bool {
        matches!(self.phase, Phase::Cached { .. })
    }

    /// The next answers from the cache, about [`CACHE_CHUNK_BYTES`]; when
    /// the cache has answered all it can, the plan moves on (a command for
    /// the rest, or the tagged status).
    pub fn more(&mut self) -> Vec<Output> {
        let Phase::Cached { payload } = self.phase else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut composed = 0usize;
        while composed < CACHE_CHUNK_BYTES && !self.cached.is_empty() {
            let n = self.cached.len().min(LOOKUP_BATCH);
            let batch: Vec<NonZeroU32> = self.cached.drain(..n).collect();
            self.answer_from_cache(batch, payload, &mut out, &mut composed);
        }
        if self.cached.is_empty() {
            out.extend(self.next_phase());
        }
        out
    }

    /// Answers what the cache can of `uids` into `out` until `composed`
    /// reaches the chunk; those not reached go back to the queue, those
    /// the cache cannot answer to [`FetchPlan::uncached`].
    fn answer_from_cache(
        &mut self,
        uids: Vec<NonZeroU32>,
        payload: bool,
        out: &mut Vec<Output>,
        composed: &mut usize,
    ) {
        let Some(c) = self.cache.clone() else {
            self.uncached.extend(uids);
            return;
        };
        let (uids, msgs): (Vec<NonZeroU32>, Vec<_>) = uids
            .into_iter()
            .filter_map(|u| Some((u, self.probed.get(&u)?.key)))
            .unzip();
        let found = c.cache.lookup(&c.mailbox, &msgs);
        let mut rest = uids.iter().copied().zip(msgs).zip(found);
        while let Some(((uid, key), known)) = rest.next() {
            if *composed >= CACHE_CHUNK_BYTES {
                let back: Vec<NonZeroU32> = std::iter::once(uid)
                    .chain(rest.map(|((u, _), _)| u))
                    .collect();
                for u in back.into_iter().rev() {
                    self.cached.push_front(u);
                }
                return;
            }
            let summary = match known.as_deref() {
                Some(Known::Summary(summary, listing)) => (summary, listing),
                Some(Known::Undecryptable(why)) => {
                    if let Some(p) = self.probed.get_mut(&uid)
                        && p.sealed.as_ref().is_some_and(|d| d.epoch == why.epoch)
                        && why.identities == p.offered
                    {
                        p.sealed = None;
                    } else {
                        self.uncached.push(uid);
                    }
                    continue;
                }
                None => {
                    self.uncached.push(uid);
                    continue;
                }
            };
            let (summary, listing) = summary;
            let body = if payload {
                let Some(body) = c.cache.body(&c.mailbox, key) else {
                    self.uncached.push(uid);
                    continue;
                };
                Some(body)
            } else if self
                .wanted
                .iter()
                .any(|i| answer::need(i, Some(summary)) == Need::Payload)
            {
                // A summary without the whole header needs the body.
                self.uncached.push(uid);
                continue;
            } else {
                None
            };
            let Some(probed) = self.probed.remove(&uid) else {
                continue;
            };
            metrics::counter!(names::IMAP_CACHE_HITS_TOTAL).increment(1);
            let items = self.compose(&probed, summary, body.as_deref(), Some(listing));
            drop(body);
            if let Some(answer) = fetch(probed.seq, items) {
                *composed += weight(&answer);
                out.push(answer);
            }
        }
    }
}

/// About the bytes `output` takes on the wire.
fn weight(output: &Output) -> usize {
    const ITEM: usize = 32;
    let nstring = |n: &NString<'_>| match &n.0 {
        Some(IString::Literal(l)) => l.as_ref().len(),
        Some(IString::Quoted(q)) => q.inner().len(),
        None => 0,
    };
    match output {
        Output::ToClientRaw(bytes) => bytes.len(),
        Output::ToClient(Data::Fetch { items, .. }) => items
            .as_ref()
            .iter()
            .map(|i| {
                ITEM + match i {
                    MessageDataItem::BodyExt { data, .. }
                    | MessageDataItem::Rfc822(data)
                    | MessageDataItem::Rfc822Header(data)
                    | MessageDataItem::Rfc822Text(data) => nstring(data),
                    _ => 0,
                }
            })
            .sum(),
        _ => ITEM,
    }
}
