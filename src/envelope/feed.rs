//! The batches of M that the sealing pass hands to the payload writer and
//! to the MIME scanner, and the scanner's side of that pass.
//!
//! [`Batches`] lends each batch to both as an [`Arc`] and takes its buffer
//! back once both are done with it (at most [`LENT`] outstanding), so a
//! large message reuses a few buffers instead of allocating, and wiping
//! (plaintext buffers are zeroed when dropped), one per batch.
//!
//! The scanner reads the same batches
//! of M as the payload writer, on the caller's thread for small messages
//! and on a thread of its own once M is large (when the payload writer has
//! started its workers), so scanning a large message overlaps encrypting it.
//!
//! Batches are shared ([`Arc`]), never copied; the scanner's thread takes
//! them from a queue bounded to [`QUEUE`] batches, so memory stays bounded
//! whatever the size of M. The summary is the same whichever thread
//! scanned: the scanner sees the same bytes in the same order.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use super::payload::Plain;
use super::scan::Scanner;
use super::stream::BATCH;
use super::summary::Summary;

/// Batch buffers lent out at most (192 KiB each).
const LENT: usize = 32;

/// Buffers for batches of M, reused once nobody reads them any more.
#[derive(Default)]
pub struct Batches {
    lent: VecDeque<Arc<Plain>>,
}

impl Batches {
    /// An empty buffer for the next batch, of `expect` bytes' capacity
    /// (at most [`BATCH`]) unless a used one is free: a small message
    /// allocates, and wipes, only about its own size.
    pub fn take(&mut self, expect: usize) -> Plain {
        if self.lent.front().is_some_and(|b| Arc::strong_count(b) == 1)
            && let Some(Ok(mut b)) = self.lent.pop_front().map(Arc::try_unwrap)
        {
            b.clear();
            return b;
        }
        Plain::new(Vec::with_capacity(expect.min(BATCH)))
    }

    /// Reads into `batch` until it holds [`BATCH`] bytes or `input` ends,
    /// and lends it out.
    pub fn fill(&mut self, mut batch: Plain, input: &mut impl Read) -> io::Result<Arc<Plain>> {
        while batch.len() < BATCH {
            if batch.len() >= batch.capacity() {
                // Grow by hand: a reallocation would leave a copy of the
                // plaintext behind unwiped; the old buffer is wiped here.
                let mut bigger = Plain::new(Vec::with_capacity(BATCH));
                bigger.extend_from_slice(&batch);
                batch = bigger;
            }
            // Never past the capacity, so `read_to_end` never reallocates.
            let want = (batch.capacity().min(BATCH) - batch.len()) as u64;
            if input.by_ref().take(want).read_to_end(&mut batch)? == 0 {
                break;
            }
        }
        let batch = Arc::new(batch);
        if self.lent.len() >= LENT {
            self.lent.pop_front();
        }
        self.lent.push_back(Arc::clone(&batch));
        Ok(batch)
    }
}

/// Batches waiting for the scanner's thread (192 KiB each).
const QUEUE: usize = 8;

enum Feed {
    Start(Box<Scanner>),
    Batch(Arc<Plain>),
}

/// Where the scanner runs.
pub struct ScanFeed(State);

enum State {
    Inline(Box<Scanner>),
    Thread {
        batches: SyncSender<Feed>,
        scanner: JoinHandle<Box<Scanner>>,
    },
}

impl ScanFeed {
    pub fn new(scanner: Scanner) -> ScanFeed {
        ScanFeed(State::Inline(Box::new(scanner)))
    }

    /// Scans the next batch of M; with `large`, moves scanning to its own
    /// thread first (if a thread cannot start, it stays inline).
    pub fn push(&mut self, batch: &Arc<Plain>, large: bool) -> io::Result<()> {
        if large && let State::Inline(_) = self.0 {
            self.start_thread();
        }
        match &mut self.0 {
            State::Inline(s) => {
                s.push(batch);
                Ok(())
            }
            State::Thread { batches, .. } => batches
                .send(Feed::Batch(Arc::clone(batch)))
                .map_err(|_| scanner_gone()),
        }
    }

    fn start_thread(&mut self) {
        let (tx, rx) = mpsc::sync_channel::<Feed>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("writ-scan".into())
            .spawn(move || {
                let Ok(Feed::Start(mut scanner)) = rx.recv() else {
                    return Box::new(Scanner::new(Default::default()));
                };
                while let Ok(Feed::Batch(b)) = rx.recv() {
                    scanner.push(&b);
                }
                scanner
            });
        let Ok(handle) = spawned else { return };
        let placeholder = State::Inline(Box::new(Scanner::new(Default::default())));
        let State::Inline(scanner) = std::mem::replace(&mut self.0, placeholder) else {
            return;
        };
        if let Err(mpsc::SendError(Feed::Start(scanner))) = tx.send(Feed::Start(scanner)) {
            // The thread is gone already: keep scanning here.
            self.0 = State::Inline(scanner);
            return;
        }
        self.0 = State::Thread {
            batches: tx,
            scanner: handle,
        };
    }

    /// The summary of all of M.
    pub fn finish(self) -> io::Result<Summary> {
        let scanner = match self.0 {
            State::Inline(s) => s,
            State::Thread { batches, scanner } => {
                drop(batches);
                scanner.join().map_err(|_| scanner_gone())?
            }
        };
        Ok(scanner.finish())
    }
}

fn scanner_gone() -> io::Error {
    io::Error::other("the MIME scanning thread stopped")
}
