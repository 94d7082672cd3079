//! The proxy's cache of opened messages: summaries and whole opened
//! messages, so that a folder listed twice, or a message read twice, is
//! not downloaded and decrypted twice, in this run or the next.
//!
//! - **In the jurisdiction, encrypted at rest.** Every stored value is
//!   sealed with ChaCha20-Poly1305 (ring) under keys derived from the
//!   unlocked keyring ([`sealing`]): a message's summary and body under
//!   its epoch's key, the verdicts below under a key of the whole keyring.
//!   The entry's own key is the associated data, so a value cannot be
//!   moved to another entry. The keys are remade at each start from the
//!   same keyring, so **a restart keeps folders warm**; nothing secret is
//!   stored here (only a random salt). When SIGHUP adds an epoch, the keys
//!   are remade in place ([`Cache::keyring_grown`]).
//! - **Never stale across a key change.** A keyring without a message's
//!   epoch cannot read its entry (a miss: the message is fetched and
//!   tried); verdicts recorded under another keyring cannot be read, so
//!   such messages are tried again. Rows that do not open are misses and
//!   are replaced when the message is stored again.
//! - **Names stay private.** Entries are keyed by a SHA-256 of account,
//!   mailbox, UIDVALIDITY and UID; no account or mailbox name is written.
//! - **Bound to the message.** Each sealed value is bound to a fingerprint
//!   of the message's marker fields ([`MessageKey`]: `X-Writ` and
//!   `Content-Type`, with its random boundary), which a listing asks the
//!   provider for instead of the whole header; an IMAP message cannot
//!   change under one UIDVALIDITY and UID. Entries made with the earlier
//!   fingerprint (of the whole stored header) are misses.
//! - **Safe to delete.** Everything here can be fetched and opened again;
//!   losing the directory, or any entry in it, loses nothing (a missing
//!   salt makes a new, empty cache).
//! - **Bounded.** Past `max_bytes` on disk, the least recently used
//!   entries go; body files no row names (a crash between the two writes)
//!   are removed at start. In memory, `imap.cache_memory_bytes`
//!   ([`DEFAULT_MEMORY_BYTES`]): three quarters for decrypted summaries
//!   and verdicts ([`memory`]), a quarter for redb's page cache.
//! - **Durable enough.** Index writes are not flushed one by one (a flush
//!   per message read would cost more than the read); the index is made
//!   durable at most every [`DURABLE_EVERY`] and when the cache is
//!   dropped. A crash loses at most the rows since: misses, not errors.
//! - **UIDVALIDITY.** When a mailbox's UIDVALIDITY changes its UIDs mean
//!   other messages: [`Cache::selected`] drops the old entries.
//! - **Undecryptable messages are remembered** ([`Cache::undecryptable`]):
//!   a sealed message that did not open (no key, damaged armor, a payload
//!   that disagrees with its summary) is shown as stored from then on,
//!   without being downloaded and tried again at every listing. The entry
//!   holds what the keyring offered for the message's epoch when it failed
//!   ([`Undecryptable`]): a keyring that offers otherwise tries again, and
//!   a keyring changed between runs cannot read the verdict at all. Such
//!   entries are ordinary entries: evicted, dropped with their
//!   UIDVALIDITY, and replaced when the message opens after all.
//!
//! The index is redb (`index.redb`); summaries live in it, opened messages
//! in files under `bodies/xx/` (`xx`: the UID's lowest byte in hex;
//! files of the flat layout of earlier versions are removed at start, so
//! after that upgrade bodies are fetched again once, summaries are not).
//! A row's value starts with its kind
//! ([`KIND_SUMMARY`] or [`KIND_UNDECRYPTABLE`]), then the sealed value.

mod keys;
mod memory;
mod sealing;
#[cfg(test)]
mod tests;
mod writing;
pub use keys::{MARKER_FIELDS, MailboxKey, MessageKey};

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::envelope::{Keys, Summary};
use memory::Memory;
pub use memory::{Known, KnownSummary, Listing};
use sealing::CacheKeys;

