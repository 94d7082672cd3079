//! A client command writ answers with commands of its own (a FETCH or
//! content SEARCH plan), and what of the provider's unasked FETCH
//! responses may pass while one runs.

use imap_next::imap_types::core::Vec1;
use imap_next::imap_types::response::Status;

use crate::envelope::Keys;
use crate::imap::append::AppendPlan;
use crate::imap::fetch::{FetchPlan, Output};
use crate::imap::search_plan::SearchPlan;

/// A client command writ answers with commands of its own.
pub(super) enum Plan {
    Fetch(Box<FetchPlan>),
    Search(Box<SearchPlan>),
    /// An APPEND being sealed: it answers nothing of the provider's.
    Append(AppendPlan),
    /// A MULTIAPPEND's messages being sealed: the same.
    MultiAppend(super::multiappend::MultiAppendPlan),
    /// A command by sequence number over `$`: the saved messages'
    /// numbers asked for first.
    Saved(crate::imap::saved_result::Resolve),
    /// A command whose plan takes the provider's `* SEARCH` (which names
    /// no command), or a FETCH plan behind a FETCH the provider answers
    /// itself, waiting until every command before it is answered:
    /// meanwhile it takes nothing of the provider's.
    Quiet(Box<Waiting>),
}

impl Plan {
    /// The plan asks for FETCH data, so the provider's FETCH responses go
    /// to it first (and what it does not take passes filtered:
    /// [`unsolicited`]). The others leave them to pass as they would with
    /// no plan running (answers to a FETCH the provider answers itself).
    pub(super) fn takes_fetches(&self) -> bool {
        matches!(self, Plan::Fetch(_) | Plan::Search(_))
    }
}

/// What waits in [`Plan::Quiet`].
pub(super) enum Waiting {
    /// A SEARCH, SORT or THREAD, with its RETURN options.
    Search(
        imap_next::imap_types::command::Command<'static>,
        Option<crate::imap::search_return::ReturnOptions>,
    ),
    /// A FETCH writ answers, behind one the provider answers itself (whose
    /// answers it would take for flag changes and filter).
    Fetch(imap_next::imap_types::command::Command<'static>),
    /// A command by sequence number over `$`, and `$`.
    Resolve(
        imap_next::imap_types::command::Command<'static>,
        imap_next::imap_types::sequence::SequenceSet,
    ),
}

impl Plan {
    pub(super) fn on_fetch(
        &mut self,
        seq: std::num::NonZeroU32,
        items: Vec1<imap_next::imap_types::fetch::MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
    ) -> Result<Vec<Output>, Vec1<imap_next::imap_types::fetch::MessageDataItem<'static>>> {
        match self {
            Plan::Fetch(p) => p.on_fetch(seq, items, keys),
            Plan::Search(p) => p.on_fetch(seq, items, keys),
            Plan::Append(_) | Plan::MultiAppend(_) | Plan::Saved(_) | Plan::Quiet(_) => Err(items),
        }
    }

