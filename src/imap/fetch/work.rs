//! The FETCH plan's work off the session: opening a sealed message (its
//! summary, or the whole message with its BINARY sections decoded and its
//! items composed) as a job on the pool ([`super::opening`]), and taking
//! the results back in the provider's order.
//!
//! Invariants:
//!
//! - Nothing here waits: [`FetchPlan::poll`] takes what is ready. While
//!   [`FetchPlan::saturated`] the session reads no further provider
//!   responses, so at most [`super::opening::in_flight`] whole messages
//!   ([`super::opening::in_flight_summaries`] summaries) are
//!   being opened per plan.
//! - The sealed phase ends when its last command is answered and every
//!   message being opened is answered ([`FetchPlan::drain_then_next`];
//!   no further provider answer is read meanwhile), so answers never
//!   follow the phase they belong to.
//! - A job opens through [`crate::imap::opened`] (one place for the
//!   transfer encoding of part 1, the cache, the undecryptable verdicts
//!   and the failure metrics) and composes with [`compose`], the same
//!   function the cache and the session's thread use.
//! - Once a BINARY section was refused, no later message is answered (as
//!   Dovecot): a whole message composed before the refusal was known is
//!   dropped when taken.

use std::num::NonZeroU32;
use std::sync::Arc;

use imap_next::imap_types::core::Vec1;
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Part, Section};

use super::{FetchPlan, Output, Probed, answers, fetch, show_seen, uid_of};
use crate::admin::names;
use crate::envelope::{self, EnvelopeError, Keys, Summary};
use crate::imap::answer::{self, Item, Need};
use crate::imap::cache::{Known, KnownSummary};
use crate::imap::opened::Target;
use crate::imap::section::binary::{Memo, Refusal};

/// Summaries opened per job on the pool.
pub(super) const SUMMARY_BATCH: usize = 8;

/// What a job gives back.
pub(super) enum Opened {
    /// The summary of part 1 when an item needs the message's body (then
    /// fetched whole), or when it did not open.
    Summary(Result<Box<Summary>, EnvelopeError>),
    /// The items composed in the job: from the summary of part 1 when no
    /// item needs the body, or from the whole message.
    Whole(Result<Composed, EnvelopeError>),
}

/// One message's items as composed, and what they tell of the command.
pub(super) struct Composed {
    pub(super) items: Vec<Item>,
    /// A BINARY section did not decode: the command ends NO with it.
    pub(super) refusal: Option<Refusal>,
    /// An item could not be answered: the command ends NO.
    pub(super) incomplete: bool,
}

/// A job: run with the keyring on the pool (or at once in unit tests).
pub(super) type Job = Box<dyn FnOnce(&(dyn Keys + Send + Sync)) -> Opened + Send>;

/// The summary an answer is composed from: one just opened, or a cached
/// entry's, parsed the first time an item that is not made yet needs it;
/// and the cache entry whose listing items are used and kept.
pub(super) struct Source<'a> {
    given: Option<&'a Summary>,
    cached: Option<&'a KnownSummary>,
    parsed: std::cell::OnceCell<Option<Summary>>,
}

impl<'a> Source<'a> {
    /// A summary just opened; its listing items are kept in `cached` (the
    /// entry the cache made of it) when there is one.
    pub(super) fn given(summary: &'a Summary, cached: Option<&'a Known>) -> Source<'a> {
        Source {
            given: Some(summary),
            cached: match cached {
                Some(Known::Summary(k)) => Some(k),
                _ => None,
            },
            parsed: std::cell::OnceCell::new(),
        }
    }

    /// A cached entry's summary.
    pub(super) fn cached(known: &'a KnownSummary) -> Source<'a> {
        Source {
            given: None,
            cached: Some(known),
            parsed: std::cell::OnceCell::new(),
        }
    }

    /// The summary's tree; `None` when a cached entry does not parse.
    pub(super) fn tree(&self) -> Option<&Summary> {
        match self.given {
            Some(s) => Some(s),
            None => self
                .parsed
                .get_or_init(|| self.cached.and_then(KnownSummary::tree))
                .as_ref(),
        }
    }
}

