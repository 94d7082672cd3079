//! The FETCH plan's phases after the probe: which command comes next
//! (cached, sealed, plain, seen; see `fetch.rs`'s header for what each
//! asks and why), and the commands themselves, of the client's command's
//! kind (by sequence number or by UID).

use super::*;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence};

impl FetchPlan {
    /// Moves on to the next phase that has work, or finishes.
    pub(super) fn next_phase(&mut self) -> Vec<Output> {
        let mut out = self.next_phase_inner();
        if !self.pending_out.is_empty() {
            let mut ready = std::mem::take(&mut self.pending_out);
            ready.append(&mut out);
            out = ready;
        }
        out
    }

    pub(super) fn next_phase_inner(&mut self) -> Vec<Output> {
        loop {
            let next = match &self.phase {
                Phase::Probe => {
                    let payload = self.needs_payload();
                    if self.start_sealed() {
                        // Answered from the cache as the client drains.
                        self.phase = Phase::Cached { payload };
                        return Vec::new();
                    }
                    self.sealed_step(payload)
                }
                Phase::Cached { payload } => self.sealed_step(*payload),
                Phase::Sealed { .. } if !self.refetch.is_empty() => {
                    let uids = std::mem::take(&mut self.refetch);
                    self.sealed_command(&uids, vec![peek(None)])
                        .map(|c| (Phase::Sealed { payload: true }, Some(c)))
                }
                Phase::Sealed { .. } if self.speculated.is_some() && !self.retried => {
                    // Sealed messages no answer came for (the provider
                    // left them out of the speculative command's answer):
                    // asked for once more, then shown as stored.
                    self.retried = true;
                    let left: Vec<NonZeroU32> = self
                        .probed
                        .iter()
                        .filter(|(_, p)| p.sealed.is_some())
                        .map(|(u, _)| *u)
                        .collect();
                    match self.sealed_command(&left, summary_items()) {
                        Some(c) => Some((Phase::Sealed { payload: false }, Some(c))),
                        None => continue,
                    }
                }
                Phase::Sealed { .. } => self.plain_phase().map(|(p, c)| (p, Some(c))),
                Phase::Plain(_) => self.seen_phase().map(|(p, c)| (p, Some(c))),
                Phase::Seen(_) => None,
            };
            match next {
                Some((phase, command)) => {
                    self.phase = phase;
                    return command.map(Output::ToProvider).into_iter().collect();
                }
                None => match self.phase {
                    Phase::Probe | Phase::Cached { .. } => {
                        self.phase = Phase::Sealed { payload: false };
                        if !self.opening.is_empty() {
                            // Pipelined commands were all answered while
                            // the cache looked up the last messages: what
                            // they brought is answered before the phase
                            // ends, as a held status would make it.
                            self.drain_then_next = true;
                            return Vec::new();
                        }
                    }
                    Phase::Sealed { .. } => {
                        self.phase = Phase::Plain(Tag::unvalidated("writ.none"))
                    }
                    Phase::Plain(_) => self.phase = Phase::Seen(Tag::unvalidated("writ.none")),
                    Phase::Seen(_) if self.probe_failed => {
                        // The probe's own failure, once the commands
                        // pipelined behind it are answered.
                        return self
                            .probe_status
                            .take()
                            .map(Output::Finish)
                            .into_iter()
                            .collect();
                    }
                    Phase::Seen(_) => {
                        if let Some(c) = &self.cache {
                            // Plaintext messages make no entry: without
                            // this, new mail would be asked for again with
                            // every listing's speculative command.
                            c.cache.listed_up_to(&c.mailbox, self.highest_listed);
                            // What this FETCH stored goes to the index
                            // now, off the session (the entries are in
                            // the cache's memory meanwhile).
                            let cache = Arc::clone(&c.cache);
                            match &self.keys {
                                Some((_, runner)) => drop(runner.spawn(move || cache.commit())),
                                None => cache.commit(),
                            }
                        }
                        let mut status = self.probe_status.take();
                        let mut out = Vec::new();
                        if self.expunge_issued
                            && let Some(probe) = status.take()
                        {
                            let (reply, highest) = expunge_issued(probe);
                            out.extend(highest.map(Output::ToClientRaw));
                            status = Some(reply);
                        }
                        if self.incomplete.get() {
                            status = Some(incomplete(self.client_tag.clone()));
                        }
                        if let Some(refusal) = self.refused.get() {
                            status = Some(binary_refused(self.client_tag.clone(), refusal));
                        }
                        out.extend(status.map(Output::Finish));
                        return out;
                    }
                },
            }
        }
    }

