//! The proxy's cache of opened messages: summaries and whole opened
//! messages, so that a folder listed twice, or a message read twice, is
//! not downloaded and decrypted twice.
//!
//! - **In the jurisdiction, encrypted at rest.** Every stored value is
//!   sealed with ChaCha20-Poly1305 (ring) under a key made at start-up and
//!   held only in memory; the entry's own key is the associated data, so a
//!   value cannot be moved to another entry. A restart makes a new key,
//!   so [`Cache::open`] empties the directory: what is on disk from an
//!   earlier run could not be read anyway.
//! - **Names stay private.** Entries are keyed by a SHA-256 of account,
//!   mailbox, UIDVALIDITY and UID; no account or mailbox name is written.
//! - **Safe to delete.** Everything here can be fetched and opened again;
//!   losing the directory, or any entry in it, loses nothing.
//! - **Bounded.** Past `max_bytes`, the least recently used entries go.
//! - **UIDVALIDITY.** When a mailbox's UIDVALIDITY changes its UIDs mean
//!   other messages: [`Cache::selected`] drops the old entries.
//! - **Undecryptable messages are remembered** ([`Cache::undecryptable`]):
//!   a sealed message that did not open (no key, damaged armor, a payload
//!   that disagrees with its summary) is shown as stored from then on,
//!   without being downloaded and tried again at every listing. The entry
//!   holds what the keyring offered for the message's epoch when it failed
//!   ([`Undecryptable`]): a keyring that offers otherwise tries again. The
//!   keyring is unlocked once per run and a restart empties the cache, so
//!   a changed keyring never sees an earlier run's verdicts. Such entries
//!   are ordinary entries: evicted, dropped with their UIDVALIDITY, and
//!   replaced when the message opens after all.
//!
//! The index is redb (`index.redb`); summaries live in it, opened messages
//! in files under `bodies/`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::envelope::Summary;

/// Entry id (mailbox id ‖ UID, big-endian) → (last use, bytes on disk,
/// sealed summary JSON).
const ENTRIES: TableDefinition<&[u8], (u64, u64, &[u8])> = TableDefinition::new("entries");
/// Memory redb may use for its page cache.
const INDEX_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Mailbox reference (hash of account and name) → UIDVALIDITY last seen.
const MAILBOXES: TableDefinition<&[u8], u32> = TableDefinition::new("mailboxes");

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
}

fn index_error(e: impl std::fmt::Display) -> CacheError {
    CacheError::Index(e.to_string())
}

/// Which mailbox, as the cache keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxKey {
    pub account: String,
    pub mailbox: String,
    pub uidvalidity: u32,
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        // Length-prefixed: ("a","bc") and ("ab","c") differ.
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl MailboxKey {
    fn reference(&self) -> [u8; 16] {
        let h = sha(&[self.account.as_bytes(), self.mailbox.as_bytes()]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }

    fn id(&self, uidvalidity: u32) -> [u8; 16] {
        let h = sha(&[
            self.account.as_bytes(),
            self.mailbox.as_bytes(),
            &uidvalidity.to_be_bytes(),
        ]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }

    fn entry(&self, uid: u32) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(&self.id(self.uidvalidity));
        out[16..].copy_from_slice(&uid.to_be_bytes());
        out
    }
}

/// Which message, as the cache keys it: its UID in the mailbox, and a
/// fingerprint of the stored header it was fetched with (which holds the
/// sealed message's random MIME boundary). The fingerprint is bound into
/// every sealed value, so an entry is only ever read back for the message
/// it was made from: a session whose account or mailbox were mistaken
/// (another user's mailbox with the same UIDVALIDITY) finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageKey {
    pub uid: u32,
    stored: [u8; 32],
}

impl MessageKey {
    /// `stored_header`: the message's header block as the provider stores
    /// it (`BODY[HEADER]`).
    pub fn new(uid: u32, stored_header: &[u8]) -> MessageKey {
        MessageKey {
            uid,
            stored: sha(&[b"writ cache: stored header", stored_header]),
        }
    }

