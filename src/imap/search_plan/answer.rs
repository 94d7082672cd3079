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

use std::num::NonZeroU32;
use std::sync::Arc;

use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::{Data, StatusKind};

use super::search_return::{self, ReturnOptions};
use super::{SearchPlan, sort, tagged, thread};
use crate::imap::fetch::Output;

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
    /// plan.
    fn outputs(self) -> Vec<Output> {
        let ok = |done| Output::Finish(tagged(self.client_tag.clone(), StatusKind::Ok, None, done));
        if let Some(threads) = self.threads {
            return match threads.answer() {
                Ok(bytes) => vec![Output::ToClientRaw(bytes), ok("THREAD completed (by writ)")],
                Err(why) => vec![Output::Finish(tagged(
                    self.client_tag.clone(),
                    StatusKind::No,
                    None,
                    why,
                ))],
            };
        }
        let (found, done) = match &self.sort {
            Some(program) if self.thread => {
                let mut sorted = self.sorted;
                program.order(&mut sorted);
                return vec![
                    Output::ToClientRaw(sort::ordered_subject(&sorted)),
                    ok("THREAD completed (by writ)"),
                ];
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
            (Some(opts), _) => Output::ToClientRaw(search_return::esearch(
                self.client_tag.inner(),
                self.uid,
                opts,
                &found,
                self.modseq,
            )),
            (None, true) => Output::ToClient(Data::Sort(found, None)),
            (None, false) => Output::ToClient(Data::Search(found, None)),
        };
        vec![answer, ok(done)]
    }
}

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
            _ => answer.outputs(),
        }
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
            Some(outputs) => return outputs,
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
