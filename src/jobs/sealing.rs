//! The CPU side of a mailbox job, kept off the async runtime: sealing a
//! batch's originals into their copies, and opening the copies read back.
//!
//! Invariants:
//! - Sealing and opening run only on blocking threads (`spawn_blocking`),
//!   never on a runtime thread: a job's provider connection, and every
//!   other task of the process, keeps being served while a batch seals.
//! - A batch takes its threads from the process-wide sealing budget
//!   ([`envelope::Workers`], shared with the relay's and the proxy's large
//!   messages), at most one per core; when the budget is spent by other
//!   work the batch still runs, on one thread, so a batch never waits for
//!   threads and never starts more than one past the budget.
//! - Work is started by [`Spawned::start`] at once and collected by
//!   [`Spawned::finish`]; results come back in the order of the input,
//!   whichever thread did them. Dropping a [`Spawned`] lets its threads
//!   finish and discards what they made (nothing here touches the
//!   provider or the checkpoint).

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::checkpoint::{InFlight, sha256_hex};
use super::client::{Appending, ClientError, Fetched};
use super::copies;
use super::mover::{Failure, Kind};
use crate::envelope::{self, Sealed, Sealer, Workers};
use crate::keys::Unlocked;

/// What sealing and opening need, shared by a job's threads.
pub(super) struct Crypto {
    pub kind: Kind,
    pub sealer: Sealer,
    pub keys: Arc<Unlocked>,
}

/// A sealed copy ready to APPEND, and what it must open to.
pub(super) struct Prepared {
    pub intent: InFlight,
    pub appending: Appending,
}

/// A copy read back from the provider, opened.
pub(super) struct OpenedCopy {
    pub uid: u32,
    /// The copy token in its marker.
    pub token: Option<String>,
    /// SHA-256 of what it opens to; `None`: it does not open.
    pub sha256: Option<String>,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: Option<i64>,
}

/// Work running on blocking threads; its results in input order.
pub(super) struct Spawned<R> {
    groups: Vec<JoinHandle<Vec<R>>>,
}

impl<R: Send + 'static> Spawned<R> {
    /// Starts `work` over `items` now, on as many blocking threads as the
    /// budget gives (at least one). Must be called within the runtime.
    pub fn start<T, F>(items: Vec<T>, work: F) -> Spawned<R>
    where
        T: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        if items.is_empty() {
            return Spawned { groups: Vec::new() };
        }
        let cores = envelope::cores();
        // Held until the last thread of this work is done.
        let workers = Arc::new(Workers::reserve(items.len().min(cores)));
        let threads = workers.count().max(1);
        let per_thread = items.len().div_ceil(threads);
        let work = Arc::new(work);
        let mut items = items.into_iter();
        let mut groups = Vec::with_capacity(threads);
        loop {
            let group: Vec<T> = items.by_ref().take(per_thread).collect();
            if group.is_empty() {
                break;
            }
            let (work, workers) = (Arc::clone(&work), Arc::clone(&workers));
            groups.push(tokio::task::spawn_blocking(move || {
                let _held = workers;
                group.into_iter().map(|t| work(t)).collect()
            }));
        }
        Spawned { groups }
    }

    /// Waits for every thread; a panic on one is resumed here.
    pub async fn finish(self) -> Result<Vec<R>, ClientError> {
        let mut out = Vec::new();
        for group in self.groups {
            match group.await {
                Ok(results) => out.extend(results),
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only when the runtime shuts down.
                    Err(_) => {
                        return Err(ClientError::Io(std::io::Error::other(
                            "the job's runtime is shutting down",
                        )));
                    }
                },
            }
        }
        Ok(out)
    }
}

impl Crypto {
    /// Seals a batch's originals (`batch`: the batch id of their tokens).
    pub fn seal_batch(
        self: &Arc<Self>,
        fetched: Vec<Fetched>,
        batch: String,
    ) -> Spawned<Result<Option<Prepared>, Failure>> {
        let crypto = Arc::clone(self);
        Spawned::start(fetched, move |f| crypto.prepare(f, &batch))
    }

    /// Opens copies read back from the provider.
    pub fn open_copies(self: &Arc<Self>, fetched: Vec<Fetched>) -> Spawned<OpenedCopy> {
        let crypto = Arc::clone(self);
        Spawned::start(fetched, move |f| crypto.open_copy(f))
    }

