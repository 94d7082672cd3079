//! The CPU side of a mailbox job, kept off the async runtime: sealing a
//! batch's originals into their copies, and checking the copies read back.
//!
//! Checking a copy read back ([`Crypto::check_copies`]) proves that it
//! opens to exactly what its original opens to, in one of two ways:
//!
//! - **By its bytes**, for a copy this run APPENDed: [`Prepared::sealed`]
//!   is the SHA-256 of the exact bytes sent (marker and token included).
//!   A copy read back under that token with that SHA-256 is the sealed
//!   message writ made from its original, stored unchanged. Before it was
//!   sent, those exact bytes were opened with the message's own file keys
//!   ([`envelope::Witness`]: a decryption, no X25519) and compared with
//!   the original byte for byte, so a sealer fault that hits one message
//!   is caught before anything depends on that copy (the original is
//!   left, the failure reported). That the X25519 stanzas open with the
//!   keyring is proven by opening one such copy of every chunk read back
//!   in full with the keyring (the sample: the first one a thread finds);
//!   if that copy does not open to its original, no copy of the chunk
//!   counts by its bytes (each counts as not opening: it is removed, its
//!   original stays).
//! - **By opening it** in full and comparing the SHA-256 of what it opens
//!   to with the original's: every other copy (one found after a crash or
//!   from an earlier batch's unanswered APPEND, whose sealed bytes this run
//!   never knew, or one the provider stored changed).
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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ring::digest::{SHA256, digest};
use tokio::task::JoinHandle;

use super::checkpoint::{InFlight, sha256_hex};
use super::client::{Appending, ClientError, Fetched};
use super::copies;
use super::mover::{Failure, Kind};
use crate::envelope::{self, Sealed, Sealer, Witness, Workers};
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
    /// SHA-256 of the exact bytes to APPEND (`appending.message`).
    pub sealed: [u8; 32],
}

/// What this run APPENDed under one copy token (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Appended {
    /// SHA-256 of the bytes sent.
    pub sealed: [u8; 32],
    /// SHA-256 (hex) of what its original opens to.
    pub opens_to: String,
}

/// Copy token → what this run APPENDed under it.
pub(super) type AppendedCopies = HashMap<String, Appended>;

impl Prepared {
    /// The token and the [`Appended`] of this copy, once it is sent.
    pub fn appended(&self) -> Option<(String, Appended)> {
        let token = self.intent.token.clone()?;
        let appended = Appended {
            sealed: self.sealed,
            opens_to: self.intent.sha256.clone(),
        };
        Some((token, appended))
    }
}

/// A copy read back from the provider, checked.
pub(super) struct OpenedCopy {
    pub uid: u32,
    /// The copy token in its marker.
    pub token: Option<String>,
    /// SHA-256 of what it opens to; `None`: it does not open.
    pub sha256: Option<String>,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: Option<i64>,
    /// How `sha256` was established.
    pub checked: Checked,
}

/// How a copy read back was checked (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checked {
    /// Opened in full.
    Opened,
    /// Its bytes are those APPENDed under its token; not opened.
    SameBytes,
    /// Its bytes are those APPENDed under its token, and it was opened in
    /// full too: the chunk's sample. `true`: it opened to its original.
    Sample(bool),
}

/// Copies being checked on blocking threads ([`Crypto::check_copies`]).
pub(super) struct Checking {
    spawned: Spawned<OpenedCopy>,
}

impl Checking {
    /// The copies, checked, in the order they were given. When the chunk's
    /// sample did not open to its original, no copy counts by its bytes.
    pub async fn finish(self) -> Result<Vec<OpenedCopy>, ClientError> {
        let mut copies = self.spawned.finish().await?;
        if copies.iter().any(|c| c.checked == Checked::Sample(false)) {
            tracing::error!(
                "a sealed copy made by this run does not open to its original (check the \
                 keyring and the sealer); the copies of its batch are removed, their originals \
                 stay"
            );
            for c in copies
                .iter_mut()
                .filter(|c| c.checked == Checked::SameBytes)
            {
                c.sha256 = None;
            }
        }
        Ok(copies)
    }
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

    /// Checks copies read back from the provider (one chunk), knowing what
    /// this run APPENDed (`appended`; empty when resolving what an earlier
    /// run left): see the module docs. The chunk's sample is the first copy
    /// a thread finds to be the bytes sent.
    pub fn check_copies(
        self: &Arc<Self>,
        fetched: Vec<Fetched>,
        appended: &Arc<AppendedCopies>,
    ) -> Checking {
        let (crypto, appended) = (Arc::clone(self), Arc::clone(appended));
        let sampled = AtomicBool::new(false);
        Checking {
            spawned: Spawned::start(fetched, move |f| crypto.check_copy(f, &appended, &sampled)),
        }
    }

