//! The answer a SEARCH, SORT or THREAD plan gives once every message is
//! judged: the matches as `* SEARCH`, `* SORT` or `* ESEARCH`, ordered
//! first (SORT, THREAD=ORDEREDSUBJECT) or threaded (THREAD=REFERENCES,
//! REFS).
//!
//! Invariants:
//!
//! - Ordering and threading, up to their caps (100,000 matching messages,
//!   20,000,000 parent steps: [`super::thread`]), are CPU work: they run as
//!   a job on the opening pool ([`SearchPlan::finish`]), never in
//!   `Session::advance`. A plain SEARCH's answer (its matches put in
//!   order) is written at once.
//! - While the job runs no command of the plan's is in flight and the
//!   client's commands wait behind it, so a provider sends no EXPUNGE
//!   (RFC 3501 §7.4.1). One that comes all the same makes the sequence
//!   numbers of the result stale: the command is answered `NO` (the
//!   client may ask again) rather than with numbers that name other
//!   messages. Results by UID are not renumbered and stay right.
//! - A lost job (it panicked) is answered `NO`.
//! - SEARCH with SAVE (SEARCHRES, [`crate::imap::saved_result`]): what it
//!   saves ([`ReturnOptions::saved`]) goes to the session as UIDs
//!   ([`Output::Saved`]) before the tagged OK. By sequence number, the
//!   provider's `FETCH <them> (UID)` gives the UIDs first (no EXPUNGE
//!   comes during a FETCH, so the numbers still name the same messages);
//!   only its answers to those numbers count (what else they carry, a
//!   flag change another session made, passes on). SAVE alone answers no
//!   `* ESEARCH` (RFC 5182 §2.4). A result of more than
//!   [`saved_result::MAX_RANGES`] ranges is not saved: the search is
//!   answered NO (and `$` stays empty), so that no command `$` is put in
//!   can outgrow the provider's line limit.

use std::num::NonZeroU32;
use std::sync::Arc;

use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName};
use imap_next::imap_types::response::{Data, StatusKind};
use imap_next::imap_types::sequence::SequenceSet;

use super::search_return::{self, ReturnOptions};
use super::{Phase, SAVED_UIDS_TAG, SearchPlan, fetch_command, sort, tagged, thread};
use crate::imap::fetch::{Output, uid_of};
use crate::imap::saved_result;
use crate::imap::sequence::compact;

/// A SEARCH by sequence number with SAVE, while the UIDs of what it saves
/// are asked for.
#[derive(Default)]
pub(super) struct Saving {
    /// The numbers asked for, ascending.
    numbers: Vec<NonZeroU32>,
    uids: Vec<NonZeroU32>,
    /// The answer, given once the UIDs are in.
    answer: Vec<Output>,
}

impl Saving {
    /// A FETCH response: `Err` if it is not an answer to writ's FETCH.
    pub(super) fn on_fetch(
        &mut self,
        seq: NonZeroU32,
        items: Vec1<MessageDataItem<'static>>,
    ) -> Result<Vec<Output>, Vec1<MessageDataItem<'static>>> {
        let Some(uid) = uid_of(items.as_ref()) else {
            return Err(items);
        };
        if self.numbers.binary_search(&seq).is_err() {
            return Err(items);
        }
        self.uids.push(uid);
        // A flag change the provider folded into its answer passes on.
        match items.as_ref() {
            [_] => Ok(Vec::new()),
            _ => Err(items),
        }
    }
}

/// What the answer is made of, taken out of the plan.
pub(super) struct Answer {
    client_tag: Tag<'static>,
    uid: bool,
    returns: Option<ReturnOptions>,
    modseq: Option<u64>,
    sort: Option<Arc<sort::Program>>,
    /// THREAD=ORDEREDSUBJECT (`sort` holds its program).
    thread: bool,
    threads: Option<thread::Gathered>,
    sorted: Vec<sort::Entry>,
    found: Vec<NonZeroU32>,
}

impl Answer {
    /// Ordering or threading to do: a job for the pool.
    fn heavy(&self) -> bool {
        self.sort.is_some() || self.threads.is_some()
    }

    /// The responses for the client and the tagged status that ends the
    /// plan; with SAVE, what it saves (numbered as the client's command:
    /// MIN and MAX alone are the first and last in the answer's order, as
    /// the `* ESEARCH` reports them).
    fn outputs(self) -> Answered {
        let ok = |done| Output::Finish(tagged(self.client_tag.clone(), StatusKind::Ok, None, done));
        if let Some(threads) = self.threads {
            return match threads.answer() {
                Ok(bytes) => (
                    vec![Output::ToClientRaw(bytes), ok("THREAD completed (by writ)")],
                    None,
                ),
                Err(why) => (
                    vec![Output::Finish(tagged(
                        self.client_tag.clone(),
                        StatusKind::No,
                        None,
                        why,
                    ))],
                    None,
                ),
            };
        }
        let (found, done) = match &self.sort {
            Some(program) if self.thread => {
                let mut sorted = self.sorted;
                program.order(&mut sorted);
                return (
                    vec![
                        Output::ToClientRaw(sort::ordered_subject(&sorted)),
                        ok("THREAD completed (by writ)"),
                    ],
                    None,
                );
            }
            Some(program) => {
                let mut sorted = self.sorted;
                program.order(&mut sorted);
                let ids: Vec<NonZeroU32> = sorted.iter().map(|e| e.id).collect();
                (ids, "SORT completed (by writ)")
            }
            None => {
                let mut found = self.found;
                found.sort();
                (found, "SEARCH completed (by writ)")
            }
        };
        let answer = match (self.returns, self.sort.is_some()) {
            (Some(opts), _) if !opts.answers() => None,
            (Some(opts), _) => Some(Output::ToClientRaw(search_return::esearch(
                self.client_tag.inner(),
                self.uid,
                opts,
                &found,
                self.modseq,
            ))),
            (None, true) => Some(Output::ToClient(Data::Sort(found.clone(), None))),
            (None, false) => Some(Output::ToClient(Data::Search(found.clone(), None))),
        };
        let saved = self.returns.filter(|r| r.save).map(|r| r.saved(&found));
        (answer.into_iter().chain([ok(done)]).collect(), saved)
    }
}