/// The response items for a sealed message, in the client's order; the
/// listing items from the cache entry when it made them already (and
/// kept there when made now).
pub(super) fn compose(
    wanted: &[MessageDataItemName<'static>],
    probed_items: &[MessageDataItem<'static>],
    seen: bool,
    source: &Source<'_>,
    opened: Option<&[u8]>,
) -> Composed {
    let mut out = Vec::new();
    let mut incomplete = false;
    let mut memo = Memo::default();
    for name in wanted {
        let binary = opened.and_then(|m| {
            source
                .tree()
                .and_then(|summary| answer::binary(name, summary, m, &mut memo))
        });
        match binary {
            Some(Ok(item)) => {
                out.push(item);
                continue;
            }
            Some(Err(refusal)) => {
                // Dovecot ends the FETCH here, NO [code]; a response
                // with nothing in it carries the UID.
                if out.is_empty() {
                    out.extend(uid_of(probed_items).map(|u| Item::Typed(MessageDataItem::Uid(u))));
                }
                return Composed {
                    items: out,
                    refusal: Some(refusal),
                    incomplete,
                };
            }
            None => {}
        }
        let made = || {
            source
                .tree()
                .and_then(|summary| answer::answer(name, summary, opened))
        };
        let ours = || match source.cached.filter(|_| opened.is_none()) {
            Some(known) => known.listing().item(name, made).unwrap_or_else(made),
            None => made(),
        };
        if answer::from_provider(name) {
            if let Some(item) = probed_items.iter().find(|i| answers(i, name)) {
                out.push(Item::Typed(item.clone()));
            }
        } else if let Some(item) = ours() {
            out.push(item);
        } else if let Some(item) = probed_items.iter().find(|i| answers(i, name)) {
            // writ could not answer (a header item of a summary that
            // lacks the header): the stored message's own item rather
            // than none.
            out.push(Item::Typed(item.clone()));
        } else {
            incomplete = true;
        }
    }
    if wanted.iter().any(answer::sets_seen) && !seen {
        show_seen(&mut out, probed_items);
    }
    Composed {
        items: out,
        refusal: None,
        incomplete,
    }
}

impl FetchPlan {
    /// The items for a sealed message, composed on this thread; nothing
    /// once a BINARY section was refused.
    pub(super) fn compose(
        &self,
        probed: &Probed,
        summary: &Summary,
        opened: Option<&[u8]>,
    ) -> Vec<Item> {
        if self.refused.get().is_some() {
            return Vec::new();
        }
        let composed = compose(
            &self.wanted,
            &probed.items,
            probed.seen,
            &Source::given(summary, None),
            opened,
        );
        self.absorb(composed)
    }

    /// Takes a composed answer's verdicts into the plan's.
    pub(super) fn absorb(&self, composed: Composed) -> Vec<Item> {
        if self.refused.get().is_some() {
            // Dovecot answers no message after a BINARY refusal.
            return Vec::new();
        }
        if composed.incomplete {
            self.incomplete.set(true);
        }
        if let Some(refusal) = composed.refusal {
            self.refused.set(Some(refusal));
        }
        composed.items
    }

    /// Queues a summary's `job`, submitted with the next ones
    /// ([`SUMMARY_BATCH`] together: one hop to the pool and one wake for
    /// them), or at once with `keys` (unit tests, which give the plan no
    /// runner). One over [`super::opening::HEAVY_BYTES`] (`bytes` of
    /// answer: no summary is that long, a hostile message's may be) goes
    /// alone, as a heavy job, after those queued before it.
    pub(super) fn submit_summary(
        &mut self,
        uid: NonZeroU32,
        bytes: usize,
        keys: &(dyn Keys + Send + Sync),
        job: Job,
    ) {
        if self.keys.is_none() {
            return self.submit(uid, bytes, keys, job);
        }
        if bytes > super::opening::HEAVY_BYTES {
            self.flush_batch();
            return self.submit(uid, bytes, keys, job);
        }
        self.batch.push((uid, job));
        if self.batch.len() >= SUMMARY_BATCH {
            self.flush_batch();
        }
    }

    /// Submits the summaries queued so far ([`FetchPlan::submit_summary`]).
    pub(super) fn flush_batch(&mut self) {
        let Some((shared, runner)) = &self.keys else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let (uids, jobs): (Vec<NonZeroU32>, Vec<Job>) =
            std::mem::take(&mut self.batch).into_iter().unzip();
        let jobs: Vec<Box<dyn FnOnce() -> Opened + Send>> = jobs
            .into_iter()
            .map(|job| {
                let shared = Arc::clone(shared);
                Box::new(move || job(shared.as_ref())) as Box<dyn FnOnce() -> Opened + Send>
            })
            .collect();
        for (uid, pending) in uids.into_iter().zip(runner.spawn_batch(jobs)) {
            self.opening.push(uid, pending);
        }
    }

    /// Runs `job`, which works on a message of `bytes`, through the
    /// plan's runner (heavy past [`super::opening::HEAVY_BYTES`]), or at
    /// once with `keys` (unit tests, which give the plan no runner).
    pub(super) fn submit(
        &mut self,
        uid: NonZeroU32,
        bytes: usize,
        keys: &(dyn Keys + Send + Sync),
        job: Job,
    ) {
        let pending = super::opening::with_keys(self.keys.as_ref(), keys, bytes, job);
        self.opening.push(uid, pending);
    }

    /// Opening part 1 (the summary), as a job, which also composes the
    /// answer when no wanted item needs the payload (ENVELOPE and
    /// BODYSTRUCTURE are most of a listing's work on the session's
    /// thread otherwise, which is one per session while the pool has a
    /// thread per core). `None` when the provider's answer lacks part 1
    /// or the message is not sealed.
    pub(super) fn summary_job(
        &self,
        probed: &Probed,
        list: &[MessageDataItem<'static>],
    ) -> Option<Job> {
        let one = NonZeroU32::MIN;
        let part = |s: &Section<'_>| {
            list.iter()
                // Whole, or from 0 as a speculative command asks for it
                // (not cut: `part_one_cut`).
                .find(|i| matches!(i, MessageDataItem::BodyExt { section: Some(x), origin: None | Some(0), .. } if x == s))
                .and_then(super::data_bytes)
        };
        let part1 = part(&Section::Part(Part(Vec1::from(one))))?;
        let mime = part(&Section::Mime(Part(Vec1::from(one)))).unwrap_or_default();
        let marker = probed.sealed.clone()?;
        let prefix = probed.prefix.clone();
        let cache = self.cache.clone();
        let key = probed.key;
        let wanted = self.wanted.clone();
        let items = probed.items.clone();
        let seen = probed.seen;
        Some(Box::new(move |keys| {
            let target = Target {
                keys,
                cache: cache.as_ref(),
                key,
                marker: &marker,
                prefix: &prefix,
            };
            match target.summary(&part1, &mime) {
                Ok((summary, cached))
                    if !wanted
                        .iter()
                        .any(|i| answer::need(i, Some(&summary)) == Need::Payload) =>
                {
                    // The listing items made here stay in the cache's
                    // entry: the next listing composes nothing.
                    let source = Source::given(&summary, cached.as_deref());
                    Opened::Whole(Ok(compose(&wanted, &items, seen, &source, None)))
                }
                opened => Opened::Summary(opened.map(|(summary, _)| Box::new(summary))),
            }
        }))
    }

    /// Opening the whole stored message and composing every wanted item
    /// from it (BINARY decoded here), as a job. `None` when the message
    /// is not sealed.
    pub(super) fn whole_job(&self, probed: &Probed, stored: Vec<u8>) -> Option<Job> {
        let marker = probed.sealed.clone()?;
        let prefix = probed.prefix.clone();
        let cache = self.cache.clone();
        let key = probed.key;
        let wanted = self.wanted.clone();
        let items = probed.items.clone();
        let seen = probed.seen;
        Some(Box::new(move |keys| {
            let target = Target {
                keys,
                cache: cache.as_ref(),
                key,
                marker: &marker,
                prefix: &prefix,
            };
            Opened::Whole(target.whole(&stored).map(|(summary, opened)| {
                let source = Source::given(&summary, None);
                compose(&wanted, &items, seen, &source, Some(&opened))
            }))
        }))
    }

    /// Too many messages are being opened to read more of the provider's
    /// answers, or the phase's end waits for them.
    pub fn saturated(&self) -> bool {
        self.opening.len() + self.batch.len() >= self.window() || self.drain_then_next
    }

    /// Jobs the phase keeps outstanding at most: whole messages a few at
    /// a time, summaries (a listing) more at once, as each is small. By
    /// phase, not by the items asked: a summary without the header an item
    /// needs sends its message to a whole fetch.
    fn window(&self) -> usize {
        match self.phase {
            super::Phase::Sealed { payload: true, .. } => super::opening::in_flight(),
            _ => super::opening::in_flight_summaries(),
        }
    }

    /// Messages are being opened: the session is woken when one is done.
    pub fn working(&self) -> bool {
        !self.opening.is_empty() || self.awaited_chunk()
    }

    /// Answers what was opened meanwhile; once nothing is being opened,
    /// the held tagged status moves the plan on.
    pub fn poll(&mut self) -> Vec<Output> {
        let mut out = self.take_chunk();
        out.extend(self.answer_opened());
        if self.opening.is_empty() && std::mem::take(&mut self.drain_then_next) {
            out.extend(self.next_phase());
        }
        out
    }

    /// Answers the messages opened so far, in the order they came.
    pub(super) fn answer_opened(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        for (uid, opened) in self.opening.take_ready() {
            let Some(probed) = self.probed.get(&uid) else {
                // Expunged meanwhile: nothing to answer.
                continue;
            };
            let opened = opened.unwrap_or_else(|| {
                Opened::Summary(Err(EnvelopeError::Damaged("opening it failed".into())))
            });
            let answered = match opened {
                Opened::Summary(summary) => summary.map(|summary| {
                    let summary: &Summary = &summary;
                    if self
                        .wanted
                        .iter()
                        .any(|i| answer::need(i, Some(summary)) == Need::Payload)
                    {
                        return None;
                    }
                    Some(self.compose(probed, summary, None))
                }),
                Opened::Whole(composed) => composed.map(|c| Some(self.absorb(c))),
            };
            out.extend(self.on_opened(uid, answered));
        }
        out
    }

    /// What follows from opening a message: its answer, a fetch of the
    /// whole message (`Ok(None)`), or showing it as stored (the job
    /// counted, logged and remembered the failure).
    fn on_opened(
        &mut self,
        uid: NonZeroU32,
        answered: Result<Option<Vec<Item>>, envelope::EnvelopeError>,
    ) -> Vec<Output> {
        match answered {
            Ok(Some(mut out)) => {
                metrics::counter!(names::IMAP_OPENED_TOTAL).increment(1);
                let probed = self.forget(&uid);
                probed
                    .and_then(|p| {
                        super::items::refresh(&mut out, &p.items);
                        fetch(p.seq, out)
                    })
                    .into_iter()
                    .collect()
            }
            Ok(None) => {
                self.refetch.push(uid);
                Vec::new()
            }
            Err(_) => {
                // Shown as stored (the plain phase fetches it).
                if let Some(p) = self.probed.get_mut(&uid) {
                    p.sealed = None;
                }
                Vec::new()
            }
        }
    }
}
