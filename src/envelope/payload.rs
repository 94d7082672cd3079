//! The payload writer: M in, the armored age file (CRLF) out, on the
//! caller's thread for small messages and on several threads for large
//! ones.
//!
//! Plaintext comes in batches of [`BATCH`] bytes (three 64 KiB STREAM
//! chunks; `feed::Batches` cuts them and shares them with the scanner).
//! Each batch gets its chunk counter and its position in the file
//! before it is sealed ([`stream::seal_batch`]), so batches are sealed and
//! armored independently and written strictly in order.
//!
//! - Up to [`Parallel::after`] bytes of M, batches are sealed inline: a
//!   typical message costs no thread and no channel.
//! - Past it, [`Parallel::threads`] worker threads (one per core by
//!   default) seal batches taken from a bounded queue; the caller's thread
//!   keeps reading M and writing finished batches in order (the scanner
//!   then runs on a thread of its own, `feed::ScanFeed`).
//!   At most [`IN_FLIGHT_PER_THREAD`] batches per worker (plus one) are in
//!   flight, so memory stays bounded (about 0.7 MiB per batch in flight)
//!   whatever the size of M.
//!
//! - Worker threads are a process-wide budget ([`worker_budget`]: twice
//!   the cores): a large message starts only the workers the budget has
//!   left, and seals inline (and scans inline) when it has fewer than two,
//!   so many large messages at once (relay sessions, jobs) never start
//!   more threads than that however many arrive. Mailbox jobs take their
//!   threads for a batch from the same budget ([`Workers`]).
//!
//! A batch is held back until more plaintext follows it, since the last
//! STREAM chunk must be flagged as such ([`PayloadWriter::finish`] seals the
//! rest). Plaintext buffers are wiped whenever they are dropped. Dropping
//! the writer without `finish` stops the workers and leaves an incomplete
//! age file in the output (the caller discards it).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use ring::aead::LessSafeKey;
use zeroize::Zeroizing;

use super::EnvelopeError;
use super::stream::{self, AgeFile, Armor, BATCH, Sealed};
use super::witness::FileKeyOf;

/// Plaintext of M, wiped when dropped.
pub type Plain = Zeroizing<Vec<u8>>;

/// When and how widely to seal in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel {
    /// Bytes of M sealed on the caller's thread before workers start.
    pub after: u64,
    /// Worker threads for the rest (1: never start any).
    pub threads: usize,
}

/// Default [`Parallel::after`]: messages up to 1 MiB (nearly all mail) are
/// sealed on the caller's thread.
pub const PARALLEL_AFTER: u64 = 1024 * 1024;

/// Batches in flight per worker thread, beyond one.
const IN_FLIGHT_PER_THREAD: usize = 2;

impl Default for Parallel {
    fn default() -> Self {
        Parallel {
            after: PARALLEL_AFTER,
            threads: cores(),
        }
    }
}

/// Sealing worker threads running in this process, all messages together.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The cores this process may use, asked once: the standard library reads
/// the cgroup quota files on every call (`available_parallelism`), which
/// cost about 40 µs of a relayed message's CPU when every sealer asked.
/// A later change of the process's CPU quota is not seen (a restart is).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many sealing worker threads may run at once in this process.
pub fn worker_budget() -> usize {
    2 * cores()
}

/// Takes up to `wanted` workers from the budget; returns how many.
fn reserve_workers(wanted: usize) -> usize {
    let budget = worker_budget();
    let mut now = WORKERS.load(Ordering::Relaxed);
    loop {
        let take = wanted.min(budget.saturating_sub(now));
        if take == 0 {
            return 0;
        }
        match WORKERS.compare_exchange_weak(now, now + take, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(seen) => now = seen,
        }
    }
}

/// Sealing worker threads taken from the process-wide budget by work that
/// runs its own threads (a mailbox job sealing and opening a batch of
/// messages at once), given back when dropped. It may hold none: the
/// budget was spent, and the caller then works on one thread.
#[derive(Debug)]
pub struct Workers {
    taken: usize,
}

impl Workers {
    /// Takes up to `wanted` workers, as many as the budget has left.
    pub fn reserve(wanted: usize) -> Workers {
        Workers {
            taken: reserve_workers(wanted),
        }
    }

    /// How many were taken (0 when the budget is spent).
    pub fn count(&self) -> usize {
        self.taken
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        WORKERS.fetch_sub(self.taken, Ordering::AcqRel);
    }
}