/// Entry id (mailbox id ‖ UID, big-endian) → (last use, bytes on disk,
/// kind ‖ sealed value).
const ENTRIES: TableDefinition<&[u8], (u64, u64, &[u8])> = TableDefinition::new("entries");
/// Memory the cache may use, all sessions together, by default
/// (`imap.cache_memory_bytes`): 24 MiB of opened summaries (about 5,000
/// messages of 20 KB with their listing items, a few KB each: fewer with
/// long headers) and 8 MiB of redb pages. Chosen so that writ's whole
/// RSS stays under 64 MiB whatever the folders while a warm listing of
/// 5,000 messages is still answered from memory (BENCHMARKS.md, "The
/// cache's memory, summaries kept as JSON").
pub const DEFAULT_MEMORY_BYTES: u64 = 32 * 1024 * 1024;
/// Longest the index goes without a durable commit while it is written.
pub const DURABLE_EVERY: Duration = Duration::from_secs(2);
/// Rows written to the index in one transaction: stored values wait in
/// memory (where lookups find them) until this many, or until
/// [`Cache::commit`] (a FETCH ends), or the cache is dropped.
pub const WRITE_BATCH: usize = 256;
/// ... or until the rows waiting count this many bytes on disk (bodies
/// included), so that eviction keeps up with large messages.
pub const WRITE_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Mailbox reference (hash of account and name) → UIDVALIDITY last seen.
const MAILBOXES: TableDefinition<&[u8], u32> = TableDefinition::new("mailboxes");

/// A row holding a message's summary (its body, if cached, is a file).
const KIND_SUMMARY: u8 = b's';
/// A row holding an [`Undecryptable`] verdict.
const KIND_UNDECRYPTABLE: u8 = b'u';

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache index: {0}")]
    Index(String),
    #[error("cannot make the cache key: no system randomness")]
    Random,
    #[error(
        "cache directory {}: another writ is using it (give each writ serve its own \
         imap.cache_dir)",
        .path.display()
    )]
    InUse { path: PathBuf },
}

fn index_error(e: impl std::fmt::Display) -> CacheError {
    CacheError::Index(e.to_string())
}

/// Why a message is remembered as undecryptable, and under which keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Undecryptable {
    /// The epoch the marker names.
    pub epoch: String,
    /// How many identities the keyring offered for it.
    pub identities: usize,
    /// The failure's short label ([`crate::envelope::EnvelopeError::reason`]).
    pub reason: String,
}

/// The associated-data suffixes of an entry's sealed values.
const AAD_SUMMARY: &[u8] = b"s";
const AAD_BODY: &[u8] = b"b";
const AAD_UNDECRYPTABLE: &[u8] = b"u";

pub struct Cache {
    db: Database,
    bodies: PathBuf,
    /// Replaced whole when the keyring grows ([`Cache::keyring_grown`]).
    keys: RwLock<Arc<CacheKeys>>,
    max_bytes: u64,
    used: AtomicU64,
    clock: AtomicU64,
    /// Serialises eviction (redb serialises writes anyway).
    evicting: Mutex<()>,
    /// Use since the entry was stored (the index keeps the time of storing).
    last_used: Mutex<HashMap<[u8; 20], u64>>,
    memory: Memory,
    /// When the index was last made durable.
    durable_at: Mutex<Instant>,
    /// Rows stored but not yet written to the index (see [`WRITE_BATCH`]).
    pending: Mutex<Vec<Pending>>,
    /// One [`Cache::commit`] at a time.
    committing: Mutex<()>,
    /// An index write failed (the disk full, an I/O error: redb then
    /// refuses every later write): nothing more is stored until writ
    /// restarts, and the failed batch's body files are removed, so that
    /// bodies never pile up uncounted.
    stopped: std::sync::atomic::AtomicBool,
    /// Orders [`Cache::selected_in_order`]: the next ticket, and per
    /// mailbox the latest ticket recorded (held while one is recorded).
    tickets: AtomicU64,
    selected_at: Mutex<HashMap<[u8; 16], u64>>,
    /// Per mailbox (its id), the highest UID an entry was ever stored
    /// under in this cache (since its start: from the index, then each
    /// store). An upper bound: no entry has a higher UID
    /// ([`Cache::highest_uid`]).
    highest: Mutex<HashMap<[u8; 16], u32>>,
    /// Mailboxes this cache held nothing of whose first listing asked for
    /// the summaries with its probe ([`Cache::first_listing`]).
    first_listed: Mutex<std::collections::HashSet<[u8; 16]>>,
}

