//! Plans that take the provider's `* SEARCH` (a SEARCH, SORT or THREAD
//! writ answers, and a command by number over `$`): a `* SEARCH` names no
//! command, so such a plan starts only once the provider has answered
//! every command before it ([`Plan::Quiet`] holds it meanwhile, and the
//! client's commands behind it wait). Likewise a FETCH plan behind a
//! FETCH the provider answers itself (UID, FLAGS, INTERNALDATE, MODSEQ
//! only), whose answers it would otherwise take for flag changes. Part of
//! [`super::Session`]; its invariants are stated in `session.rs`'s header.

use super::*;

impl Session {
    /// A SEARCH, SORT or THREAD: a plan when writ answers it (content
    /// keys, RETURN options, SORT, THREAD), else to the provider as it is.
    /// A SAVE empties `$` until it succeeds, unless writ refuses it BAD
    /// (then `$` stays as it was, as for a SAVE the parser refused).
    pub(super) fn start_search(
        &mut self,
        command: Command<'static>,
        returns: Option<ReturnOptions>,
    ) {
        let started = SearchPlan::start(&command, self.cache_ref(), returns);
        let bad = matches!(
            &started,
            Some(Err(Status::Tagged(Tagged { body, .. }))) if body.kind == StatusKind::Bad
        );
        if returns.is_some_and(|r| r.save) && !bad {
            // Whatever its outcome: only its success saves anything.
            self.saved = None;
        }
        match started {
            Some(Ok(_)) if !self.in_flight.is_empty() => {
                // Its plan may take a `* SEARCH`, which names no command:
                // not while a command of the client's before it may still
                // answer one. It starts again once they are answered.
                self.plan = Some(Plan::Quiet(Box::new(plan::Waiting::Search(
                    command, returns,
                ))));
            }
            Some(Ok((plan, first))) => {
                let plan = plan.opening_with(Arc::clone(&self.keys), self.runner.clone());
                self.plan = Some(Plan::Search(Box::new(plan)));
                self.forward(first);
            }
            Some(Err(refusal)) => {
                self.server.enqueue_status(refusal);
            }
            None => {
                self.forward(command);
            }
        }
    }

    /// A command waiting for the provider to answer every command before
    /// it ([`Plan::Quiet`]) starts once it has; the client's commands held
    /// behind it follow.
    pub(super) fn start_when_quiet(&mut self) {
        if !matches!(self.plan, Some(Plan::Quiet(_))) || !self.in_flight.is_empty() {
            return;
        }
        let Some(Plan::Quiet(waiting)) = self.plan.take() else {
            return;
        };
        match *waiting {
            plan::Waiting::Search(command, returns) => self.start_search(command, returns),
            plan::Waiting::Fetch(command) => self.start_fetch(command),
            plan::Waiting::Resolve(command, saved) => self.start_resolve(command, saved),
        }
        self.apply(Vec::new());
    }

    /// A command by sequence number over `$` (`saved`): the numbers of the
    /// saved messages asked for first.
    pub(super) fn start_resolve(
        &mut self,
        command: Command<'static>,
        saved: imap_next::imap_types::sequence::SequenceSet,
    ) {
        if !self.in_flight.is_empty() {
            self.plan = Some(Plan::Quiet(Box::new(plan::Waiting::Resolve(
                command, saved,
            ))));
            return;
        }
        let (plan, search) = crate::imap::saved_result::Resolve::start(command, &saved);
        self.plan = Some(Plan::Saved(plan));
        self.forward(search);
    }

    /// A FETCH: a plan when writ answers it, else to the provider as it
    /// is. A plan waits while a FETCH the provider answers itself is in
    /// flight: it would take that one's answers for flag changes.
    pub(super) fn start_fetch(&mut self, command: Command<'static>) {
        let Some((plan, probe)) = FetchPlan::start(&command, self.cache_ref()) else {
            self.plain_fetches.push_back(command.tag.clone());
            self.forward(command);
            return;
        };
        if !self.plain_fetches.is_empty() {
            self.plan = Some(Plan::Quiet(Box::new(plan::Waiting::Fetch(command))));
            return;
        }
        let mut plan = plan.opening_with(Arc::clone(&self.keys), self.runner.clone());
        // A listing of messages the cache cannot know: their summaries
        // asked for right behind the probe.
        let speculative = plan.take_speculative();
        self.plan = Some(Plan::Fetch(Box::new(plan)));
        self.forward(probe);
        if let Some(command) = speculative {
            self.forward(command);
        }
    }
}