    fn open_copy(&self, f: Fetched) -> OpenedCopy {
        let head_end = envelope::header::header_end(&f.body).unwrap_or(f.body.len());
        let token = copies::token_of(&f.body[..head_end]);
        let mut opened = Vec::with_capacity(f.body.len());
        let sha256 = envelope::open(&f.body[..], &*self.keys, &mut opened)
            .ok()
            .map(|_| sha256_hex(&opened));
        OpenedCopy {
            uid: f.uid,
            token,
            sha256,
            internal_date: f.internal_date.as_ref().map(|d| d.as_ref().timestamp()),
        }
    }

    /// The sealed copy of one original; `None` when there is nothing to do
    /// (it is no longer an original of this job).
    fn prepare(&self, f: Fetched, batch: &str) -> Result<Option<Prepared>, Failure> {
        let fail = |why: String| Failure { uid: f.uid, why };
        let head_end = envelope::header::header_end(&f.body).unwrap_or(f.body.len());
        let head = &f.body[..head_end];
        let detected = envelope::detect(head);
        let (content, mut message, marker_at) = match (&self.kind, detected) {
            (Kind::Seal, None) => {
                let mut sealed = Vec::with_capacity(f.body.len() + f.body.len() / 3 + 4096);
                match self.sealer.seal(&f.body[..], &mut sealed) {
                    Ok(Sealed::Sealed { .. }) => {}
                    Ok(Sealed::AlreadySealed { .. }) => return Ok(None),
                    Err(e) => return Err(fail(format!("cannot seal it: {e}"))),
                }
                (f.body, sealed, 0)
            }
            (Kind::Reseal { from }, Some(d)) if &d.epoch == from => {
                let mut opened = Vec::with_capacity(f.body.len());
                envelope::open(&f.body[..], &*self.keys, &mut opened)
                    .map_err(|e| fail(format!("cannot open it: {e}")))?;
                // Fields the provider put above the marker stay above it.
                let prefix = envelope::stored_prefix(head);
                let Some(m) = opened.get(prefix.len()..) else {
                    return Err(fail("it opened shorter than its stored prefix".into()));
                };
                let mut sealed = prefix.clone();
                match self.sealer.seal(m, &mut sealed) {
                    Ok(Sealed::Sealed { .. }) => {}
                    Ok(Sealed::AlreadySealed { .. }) => {
                        return Err(fail(
                            "it holds a sealed message inside; left as it is".into(),
                        ));
                    }
                    Err(e) => return Err(fail(format!("cannot seal it: {e}"))),
                }
                (opened, sealed, prefix.len())
            }
            _ => return Ok(None),
        };
        let token = copies::token(batch, f.uid);
        if !copies::mark(&mut message, marker_at, &token) {
            return Err(fail("its sealed copy has no marker line to mark".into()));
        }
        let internal_date = f.internal_date.as_ref().map(|d| d.as_ref().timestamp());
        Ok(Some(Prepared {
            intent: InFlight {
                uid: f.uid,
                internal_date,
                sha256: sha256_hex(&content),
                token: Some(token),
            },
            appending: Appending {
                flags: f.flags,
                date: f.internal_date,
                message,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_runtime_thread_and_comes_back_in_order() {
        let runtime_thread = std::thread::current().id();
        let items: Vec<u32> = (0..101).collect();
        let spawned = Spawned::start(items, move |n| {
            assert_ne!(std::thread::current().id(), runtime_thread);
            n * 2
        });
        let out = spawned.finish().await.unwrap();
        assert_eq!(out, (0..101).map(|n| n * 2).collect::<Vec<_>>());
        let none: Spawned<u32> = Spawned::start(Vec::<u32>::new(), |n| n);
        assert!(none.finish().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_runs_even_when_the_sealing_budget_is_spent() {
        let held = Workers::reserve(usize::MAX);
        assert!(held.count() <= envelope::worker_budget());
        let out = Spawned::start(vec![1, 2, 3], |n: u32| n + 1)
            .finish()
            .await
            .unwrap();
        assert_eq!(out, vec![2, 3, 4]);
    }
}
