//! Work that leaves the session: opening sealed messages, decoding BINARY
//! sections, reading and writing the cache. Run on a process-wide pool,
//! in parallel, in bounded numbers, and never waited for.
//!
//! A cold listing opens one summary per sealed message (an X25519
//! agreement, a decryption, a JSON parse); a SEARCH BODY opens and reads
//! whole messages. Done on the runtime thread that reads the provider's
//! answers, that CPU work held the thread, serialised the messages and
//! stalled every other session on that thread. Here the plans submit it
//! ([`Runner::spawn`]) and go on; the session never waits for it.
//!
//! Invariants:
//!
//! - The pool has a fixed number of threads: one per core, at least two
//!   ([`threads`]), started once for the whole process, shared by every
//!   session. Own code rather than tokio's blocking pool (sized for I/O,
//!   512 threads) or a new crate: a queue and a few threads.
//! - Nothing here blocks the caller: [`Pending`] and [`InOrder`] only take
//!   results that are there. Each job, when it ends (or panics), wakes its
//!   session's I/O shell through the runner's [`Notify`]
//!   ([`Runner::done`]); the shell then runs `Session::advance` again, which
//!   takes what is ready. A wake before the shell waits is kept (a
//!   `Notify` permit), so none is lost.
//! - One plan keeps at most [`in_flight`] jobs outstanding ([`InOrder`]):
//!   when full ([`InOrder::full`]) the session stops reading the
//!   provider's responses until one is taken, so what waits in memory is
//!   bounded per session (and the sessions by the listener's cap).
//! - Results are taken in the order submitted, which is the order the
//!   provider answered and the client is answered in.
//! - A job that panics loses only its own result (taken as `None`); the
//!   pool thread goes on.
//! - [`Runner::inline`] runs each job at once on the caller's thread: for
//!   the sans-IO tests, which drive the session synchronously.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs outstanding per plan, per pool thread.
const IN_FLIGHT_PER_THREAD: usize = 2;

/// Threads in the process-wide pool: one per core, at least two. Asked
/// for every message a plan takes (its window): the cores counted once
/// ([`crate::envelope::cores`]; the standard library reads the
/// cgroup quota files at every call, which took most of a warm
/// listing's CPU where the process has a cgroup).
pub fn threads() -> usize {
    crate::envelope::cores().max(2)
}

/// Summary jobs (a listing: part 1 of each message, a few KiB) outstanding
/// per plan, per pool thread: more than whole messages, so the pool is not
/// left waiting for the session between two small jobs.
const SUMMARIES_PER_THREAD: usize = 8;

/// Jobs one plan keeps outstanding at most.
pub fn in_flight() -> usize {
    IN_FLIGHT_PER_THREAD * threads()
}

