//! Responses writ writes itself, kept in order with the typed ones:
//! those imap-types has no form for (ESEARCH, THREAD from writ's own
//! plans), and FETCH responses carrying ENVELOPE, BODY or BODYSTRUCTURE
//! of a sealed message ([`crate::imap::answer::response`]: written as
//! Dovecot writes them, body literals included).
//!
//! imap-next's server flow writes each queued response as one output and
//! then reports it sent. A raw response is queued as a placeholder (an
//! empty `* SEARCH`) whose handle is remembered; when the flow reports the
//! placeholder sent, the bytes it wrote for it are replaced by the raw
//! response. So raw responses keep their place among the others without
//! writ bypassing the flow.
//!
//! Memory: one entry per raw response queued and not yet written (a plan
//! queues one).

use std::collections::VecDeque;

use imap_next::imap_types::response::Data;
use imap_next::server;

use super::Session;

#[derive(Debug, Default)]
pub(super) struct RawResponses {
    /// Placeholders queued, with the bytes that replace them.
    queued: VecDeque<(server::ResponseHandle, Vec<u8>)>,
    /// Where the last output of the flow starts in `to_client`.
    last_output: usize,
}

impl Session {
    /// Bytes the client flow wrote for one response.
    pub(super) fn output(&mut self, bytes: &[u8]) {
        self.raw.last_output = self.to_client.len();
        self.to_client.extend_from_slice(bytes);
    }

    /// The client flow reports `event`: a placeholder sent is replaced by
    /// its raw response.
    pub(super) fn sent(&mut self, event: &server::Event) {
        let server::Event::ResponseSent { handle, .. } = event else {
            return;
        };
        if self.raw.queued.front().is_some_and(|(h, _)| h == handle)
            && let Some((_, bytes)) = self.raw.queued.pop_front()
        {
            self.to_client.truncate(self.raw.last_output);
            self.to_client.extend_from_slice(&bytes);
        }
    }

    /// Queues `bytes` (one complete response, CRLF-terminated) after the
    /// responses queued so far.
    pub(super) fn enqueue_raw(&mut self, bytes: Vec<u8>) {
        let handle = self.server.enqueue_data(Data::Search(Vec::new(), None));
        self.raw.queued.push_back((handle, bytes));
    }
}