    /// The set naming these messages in writ's own command: their UIDs
    /// for a UID FETCH, their sequence numbers for a FETCH (see `uid`).
    pub(super) fn set_of(
        &self,
        targets: impl Iterator<Item = (NonZeroU32, NonZeroU32)>,
    ) -> Option<SequenceSet> {
        let set: Vec<NonZeroU32> = targets
            .map(|(uid, seq)| if self.uid { uid } else { seq })
            .collect();
        crate::imap::sequence::compact(&set)
    }

    pub(super) fn fetch_command(
        &mut self,
        uids: &[NonZeroU32],
        items: Vec<MessageDataItemName<'static>>,
    ) -> Option<(Tag<'static>, Command<'static>)> {
        let targets = uids
            .iter()
            .filter_map(|u| self.probed.get(u).map(|p| (*u, p.seq)));
        let set = self.set_of(targets)?;
        let tag = self.writ_tag();
        let mut items = items;
        items.insert(0, MessageDataItemName::Uid);
        Some((
            tag.clone(),
            crate::imap::opened::fetch_command(tag, set, self.uid, items, Vec::new()),
        ))
    }

    /// The probe is over: the sealed messages go to the cache first
    /// (`true`: [`Phase::Cached`]), else straight to the provider.
    pub(super) fn start_sealed(&mut self) -> bool {
        let uids: Vec<NonZeroU32> = self
            .probed
            .iter()
            .filter(|(_, p)| p.sealed.is_some())
            .map(|(u, _)| *u)
            .collect();
        if self.wants_seen() {
            let unseen: Vec<(NonZeroU32, NonZeroU32)> = self
                .probed
                .iter()
                .filter(|(_, p)| p.sealed.is_some() && !p.seen)
                .map(|(u, p)| (*u, p.seq))
                .collect();
            self.mark_seen.extend(unseen);
        }
        if self.pipelined {
            // Queued for the cache, or fetched, as the probe answered them
            // ([`FetchPlan::pipeline`]); what is left goes on from there.
            return self.cache.is_some() && (!self.cached.is_empty() || self.from_cache.is_some());
        }
        if uids.is_empty() {
            return false;
        }
        if self.cache.is_some() {
            self.cached = uids.into();
            return true;
        }
        self.uncached = uids;
        false
    }

    /// The provider's part of the sealed phase: part 1 (or the whole
    /// message, `payload`) of the sealed messages the cache did not
    /// answer; with commands pipelined before, the phase waits for the
    /// last of them (no command when nothing is left to ask).
    pub(super) fn sealed_step(
        &mut self,
        payload: bool,
    ) -> Option<(Phase, Option<Command<'static>>)> {
        let uids = std::mem::take(&mut self.uncached);
        let items = if payload {
            vec![peek(None)]
        } else {
            summary_items()
        };
        if let Some(c) = self.sealed_command(&uids, items) {
            return Some((Phase::Sealed { payload }, Some(c)));
        }
        // Only pipelined commands are out: the phase ends with them.
        (!self.sealed_out.is_empty()).then_some((Phase::Sealed { payload }, None))
    }

