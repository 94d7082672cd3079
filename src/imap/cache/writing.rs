//! The cache's write path: rows queued in memory (where lookups find
//! them) and written to the index in one transaction per batch
//! ([`WRITE_BATCH`] rows or [`WRITE_BATCH_BYTES`]), one commit at a time;
//! made durable by [`Cache::flush`] (at most every [`DURABLE_EVERY`], and
//! when the cache is dropped); past `max_bytes` the least recently used
//! entries evicted down to 90 %. Part of [`Cache`]; the invariants are
//! stated in `cache.rs`'s header.

use super::*;

impl Cache {
    /// Queues an entry's index row (`row`: kind ‖ sealed value), counting
    /// `size` bytes on disk for it; written with the next batch.
    pub(super) fn store(&self, entry: [u8; 20], row: Vec<u8>, size: u64) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        self.stored_at(&entry);
        let full = match self.pending.lock() {
            Ok(mut pending) => {
                pending.push(Pending { entry, row, size });
                pending.len() >= WRITE_BATCH
                    || pending.iter().map(|p| p.size).sum::<u64>() >= WRITE_BATCH_BYTES
            }
            Err(_) => false,
        };
        if full {
            self.commit();
        }
    }

    /// Writes the rows waiting in memory to the index, in one transaction.
    pub fn commit(&self) {
        {
            let Ok(_one) = self.committing.lock() else {
                return;
            };
            self.write_pending();
        }
        if self.used.load(Ordering::Relaxed) > self.max_bytes {
            self.evict();
        }
    }

    /// [`Cache::commit`]'s write, one at a time: the rows stay in the queue
    /// (where lookups find them) until the index has them.
    fn write_pending(&self) {
        let batch = match self.pending.lock() {
            Ok(pending) => pending.clone(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let written = (|| -> Result<Vec<u64>, CacheError> {
            let tx = self.write()?;
            let mut previous = Vec::new();
            {
                let mut t = tx.open_table(ENTRIES).map_err(index_error)?;
                for p in &batch {
                    let now = self.clock.fetch_add(1, Ordering::Relaxed);
                    if let Some(old) = t
                        .insert(&p.entry[..], (now, p.size, &p.row[..]))
                        .map_err(index_error)?
                    {
                        previous.push(old.value().1);
                    }
                }
            }
            tx.commit().map_err(index_error)?;
            Ok(previous)
        })();
        match written {
            Ok(previous) => {
                let added: u64 = batch.iter().map(|p| p.size).sum();
                self.used.fetch_add(added, Ordering::Relaxed);
                for p in previous {
                    self.used
                        .fetch_sub(p.min(self.used.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
            }
            Err(e) => {
                // redb refuses every write after an I/O failure: stop
                // storing (until restart) rather than write bodies the
                // index will never count, and remove this batch's.
                if !self.stopped.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        error = %e,
                        "cache: its index cannot be written (disk full?): the cache stores \
                         nothing more until writ restarts"
                    );
                }
                for p in &batch {
                    self.memory.forget(&p.entry);
                    let _ = fs::remove_file(self.body_path(&p.entry));
                }
            }
        }
        // Only rows are added meanwhile, at the end (commits are one at a
        // time): the first ones are those written.
        if let Ok(mut pending) = self.pending.lock() {
            let n = batch.len().min(pending.len());
            pending.drain(..n);
        }
    }

    /// About the bytes of opened summaries held in memory now.
    pub fn memory_used(&self) -> u64 {
        self.memory.weight()
    }

    /// Bytes the cache holds on disk (as it counts them).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Writes the waiting rows and makes every index write so far durable.
    pub fn flush(&self) {
        self.commit();
        // A write transaction is durable unless told otherwise: its
        // commit makes every earlier non-durable one durable too.
        let done = self
            .db
            .begin_write()
            .map_err(index_error)
            .and_then(|tx| tx.commit().map_err(index_error));
        match done {
            Ok(()) => {
                if let Ok(mut at) = self.durable_at.lock() {
                    *at = Instant::now();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache: cannot flush the index"),
        }
    }

    /// Drops the least recently used entries until the cache is at 90 %
    /// of its cap.
    pub(super) fn evict(&self) {
        let Ok(_guard) = self.evicting.lock() else {
            return;
        };
        let target = self.max_bytes / 10 * 9;
        let mut rows: Vec<(u64, Vec<u8>, u64)> = Vec::new();
        if let Ok(tx) = self.db.begin_read()
            && let Ok(t) = tx.open_table(ENTRIES)
            && let Ok(iter) = t.iter()
        {
            let touched = self.last_used.lock().map(|m| m.clone()).unwrap_or_default();
            for (k, v) in iter.flatten() {
                let (used, size, _) = v.value();
                let key = k.value().to_vec();
                let last = <[u8; 20]>::try_from(&key[..])
                    .ok()
                    .and_then(|e| touched.get(&e).copied())
                    .unwrap_or(0);
                rows.push((used.max(last), key, size));
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