/// Jobs a plan that opens only summaries keeps outstanding at most.
pub fn in_flight_summaries() -> usize {
    SUMMARIES_PER_THREAD * threads()
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

/// Where a session's jobs run, and how its I/O shell hears that one ended.
#[derive(Clone)]
pub struct Runner {
    inline: bool,
    done: Arc<Notify>,
    /// Tests: jobs kept until [`Runner::run_held`].
    held: Option<Arc<Mutex<Vec<Job>>>>,
}

/// Wakes the session when dropped: when the job ends, panicking or not.
struct WakeOnDrop(Arc<Notify>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Runner {
    /// Jobs on the process-wide pool.
    pub fn pool() -> Runner {
        Runner {
            inline: false,
            done: Arc::new(Notify::new()),
            held: None,
        }
    }

    /// Jobs kept until the test runs them ([`Runner::run_held`]): shows
    /// what the session does while its work is still running.
    #[cfg(test)]
    pub fn held() -> Runner {
        Runner {
            held: Some(Arc::default()),
            ..Runner::pool()
        }
    }

    /// Runs the jobs kept so far, the last submitted first (so a test
    /// sees results taken in the order submitted all the same); returns
    /// how many ran.
    #[cfg(test)]
    pub fn run_held(&self) -> usize {
        let jobs: Vec<Job> = self
            .held
            .as_ref()
            .map(|h| std::mem::take(&mut *h.lock().unwrap()))
            .unwrap_or_default();
        let n = jobs.len();
        for job in jobs.into_iter().rev() {
            job();
        }
        n
    }

    /// Jobs run at once on the caller's thread (sans-IO tests).
    pub fn inline() -> Runner {
        Runner {
            inline: true,
            done: Arc::new(Notify::new()),
            held: None,
        }
    }

    /// Notified each time a job of this runner ends.
    pub fn done(&self) -> Arc<Notify> {
        Arc::clone(&self.done)
    }

    /// Runs `job` on the pool (at once when inline, or when the pool could
    /// not start).
    pub fn spawn<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let wake = WakeOnDrop(Arc::clone(&self.done));
        let boxed: Job = Box::new(move || {
            // Dropped in reverse order: the result (or, after a panic, the
            // closed channel) is there before the wake.
            let _wake = wake;
            let tx = tx;
            let _ = tx.send(job());
        });
        if self.inline {
            let _ = catch_unwind(AssertUnwindSafe(boxed));
            return Pending::from_receiver(rx);
        }
        if let Some(held) = &self.held
            && let Ok(mut held) = held.lock()
        {
            held.push(boxed);
            return Pending {
                state: State::Running(rx),
            };
        }
        match pool() {
            Some(pool) => match pool.send(boxed) {
                Ok(()) => Pending {
                    state: State::Running(rx),
                },
                Err(mpsc::SendError(boxed)) => {
                    let _ = catch_unwind(AssertUnwindSafe(boxed));
                    Pending::from_receiver(rx)
                }
            },
            None => {
                let _ = catch_unwind(AssertUnwindSafe(boxed));
                Pending::from_receiver(rx)
            }
        }
    }
}

impl Runner {
    /// Runs `jobs` one after the other as one job on the pool (one hop and
    /// one wake for all): their results in the same order. A job that
    /// panics loses only its own result.
    pub fn spawn_batch<T: Send + 'static>(
        &self,
        jobs: Vec<Box<dyn FnOnce() -> T + Send>>,
    ) -> Vec<Pending<T>> {
        let mut senders = Vec::with_capacity(jobs.len());
        let mut pendings = Vec::with_capacity(jobs.len());
        for _ in 0..jobs.len() {
            let (tx, rx) = mpsc::sync_channel(1);
            senders.push(tx);
            pendings.push(rx);
        }
        let all = self.spawn(move || {
            for (job, tx) in jobs.into_iter().zip(senders) {
                if let Ok(result) = catch_unwind(AssertUnwindSafe(job)) {
                    let _ = tx.send(result);
                }
            }
        });
        let done = matches!(all.state, State::Done(_));
        pendings
            .into_iter()
            .map(|rx| {
                if done {
                    Pending::from_receiver(rx)
                } else {
                    Pending {
                        state: State::Running(rx),
                    }
                }
            })
            .collect()
    }
}

/// A result to come from the pool (or already there).
pub struct Pending<T> {
    state: State<T>,
}

enum State<T> {
    Done(Option<T>),
    Running(Receiver<T>),
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

    /// The result: `None` while it is not ready; `Some(None)` when the
    /// job was lost (it panicked). Never waits.
    pub(crate) fn take(&mut self) -> Option<Option<T>> {
        match &mut self.state {
            State::Done(v) => Some(v.take()),
            State::Running(rx) => match rx.try_recv() {
                Ok(v) => Some(Some(v)),
                Err(TryRecvError::Disconnected) => Some(None),
                Err(TryRecvError::Empty) => None,
            },
        }
    }