/// Mailboxes whose latest SELECT ticket is remembered, at most (past it
/// the memory starts again: an old SELECT recorded late then costs
/// refetches, never a wrong answer).
const MAX_SELECTED_REMEMBERED: usize = 10_000;

/// Mailboxes whose first listing was asked for ahead that the cache
/// remembers, at most (about 3 MiB; past it no first listing is asked
/// for ahead until writ starts again: a round trip more, never a wrong
/// answer).
const MAX_FIRST_LISTINGS: usize = 100_000;

/// A row waiting to be written: entry, kind ‖ sealed value, bytes on disk.
#[derive(Clone)]
struct Pending {
    entry: [u8; 20],
    row: Vec<u8>,
    size: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory under `bodies/` of an entry's body file: the last byte
/// of the entry id (the UID's lowest), in hex. A folder's bodies spread
/// over 256 directories, so the pool's threads writing bodies at once
/// rarely contend for one directory's lock (with one directory, the
/// kernel's lock on it took a tenth of writ's CPU while a folder was
/// fetched whole), and no directory grows to the whole cache.
fn fan_dir(entry: &[u8]) -> String {
    format!("{:02x}", entry.last().copied().unwrap_or(0))
}

/// `bodies/` and its 256 fan directories ([`fan_dir`]).
fn make_fan_dirs(bodies: &Path) -> io::Result<()> {
    for fan in 0..=255u8 {
        fs::create_dir_all(bodies.join(fan_dir(&[fan])))?;
    }
    Ok(())
}

fn remove_all(path: &Path) -> io::Result<()> {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Cache {
    /// Opens the cache in `dir`, at most `max_bytes` on disk, its values
    /// sealed under keys derived from `keys` (see [`sealing`]). What an
    /// earlier run stored is kept and read when these keys can read it.
    pub fn open(dir: &Path, max_bytes: u64, keys: &dyn Keys) -> Result<Cache, CacheError> {
        Cache::open_bounded(dir, max_bytes, DEFAULT_MEMORY_BYTES, keys)
    }

    /// [`Cache::open`], using at most `memory_bytes` of memory: three
    /// quarters for opened summaries, a quarter for redb's page cache.
    pub fn open_bounded(
        dir: &Path,
        max_bytes: u64,
        memory_bytes: u64,
        keys: &dyn Keys,
    ) -> Result<Cache, CacheError> {
        let summaries_bytes = memory_bytes / 4 * 3;
        let pages_bytes = usize::try_from(memory_bytes - summaries_bytes).unwrap_or(usize::MAX);
        let at = |source| CacheError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(at)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at)?;
        }
        let index = dir.join("index.redb");
        let bodies = dir.join("bodies");
        let (keys, fresh) = CacheKeys::for_dir(dir, keys)?;
        if fresh {
            // Nothing there can be read with these keys.
            remove_all(&index).map_err(at)?;
            remove_all(&bodies).map_err(at)?;
        }
        make_fan_dirs(&bodies).map_err(at)?;
        // redb's own page cache defaults to 1 GiB; the index holds small
        // sealed summaries, so a few MiB keep it fast without the memory.
        let builder = || {
            let mut b = Database::builder();
            b.set_cache_size(pages_bytes);
            b
        };
        let db = match builder().create(&index) {
            Ok(db) => db,
            // Another process's cache: never wiped under it.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(CacheError::InUse {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => {
                // A damaged index is a cache lost, nothing more.
                tracing::warn!(error = %e, "cache index unreadable: starting an empty cache");
                remove_all(&index).map_err(at)?;
                remove_all(&bodies).map_err(at)?;
                make_fan_dirs(&bodies).map_err(at)?;
                builder().create(&index).map_err(index_error)?
            }
        };
        let tx = db.begin_write().map_err(index_error)?;
        tx.open_table(ENTRIES).map_err(index_error)?;
        tx.open_table(MAILBOXES).map_err(index_error)?;
        tx.commit().map_err(index_error)?;
        let cache = Cache {
            db,
            bodies,
            keys: RwLock::new(Arc::new(keys)),
            max_bytes,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(1),
            evicting: Mutex::new(()),
            last_used: Mutex::new(HashMap::new()),
            memory: Memory::new(summaries_bytes),
            durable_at: Mutex::new(Instant::now()),
            pending: Mutex::new(Vec::new()),
            committing: Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            tickets: AtomicU64::new(1),
            selected_at: Mutex::new(HashMap::new()),
            highest: Mutex::new(HashMap::new()),
            first_listed: Mutex::new(std::collections::HashSet::new()),
        };
        cache.take_stock().map_err(at)?;
        Ok(cache)
    }

    /// Counts what an earlier run left (bytes, the latest use) and removes
    /// body files no row names.
    fn take_stock(&self) -> io::Result<()> {
        let mut named = HashSet::new();
        let (mut used, mut latest) = (0u64, 0u64);
        if let Ok(tx) = self.db.begin_read()
            && let Ok(t) = tx.open_table(ENTRIES)
            && let Ok(iter) = t.iter()
        {
            for (k, v) in iter.flatten() {
                let (when, _, row) = v.value();
                // The row itself here, its body file's bytes below: a
                // row whose body file is gone (the flat layout of earlier
                // versions) counts only what is left.
                used = used.saturating_add(row.len() as u64);
                latest = latest.max(when);
                self.stored_at(k.value());
                named.insert(hex(k.value()));
            }
        }
        self.clock.store(latest + 1, Ordering::Relaxed);
        // Two levels, ours: the fan directories, and the body files in
        // them. A file elsewhere (the flat layout of earlier versions, a
        // crash's `.tmp`) or in the wrong directory is no row's.
        for f in fs::read_dir(&self.bodies)? {
            let f = f?;
            if !f.file_type()?.is_dir() {
                let _ = fs::remove_file(f.path());
                continue;
            }
            let fan = f.file_name();
            let Ok(files) = fs::read_dir(f.path()) else {
                // Unreadable: its bodies are misses, nothing worse.
                tracing::warn!(dir = ?fan, "cache: a body directory cannot be read");
                continue;
            };
            for b in files.flatten() {
                let name = b.file_name();
                let ours = name.to_str().is_some_and(|n| {
                    named.contains(n) && fan.to_str() == n.get(n.len().saturating_sub(2)..)
                });
                if !ours {
                    let _ = fs::remove_file(b.path());
                } else if let Ok(meta) = b.metadata() {
                    used = used.saturating_add(meta.len());
                }
            }
        }
        self.used.store(used, Ordering::Relaxed);
        if used > self.max_bytes {
            self.evict();
        }
        Ok(())
    }

    /// A write transaction; durable when the last durable one is older
    /// than [`DURABLE_EVERY`].
    fn write(&self) -> Result<redb::WriteTransaction, CacheError> {
        let mut tx = self.db.begin_write().map_err(index_error)?;
        let due = self
            .durable_at
            .lock()
            .map(|mut at| {
                let due = at.elapsed() >= DURABLE_EVERY;
                if due {
                    *at = Instant::now();
                }
                due
            })
            .unwrap_or(true);
        if !due {
            tx.set_durability(Durability::None).map_err(index_error)?;
        }
        Ok(tx)
    }

    fn body_path(&self, entry: &[u8]) -> PathBuf {
        self.bodies.join(fan_dir(entry)).join(hex(entry))
    }

    /// A ticket for [`Cache::selected_in_order`], taken when the SELECT
    /// completed (no I/O).
    pub fn select_ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// [`Cache::selected`] as of `ticket`, run off the session: skipped when
    /// a later SELECT of the same mailbox was recorded first (jobs on the
    /// pool may run in any order; an older UIDVALIDITY recorded last would
    /// drop the newer one's entries).
    pub fn selected_in_order(&self, mb: &MailboxKey, ticket: u64) {
        let Ok(mut at) = self.selected_at.lock() else {
            return;
        };
        let reference = mb.reference();
        if at.get(&reference).is_some_and(|&t| t > ticket) {
            return;
        }
        if at.len() >= MAX_SELECTED_REMEMBERED {
            at.clear();
        }
        at.insert(reference, ticket);
        // Held while recording, so two records of one mailbox never
        // interleave.
        self.selected(mb);
    }

    /// The mailbox is selected with this UIDVALIDITY: entries from another
    /// UIDVALIDITY of the same mailbox are dropped.
    pub fn selected(&self, mb: &MailboxKey) {
        if let Err(e) = self.try_selected(mb) {
            tracing::warn!(error = %e, "cache: cannot record the selected mailbox");
        }
    }

    fn try_selected(&self, mb: &MailboxKey) -> Result<(), CacheError> {
        let reference = mb.reference();
        let known = {
            let tx = self.db.begin_read().map_err(index_error)?;
            let boxes = tx.open_table(MAILBOXES).map_err(index_error)?;
            boxes
                .get(&reference[..])
                .map_err(index_error)?
                .map(|v| v.value())
        };
        if known == Some(mb.uidvalidity) {
            // The usual case: no write at all.
            return Ok(());
        }
        // Rows of the old UIDVALIDITY still waiting go with the others.
        self.commit();
        let tx = self.write()?;
        let mut stale = Vec::new();
        {
            let mut boxes = tx.open_table(MAILBOXES).map_err(index_error)?;
            let old = boxes
                .insert(&reference[..], mb.uidvalidity)
                .map_err(index_error)?
                .map(|v| v.value());
            if let Some(old) = old.filter(|&o| o != mb.uidvalidity) {
                let id = mb.id(old);
                let mut from = id.to_vec();
                from.extend_from_slice(&[0; 4]);
                let mut to = id.to_vec();
                to.extend_from_slice(&[0xff; 4]);
                let mut entries = tx.open_table(ENTRIES).map_err(index_error)?;
                for row in entries.range(&from[..]..=&to[..]).map_err(index_error)? {
                    let (k, v) = row.map_err(index_error)?;
                    stale.push((k.value().to_vec(), v.value().1));
                }
                for (k, _) in &stale {
                    entries.remove(&k[..]).map_err(index_error)?;
                }
            }
        }
        tx.commit().map_err(index_error)?;
        for (k, size) in stale {
            self.forget(&k);
            let _ = fs::remove_file(self.body_path(&k));
            self.used.fetch_sub(
                size.min(self.used.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// What the cache knows about each message (in order): from memory,
    /// and the rest from the index in one read transaction.
    pub fn lookup(&self, mb: &MailboxKey, msgs: &[MessageKey]) -> Vec<Option<Arc<Known>>> {
        let entries: Vec<[u8; 20]> = msgs.iter().map(|m| mb.entry(m.uid)).collect();
        let mut out: Vec<Option<Arc<Known>>> = msgs
            .iter()
            .zip(&entries)
            .map(|(m, e)| self.memory.get(e, &m.stored))
            .collect();
        if out.iter().any(Option::is_none) {
            // Rows stored but not written to the index yet (their memory
            // entries may have been dropped meanwhile).
            let missing: HashSet<[u8; 20]> = out
                .iter()
                .zip(&entries)
                .filter(|(slot, _)| slot.is_none())
                .map(|(_, e)| *e)
                .collect();
            let waiting: Vec<([u8; 20], Vec<u8>)> = match self.pending.lock() {
                Ok(pending) => pending
                    .iter()
                    .filter(|p| missing.contains(&p.entry))
                    .map(|p| (p.entry, p.row.clone()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            for ((slot, msg), entry) in out.iter_mut().zip(msgs).zip(&entries) {
                if slot.is_none()
                    && let Some((_, row)) = waiting.iter().rev().find(|(e, _)| e == entry)
                {
                    *slot = self.read_row(entry, *msg, row);
                }
            }
        }
        if out.iter().any(Option::is_none)
            && let Ok(tx) = self.db.begin_read()
            && let Ok(table) = tx.open_table(ENTRIES)
        {
            for ((slot, msg), entry) in out.iter_mut().zip(msgs).zip(&entries) {
                if slot.is_some() {
                    continue;
                }
                let Ok(Some(row)) = table.get(&entry[..]) else {
                    continue;
                };
                let (_, _, value) = row.value();
                *slot = self.read_row(entry, *msg, value);
            }
        }
        for (slot, entry) in out.iter().zip(&entries) {
            if slot.is_some() {
                self.touch(entry);
            }
        }
        out
    }

    fn keys(&self) -> Arc<CacheKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keyring grew while writ runs (SIGHUP after `keys rotate`): the
    /// new epoch's messages are cached from now on, and messages that did
    /// not open are tried again (their verdicts were the old keyring's).
    pub fn keyring_grown(&self, keys: &dyn Keys) -> Result<(), CacheError> {
        let Some(next) = self.keys().regrown(keys)? else {
            return Ok(());
        };
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.memory.forget_verdicts();
        Ok(())
    }

    /// Opens an index row read from disk, and keeps what it holds in memory.
    fn read_row(&self, entry: &[u8; 20], msg: MessageKey, value: &[u8]) -> Option<Arc<Known>> {
        let (&kind, sealed) = value.split_first()?;
        let (known, len) = match kind {
            KIND_SUMMARY => {
                let json = self
                    .keys()
                    .open_for(msg.epoch, &msg.aad(entry, AAD_SUMMARY), sealed)?;
                // Authentic (the AEAD opened it); parsed when a use needs
                // the tree.
                let len = json.len();
                (Known::Summary(KnownSummary::new(json)), len)
            }
            KIND_UNDECRYPTABLE => {
                let json = self
                    .keys()
                    .open_verdict(&msg.aad(entry, AAD_UNDECRYPTABLE), sealed)?;
                (
                    Known::Undecryptable(serde_json::from_slice(&json).ok()?),
                    json.len(),
                )
            }
            _ => return None,
        };
        let known = Arc::new(known);
        self.memory.put(*entry, msg.stored, known.clone(), len);
        Some(known)
    }

    fn lookup_one(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Arc<Known>> {
        self.lookup(mb, &[msg]).pop().flatten()
    }

    /// The cached summary of a message, and its opened bytes if cached.
    pub fn get(&self, mb: &MailboxKey, msg: MessageKey) -> Option<(Summary, Option<Vec<u8>>)> {
        let summary = self.summary(mb, msg)?;
        Some((summary, self.body(mb, msg)))
    }

    /// The cached opened bytes of a message.
    pub fn body(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Vec<u8>> {
        let entry = mb.entry(msg.uid);
        let sealed = fs::read(self.body_path(&entry)).ok()?;
        self.keys()
            .open_for(msg.epoch, &msg.aad(&entry, AAD_BODY), &sealed)
    }

    /// The cached summary of a message alone (its body file is not read).
    pub fn summary(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Summary> {
        match self.lookup_one(mb, msg)?.as_ref() {
            Known::Summary(s) => s.tree(),
            Known::Undecryptable(_) => None,
        }
    }

    /// Why the message did not open, if it is remembered as undecryptable.
    pub fn undecryptable(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Undecryptable> {
        match self.lookup_one(mb, msg)?.as_ref() {
            Known::Undecryptable(why) => Some(why.clone()),
            Known::Summary(..) => None,
        }
    }

    /// Marks an entry as just used. In memory only: a write transaction per
    /// cache hit would cost more than the hit saves. Eviction reads it.
    fn touch(&self, entry: &[u8; 20]) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut used) = self.last_used.lock() {
            used.insert(*entry, now);
        }
    }

    fn forget(&self, entry: &[u8]) {
        let Ok(entry) = <[u8; 20]>::try_from(entry) else {
            return;
        };
        self.memory.forget(&entry);
        if let Ok(mut used) = self.last_used.lock() {
            used.remove(&entry);
        }
    }

    /// Remembers that a sealed message did not open (replacing whatever
    /// the entry held).
    pub fn put_undecryptable(&self, mb: &MailboxKey, msg: MessageKey, why: &Undecryptable) {
        let entry = mb.entry(msg.uid);
        let Ok(json) = serde_json::to_vec(why) else {
            return;
        };
        let Some(sealed) = self
            .keys()
            .seal_verdict(&msg.aad(&entry, AAD_UNDECRYPTABLE), &json)
        else {
            return;
        };
        let _ = fs::remove_file(self.body_path(&entry));
        let row = [&[KIND_UNDECRYPTABLE][..], &sealed].concat();
        let known = Arc::new(Known::Undecryptable(why.clone()));
        self.memory.put(entry, msg.stored, known, json.len());
        let size = row.len() as u64;
        self.store(entry, row, size);
    }

    /// Stores a message's summary and, if given, its opened bytes; the
    /// entry as memory keeps it, for the listing items made from the
    /// summary now. Not stored when this keyring has no key for the
    /// message's epoch.
    pub fn put(
        &self,
        mb: &MailboxKey,
        msg: MessageKey,
        summary: &Summary,
        opened: Option<&[u8]>,
    ) -> Option<Arc<Known>> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let entry = mb.entry(msg.uid);
        let json = serde_json::to_vec(summary).ok()?;
        let sealed_summary =
            self.keys()
                .seal_for(msg.epoch, &msg.aad(&entry, AAD_SUMMARY), &json)?;
        let row = [&[KIND_SUMMARY][..], &sealed_summary].concat();
        let mut size = row.len() as u64;
        if let Some(opened) = opened
            && let Some(sealed) =
                self.keys()
                    .seal_for(msg.epoch, &msg.aad(&entry, AAD_BODY), opened)
        {
            let path = self.body_path(&entry);
            let tmp = path.with_extension("tmp");
            if fs::write(&tmp, &sealed).is_ok() && fs::rename(&tmp, &path).is_ok() {
                size += sealed.len() as u64;
            } else {
                // A write cut short (the disk full) leaves nothing behind.
                let _ = fs::remove_file(&tmp);
            }
        }
        let len = json.len();
        let known = Arc::new(Known::Summary(KnownSummary::new(json)));
        self.memory.put(entry, msg.stored, known.clone(), len);
        self.store(entry, row, size);
        Some(known)
    }

    /// Keeps [`Cache::highest_uid`] for an entry stored (mailbox id ‖ UID).
    fn stored_at(&self, entry: &[u8]) {
        let (Some(id), Some(uid)) = (
            entry.get(..16).and_then(|i| <[u8; 16]>::try_from(i).ok()),
            entry.get(16..20).and_then(|u| <[u8; 4]>::try_from(u).ok()),
        ) else {
            return;
        };
        self.raise(id, u32::from_be_bytes(uid));
    }

    fn raise(&self, id: [u8; 16], uid: u32) {
        if let Ok(mut highest) = self.highest.lock() {
            let h = highest.entry(id).or_insert(uid);
            *h = (*h).max(uid);
        }
    }

    /// A FETCH listed `mb` up to `uid` (its messages then cached, or
    /// plaintext, or not openable): [`Cache::highest_uid`] is raised to
    /// it, in memory only (a restart starts again from the entries).
    /// Only for a mailbox the cache holds an entry of: one it holds
    /// nothing of may be all plaintext, and is not to have its new mail
    /// asked for ahead with every listing (its first listing is, once:
    /// [`Cache::first_listing`]).
    pub fn listed_up_to(&self, mb: &MailboxKey, uid: u32) {
        let id = mb.id(mb.uidvalidity);
        let known = self.highest.lock().is_ok_and(|h| h.contains_key(&id));
        if known && uid > 0 {
            self.raise(id, uid);
        }
    }

    /// Claims the first listing of `mb` since this cache started, when
    /// the cache holds nothing of it: `true` once per such mailbox, so at
    /// most one listing per mailbox and start of writ asks for summaries
    /// of messages that may all be plaintext. The claim stays whatever
    /// the listing's outcome (its summaries stored then make entries, and
    /// [`Cache::highest_uid`] known). At most [`MAX_FIRST_LISTINGS`]
    /// mailboxes are remembered; past that, `false`.
    pub fn first_listing(&self, mb: &MailboxKey) -> bool {
        let id = mb.id(mb.uidvalidity);
        if self.highest.lock().map_or(true, |h| h.contains_key(&id)) {
            return false;
        }
        self.first_listed
            .lock()
            .is_ok_and(|mut f| f.len() < MAX_FIRST_LISTINGS && f.insert(id))
    }

    /// The highest UID of `mb` this cache has stored an entry under, or a
    /// FETCH has listed since it did ([`Cache::listed_up_to`]); in memory:
    /// no index read. `None` when it never stored one. No entry has a
    /// higher UID, so a message above it is certainly not cached (a
    /// listing then asks for its summary at once, see
    /// `fetch::FetchPlan::start`).
    pub fn highest_uid(&self, mb: &MailboxKey) -> Option<u32> {
        let id = mb.id(mb.uidvalidity);
        self.highest.lock().ok()?.get(&id).copied()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}
