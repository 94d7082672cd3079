//! Opening summaries off the runtime, in parallel, in bounded numbers.
//!
//! A cold listing opens one summary per sealed message (an X25519
//! agreement, a decryption, a JSON parse). Done on the runtime thread that
//! reads the provider's answers, that CPU work held the thread and
//! serialised the messages. Here it runs on a process-wide pool while the
//! provider sends the next summaries.
//!
//! Invariants:
//!
//! - The pool has a fixed number of threads: one per core, at least two
//!   ([`threads`]), started once for the whole process, shared by every
//!   session. Own code rather than tokio's blocking pool (sized for I/O,
//!   512 threads) or a new crate: a queue and a few threads.
//! - One plan keeps at most [`in_flight`] opens outstanding
//!   ([`InOrder`]): past it, it waits for its oldest before submitting more,
//!   so the summaries waiting in memory are bounded per session (and the
//!   sessions by the listener's cap).
//! - Results are taken in the order submitted, which is the order the
//!   provider answered and the client is answered in.
//! - A wait happens only for a result already submitted (bounded CPU
//!   work); on a multi-thread runtime it runs through
//!   `tokio::task::block_in_place`, so the runtime's other tasks move to
//!   another thread meanwhile.
//! - A job that panics loses only its own result (taken as `None`); the
//!   pool thread goes on.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Opens outstanding per plan, per pool thread.
const IN_FLIGHT_PER_THREAD: usize = 2;

/// Threads in the process-wide pool: one per core, at least two.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2)
}

/// Opens one plan keeps outstanding at most.
pub fn in_flight() -> usize {
    IN_FLIGHT_PER_THREAD * threads()
}

fn pool() -> Option<&'static Sender<Job>> {
    static POOL: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads() {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("writ-open-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take a job, not to run it.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(tx)
    })
    .as_ref()
}

/// A result to come from the pool (or already there).
pub struct Pending<T> {
    state: State<T>,
}

enum State<T> {
    Done(Option<T>),
    Running(Receiver<T>),
}

impl<T: Send + 'static> Pending<T> {
    /// Runs `job` on the pool; on the caller's thread if the pool could
    /// not start.
    pub fn spawn(job: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let boxed: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        match pool() {
            Some(pool) => match pool.send(boxed) {
                Ok(()) => Pending {
                    state: State::Running(rx),
                },
                Err(mpsc::SendError(boxed)) => {
                    boxed();
                    Pending::from_receiver(rx)
                }
            },
            None => {
                boxed();
                Pending::from_receiver(rx)
            }
        }
    }
}

impl<T> Pending<T> {
    /// A result already at hand.
    pub fn ready(value: T) -> Pending<T> {
        Pending {
            state: State::Done(Some(value)),
        }
    }

    fn from_receiver(rx: Receiver<T>) -> Pending<T> {
        Pending {
            state: State::Done(rx.try_recv().ok()),
        }
    }

    /// The result: `None` while it is not ready and `wait` is false;
    /// `Some(None)` when the job was lost (it panicked).
    fn take(&mut self, wait: bool) -> Option<Option<T>> {
        match &mut self.state {
            State::Done(v) => Some(v.take()),
            State::Running(rx) => match rx.try_recv() {
                Ok(v) => Some(Some(v)),
                Err(TryRecvError::Disconnected) => Some(None),
                Err(TryRecvError::Empty) if !wait => None,
                Err(TryRecvError::Empty) => Some(blocking(|| rx.recv().ok())),
            },
        }
    }
}

/// Runs a wait for the pool: through `block_in_place` on a multi-thread
/// runtime, so that the runtime's other tasks are not held meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Results taken in the order their jobs were submitted, at most
/// `limit` outstanding.
pub struct InOrder<K, T> {
    queue: VecDeque<(K, Pending<T>)>,
    limit: usize,
}

impl<K, T> InOrder<K, T> {
    pub fn new(limit: usize) -> InOrder<K, T> {
        InOrder {
            queue: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub fn push(&mut self, key: K, pending: Pending<T>) {
        self.queue.push_back((key, pending));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The results ready now, oldest first, stopping at the first that is
    /// not; waits for the oldest while more than `limit` - 1 are
    /// outstanding (so that one more may be pushed), or for all when
    /// `all`.
    pub fn take_ready(&mut self, all: bool) -> Vec<(K, Option<T>)> {
        let mut out = Vec::new();
        loop {
            let wait = all || self.queue.len() >= self.limit;
            let Some((_, head)) = self.queue.front_mut() else {
                break;
            };
            let Some(result) = head.take(wait) else {
                break;
            };
            if let Some((key, _)) = self.queue.pop_front() {
                out.push((key, result));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_on_several_threads_at_once() {
        // Job 1 waits for a word from job 2: with the jobs run one after
        // another (on the caller's thread, or on one thread), job 1 would
        // never hear it and gives up.
        let (tx, rx) = mpsc::channel::<()>();
        let first = Pending::spawn(move || rx.recv_timeout(Duration::from_secs(30)).is_ok());
        let second = Pending::spawn(move || tx.send(()).is_ok());
        let mut order = InOrder::new(in_flight());
        order.push(1, first);
        order.push(2, second);
        let got = order.take_ready(true);
        assert_eq!(got, vec![(1, Some(true)), (2, Some(true))]);
    }

    #[test]
    fn results_come_in_the_order_submitted_and_no_more_than_the_limit_wait() {
        // The first job finishes last; nothing after it is taken first.
        let (go, wait) = mpsc::channel::<()>();
        let mut order = InOrder::new(3);
        order.push(
            0,
            Pending::spawn(move || wait.recv().map(|_| 0).unwrap_or(99)),
        );
        order.push(1, Pending::ready(1));
        assert!(order.take_ready(false).is_empty(), "taken past the oldest");
        // At the limit, taking waits for the oldest (released here from
        // another thread once the wait has begun or not: either way the
        // result comes).
        order.push(2, Pending::ready(2));
        assert_eq!(order.len(), 3);
        std::thread::spawn(move || go.send(()));
        let got = order.take_ready(false);
        assert_eq!(got, vec![(0, Some(0)), (1, Some(1)), (2, Some(2))]);
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn a_job_that_panics_loses_only_its_result() {
        let mut order = InOrder::new(4);
        order.push(0, Pending::spawn(|| -> u8 { panic!("a job panics") }));
        order.push(1, Pending::spawn(|| 1u8));
        assert_eq!(order.take_ready(true), vec![(0, None), (1, Some(1))]);
    }
}
