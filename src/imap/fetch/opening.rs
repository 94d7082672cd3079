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
//! - Heavy jobs ([`Runner::spawn_sized`] past [`HEAVY_BYTES`], a SORT or
//!   THREAD answer: [`Runner::spawn_heavy`]) take at most all threads but
//!   one, so one thread always serves the light ones (a listing's
//!   summaries, the cache's chunks): two large APPENDs or a THREAD over a
//!   big folder delay other sessions' listings by no more than a light
//!   job's wait. Jobs are taken in the order submitted, but for a heavy
//!   one while the heavy threads are busy, which waits for the next of
//!   them to end.
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
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

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

/// Bytes of message past which sealing or opening it is a heavy job
/// ([`Runner::spawn_sized`]): a few milliseconds of CPU and more.
pub const HEAVY_BYTES: usize = 1 << 20;

/// Heavy jobs running at once at most: all threads but one.
fn heavy_threads() -> usize {
    threads().saturating_sub(1).max(1)
}

/// The pool's queues: light and heavy jobs, each numbered in the order
/// submitted.
#[derive(Default)]
struct Queues {
    light: VecDeque<(u64, Job)>,
    heavy: VecDeque<(u64, Job)>,
    heavy_running: usize,
    submitted: u64,
}

impl Queues {
    /// The oldest job a thread may take now (a heavy one only while fewer
    /// than [`heavy_threads`] run), and whether it is heavy.
    fn take(&mut self, heavy_max: usize) -> Option<(Job, bool)> {
        let light = self.light.front().map(|(n, _)| *n);
        let heavy = (self.heavy_running < heavy_max)
            .then(|| self.heavy.front().map(|(n, _)| *n))
            .flatten();
        let take_heavy = match (light, heavy) {
            (Some(l), Some(h)) => h < l,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if take_heavy {
            self.heavy_running += 1;
            return self.heavy.pop_front().map(|(_, job)| (job, true));
        }
        self.light.pop_front().map(|(_, job)| (job, false))
    }
}

struct Pool {
    queues: Mutex<Queues>,
    ready: Condvar,
    heavy_max: usize,
}

impl Pool {
    /// Queues `job`; `Err` gives it back when the pool is unusable.
    fn submit(&self, heavy: bool, job: Job) -> Result<(), Job> {
        let Ok(mut q) = self.queues.lock() else {
            return Err(job);
        };
        q.submitted += 1;
        let n = q.submitted;
        if heavy {
            q.heavy.push_back((n, job));
        } else {
            q.light.push_back((n, job));
        }
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// A pool thread: takes jobs until the lock is poisoned (never: no
    /// job runs under it).
    fn work(&self) {
        loop {
            // The lock is held only to take a job, not to run it.
            let Ok(mut q) = self.queues.lock() else {
                return;
            };
            let (job, heavy) = loop {
                if let Some(taken) = q.take(self.heavy_max) {
                    break taken;
                }
                q = match self.ready.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            };
            drop(q);
            let _ = catch_unwind(AssertUnwindSafe(job));
            if heavy {
                if let Ok(mut q) = self.queues.lock() {
                    q.heavy_running -= 1;
                }
                // A heavy job left waiting may go now, on any thread.
                self.ready.notify_all();
            }
        }
    }
}

fn pool() -> Option<&'static Arc<Pool>> {
    static POOL: OnceLock<Option<Arc<Pool>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = Arc::new(Pool {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            heavy_max: heavy_threads(),
        });
        let mut started = 0;
        for i in 0..threads() {
            let pool = Arc::clone(&pool);
            let spawned = std::thread::Builder::new()
                .name(format!("writ-open-{i}"))
                .spawn(move || pool.work());
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(pool)
    })
    .as_ref()
}

/// Jobs a test runner keeps, each with its lane (heavy or not).
type Held = Arc<Mutex<Vec<(bool, Job)>>>;