/// Sealing worker threads running now.
#[cfg(test)]
fn workers_running() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// One batch of plaintext and the buffers to seal it into.
struct Job {
    counter: u64,
    last: bool,
    pos: u64,
    plain: Arc<Plain>,
    sealed: Sealed,
    reply: SyncSender<io::Result<Done>>,
}

/// A sealed batch, with its buffers for reuse.
struct Done {
    plain: Arc<Plain>,
    sealed: Sealed,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    /// Workers taken from the process-wide budget.
    reserved: usize,
}

impl Pool {
    fn start(key: &Arc<LessSafeKey>, wanted: usize) -> Option<Pool> {
        let threads = reserve_workers(wanted);
        if threads < 2 {
            WORKERS.fetch_sub(threads, Ordering::AcqRel);
            return None;
        }
        let in_flight = threads * IN_FLIGHT_PER_THREAD + 1;
        let (tx, rx) = mpsc::sync_channel::<Job>(in_flight);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            let key = Arc::clone(key);
            let spawned = std::thread::Builder::new()
                .name("writ-seal".into())
                .spawn(move || work(&key, &rx));
            match spawned {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        if workers.is_empty() {
            WORKERS.fetch_sub(threads, Ordering::AcqRel);
            return None;
        }
        Some(Pool {
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            in_flight,
            reserved: threads,
        })
    }
}

fn work(key: &LessSafeKey, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut job) = job else { return };
        let result = stream::seal_batch(
            key,
            job.counter,
            &job.plain,
            job.last,
            job.pos,
            &mut job.sealed,
        )
        .map(|_| Done {
            plain: job.plain,
            sealed: job.sealed,
        });
        // The writer may have gone (an error elsewhere): nothing to do.
        let _ = job.reply.send(result);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        WORKERS.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

/// Writes M as an armored age file with CRLF lines into `out`.
pub struct PayloadWriter<W: Write> {
    out: W,
    key: Arc<LessSafeKey>,
    /// The file key, taken by [`PayloadWriter::file_key`] when a witness
    /// is kept.
    file_key: Option<FileKeyOf>,
    armor: Armor,
    parallel: Parallel,
    pool: Option<Pool>,
    /// The latest batch, held until it is known not to be the last.
    held: Option<Arc<Plain>>,
    /// Plaintext bytes taken so far.
    taken: u64,
    /// Next chunk number.
    counter: u64,
    /// Binary offset in the age file of the next batch.
    pos: u64,
    /// Buffers of finished batches, for reuse.
    spare_sealed: Vec<Sealed>,
    /// Scratch for inline batches.
    inline: Sealed,
}

impl<W: Write> PayloadWriter<W> {
    /// Starts an age file to `recipients`: writes the BEGIN line and the
    /// header.
    pub fn new(
        recipients: &[age::x25519::Recipient],
        parallel: Parallel,
        mut out: W,
    ) -> Result<Self, EnvelopeError> {
        let file = AgeFile::new(recipients)?;
        out.write_all(stream::BEGIN_LINE)?;
        let mut armor = Armor::default();
        armor.push(&file.header, &mut out)?;
        Ok(PayloadWriter {
            out,
            key: Arc::new(file.key),
            file_key: Some(file.file_key),
            armor,
            parallel,
            pool: None,
            held: None,
            taken: 0,
            counter: 0,
            pos: file.header.len() as u64,
            spare_sealed: Vec::new(),
            inline: Sealed::default(),
        })
    }

    /// The file key of this age file, once (for a [`super::Witness`]).
    pub(super) fn file_key(&mut self) -> Option<FileKeyOf> {
        self.file_key.take()
    }

    /// Has M passed the size from which batches go to worker threads?
    pub fn is_large(&self) -> bool {
        self.parallel.threads > 1 && self.taken > self.parallel.after
    }

    /// Takes the next plaintext. Every batch but the last must be exactly
    /// [`BATCH`] bytes; empty batches are ignored.
    pub fn push(&mut self, batch: Arc<Plain>) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.len() > BATCH {
            return Err(io::Error::other("a payload batch longer than a batch"));
        }
        self.taken += batch.len() as u64;
        match self.held.replace(batch) {
            Some(previous) if previous.len() != BATCH => {
                Err(io::Error::other("a short payload batch before the last"))
            }
            Some(previous) => self.dispatch(previous, false),
            None => Ok(()),
        }
    }