    fn check_copy(
        &self,
        f: Fetched,
        appended: &AppendedCopies,
        sampled: &AtomicBool,
    ) -> OpenedCopy {
        let head_end = envelope::header::header_end(&f.body).unwrap_or(f.body.len());
        let token = copies::token_of(&f.body[..head_end]);
        let ours = token.as_ref().and_then(|t| appended.get(t));
        let same_bytes = ours.filter(|a| digest(&SHA256, &f.body).as_ref() == a.sealed);
        let sample = same_bytes.is_some()
            && sampled
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        let (sha256, checked) = match same_bytes {
            Some(a) if !sample => (Some(a.opens_to.clone()), Checked::SameBytes),
            _ => {
                let mut opened = Vec::with_capacity(f.body.len());
                let sha256 = envelope::open(&f.body[..], &*self.keys, &mut opened)
                    .ok()
                    .map(|_| sha256_hex(&opened));
                let checked = match same_bytes {
                    Some(a) => Checked::Sample(sha256.as_ref() == Some(&a.opens_to)),
                    None => Checked::Opened,
                };
                (sha256, checked)
            }
        };
        OpenedCopy {
            uid: f.uid,
            token,
            sha256,
            internal_date: f.internal_date.as_ref().map(|d| d.as_ref().timestamp()),
            checked,
        }
    }