/// A plan's last outputs, and what a SAVE saves.
pub(super) type Answered = (Vec<Output>, Option<Vec<NonZeroU32>>);

impl SearchPlan {
    /// Every message is judged: the answer, at once for a plain SEARCH;
    /// for a SORT or THREAD once the pool has ordered it
    /// ([`SearchPlan::take_finished`]).
    pub(super) fn finish(&mut self) -> Vec<Output> {
        let answer = Answer {
            client_tag: self.client_tag.clone(),
            uid: self.uid,
            returns: self.returns,
            modseq: self.modseq,
            sort: self.sort.take(),
            thread: self.thread,
            threads: self.threads.take(),
            sorted: std::mem::take(&mut self.sorted),
            found: std::mem::take(&mut self.found),
        };
        match &self.keys {
            Some((_, runner)) if answer.heavy() => {
                self.finishing = Some(runner.spawn_heavy(move || answer.outputs()));
                self.finishing_stale = false;
                // The job may be done already (a runner that runs inline).
                self.take_finished()
            }
            _ => {
                let (outputs, saved) = answer.outputs();
                self.answered(outputs, saved)
            }
        }
    }

    /// The answer, with SAVE `$` saved first: by UID at once; by
    /// sequence number once the provider has given the saved messages'
    /// UIDs (`FETCH <them> (UID)`).
    fn answered(&mut self, outputs: Vec<Output>, saved: Option<Vec<NonZeroU32>>) -> Vec<Output> {
        let Some(mut ids) = saved else {
            return outputs;
        };
        ids.sort_unstable();
        ids.dedup();
        let Ok(set) = saved_set(&ids) else {
            return self.not_saved();
        };
        let set = match set {
            Some(set) if !self.uid => set,
            // By UID (or nothing saved): `$` at once.
            set => {
                let mut out = vec![Output::Saved(set)];
                out.extend(outputs);
                return out;
            }
        };
        self.phase = Phase::SavedUids;
        self.saving = Saving {
            numbers: ids,
            uids: Vec::new(),
            answer: outputs,
        };
        vec![Output::ToProvider(fetch_command(
            SAVED_UIDS_TAG,
            set,
            false,
            vec![MessageDataItemName::Uid],
        ))]
    }

    /// The provider answered the FETCH of the saved messages' UIDs: the
    /// search's answer, `$` saved first; if it failed, NO (and `$` stays
    /// empty).
    pub(super) fn saved_uids_answered(&mut self, ok: bool) -> Vec<Output> {
        let saving = std::mem::take(&mut self.saving);
        if !ok {
            return vec![Output::Finish(tagged(
                self.client_tag.clone(),
                StatusKind::No,
                None,
                "writ could not save the result: try again",
            ))];
        }
        let Ok(set) = saved_set(&saving.uids) else {
            return self.not_saved();
        };
        let mut out = vec![Output::Saved(set)];
        out.extend(saving.answer);
        out
    }

    fn not_saved(&self) -> Vec<Output> {
        vec![Output::Finish(tagged(
            self.client_tag.clone(),
            StatusKind::No,
            None,
            "The result is too scattered to save: at most 2000 ranges",
        ))]
    }

    /// The ordered answer once the pool is done with it; nothing before.
    pub(super) fn take_finished(&mut self) -> Vec<Output> {
        let Some(pending) = &mut self.finishing else {
            return Vec::new();
        };
        let Some(done) = pending.take() else {
            return Vec::new();
        };
        self.finishing = None;
        let why = match done {
            Some(_) if self.finishing_stale => {
                "The mailbox changed while writ ordered the result: try again"
            }
            Some((outputs, saved)) => return self.answered(outputs, saved),
            None => "writ could not order the result",
        };
        tracing::warn!(reason = why, "SORT or THREAD answered NO");
        vec![Output::Finish(tagged(
            self.client_tag.clone(),
            StatusKind::No,
            None,
            why,
        ))]
    }
}

/// `ids` (in any order) as the set `$` holds (`None`: empty); `Err`
/// when it has more ranges than a saved result may.
fn saved_set(ids: &[NonZeroU32]) -> Result<Option<SequenceSet>, ()> {
    let set = compact(ids);
    match &set {
        Some(s) if saved_result::ranges(s) > saved_result::MAX_RANGES => Err(()),
        _ => Ok(set),
    }
}
