//! What the cache read or wrote lately, decrypted, in memory: a warm
//! listing reads its items from here without a database transaction, a
//! decryption or a JSON parse (the items made by the listing before, or by
//! the one that opened the summaries: [`KnownSummary`]).
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

use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName};
use quick_cache::Weighter;

use super::Undecryptable;
use crate::envelope::Summary;
use crate::imap::answer::Item;

/// What the cache knows about a message.
#[derive(Debug)]
pub enum Known {
    Summary(KnownSummary),
    Undecryptable(Undecryptable),
}

/// A summary as memory keeps it: the JSON it is stored as, and the
/// listing items made from it so far (a folder listed again shares their
/// bytes). Not the parsed tree: measured over `scripts/bench-imap`'s
/// messages, the tree takes 3.7 KB of heap per message, its JSON 2.2 KB;
/// a listing whose items are made never needs the tree, and a use that
/// does (SEARCH, a header section, an item not made yet) parses it again
/// ([`KnownSummary::tree`], a few microseconds).
#[derive(Debug)]
pub struct KnownSummary {
    json: Box<[u8]>,
    listing: Listing,
}

impl KnownSummary {
    /// `json`: the summary as serialized for the index.
    pub(super) fn new(json: Vec<u8>) -> KnownSummary {
        KnownSummary {
            json: json.into_boxed_slice(),
            listing: Listing::default(),
        }
    }

    /// The summary, parsed; `None` if its JSON does not parse (the entry
    /// is then a miss to its user).
    pub fn tree(&self) -> Option<Summary> {
        serde_json::from_slice(&self.json).ok()
    }

    /// The listing items made from it so far.
    pub fn listing(&self) -> &Listing {
        &self.listing
    }
}

/// RFC822.SIZE, ENVELOPE, BODYSTRUCTURE and BODY of a cached message,
/// each made from its summary once.
#[derive(Debug, Default)]
pub struct Listing {
    items: [OnceLock<Option<Kept>>; 4],
}

/// A listing item as kept: written items (ENVELOPE, BODY, BODYSTRUCTURE)
/// by their shared bytes, typed ones (RFC822.SIZE) boxed, so that an
/// entry's four slots take a few dozen bytes, not four `Item`s (about
/// 1.5 KB).
#[derive(Debug)]
enum Kept {
    Written(Arc<[u8]>),
    Typed(Box<MessageDataItem<'static>>),
}

impl Kept {
    fn new(item: Item) -> Kept {
        match item {
            Item::Written(bytes) => Kept::Written(bytes),
            Item::Typed(item) => Kept::Typed(Box::new(item)),
        }
    }

    fn item(&self) -> Item {
        match self {
            Kept::Written(bytes) => Item::Written(Arc::clone(bytes)),
            Kept::Typed(item) => Item::Typed(item.as_ref().clone()),
        }
    }
}

impl Listing {
    fn slot(name: &MessageDataItemName<'_>) -> Option<usize> {
        match name {
            MessageDataItemName::Rfc822Size => Some(0),
            MessageDataItemName::Envelope => Some(1),
            MessageDataItemName::BodyStructure => Some(2),
            MessageDataItemName::Body => Some(3),
            _ => None,
        }
    }

    /// The item `name` asks for, made by `make` the first time; `None` for
    /// an item that is not a listing item.
    pub fn item(
        &self,
        name: &MessageDataItemName<'_>,
        make: impl FnOnce() -> Option<Item>,
    ) -> Option<Option<Item>> {
        let at = Listing::slot(name)?;
        let kept = self.items[at].get_or_init(|| make().map(Kept::new));
        Some(kept.as_ref().map(Kept::item))
    }

    /// Is `name` a listing item made already (answered without the tree)?
    pub fn made(&self, name: &MessageDataItemName<'_>) -> bool {
        Listing::slot(name).is_some_and(|at| self.items[at].get().is_some())
    }
}

/// Bytes an entry takes beyond its JSON and listing items: its slot in
/// the map, the `Known` behind its Arc, the allocator's headers of its
/// allocations, and its last-use record ([`super::Cache`]).
const ENTRY_OVERHEAD: u64 = 300;

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
        // Its JSON, the listing items made from it, and the map's, the
        // Arc's and the allocator's own. Measured over bench-imap's
        // messages (1.9 KB of JSON each, three listing items made): 3.5
        // KB of heap per entry.
        let weight = (serialized as u64)
            .saturating_mul(2)
            .saturating_add(ENTRY_OVERHEAD);
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