/// Where a session's jobs run, and how its I/O shell hears that one ended.
#[derive(Clone)]
pub struct Runner {
    inline: bool,
    done: Arc<Notify>,
    /// Tests: jobs kept until [`Runner::run_held`], each with its lane
    /// (heavy or not).
    held: Option<Held>,
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
        let jobs: Vec<(bool, Job)> = self
            .held
            .as_ref()
            .map(|h| std::mem::take(&mut *h.lock().unwrap()))
            .unwrap_or_default();
        let n = jobs.len();
        for (_, job) in jobs.into_iter().rev() {
            job();
        }
        n
    }

    /// Jobs kept so far, and how many of them are heavy.
    #[cfg(test)]
    pub fn held_lanes(&self) -> (usize, usize) {
        self.held.as_ref().map_or((0, 0), |h| {
            let held = h.lock().unwrap();
            (held.len(), held.iter().filter(|(heavy, _)| *heavy).count())
        })
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
    /// not start), as a light job.
    pub fn spawn<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        self.spawn_in(false, job)
    }

    /// Runs `job` as a heavy job: at most all the pool's threads but one
    /// run such jobs at once.
    pub fn spawn_heavy<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        self.spawn_in(true, job)
    }

    /// Runs `job`, which works on a message of `bytes`: heavy past
    /// [`HEAVY_BYTES`].
    pub fn spawn_sized<T: Send + 'static>(
        &self,
        bytes: usize,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        self.spawn_in(bytes > HEAVY_BYTES, job)
    }

    fn spawn_in<T: Send + 'static>(
        &self,
        heavy: bool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
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
            held.push((heavy, boxed));
            return Pending {
                state: State::Running(rx),
            };
        }
        match pool() {
            Some(pool) => match pool.submit(heavy, boxed) {
                Ok(()) => Pending {
                    state: State::Running(rx),
                },
                Err(boxed) => {
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

/// A job that needs the keyring.
pub(crate) type KeyedJob<T> =
    Box<dyn FnOnce(&(dyn crate::envelope::Keys + Send + Sync)) -> T + Send>;

/// Runs `job` with the keyring on `on`'s runner (heavy past
/// [`HEAVY_BYTES`] of message), or at once with `keys` when there is none
/// (the sans-IO tests give a plan no runner).
pub(crate) fn with_keys<T: Send + 'static>(
    on: Option<&(crate::imap::session::SharedKeys, Runner)>,
    keys: &(dyn crate::envelope::Keys + Send + Sync),
    bytes: usize,
    job: KeyedJob<T>,
) -> Pending<T> {
    match on {
        Some((shared, runner)) => {
            let shared = Arc::clone(shared);
            runner.spawn_sized(bytes, move || job(shared.as_ref()))
        }
        None => Pending::ready(job(keys)),
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

    /// Tests that hold pool threads busy on purpose run one at a time.
    static HOLDING_THREADS: Mutex<()> = Mutex::new(());

    #[test]
    fn heavy_jobs_leave_a_thread_to_the_light_ones() {
        let _one_at_a_time = HOLDING_THREADS.lock();
        let runner = Runner::pool();
        // As many heavy jobs as the pool lets run, and one more, each
        // held until the light job has run.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (started, starts) = mpsc::channel::<()>();
        let mut heavy = InOrder::new(threads() + 1);
        for i in 0..heavy_threads() + 1 {
            let gate = Arc::clone(&gate);
            let started = started.clone();
            heavy.push(
                i,
                runner.spawn_heavy(move || {
                    let _ = started.send(());
                    let (open, opened) = &*gate;
                    let mut open = open.lock().unwrap();
                    while !*open {
                        open = opened.wait(open).unwrap();
                    }
                }),
            );
        }
        for _ in 0..heavy_threads() {
            starts
                .recv_timeout(Duration::from_secs(60))
                .expect("a heavy job started");
        }
        // The light job runs while they are all held: with every thread
        // taken by a heavy job it would not, and this would time out.
        let (done, light_done) = mpsc::channel::<()>();
        let _light = runner.spawn(move || done.send(()));
        let ran = light_done.recv_timeout(Duration::from_secs(60));
        // The extra heavy job waited for a heavy thread.
        let extra_started = starts.try_recv().is_ok();
        {
            let (open, opened) = &*gate;
            *open.lock().unwrap() = true;
            opened.notify_all();
        }
        assert!(
            ran.is_ok(),
            "the light job did not run beside the heavy ones"
        );
        assert!(!extra_started, "more heavy jobs ran than the pool allows");
        assert_eq!(heavy.wait_all().len(), heavy_threads() + 1);
    }

    #[test]
    fn jobs_run_on_several_threads_at_once() {
        let _one_at_a_time = HOLDING_THREADS.lock();
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