    /// Seals `plain` as the next batch.
    fn dispatch(&mut self, plain: Arc<Plain>, last: bool) -> io::Result<()> {
        let chunks = plain.len().div_ceil(stream::CHUNK).max(1) as u64;
        let cipher_len = plain.len() as u64 + chunks * 16;
        let (counter, pos) = (self.counter, self.pos);
        self.counter += chunks;
        self.pos += cipher_len;
        if self.pool.is_none() && self.is_large() && !last {
            self.pool = Pool::start(&self.key, self.parallel.threads);
            if self.pool.is_none() {
                // The budget is spent by other messages: this one seals
                // (and scans) on the caller's thread.
                self.parallel.threads = 1;
            }
        }
        let Some(pool) = &mut self.pool else {
            stream::seal_batch(&self.key, counter, &plain, last, pos, &mut self.inline)?;
            drop(plain);
            return self.armor.write(&self.inline, &mut self.out);
        };
        let sealed = self.spare_sealed.pop().unwrap_or_default();
        let (reply, done) = mpsc::sync_channel(1);
        let job = Job {
            counter,
            last,
            pos,
            plain,
            sealed,
            reply,
        };
        let sent = pool.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            return Err(worker_gone());
        }
        pool.pending.push_back(done);
        while self
            .pool
            .as_ref()
            .is_some_and(|p| p.pending.len() >= p.in_flight)
        {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Keeps a batch's output buffers for reuse.
    fn recycle(&mut self, sealed: Sealed) {
        let keep = self.pool.as_ref().map_or(1, |p| p.in_flight + 1);
        if self.spare_sealed.len() < keep {
            self.spare_sealed.push(sealed);
        }
    }

    /// Waits for the oldest batch in flight and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(done) = self.pool.as_mut().and_then(|p| p.pending.pop_front()) else {
            return Ok(());
        };
        let done = done.recv().map_err(|_| worker_gone())??;
        self.armor.write(&done.sealed, &mut self.out)?;
        drop(done.plain);
        self.recycle(done.sealed);
        Ok(())
    }

    /// Seals the held batch as the last, writes everything still in flight
    /// and the end marker, and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let last = self.held.take().unwrap_or_default();
        self.dispatch(last, true)?;
        while self.pool.as_ref().is_some_and(|p| !p.pending.is_empty()) {
            self.write_oldest()?;
        }
        self.armor.finish(&mut self.out)?;
        Ok(self.out)
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("a sealing thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn seal_batches(recipient: &age::x25519::Recipient, plain: &[u8]) -> (Vec<u8>, bool) {
        let parallel = Parallel {
            after: 0,
            threads: 2,
        };
        let mut w = PayloadWriter::new(std::slice::from_ref(recipient), parallel, Vec::new())
            .expect("writer");
        let mut pooled = false;
        for batch in plain.chunks(BATCH) {
            w.push(Arc::new(Zeroizing::new(batch.to_vec())))
                .expect("push");
            pooled |= w.pool.is_some();
        }
        (w.finish().expect("finish"), pooled)
    }

    fn open(identity: &age::x25519::Identity, armored: &[u8]) -> Vec<u8> {
        let reader = age::armor::ArmoredReader::new(armored);
        let d = age::Decryptor::new(reader).expect("age header");
        let mut r = d
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .expect("decrypt");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn reserved_workers_never_exceed_the_budget() {
        let all = Workers::reserve(usize::MAX);
        let more = Workers::reserve(3);
        // Other tests of this process may hold some at the same time.
        assert!(all.count() + more.count() <= worker_budget());
    }

    #[test]
    fn large_messages_share_one_worker_budget_and_seal_inline_when_it_is_spent() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let plain: Vec<u8> = (0..BATCH * 5 + 7).map(|i| (i % 253) as u8).collect();

        // Every worker the process may run is taken (as by other messages).
        let held = reserve_workers(worker_budget());
        let (sealed, pooled) = seal_batches(&recipient, &plain);
        WORKERS.fetch_sub(held, Ordering::AcqRel);
        assert!(!pooled, "a pool started past the budget");
        assert_eq!(open(&identity, &sealed), plain);

        // With the budget free again the same message gets workers, gives
        // them back, and decrypts the same.
        let (sealed, pooled) = seal_batches(&recipient, &plain);
        assert!(pooled || workers_running() >= worker_budget() - 1);
        assert_eq!(open(&identity, &sealed), plain);
    }
}
