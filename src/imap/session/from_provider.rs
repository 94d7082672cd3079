//! What the session does with each provider event: responses passed on,
//! handed to the plan running, or tracked (login, SELECT, capabilities);
//! and a response that does not parse. Part of [`super::Session`]; its
//! invariants are stated in `session.rs`'s header.

use super::*;

impl Session {
    pub(super) fn on_provider(&mut self, event: client::Event) {
        match event {
            client::Event::GreetingReceived { .. }
            | client::Event::CommandSent { .. }
            | client::Event::AuthenticateStarted { .. }
            | client::Event::IdleCommandSent { .. }
            | client::Event::IdleDoneSent { .. } => {}
            client::Event::CommandRejected { status, .. } => {
                self.track_status(&status);
                self.server.enqueue_status(status);
                self.start_when_quiet();
            }
            client::Event::AuthenticateContinuationRequestReceived {
                continuation_request,
                ..
            } => {
                let _ = self.server.authenticate_continue(continuation_request);
            }
            client::Event::AuthenticateStatusReceived { status, .. } => {
                self.pending_mechanism = None;
                self.track_status(&status);
                let status = self.rewrite_status(status);
                if let Err(status) = self.server.authenticate_finish(status) {
                    self.server.enqueue_status(status);
                }
                self.start_when_quiet();
            }
            client::Event::IdleAccepted {
                continuation_request,
                ..
            } => {
                let _ = self.server.idle_accept(continuation_request);
            }
            client::Event::IdleRejected { status, .. } => {
                self.track_status(&status);
                let status = self.rewrite_status(status);
                if let Err(status) = self.server.idle_reject(status) {
                    self.server.enqueue_status(status);
                }
                self.start_when_quiet();
            }
            client::Event::DataReceived { data } => {
                match &data {
                    Data::Exists(n) => self.exists = Some(*n),
                    Data::Expunge(_) => self.exists = self.exists.map(|n| n.saturating_sub(1)),
                    _ => {}
                }
                // While a plan runs, the provider answers writ's commands,
                // which are of the client's command's kind (by sequence
                // number or by UID): what it sends unasked (EXISTS, flag
                // changes, and EXPUNGE or VANISHED during UID commands
                // only) is what it would send the client, and it numbers
                // messages as the client does, so it passes on, in order.
                // VANISHED (EARLIER) renumbers nothing: it answers a
                // SELECT's or UID FETCH's QRESYNC/VANISHED parameter.
                let data = match (data, self.plan.as_mut()) {
                    (Data::Fetch { seq, items }, Some(plan)) if plan.takes_fetches() => {
                        if let Plan::Fetch(fetch) = plan {
                            fetch.provider_response(self.provider.last_response_bytes());
                        }
                        match plan.on_fetch(seq, items, self.keys.as_ref()) {
                            Ok(outputs) => return self.apply(outputs),
                            Err(items) => match unsolicited(items) {
                                Some(items) => Data::Fetch { seq, items },
                                None => return,
                            },
                        }
                    }
                    (Data::Search(found, modseq), Some(plan)) => {
                        match plan.on_search(found, modseq.map(|m| m.get())) {
                            Ok(()) => return,
                            Err(found) => Data::Search(found, modseq),
                        }
                    }
                    (Data::Expunge(seq), Some(plan)) => {
                        plan.on_expunge(seq);
                        Data::Expunge(seq)
                    }
                    (
                        Data::Vanished {
                            earlier: false,
                            known_uids,
                        },
                        Some(plan),
                    ) => {
                        plan.on_vanished(&Vanished::new(&known_uids));
                        Data::Vanished {
                            earlier: false,
                            known_uids,
                        }
                    }
                    // A QRESYNC SELECT's changed messages: only what names
                    // a flag change passes (the provider sends nothing
                    // else there; a guard against sealed items), whatever
                    // plan that takes no FETCH data runs meanwhile.
                    (Data::Fetch { seq, items }, _) if self.pending_select.is_some() => {
                        match unsolicited(items) {
                            Some(items) => Data::Fetch { seq, items },
                            None => return,
                        }
                    }
                    (data, _) => data,
                };
                if let Some(bytes) = self.list_as_written(&data) {
                    return self.enqueue_raw(bytes);
                }
                let data = self.rewrite_data(data);
                self.server.enqueue_data(data);
            }
            client::Event::StatusReceived { status } => {
                if matches!(status, Status::Bye(_)) {
                    self.provider_bye = true;
                }
                self.track_status(&status);
                let status = match self.plan.as_mut() {
                    Some(plan) => match plan.on_status(status) {
                        Ok(outputs) => return self.apply(outputs),
                        Err(status) => status,
                    },
                    None => status,
                };
                let status = self.rewrite_status(status);
                self.server.enqueue_status(status);
                self.start_when_quiet();
            }
            client::Event::ContinuationRequestReceived {
                continuation_request,
            } => {
                self.server
                    .enqueue_continuation_request(continuation_request);
            }
        }
    }

    /// A provider response writ cannot parse cannot be passed on typed:
    /// the client is told BYE rather than left waiting for an answer.
    /// Except a FETCH response during a FETCH plan (imap-codec refuses a
    /// plaintext message's BODYSTRUCTURE nested past its limit): that
    /// message goes unanswered, the FETCH ends NO, the session goes on.
    pub(super) fn on_provider_error(&mut self, e: client::Error) {
        if let client::Error::MalformedMessage { discarded_bytes } = &e
            && self.pass_answer(discarded_bytes.declassify())
        {
            return;
        }
        if let client::Error::MalformedMessage { discarded_bytes } = &e
            && is_fetch_response(discarded_bytes.declassify())
            && let Some(Plan::Fetch(plan)) = self.plan.as_mut()
        {
            tracing::warn!("a FETCH response from the provider did not parse; the FETCH ends NO");
            plan.unanswered();
            return;
        }
        tracing::warn!(error = %e, "unparseable response from the provider");
        self.bye("unparseable response from the provider");
        self.step = Step::Close;
    }
}

/// Is `bytes` an untagged FETCH response (`* n FETCH ...`)?
fn is_fetch_response(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"* ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && rest
            .get(digits..digits + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b" FETCH "))
}
