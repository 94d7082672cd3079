//! What the cache read or wrote lately, decrypted and parsed, in memory:
//! a warm listing reads a summary from here without a database
//! transaction, a decryption or a JSON parse.
//!
//! Bounded by weight (three quarters of `imap.cache_memory_bytes`,
//! [`super::Cache::open_bounded`]; the weight is about the bytes each
//! entry takes; quick_cache evicts the least useful past it). Entries are keyed like
//! the index and carry the stored-header fingerprint they were made for:
//! a different message under the same UID is a miss. Summaries never go
//! stale by a key change (a keyring only grows while the process runs);
//! verdicts that a message did not open do, and are dropped when the
//! keyring grows ([`Memory::forget_verdicts`]). [`super::Cache`] removes
//! entries whose index rows it drops.

use std::sync::{Arc, OnceLock};

use imap_next::imap_types::fetch::MessageDataItemName;
use quick_cache::Weighter;

use super::Undecryptable;
use crate::envelope::Summary;
use crate::imap::answer::Item;

/// What the cache knows about a message.
// Always behind an Arc, made once per message: the size is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Known {
    /// Its summary, and the listing items made from it so far.
    Summary(Summary, Listing),
    Undecryptable(Undecryptable),
}

/// ENVELOPE, BODYSTRUCTURE and BODY of a cached message, each written from
/// its summary once (a folder listed again shares their bytes).
#[derive(Debug, Default)]
pub struct Listing {
    items: [OnceLock<Option<Item>>; 3],
}

impl Listing {
    /// The item `name` asks for, made by `make` the first time; `None` for
    /// an item that is not one of the three.
    pub fn item(
        &self,
        name: &MessageDataItemName<'_>,
        make: impl FnOnce() -> Option<Item>,
    ) -> Option<Option<Item>> {
        let at = match name {
            MessageDataItemName::Envelope => 0,
            MessageDataItemName::BodyStructure => 1,
            MessageDataItemName::Body => 2,
            _ => return None,
        };
        Some(self.items[at].get_or_init(make).clone())
    }
}

#[derive(Clone)]
pub(super) struct Remembered {
    pub stored: [u8; 32],
    pub known: Arc<Known>,
    pub weight: u64,
}

#[derive(Clone)]
pub(super) struct ByWeight;

impl Weighter<[u8; 20], Remembered> for ByWeight {
    fn weight(&self, _key: &[u8; 20], value: &Remembered) -> u64 {
        value.weight
    }
}

pub(super) struct Memory {
    map: quick_cache::sync::Cache<[u8; 20], Remembered, ByWeight>,
}

impl Memory {
    pub(super) fn new(bytes: u64) -> Memory {
        // quick_cache sizes its tables from an estimate of the count.
        let items = usize::try_from(bytes / 1500).unwrap_or(1 << 16).max(16);
        Memory {
            map: quick_cache::sync::Cache::with_weighter(items, bytes, ByWeight),
        }
    }

    pub(super) fn get(&self, entry: &[u8; 20], stored: &[u8; 32]) -> Option<Arc<Known>> {
        self.map
            .get(entry)
            .filter(|r| &r.stored == stored)
            .map(|r| r.known)
    }

    /// `serialized`: the entry's serialized size, for its weight.
    pub(super) fn put(
        &self,
        entry: [u8; 20],
        stored: [u8; 32],
        known: Arc<Known>,
        serialized: usize,
    ) {
        // The parsed tree takes about twice its JSON, the listing items
        // about as much again, plus the map's own.
        let weight = (serialized as u64).saturating_mul(4).saturating_add(200);
        self.map.insert(
            entry,
            Remembered {
                stored,
                known,
                weight,
            },
        );
        self.publish();
    }

    /// The weight held, as the `writ_imap_cache_memory_bytes` gauge.
    fn publish(&self) {
        metrics::gauge!(crate::admin::names::IMAP_CACHE_MEMORY_BYTES).set(self.weight() as f64);
    }

    /// The weight held now.
    pub(super) fn weight(&self) -> u64 {
        self.map.weight()
    }

    pub(super) fn forget(&self, entry: &[u8; 20]) {
        self.map.remove(entry);
        self.publish();
    }

    /// Drops every "did not open" verdict: the keyring grew, and such
    /// messages are to be tried again.
    pub(super) fn forget_verdicts(&self) {
        self.map
            .retain(|_, r| !matches!(*r.known, Known::Undecryptable(_)));
        self.publish();
    }
}
