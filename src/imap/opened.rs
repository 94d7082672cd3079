//! One way to open a sealed message, for FETCH and SEARCH alike: the
//! summary from part 1 (its transfer encoding read from part 1's MIME
//! header), or the whole stored message; what opened goes to the cache,
//! what did not is counted, logged and remembered as undecryptable.
//!
//! Every function here is work that leaves the session: the plans call
//! them inside jobs on the pool ([`super::fetch::opening`]), never in
//! `Session::advance`. They take the keyring and the cache by reference
//! and hold no state of their own.
//!
//! Invariants:
//!
//! - A summary is taken only through `open_summary_of`: a marker of another
//!   format version is refused, so such a message is not listed from it.
//! - A whole message opens only when its payload's size is the one its
//!   summary states: sizes, structure and sections agree with the listing,
//!   or the message is shown as stored.
//! - A failure to write the output is not the message's: it is counted but
//!   not remembered as undecryptable.
//!
//! The provider FETCH that brings what is opened is built here too
//! ([`fetch_command`]), for the FETCH plan's probe and phases and for
//! SEARCH alike.

use std::sync::Arc;

use imap_next::imap_types::command::{Command, CommandBody, FetchModifier};
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_next::imap_types::sequence::SequenceSet;

use crate::admin::names;
use crate::envelope::{self, Detected, EnvelopeError, Keys, Summary};
use crate::imap::cache::{Known, MessageKey};
use crate::imap::fetch::{CacheRef, remember_undecryptable, undecryptable_known};

/// `[UID] FETCH set (items)` to the provider, with `modifiers`
/// (CHANGEDSINCE, VANISHED) when the client's command had them.
pub fn fetch_command(
    tag: Tag<'static>,
    set: SequenceSet,
    uid: bool,
    items: Vec<MessageDataItemName<'static>>,
    modifiers: Vec<FetchModifier>,
) -> Command<'static> {
    Command {
        tag,
        body: CommandBody::Fetch {
            sequence_set: set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid,
            modifiers,
        },
    }
}

/// The keys and the place in the cache one message is opened with.
pub struct Target<'a> {
    pub keys: &'a (dyn Keys + Send + Sync),
    pub cache: Option<&'a CacheRef>,
    /// Its cache entry.
    pub key: MessageKey,
    /// Its marker.
    pub marker: &'a Detected,
    /// The fields the provider put above the marker.
    pub prefix: &'a [u8],
}

impl Target<'_> {
    /// Opens the summary from part 1 and its MIME header (`mime`: for the
    /// transfer encoding), and caches it; with the cache's entry for it,
    /// which keeps the listing items made from it.
    pub fn summary(
        &self,
        part1: &[u8],
        mime: &[u8],
    ) -> Result<(Summary, Option<Arc<Known>>), EnvelopeError> {
        let cte = envelope::header::first_value(mime, "content-transfer-encoding")
            .map(|v| envelope::header::text(&v));
        let summary = envelope::open_summary_of(part1, cte.as_deref(), self.marker, self.keys)
            .map(|s| s.with_prefix(self.prefix));
        match summary {
            Ok(summary) => {
                let cached = self
                    .cache
                    .and_then(|c| c.cache.put(&c.mailbox, self.key, &summary, None));
                Ok((summary, cached))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Opens the whole stored message: its summary and its opened bytes,
    /// both cached.
    pub fn whole(&self, stored: &[u8]) -> Result<(Summary, Vec<u8>), EnvelopeError> {
        match self.open_whole(stored) {
            Ok((summary, opened)) => {
                if let Some(c) = self.cache {
                    c.cache.put(&c.mailbox, self.key, &summary, Some(&opened));
                }
                Ok((summary, opened))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn open_whole(&self, stored: &[u8]) -> Result<(Summary, Vec<u8>), EnvelopeError> {
        let summary = envelope::read_summary(stored, self.keys)?.with_prefix(self.prefix);
        let mut opened = Vec::with_capacity(stored.len());
        envelope::open(stored, self.keys, &mut opened)?;
        if opened.len() as u64 != summary.size {
            return Err(EnvelopeError::Damaged(
                "the payload's size differs from its summary's".into(),
            ));
        }
        Ok((summary, opened))
    }

    /// A message that did not open: counted, logged, remembered.
    fn failed(&self, e: EnvelopeError) -> EnvelopeError {
        tracing::warn!(uid = self.key.uid, error = %e, "cannot open a sealed message");
        metrics::counter!(names::OPEN_FAILURES_TOTAL, "reason" => e.reason()).increment(1);
        remember_undecryptable(self.cache, self.key, &self.marker.epoch, self.keys, &e);
        e
    }

    /// Is it remembered as undecryptable under the keys offered now?
    pub fn known_undecryptable(&self) -> bool {
        self.cache
            .is_some_and(|c| undecryptable_known(c, self.key, &self.marker.epoch, self.keys))
    }
}