    /// A FETCH of the sealed phase for `uids` (those still probed), counted
    /// among the commands the phase waits for ([`FetchPlan::sealed_out`]).
    fn sealed_command(
        &mut self,
        uids: &[NonZeroU32],
        items: Vec<MessageDataItemName<'static>>,
    ) -> Option<Command<'static>> {
        let (tag, command) = self.fetch_command(uids, items)?;
        self.sealed_out.push_back(tag);
        Some(command)
    }

    /// Asks for the summaries of the UID range `speculated` with the
    /// probe (see `fetch.rs`'s header, 3): the command waits for
    /// [`FetchPlan::take_speculative`].
    /// The command asking for a listing's summaries with its probe
    /// ([`speculation`]), for the session to send right after the probe.
    /// Decided here, when the plan runs, not when it is made: a plan made
    /// while another FETCH is in flight waits and is made again, and
    /// must not have spent the mailbox's first listing.
    pub fn take_speculative(&mut self) -> Option<Command<'static>> {
        let set = self.speculable.take()?;
        let Ahead {
            range: (lo, hi),
            part_one,
            listing,
        } = speculation(&set, self.cache.as_ref()?)?;
        let (a, b) = (NonZeroU32::new(lo)?, NonZeroU32::new(hi)?);
        let set = if a == b {
            Sequence::Single(SeqOrUid::Value(a))
        } else {
            Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b))
        };
        let tag = self.writ_tag();
        let one = Part(Vec1::from(NonZeroU32::MIN));
        let mut items = summary_items();
        // Part 1 up to a limit: a plaintext message's is its whole text.
        if let Some(last) = items.last_mut() {
            *last = MessageDataItemName::BodyExt {
                section: Some(Section::Part(one)),
                partial: NonZeroU32::new(part_one).map(|n| (0, n)),
                peek: true,
            };
        }
        items.insert(0, MessageDataItemName::Uid);
        let command = crate::imap::opened::fetch_command(
            tag.clone(),
            SequenceSet::from(set),
            true,
            items,
            Vec::new(),
        );
        self.sealed_out.push_back(tag);
        self.speculated = Some((lo, hi));
        self.speculated_part_one = part_one;
        metrics::counter!(crate::admin::names::IMAP_LISTED_AHEAD_TOTAL, "listing" => listing)
            .increment(1);
        Some(command)
    }

    /// Is this message's summary asked for by the speculative command
    /// (and its answer not dropped)?
    pub(super) fn speculated(&self, uid: NonZeroU32) -> bool {
        self.speculated
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&uid.get()))
            && !self.unspeculated.contains(&uid)
    }

    /// A listing's sealed message as the probe answers it
    /// ([`FetchPlan::pipelined`]): queued for the cache, looked up
    /// [`EARLY_BATCH`] at a time; without a cache, fetched with the next
    /// [`EARLY_BATCH`].
    pub(super) fn pipeline(&mut self, uid: NonZeroU32) -> Vec<Output> {
        if self.speculated(uid) {
            // Its summary is asked for already.
            return Vec::new();
        }
        if self.cache.is_some() {
            self.cached.push_back(uid);
            if self.from_cache.is_none() {
                return self.submit_chunk();
            }
            return Vec::new();
        }
        self.uncached.push(uid);
        self.early_fetch()
    }

    /// The sealed phase's FETCH for the messages the cache could not
    /// answer, sent before the phase (pipelined) once [`EARLY_BATCH`]
    /// wait and fewer than [`MAX_PIPELINED`] are out: while the probe is
    /// answered, or the cache looks up the rest.
    pub(super) fn early_fetch(&mut self) -> Vec<Output> {
        if !self.pipelined
            || self.probe_failed
            || self.sealed_out.len() >= MAX_PIPELINED
            || self.uncached.len() < EARLY_BATCH
            || !matches!(self.phase, Phase::Probe | Phase::Cached { .. })
        {
            return Vec::new();
        }
        let uids = std::mem::take(&mut self.uncached);
        self.sealed_command(&uids, summary_items())
            .map(Output::ToProvider)
            .into_iter()
            .collect()
    }

    pub(super) fn plain_phase(&mut self) -> Option<(Phase, Command<'static>)> {
        // Whatever is left: plaintext messages, and sealed ones that could
        // not be opened (shown as stored).
        let uids: Vec<NonZeroU32> = self.probed.keys().copied().collect();
        if uids.is_empty() {
            return None;
        }
        let mut items: Vec<MessageDataItemName<'static>> = Vec::new();
        for i in self
            .wanted
            .iter()
            .filter(|i| answer::need(i, None) == Need::Payload || self.after_probe(i))
        {
            // imap-codec reads no `<origin>` in a provider's BINARY answer:
            // a partial BINARY is asked for whole, and writ cuts it
            // ([`FetchPlan::plain_items`]).
            let i = match i {
                MessageDataItemName::Binary { section, peek, .. } => {
                    let whole = MessageDataItemName::Binary {
                        section: section.clone(),
                        partial: None,
                        peek: *peek,
                    };
                    if items.contains(&whole) {
                        continue;
                    }
                    whole
                }
                other => other.clone(),
            };
            items.push(i);
        }
        if items.is_empty() {
            // Only failed sealed messages with listing items: the probe's
            // answers are the stored message's.
            let done: Vec<Output> = std::mem::take(&mut self.probed)
                .into_values()
                .filter_map(|p| fetch(p.seq, typed(self.provider_items(&p.items, false))))
                .collect();
            self.pending_out.extend(done);
            return None;
        }
        if self.wants_seen() {
            // The probe read their header with PEEK, and the items fetched
            // now may all be PEEK: writ stores \Seen (harmless twice).
            let unseen: Vec<(NonZeroU32, NonZeroU32)> = self
                .probed
                .iter()
                .filter(|(_, p)| !p.seen)
                .map(|(u, p)| (*u, p.seq))
                .collect();
            self.mark_seen.extend(unseen);
        }
        self.fetch_command(&uids, items)
            .map(|(tag, c)| (Phase::Plain(tag), c))
    }

    pub(super) fn seen_phase(&mut self) -> Option<(Phase, Command<'static>)> {
        let marks = std::mem::take(&mut self.mark_seen);
        let set = self.set_of(marks.into_iter())?;
        let tag = self.writ_tag();
        Some((
            Phase::Seen(tag.clone()),
            Command {
                tag,
                body: CommandBody::Store {
                    sequence_set: set,
                    kind: StoreType::Add,
                    response: StoreResponse::Silent,
                    flags: vec![Flag::Seen],
                    uid: self.uid,
                    modifiers: Vec::new(),
                },
            },
        ))
    }
}