    pub(super) fn on_status(
        &mut self,
        status: Status<'static>,
    ) -> Result<Vec<Output>, Status<'static>> {
        match self {
            Plan::Fetch(p) => p.on_status(status),
            Plan::Search(p) => p.on_status(status),
            Plan::Saved(p) => p.on_status(status),
            Plan::Append(_) | Plan::MultiAppend(_) | Plan::Quiet(_) => Err(status),
        }
    }

    /// A `* SEARCH` from the provider: `Err` when no plan asked for it.
    pub(super) fn on_search(
        &mut self,
        found: Vec<std::num::NonZeroU32>,
        modseq: Option<u64>,
    ) -> Result<(), Vec<std::num::NonZeroU32>> {
        match self {
            Plan::Fetch(_) | Plan::Append(_) | Plan::MultiAppend(_) | Plan::Quiet(_) => Err(found),
            Plan::Search(p) => p.on_search(found, modseq),
            Plan::Saved(p) => {
                p.on_search(found);
                Ok(())
            }
        }
    }

    /// Whether the plan has answers to compose once the client has
    /// drained what it was given ([`FetchPlan::more`]).
    pub(super) fn has_more(&self) -> bool {
        match self {
            Plan::Fetch(p) => p.has_more(),
            Plan::Search(_)
            | Plan::Append(_)
            | Plan::MultiAppend(_)
            | Plan::Saved(_)
            | Plan::Quiet(_) => false,
        }
    }

    pub(super) fn more(&mut self) -> Vec<Output> {
        match self {
            Plan::Fetch(p) => p.more(),
            Plan::Search(_)
            | Plan::Append(_)
            | Plan::MultiAppend(_)
            | Plan::Saved(_)
            | Plan::Quiet(_) => Vec::new(),
        }
    }

    /// Answers from work done meanwhile off the session (messages opened
    /// on the pool), and what follows once all is done.
    pub(super) fn poll(&mut self) -> Vec<Output> {
        match self {
            Plan::Fetch(p) => p.poll(),
            Plan::Search(p) => p.poll(),
            Plan::Append(p) => p.poll(),
            Plan::MultiAppend(p) => p.poll(),
            Plan::Saved(_) | Plan::Quiet(_) => Vec::new(),
        }
    }

    /// The plan takes no more of the provider's responses until work off
    /// the session is done (its bound of work in flight is reached, or a
    /// phase's end waits for it).
    pub(super) fn saturated(&self) -> bool {
        match self {
            Plan::Fetch(p) => p.saturated(),
            Plan::Search(p) => p.saturated(),
            Plan::Append(_) | Plan::MultiAppend(_) | Plan::Saved(_) | Plan::Quiet(_) => false,
        }
    }

    /// Work of the plan's is running off the session.
    pub(super) fn working(&self) -> bool {
        match self {
            Plan::Fetch(p) => p.working(),
            Plan::Search(p) => p.working(),
            Plan::Append(p) => p.working(),
            Plan::MultiAppend(p) => p.working(),
            Plan::Saved(_) | Plan::Quiet(_) => false,
        }
    }

    pub(super) fn on_expunge(&mut self, seq: std::num::NonZeroU32) {
        match self {
            Plan::Fetch(p) => p.on_expunge(seq),
            Plan::Search(p) => p.on_expunge(seq),
            Plan::Append(_) | Plan::MultiAppend(_) | Plan::Saved(_) | Plan::Quiet(_) => {}
        }
    }

    /// A `* VANISHED` (without EARLIER): QRESYNC's EXPUNGE, by UID.
    pub(super) fn on_vanished(&mut self, gone: &crate::imap::sequence::Vanished) {
        match self {
            Plan::Fetch(p) => p.on_vanished(gone),
            Plan::Search(p) => p.on_vanished(gone),
            Plan::Append(_) | Plan::MultiAppend(_) | Plan::Saved(_) | Plan::Quiet(_) => {}
        }
    }
}

/// What of a FETCH response that is not an answer to a plan's command may
/// reach the client while the plan runs: a flag change another session
/// made (FLAGS, MODSEQ, and the UID naming it). Never the rest: items the
/// client did not ask for, and for sealed mail the sealed message's own
/// BODYSTRUCTURE, size or sections.
pub(super) fn unsolicited(
    items: Vec1<imap_next::imap_types::fetch::MessageDataItem<'static>>,
) -> Option<Vec1<imap_next::imap_types::fetch::MessageDataItem<'static>>> {
    use imap_next::imap_types::fetch::MessageDataItem as Item;
    let kept: Vec<Item<'static>> = items
        .into_iter()
        .filter(|i| matches!(i, Item::Flags(_) | Item::ModSeq(_) | Item::Uid(_)))
        .collect();
    if kept.iter().all(|i| matches!(i, Item::Uid(_))) {
        return None;
    }
    Vec1::try_from(kept).ok()
}