    fn aad(&self, entry: &[u8], what: &[u8]) -> Vec<u8> {
        [entry, &self.stored[..], what].concat()
    }
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
    key: LessSafeKey,
    rng: SystemRandom,
    max_bytes: u64,
    used: AtomicU64,
    clock: AtomicU64,
    /// Serialises eviction (redb serialises writes anyway).
    evicting: Mutex<()>,
    /// Use since the entry was stored (the index keeps the time of storing).
    last_used: Mutex<HashMap<Vec<u8>, u64>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// Opens (emptying) the cache in `dir`, at most `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Cache, CacheError> {
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
        // A new key each start: what an earlier run left is unreadable.
        match fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(e)),
        }
        match fs::remove_dir_all(&bodies) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(e)),
        }
        fs::create_dir_all(&bodies).map_err(at)?;
        let rng = SystemRandom::new();
        let mut raw = [0u8; 32];
        rng.fill(&mut raw).map_err(|_| CacheError::Random)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &raw).map_err(|_| CacheError::Random)?;
        zeroize::Zeroize::zeroize(&mut raw);
        // redb's own page cache defaults to 1 GiB; the index holds small
        // sealed summaries, so a few MiB keep it fast without the memory.
        let db = Database::builder()
            .set_cache_size(INDEX_CACHE_BYTES)
            .create(&index)
            .map_err(index_error)?;
        let tx = db.begin_write().map_err(index_error)?;
        tx.open_table(ENTRIES).map_err(index_error)?;
        tx.open_table(MAILBOXES).map_err(index_error)?;
        tx.commit().map_err(index_error)?;
        Ok(Cache {
            db,
            bodies,
            key: LessSafeKey::new(unbound),
            rng,
            max_bytes,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(1),
            evicting: Mutex::new(()),
            last_used: Mutex::new(HashMap::new()),
        })
    }

    /// A write transaction without fsync: the cache is disposable (emptied
    /// at every start), so durability would only cost a disk flush per
    /// message read.
    fn write(&self) -> Result<redb::WriteTransaction, CacheError> {
        let mut tx = self.db.begin_write().map_err(index_error)?;
        tx.set_durability(Durability::None).map_err(index_error)?;
        Ok(tx)
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.append(&mut data);
        Some(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, data) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }

    fn body_path(&self, entry: &[u8]) -> PathBuf {
        self.bodies.join(hex(entry))
    }

    /// The mailbox is selected with this UIDVALIDITY: entries from another
    /// UIDVALIDITY of the same mailbox are dropped.
    pub fn selected(&self, mb: &MailboxKey) {
        if let Err(e) = self.try_selected(mb) {
            tracing::warn!(error = %e, "cache: cannot record the selected mailbox");
        }
    }

    fn try_selected(&self, mb: &MailboxKey) -> Result<(), CacheError> {
        let tx = self.write()?;
        let mut stale = Vec::new();
        {
            let mut boxes = tx.open_table(MAILBOXES).map_err(index_error)?;
            let reference = mb.reference();
            let old = boxes
                .get(&reference[..])
                .map_err(index_error)?
                .map(|v| v.value());
            if old != Some(mb.uidvalidity) {
                boxes
                    .insert(&reference[..], mb.uidvalidity)
                    .map_err(index_error)?;
            }
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

    /// The cached summary of a message, and its opened bytes if cached.
    pub fn get(&self, mb: &MailboxKey, msg: MessageKey) -> Option<(Summary, Option<Vec<u8>>)> {
        let entry = mb.entry(msg.uid);
        let summary = self.summary(mb, msg)?;
        let body = fs::read(self.body_path(&entry))
            .ok()
            .and_then(|b| self.unseal(&msg.aad(&entry, AAD_BODY), &b));
        Some((summary, body))
    }

    /// The cached summary of a message alone (its body file is not read).
    pub fn summary(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Summary> {
        let entry = mb.entry(msg.uid);
        let sealed_summary = {
            let tx = self.db.begin_read().ok()?;
            let table = tx.open_table(ENTRIES).ok()?;
            let row = table.get(&entry[..]).ok()??;
            let (_, _, s) = row.value();
            s.to_vec()
        };
        let json = self.unseal(&msg.aad(&entry, AAD_SUMMARY), &sealed_summary)?;
        let summary: Summary = serde_json::from_slice(&json).ok()?;
        self.touch(&entry);
        Some(summary)
    }

    /// Marks an entry as just used. In memory only: a write transaction per
    /// cache hit would cost more than the hit saves. Eviction reads it.
    fn touch(&self, entry: &[u8]) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut used) = self.last_used.lock() {
            used.insert(entry.to_vec(), now);
        }
    }

    fn forget(&self, entry: &[u8]) {
        if let Ok(mut used) = self.last_used.lock() {
            used.remove(entry);
        }
    }

    /// Remembers that a sealed message did not open (replacing whatever
    /// the entry held).
    pub fn put_undecryptable(&self, mb: &MailboxKey, msg: MessageKey, why: &Undecryptable) {
        let entry = mb.entry(msg.uid);
        let Ok(json) = serde_json::to_vec(why) else {
            return;
        };
        let Some(sealed) = self.seal(&msg.aad(&entry, AAD_UNDECRYPTABLE), &json) else {
            return;
        };
        let _ = fs::remove_file(self.body_path(&entry));
        self.store(&entry, &sealed);
    }

    /// Why the message did not open, if it is remembered as undecryptable.
    pub fn undecryptable(&self, mb: &MailboxKey, msg: MessageKey) -> Option<Undecryptable> {
        let entry = mb.entry(msg.uid);
        let sealed = {
            let tx = self.db.begin_read().ok()?;
            let table = tx.open_table(ENTRIES).ok()?;
            let row = table.get(&entry[..]).ok()??;
            let (_, _, s) = row.value();
            s.to_vec()
        };
        let json = self.unseal(&msg.aad(&entry, AAD_UNDECRYPTABLE), &sealed)?;
        let why = serde_json::from_slice(&json).ok()?;
        self.touch(&entry);
        Some(why)
    }

    /// Stores a message's summary and, if given, its opened bytes.
    pub fn put(&self, mb: &MailboxKey, msg: MessageKey, summary: &Summary, opened: Option<&[u8]>) {
        let entry = mb.entry(msg.uid);
        let Ok(json) = serde_json::to_vec(summary) else {
            return;
        };
        let Some(sealed_summary) = self.seal(&msg.aad(&entry, AAD_SUMMARY), &json) else {
            return;
        };
        let mut size = sealed_summary.len() as u64;
        if let Some(opened) = opened
            && let Some(sealed) = self.seal(&msg.aad(&entry, AAD_BODY), opened)
        {
            let path = self.body_path(&entry);
            let tmp = path.with_extension("tmp");
            if fs::write(&tmp, &sealed).is_ok() && fs::rename(&tmp, &path).is_ok() {
                size += sealed.len() as u64;
            }
        }
        self.store_sized(&entry, &sealed_summary, size);
    }

    /// Writes an entry's index row (its value sealed already).
    fn store(&self, entry: &[u8], sealed: &[u8]) {
        self.store_sized(entry, sealed, sealed.len() as u64);
    }

    /// [`Cache::store`] counting `size` bytes on disk for it.
    fn store_sized(&self, entry: &[u8], sealed_summary: &[u8], size: u64) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let stored = (|| -> Result<Option<u64>, CacheError> {
            let tx = self.write()?;
            let previous = {
                let mut t = tx.open_table(ENTRIES).map_err(index_error)?;
                t.insert(entry, (now, size, sealed_summary))
                    .map_err(index_error)?
                    .map(|old| old.value().1)
            };
            tx.commit().map_err(index_error)?;
            Ok(previous)
        })();
        match stored {
            Ok(previous) => {
                self.used.fetch_add(size, Ordering::Relaxed);
                if let Some(p) = previous {
                    self.used
                        .fetch_sub(p.min(self.used.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache: cannot store an entry"),
        }
        if self.used.load(Ordering::Relaxed) > self.max_bytes {
            self.evict();
        }
    }

    /// Bytes the cache holds on disk (as it counts them).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Drops the least recently used entries until the cache is at 90 %
    /// of its cap.
    fn evict(&self) {
        let Ok(_guard) = self.evicting.lock() else {
            return;
        };
        let target = self.max_bytes / 10 * 9;
        let mut rows: Vec<(u64, Vec<u8>, u64)> = Vec::new();
        if let Ok(tx) = self.db.begin_read()
            && let Ok(t) = tx.open_table(ENTRIES)
            && let Ok(iter) = t.iter()
        {
            for row in iter.flatten() {
                let (k, v) = row;
                let (used, size, _) = v.value();
                let key = k.value().to_vec();
                let touched = self
                    .last_used
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).copied())
                    .unwrap_or(0);
                rows.push((used.max(touched), key, size));
            }
        }
        rows.sort();
        let mut total = self.used.load(Ordering::Relaxed);
        let mut gone = Vec::new();
        for (_, k, size) in rows {
            if total <= target {
                break;
            }
            total = total.saturating_sub(size);
            gone.push((k, size));
        }
        let Ok(tx) = self.write() else {
            return;
        };
        if let Ok(mut t) = tx.open_table(ENTRIES) {
            for (k, _) in &gone {
                let _ = t.remove(&k[..]);
            }
        }
        if tx.commit().is_ok() {
            for (k, size) in gone {
                self.forget(&k);
                let _ = fs::remove_file(self.body_path(&k));
                self.used.fetch_sub(
                    size.min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(size: u64) -> Summary {
        Summary {
            version: 1,
            size,
            bare_lf: 0,
            root: Default::default(),
        }
    }

    /// A message's cache key, fetched with one and the same stored header.
    fn k(uid: u32) -> MessageKey {
        MessageKey::new(uid, b"X-Writ: v=1; key=0123456789abcdef\r\n\r\n")
    }

    fn mb(uidvalidity: u32) -> MailboxKey {
        MailboxKey {
            account: "alice".into(),
            mailbox: "INBOX".into(),
            uidvalidity,
        }
    }

    #[test]
    fn stores_reads_and_encrypts_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        cache.selected(&mb(7));
        cache.put(
            &mb(7),
            k(3),
            &summary(42),
            Some(b"Subject: very secret\r\n\r\nbody"),
        );
        let (s, body) = cache.get(&mb(7), k(3)).expect("cached");
        assert_eq!(s.size, 42);
        assert_eq!(
            body.as_deref(),
            Some(&b"Subject: very secret\r\n\r\nbody"[..])
        );
        assert!(cache.get(&mb(7), k(4)).is_none());
        // Nothing on disk shows the plaintext or the names.
        for entry in walk(dir.path()) {
            let bytes = fs::read(&entry).unwrap();
            for needle in [&b"very secret"[..], b"alice", b"INBOX"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?}",
                    entry.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_new_uidvalidity_drops_the_mailboxs_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        cache.selected(&mb(7));
        cache.put(&mb(7), k(3), &summary(1), Some(b"x"));
        cache.selected(&mb(8));
        assert!(cache.get(&mb(7), k(3)).is_none());
        assert!(cache.get(&mb(8), k(3)).is_none());
        assert_eq!(cache.used(), 0);
        assert!(walk(&dir.path().join("bodies")).is_empty());
    }

    #[test]
    fn undecryptable_messages_are_remembered_sealed_and_forgotten_with_their_uidvalidity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        cache.selected(&mb(7));
        let why = Undecryptable {
            epoch: "0123456789abcdef".into(),
            identities: 0,
            reason: "unknown_epoch".into(),
        };
        cache.put(&mb(7), k(3), &summary(1), Some(b"x"));
        cache.put_undecryptable(&mb(7), k(3), &why);
        assert_eq!(cache.undecryptable(&mb(7), k(3)), Some(why.clone()));
        // It replaced the summary and the body; it is not one itself.
        assert!(cache.get(&mb(7), k(3)).is_none());
        assert!(walk(&dir.path().join("bodies")).is_empty());
        assert!(cache.undecryptable(&mb(7), k(4)).is_none());
        // Opening after all replaces it.
        cache.put(&mb(7), k(3), &summary(1), None);
        assert!(cache.undecryptable(&mb(7), k(3)).is_none());
        cache.put_undecryptable(&mb(7), k(3), &why);
        cache.selected(&mb(8));
        assert!(cache.undecryptable(&mb(7), k(3)).is_none());
        assert_eq!(cache.used(), 0);
    }

    #[test]
    fn least_recently_used_entries_go_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 20_000).unwrap();
        let body = vec![b'a'; 4_000];
        for uid in 1..=4 {
            cache.put(&mb(1), k(uid), &summary(uid.into()), Some(&body));
        }
        // Use 1 again: 2 is now the oldest.
        assert!(cache.get(&mb(1), k(1)).is_some());
        cache.put(&mb(1), k(5), &summary(5), Some(&body));
        assert!(cache.used() <= 20_000, "{}", cache.used());
        assert!(cache.get(&mb(1), k(2)).is_none(), "the oldest entry stayed");
        assert!(
            cache.get(&mb(1), k(1)).is_some(),
            "a recently used entry went"
        );
        assert!(cache.get(&mb(1), k(5)).is_some());
    }

    #[test]
    fn a_restart_starts_empty_and_a_damaged_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            cache.put(&mb(1), k(1), &summary(1), Some(b"hello"));
            // Damage the body file: the summary still comes, the body not.
            let f = walk(&dir.path().join("bodies")).pop().unwrap();
            let mut b = fs::read(&f).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            fs::write(&f, b).unwrap();
            let (_, body) = cache.get(&mb(1), k(1)).unwrap();
            assert!(body.is_none());
        }
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert!(cache.get(&mb(1), k(1)).is_none());
        assert!(walk(&dir.path().join("bodies")).is_empty());
    }
}