/// What the sealed phase asks for a summary: the stored header (the
/// prefix), part 1's MIME header and part 1.
fn summary_items() -> Vec<MessageDataItemName<'static>> {
    let one = Part(Vec1::from(NonZeroU32::MIN));
    vec![
        peek(Some(Section::Header(None))),
        peek(Some(Section::Mime(one.clone()))),
        peek(Some(Section::Part(one))),
    ]
}

/// What a listing by UID asks for with its probe (see the header of
/// `fetch.rs`, 3): the summaries of its range when the range is one (or
/// one UID) entirely above the highest UID the cache has an entry for in
/// the mailbox (new mail), part 1 up to [`SPECULATIVE_PART_ONE`]; or, for
/// a mailbox the cache holds nothing of, which may be all plaintext, on
/// its first listing since writ started
/// ([`crate::imap::cache::Cache::first_listing`]) and
/// only when the provider said it holds at most
/// [`FIRST_LISTING_MAX_MESSAGES`], part 1 up to
/// [`FIRST_LISTING_PART_ONE`]. `None`: nothing asked for ahead.
fn speculation(set: &SequenceSet, c: &CacheRef) -> Option<Ahead> {
    match c.cache.highest_uid(&c.mailbox) {
        Some(highest) => uncached_range(set, highest).map(|range| Ahead {
            range,
            part_one: SPECULATIVE_PART_ONE,
            listing: "new_mail",
        }),
        None => {
            let range = uncached_range(set, 0)?;
            let small = c.messages.is_some_and(|n| n <= FIRST_LISTING_MAX_MESSAGES);
            (small && c.cache.first_listing(&c.mailbox)).then_some(Ahead {
                range,
                part_one: FIRST_LISTING_PART_ONE,
                listing: "first",
            })
        }
    }
}

/// Summaries a listing asks for with its probe ([`speculation`]).
struct Ahead {
    /// The UIDs, from and to.
    range: (u32, u32),
    /// Octets of part 1 asked for.
    part_one: u32,
    /// Which listing (the label of `writ_imap_listed_ahead_total`).
    listing: &'static str,
}

/// The UID range a UID FETCH names when it is one range (or one UID)
/// entirely above `highest`: none of its messages is cached. `*` (and
/// 4294967295, which Dovecot reads as `*`: the last message, below the
/// range) stands for 4294967294, so that writ's command names no message
/// below the range; a message with UID 4294967295 is fetched as any
/// other.
fn uncached_range(set: &SequenceSet, highest: u32) -> Option<(u32, u32)> {
    let [one] = set.0.as_ref() else {
        return None;
    };
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(v) => v.get().min(u32::MAX - 1),
        SeqOrUid::Asterisk => u32::MAX - 1,
    };
    let (lo, hi) = match one {
        Sequence::Single(SeqOrUid::Asterisk) => return None,
        Sequence::Single(v) => (value(v), value(v)),
        Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
    };
    (lo > highest).then_some((lo, hi))
}
