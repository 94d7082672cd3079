//! NOTIFY (RFC 5465) for the sweep's watcher: one connection that hears
//! about new mail in every mailbox of the account without selecting any.
//!
//! imap-types has no NOTIFY command, so `NOTIFY SET` is written as a
//! fixed line of writ's own (no outside bytes in it) with a tag of the
//! client's sequence; its tagged answer and the events after it (STATUS
//! responses for mailboxes not selected) come through the usual flow.
//! Every wait is bounded (the provider timeout, or the caller's `wait`
//! plus one provider timeout); each response read is bounded by the
//! limit the connection was opened with ([`Client::login_limited`]).

use std::time::Duration;

use imap_next::client;
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::response::{Data, StatusKind};

use super::{Client, ClientError, mailbox_name, refusal};

/// Longest response a watcher connection accepts: STATUS events and the
/// answers to login, CAPABILITY, LIST and NOOP (a LIST of many mailboxes
/// comes one response per mailbox). A longer one is a
/// [`ClientError::Malformed`]: the watcher reconnects after a pause.
pub const WATCH_MAX_RESPONSE: u32 = 64 * 1024;

impl Client {
    /// `NOTIFY SET (personal (MessageNew MessageExpunge))`: from now on
    /// the provider reports new and expunged messages in every mailbox of
    /// the account's personal namespace as `STATUS` responses (nothing is
    /// selected, so nothing is reported as FETCH or EXISTS). A provider
    /// without NOTIFY answers BAD or NO: [`ClientError::Refused`] with
    /// command `NOTIFY`.
    pub async fn notify_new_mail(&mut self) -> Result<(), ClientError> {
        let tag = self.tag();
        // RFC 5465 §5: MessageNew needs MessageExpunge beside it.
        let line = format!(
            "{} NOTIFY SET (personal (MessageNew MessageExpunge))\r\n",
            tag.inner()
        );
        self.write_reading(line.as_bytes()).await?;
        let status = self.wait_for(tag.inner()).await?;
        self.take_data();
        if status.kind != StatusKind::Ok {
            return Err(refusal("NOTIFY", &status));
        }
        Ok(())
    }

    /// Waits up to `wait` for NOTIFY events: the mailboxes named by the
    /// `STATUS` responses that arrive (at most `max` names; the rest of
    /// a burst is read and dropped), as soon as one has come. When none
    /// came within `wait`, a `NOOP` (the session stays alive past the
    /// provider's autologout), and what its answer brought. Waits at most
    /// `wait` plus one provider timeout.
    pub async fn notified(
        &mut self,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while names.is_empty() {
            // Nothing is being written while events are awaited.
            match self.event_before(deadline).await? {
                None => break,
                Some(client::Event::DataReceived { data }) => status_name(&data, &mut names, max),
                Some(other) => self.note(other)?,
            }
        }
        if names.is_empty() {
            let answer = self.run("NOOP", CommandBody::Noop).await?;
            for data in &answer.data {
                status_name(data, &mut names, max);
            }
        } else {
            for data in self.take_data() {
                status_name(&data, &mut names, max);
            }
        }
        Ok(names)
    }
}

/// Adds the mailbox a STATUS response names (once, up to `max` names).
fn status_name(data: &Data<'_>, names: &mut Vec<String>, max: usize) {
    if let Data::Status { mailbox, .. } = data {
        let name = mailbox_name(mailbox);
        if names.len() < max && !names.contains(&name) {
            names.push(name);
        }
    }
}