    /// Waits for the result (tests only: never on a runtime thread).
    #[cfg(test)]
    fn wait(&mut self) -> Option<T> {
        match &mut self.state {
            State::Done(v) => v.take(),
            State::Running(rx) => rx.recv().ok(),
        }
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

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Jobs outstanding.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// As many outstanding as allowed: submit no more before taking.
    pub fn full(&self) -> bool {
        self.queue.len() >= self.limit
    }

    /// The results ready now, oldest first, stopping at the first that is
    /// not. Never waits.
    pub fn take_ready(&mut self) -> Vec<(K, Option<T>)> {
        let mut out = Vec::new();
        while let Some((_, head)) = self.queue.front_mut() {
            let Some(result) = head.take() else {
                break;
            };
            if let Some((key, _)) = self.queue.pop_front() {
                out.push((key, result));
            }
        }
        out
    }

    /// Waits for every result (tests only).
    #[cfg(test)]
    pub fn wait_all(&mut self) -> Vec<(K, Option<T>)> {
        self.queue
            .drain(..)
            .map(|(k, mut p)| {
                let v = p.wait();
                (k, v)
            })
            .collect()
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
        let runner = Runner::pool();
        let (tx, rx) = mpsc::channel::<()>();
        let first = runner.spawn(move || rx.recv_timeout(Duration::from_secs(30)).is_ok());
        let second = runner.spawn(move || tx.send(()).is_ok());
        let mut order = InOrder::new(in_flight());
        order.push(1, first);
        order.push(2, second);
        let got = order.wait_all();
        assert_eq!(got, vec![(1, Some(true)), (2, Some(true))]);
    }

    #[test]
    fn results_come_in_the_order_submitted_and_taking_never_waits() {
        // The first job finishes last; nothing after it is taken first,
        // and taking returns at once while it runs.
        let runner = Runner::pool();
        let (go, wait) = mpsc::channel::<()>();
        let mut order = InOrder::new(3);
        order.push(
            0,
            runner.spawn(move || wait.recv().map(|_| 0).unwrap_or(99)),
        );
        order.push(1, Pending::ready(1));
        assert!(order.take_ready().is_empty(), "taken past the oldest");
        order.push(2, Pending::ready(2));
        assert!(order.full());
        assert!(order.take_ready().is_empty(), "taken past the oldest");
        go.send(()).unwrap();
        assert_eq!(
            order.wait_all(),
            vec![(0, Some(0)), (1, Some(1)), (2, Some(2))]
        );
        assert!(order.is_empty());
    }

    #[test]
    fn a_job_that_panics_loses_only_its_result_and_still_wakes() {
        let runner = Runner::pool();
        let mut order = InOrder::new(4);
        order.push(0, runner.spawn(|| -> u8 { panic!("a job panics") }));
        order.push(1, runner.spawn(|| 1u8));
        assert_eq!(order.wait_all(), vec![(0, None), (1, Some(1))]);
        // Both jobs' wakes are kept as one permit: a wait now returns.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(runner.done().notified());
    }

    #[test]
    fn a_batch_runs_as_one_job_its_results_in_order_a_panic_losing_only_its_own() {
        for runner in [Runner::pool(), Runner::inline()] {
            let jobs: Vec<Box<dyn FnOnce() -> u32 + Send>> = vec![
                Box::new(|| 10),
                Box::new(|| panic!("one job of the batch panics")),
                Box::new(|| 30),
            ];
            let mut order = InOrder::new(3);
            for (i, pending) in runner.spawn_batch(jobs).into_iter().enumerate() {
                order.push(i, pending);
            }
            assert_eq!(
                order.wait_all(),
                vec![(0, Some(10)), (1, None), (2, Some(30))]
            );
        }
    }

    #[test]
    fn inline_jobs_are_done_when_submitted() {
        let runner = Runner::inline();
        let mut order = InOrder::new(1);
        order.push(7, runner.spawn(|| 7u8));
        assert_eq!(order.take_ready(), vec![(7, Some(7))]);
    }
}