    /// The sealed copy of one original; `None` when there is nothing to do
    /// (it is no longer an original of this job).
    fn prepare(&self, f: Fetched, batch: &str) -> Result<Option<Prepared>, Failure> {
        let fail = |why: String| Failure { uid: f.uid, why };
        let head_end = envelope::header::header_end(&f.body).unwrap_or(f.body.len());
        let head = &f.body[..head_end];
        // A marker of an epoch the sealer does not know is no seal of
        // ours: sealed as plaintext (`Kind::is_original`).
        let detected = envelope::detect(head)
            .filter(|d| self.sealer.knows(&d.epoch) || !matches!(self.kind, Kind::Seal));
        let witness;
        let (content, mut message, marker_at) = match (&self.kind, detected) {
            (Kind::Seal, None) => {
                let mut sealed = Vec::with_capacity(f.body.len() + f.body.len() / 3 + 4096);
                match self.sealer.seal_witnessed(&f.body[..], &mut sealed) {
                    Ok((Sealed::Sealed { .. }, w)) => witness = w,
                    Ok((Sealed::AlreadySealed { .. }, _)) => return Ok(None),
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
                match self.sealer.seal_witnessed(m, &mut sealed) {
                    Ok((Sealed::Sealed { .. }, w)) => witness = w,
                    Ok((Sealed::AlreadySealed { .. }, _)) => {
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
        if !opens_to(&message, &witness, &content) {
            tracing::error!(
                "a sealed copy made by this run does not open to its original (a sealer \
                 fault: report it); that original is left as it is"
            );
            return Err(fail(
                "its sealed copy does not open to it (a sealer fault); left as it is".into(),
            ));
        }
        let internal_date = f.internal_date.as_ref().map(|d| d.as_ref().timestamp());
        let mut sealed = [0u8; 32];
        sealed.copy_from_slice(digest(&SHA256, &message).as_ref());
        Ok(Some(Prepared {
            sealed,
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

/// Does `message`, exactly as it will be APPENDed, open with its own
/// file keys (`witness`) to `content`, byte for byte?
fn opens_to(message: &[u8], witness: &Witness, content: &[u8]) -> bool {
    let mut opened = Vec::with_capacity(content.len());
    envelope::open(message, witness, &mut opened).is_ok() && opened == content
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "0123456789abcdef";

    /// A job's crypto sealing to `sealed_to` and opening with `held`.
    fn crypto(sealed_to: &age::x25519::Identity, held: age::x25519::Identity) -> Arc<Crypto> {
        let identities = [(EPOCH.to_string(), held)].into_iter().collect();
        Arc::new(Crypto {
            kind: Kind::Seal,
            sealer: Sealer::new(EPOCH, vec![sealed_to.to_public()]),
            keys: Arc::new(Unlocked::new(identities)),
        })
    }

    fn original(uid: u32) -> Fetched {
        Fetched {
            uid,
            body: format!(
                "From: a@example.test\r\nSubject: {uid}\r\n\r\nbody of message {uid}\r\n"
            )
            .into_bytes(),
            ..Fetched::default()
        }
    }

    /// Seals `n` originals as a batch does; their copies as read back
    /// (UIDs from 100 on) and what was APPENDed.
    fn sealed_batch(crypto: &Crypto, n: u32) -> (Vec<Fetched>, Vec<String>, AppendedCopies) {
        let prepared: Vec<Prepared> = (1..=n)
            .map(|uid| crypto.prepare(original(uid), "00000000000000ab"))
            .map(|p| p.unwrap().unwrap())
            .collect();
        let copies = prepared
            .iter()
            .map(|p| Fetched {
                uid: 99 + p.intent.uid,
                body: p.appending.message.clone(),
                ..Fetched::default()
            })
            .collect();
        let opens_to = prepared.iter().map(|p| p.intent.sha256.clone()).collect();
        (
            copies,
            opens_to,
            prepared.iter().filter_map(|p| p.appended()).collect(),
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn copies_this_run_sent_count_by_their_bytes_one_per_chunk_is_opened() {
        let id = age::x25519::Identity::generate();
        let crypto = crypto(&id, id.clone());
        let (mut copies, opens_to, appended) = sealed_batch(&crypto, 4);
        // The provider stored the last one changed (a field added above).
        let mut changed = b"X-Provider: stored\r\n".to_vec();
        changed.extend_from_slice(&copies[3].body);
        copies[3].body = changed.clone();
        let checked = crypto
            .check_copies(copies, &Arc::new(appended))
            .finish()
            .await
            .unwrap();
        let how: Vec<Checked> = checked.iter().map(|c| c.checked).collect();
        // One of the three sent unchanged is the sample, whichever thread
        // got there first.
        let samples = how.iter().filter(|&&c| c == Checked::Sample(true)).count();
        let by_bytes = how.iter().filter(|&&c| c == Checked::SameBytes).count();
        assert_eq!(
            (samples, by_bytes, how[3]),
            (1, 2, Checked::Opened),
            "{how:?}"
        );
        for (c, want) in checked.iter().zip(&opens_to).take(3) {
            assert_eq!(c.sha256.as_ref(), Some(want));
            assert_eq!(
                c.token.as_deref(),
                Some(format!("00000000000000ab.{}", c.uid - 99).as_str())
            );
        }
        // Opened in full: the provider's field comes out in front of M.
        let mut m = b"X-Provider: stored\r\n".to_vec();
        m.extend_from_slice(&original(4).body);
        assert_eq!(checked[3].sha256, Some(sha256_hex(&m)));
        assert_ne!(checked[3].sha256.as_ref(), Some(&opens_to[3]));
    }

    #[test]
    fn a_copy_counts_as_made_only_if_it_opens_to_its_original_with_its_own_keys() {
        let id = age::x25519::Identity::generate();
        let crypto = crypto(&id, id.clone());
        let m = original(1).body;
        let mut sealed = Vec::new();
        let (_, witness) = crypto.sealer.seal_witnessed(&m[..], &mut sealed).unwrap();
        assert!(opens_to(&sealed, &witness, &m));
        // What a sealer fault could make: a copy of other content, or bytes
        // that no longer open.
        assert!(!opens_to(&sealed, &witness, &original(2).body));
        let mut broken = sealed.clone();
        let at = broken.len() - 200;
        broken[at] = if broken[at] == b'A' { b'B' } else { b'A' };
        assert!(!opens_to(&broken, &witness, &m));
        // Another message's keys vouch for nothing here.
        let (_, other) = crypto
            .sealer
            .seal_witnessed(&m[..], &mut Vec::new())
            .unwrap();
        assert!(!opens_to(&sealed, &other, &m));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn copies_an_earlier_run_sent_are_opened_in_full() {
        let id = age::x25519::Identity::generate();
        let crypto = crypto(&id, id.clone());
        let (copies, opens_to, _) = sealed_batch(&crypto, 3);
        let checked = crypto
            .check_copies(copies, &Arc::new(AppendedCopies::new()))
            .finish()
            .await
            .unwrap();
        for (c, want) in checked.iter().zip(&opens_to) {
            assert_eq!(c.checked, Checked::Opened);
            assert_eq!(c.sha256.as_ref(), Some(want));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn when_the_sample_does_not_open_no_copy_of_its_chunk_counts() {
        // Sealed to a key the job does not hold: every copy is the bytes
        // sent, and none opens.
        let sealed_to = age::x25519::Identity::generate();
        let crypto = crypto(&sealed_to, age::x25519::Identity::generate());
        let (copies, _, appended) = sealed_batch(&crypto, 3);
        let checked = crypto
            .check_copies(copies, &Arc::new(appended))
            .finish()
            .await
            .unwrap();
        let how: Vec<Checked> = checked.iter().map(|c| c.checked).collect();
        let samples = how.iter().filter(|&&c| c == Checked::Sample(false)).count();
        let by_bytes = how.iter().filter(|&&c| c == Checked::SameBytes).count();
        assert_eq!((samples, by_bytes), (1, 2), "{how:?}");
        assert!(checked.iter().all(|c| c.sha256.is_none()));
    }

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
