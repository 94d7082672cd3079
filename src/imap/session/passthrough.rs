//! Commands imap-codec cannot parse that writ passes to the provider as
//! the client sent them: the extended LIST of LIST-EXTENDED and
//! LIST-STATUS ([`crate::imap::list_extended`] says which lines qualify).
//!
//! The client side: [`crate::imap::intake`] takes such a line off the
//! stream and puts a `NOOP` with its tag in its place, so the command
//! keeps its place among the others (behind a running plan, held like any
//! command, its tag checked against those in flight). When that NOOP is
//! parsed and its tag matches the oldest line taken off, the line goes to
//! the provider instead.
//!
//! The provider side, as [`super::raw`] does toward the client: a
//! placeholder NOOP with the command's tag is queued in the provider flow
//! (so the line keeps its place among writ's other commands), and when the
//! flow reports it sent, the bytes it wrote are replaced by the line. The
//! provider's tagged answer then passes like any. Its untagged answers
//! that imap-codec cannot parse (`* LIST` with extended data such as
//! CHILDINFO) pass on as they are while such a command is in flight; they
//! name mailboxes and count messages, and carry no message content.
//!
//! Memory: the lines taken off and not yet parsed are at most what one
//! read of the client holds (the I/O shell stops reading while commands
//! wait behind a plan), and at most [`MAX_PENDING`] of them; one entry per
//! passed command in flight at the provider.

use std::collections::VecDeque;

use imap_next::client;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::Data;

use super::Session;
use crate::imap::list_extended;

/// Lines taken off and not yet parsed. Past it, the command is answered
/// BAD ([`TOO_MANY`]).
pub(super) const MAX_PENDING: usize = 1024;

/// What a command past [`MAX_PENDING`] is told (tagged BAD).
pub(super) const TOO_MANY: &str = "Too many extended LIST commands pipelined: at most 1024 waiting";

#[derive(Debug, Default)]
pub(super) struct Passthrough {
    /// Lines the intake took off, with their tags, in order; `None` for a
    /// command refused for [`MAX_PENDING`].
    pending: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
    /// Placeholders queued in the provider flow, with their lines.
    queued: VecDeque<(client::CommandHandle, Vec<u8>)>,
    /// Where the provider flow's last output starts in `to_provider`.
    last_output: usize,
    /// Tags of passed commands at the provider.
    in_flight: Vec<String>,
    /// The provider's LIST and LSUB answers as it wrote them.
    pub(super) tee: super::list_raw::ListTee,
}

/// What becomes of a parsed command.
pub(super) enum Taken {
    /// Not a placeholder: the command as parsed.
    No,
    /// A placeholder: send this line instead.
    Line(Vec<u8>),
    /// A placeholder for a command refused for [`MAX_PENDING`].
    Refused,
}

impl Passthrough {
    pub(super) fn push(&mut self, tag: Vec<u8>, line: Vec<u8>) {
        let line = (self.pending.len() < MAX_PENDING).then_some(line);
        self.pending.push_back((tag, line));
    }

    /// Is `command` the placeholder of the oldest line taken off?
    pub(super) fn take(&mut self, command: &Command<'_>) -> Taken {
        let is_placeholder = matches!(command.body, CommandBody::Noop)
            && self
                .pending
                .front()
                .is_some_and(|(t, _)| t.as_slice() == command.tag.inner().as_bytes());
        if !is_placeholder {
            return Taken::No;
        }
        match self.pending.pop_front() {
            Some((_, Some(line))) => Taken::Line(line),
            _ => Taken::Refused,
        }
    }

    /// A fresh flow faces the client: lines taken off the old one go.
    pub(super) fn client_reset(&mut self) {
        self.pending.clear();
    }

    /// The provider answered `tag`.
    pub(super) fn answered(&mut self, tag: &Tag<'_>) {
        if let Some(i) = self.in_flight.iter().position(|t| t == tag.inner()) {
            self.in_flight.swap_remove(i);
        }
    }
}

impl Session {
    /// Sends the client's `line` (tagged `tag`) to the provider as it is.
    pub(super) fn forward_line(&mut self, tag: Tag<'static>, line: Vec<u8>) {
        self.in_flight.sent(&tag);
        self.passthrough.in_flight.push(tag.inner().to_owned());
        let handle = self.provider.enqueue_command(Command {
            tag,
            body: CommandBody::Noop,
        });
        self.passthrough.queued.push_back((handle, line));
    }

    /// Bytes the provider flow wrote for one command.
    pub(super) fn provider_output(&mut self, bytes: &[u8]) {
        self.passthrough.last_output = self.to_provider.len();
        self.to_provider.extend_from_slice(bytes);
    }

    /// The provider flow reports `event`: a placeholder sent is replaced
    /// by its line.
    pub(super) fn provider_sent(&mut self, event: &client::Event) {
        let client::Event::CommandSent { handle, .. } = event else {
            return;
        };
        if !self
            .passthrough
            .queued
            .front()
            .is_some_and(|(h, _)| h == handle)
        {
            return;
        }
        let Some((_, line)) = self.passthrough.queued.pop_front() else {
            return;
        };
        let last = self.passthrough.last_output;
        if self
            .to_provider
            .get(last..)
            .is_some_and(|b| b.ends_with(b" NOOP\r\n"))
        {
            self.to_provider.truncate(last);
            self.to_provider.extend_from_slice(&line);
        } else {
            // Cannot happen (one command is one output of the flow); the
            // provider then answers a NOOP, never something else.
            tracing::warn!("a passed-through command went out as NOOP");
        }
    }

    /// A response the provider flow could not parse: passed on as it is
    /// when it answers a passed command in flight. Returns whether it did.
    pub(super) fn pass_answer(&mut self, bytes: &[u8]) -> bool {
        let is_list = [&b"* LIST "[..], b"* LSUB "]
            .iter()
            .any(|p| bytes.get(..7).is_some_and(|b| b.eq_ignore_ascii_case(p)));
        if is_list {
            // Its bytes are these: the tee's copy goes.
            let _ = self.passthrough.tee.take();
        }
        if self.passthrough.in_flight.is_empty() || !list_extended::is_list_answer(bytes) {
            return false;
        }
        self.enqueue_raw(bytes.to_vec());
        true
    }

    /// A LIST or LSUB answer, parsed: its bytes as the provider wrote
    /// them, if kept ([`super::list_raw`]).
    pub(super) fn list_as_written(&mut self, data: &Data<'_>) -> Option<Vec<u8>> {
        if !matches!(data, Data::List { .. } | Data::Lsub { .. }) {
            return None;
        }
        self.passthrough.tee.take()
    }
}
