//! The DATA phase of a connection: the message from the client, decoded by
//! the session's [`DataDecoder`], to the provider.
//!
//! - Sealed delivery: a blocking seal job reads the decoded message from
//!   one channel and hands sealed output back on another. One loop drives
//!   all three at once (client → decoder → seal job → provider), so no
//!   side can wait on another for good: an already-sealed message, which
//!   the seal job copies through as it arrives, streams to the provider
//!   while the client is still sending. DATA is opened at the provider on
//!   the first sealed bytes; a message the session then refuses, or a
//!   client that goes away, drops the provider connection inside DATA, so
//!   nothing is delivered.
//! - Plaintext delivery: DATA is opened at the provider first (lockstep),
//!   then the message streams through as it arrives.
//!
//!   While DATA is not yet open at the provider, it is sent `NOOP` every
//!   `smtp.provider_keepalive_secs` (its idle timeout would otherwise end
//!   the connection under a slow sender); a provider that fails then is
//!   dropped and the message answered 451 4.4.2 once its data is in.
//!
//! - Judged delivery (`[scanner]` on, or `[auth]` on a relay listener):
//!   the message is spooled whole, verified (`[auth]`) and judged by the
//!   scanner, then sealed from the spool behind writ's fields
//!   (Authentication-Results, the scanner's), ARC-sealed when
//!   `[auth.arc]` is on, and streamed to the provider by the same loop
//!   ([`scanned`]).
//!
//! Each wait of the loop is bounded by `smtp.data_timeout_secs` (since the
//! last client, seal job or provider progress: keepalives do not count),
//! and the whole phase by `smtp.data_max_secs`
//! ([`super`] lists every bound); the session's verdict on the data
//! ([`Session::message_received`]) may close the connection, and then
//! nothing after the end of data is read.

use std::io::{self, Read, Write};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{Conn, End};
use crate::admin::names;
use crate::envelope::Sealer;
use crate::net::Stream;
use crate::smtp::data::{DataDecoder, DotStuffer};
use crate::smtp::reply::Reply;
use crate::smtp::session::{Delivery, Session, Step, UpstreamFailure};

mod scanned;
mod spool;

/// Chunks queued to and from the seal job (each up to the client reader's
/// buffer, 64 KiB; the seal job writes 64 KiB at a time).
const SEAL_QUEUE: usize = 8;

/// One read from the client, decoded.
struct Chunk {
    data: Vec<u8>,
    /// The data phase is over (end marker, or the decoder gave up).
    last: bool,
}

/// Waits for client bytes and decodes what is there. Cancel-safe: nothing
/// is consumed before the wait is over.
async fn read_chunk(
    client: &mut BufReader<Stream>,
    decoder: &mut DataDecoder,
) -> Result<Chunk, End> {
    let avail = client.fill_buf().await?;
    if avail.is_empty() {
        // The client died mid-DATA: nothing is delivered.
        return Err(End::Gone);
    }
    let n = avail.len();
    let mut data = Vec::with_capacity(n);
    let end = decoder.feed(avail, &mut data);
    client.consume(end.unwrap_or(n));
    Ok(Chunk {
        data,
        last: end.is_some(),
    })
}

/// Where the sealed output stands.
enum Output {
    /// Nothing sealed yet: DATA not opened at the provider.
    Waiting,
    /// The provider answered DATA with this instead of 354.
    Refused(Reply),
    /// DATA open at the provider; the message streams through.
    Streaming(DotStuffer),
    /// The seal job failed before any output: DATA was not opened.
    SealFailed,
    /// Failed with DATA open, or the provider connection broke: it has
    /// been dropped.
    Broken(UpstreamFailure),
}

/// What a sealed message's output is worth once its seal job is over
/// (`returned`: the job returned, rather than panicked or ran past the
/// wait). The job's output ends when it drops its channel: at its end, or
/// when it panicked halfway (its buffered writer flushes what it holds
/// while unwinding). Only a job that returned sealed a whole message;
/// otherwise DATA open at the provider is abandoned (`true`: drop that
/// connection, so the provider delivers nothing).
fn after_seal_job(returned: bool, output: Output) -> (Output, bool) {
    match (returned, output) {
        (true, output) => (output, false),
        (false, Output::Streaming(_)) => (Output::Broken(UpstreamFailure::SealFailed), true),
        (false, Output::Waiting) => (Output::SealFailed, false),
        (false, output) => (output, false),
    }
}

/// The channels of one sealed message and what is in flight.
struct Pump {
    /// To the seal job; `None` once the data is over or the job stopped.
    to_seal: Option<mpsc::Sender<Vec<u8>>>,
    /// A decoded chunk the seal job has not taken yet.
    pending: Option<Vec<u8>>,
    /// From the seal job; `None` once it is done or no longer wanted.
    sealed: Option<mpsc::Receiver<io::Result<Vec<u8>>>>,
    reading: bool,
    output: Output,
    started: Instant,
    /// The last event other than a keepalive: waits are bounded by
    /// `data_timeout` from it.
    active: Instant,
    /// When the provider is next sent `NOOP` (while DATA is not open
    /// there).
    next_noop: Instant,
}

enum Event {
    Read(Result<Chunk, End>),
    Handed,
    SealerGone,
    Sealed(Option<io::Result<Vec<u8>>>),
    /// Time for a `NOOP` to the provider.
    Keepalive,
}

async fn reserve(tx: &Option<mpsc::Sender<Vec<u8>>>) -> Option<mpsc::Permit<'_, Vec<u8>>> {
    tx.as_ref()?.reserve().await.ok()
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    /// Reads and delivers one message; returns the step that ends the
    /// transaction (the final reply, or a refusal that closes).
    pub(super) async fn message(&mut self, r354: Reply, delivery: Delivery) -> Result<Step, End> {
        let sealer = match self.shared.sealer(&delivery) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot seal: keyring unavailable");
                self.refused("seal-unavailable", 0);
                let r = self.session.delivered(Err(UpstreamFailure::SealFailed));
                self.reset_upstream().await;
                return Ok(Step::Reply(r));
            }
        };
        let scanner = self.shared.scanner.clone();
        let auth = self.shared.auth.clone();
        match sealer {
            // `[scanner]` or `[auth]`: the whole plaintext is spooled and
            // judged before it is sealed (see `scanned`).
            Some(sealer) if scanner.is_some() || auth.is_some() => {
                self.scanned_message(r354, sealer, scanner, auth).await
            }
            Some(sealer) => self.sealed_message(r354, sealer).await,
            None => self.plaintext_message().await,
        }
    }

    fn refused(&self, reason: &'static str, bytes: u64) {
        metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "refused", "reason" => reason)
            .increment(1);
        metrics::counter!(names::MESSAGE_BYTES_TOTAL, "outcome" => "refused").increment(bytes);
    }

    /// The client stalled mid-DATA past `smtp.data_timeout_secs`.
    async fn data_timed_out(&mut self) -> End {
        self.reply(&Reply::new(
            421,
            "4.4.2 Timeout waiting for message data; closing the connection",
        ));
        let _ = self.flush(true).await;
        End::Gone
    }

    /// Drops the provider connection (it is inside DATA or broken): the
    /// provider delivers nothing.
    fn drop_upstream(&mut self) {
        self.upstream = None;
        self.session.upstream_dropped();
    }

    /// Seals while reading (on a blocking thread) and streams the sealed
    /// output to the provider as it comes.
    async fn sealed_message(&mut self, r354: Reply, sealer: Sealer) -> Result<Step, End> {
        self.reply(&r354);
        self.flush(true).await?;
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(SEAL_QUEUE);
        let (out_tx, out_rx) = mpsc::channel::<io::Result<Vec<u8>>>(SEAL_QUEUE);
        let job = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: in_rx,
                buf: Vec::new(),
                pos: 0,
            };
            let mut writer =
                io::BufWriter::with_capacity(64 * 1024, ChannelWriter { tx: out_tx.clone() });
            let result = sealer.seal(reader, &mut writer).map_err(io::Error::other);
            let result = result.and_then(|_| writer.flush());
            if let Err(e) = result {
                let _ = out_tx.blocking_send(Err(e));
            }
        });
        let mut decoder = self.session.data_decoder();
        let pump = Pump {
            to_seal: Some(in_tx),
            pending: None,
            sealed: Some(out_rx),
            reading: true,
            output: Output::Waiting,
            started: Instant::now(),
            active: Instant::now(),
            next_noop: Instant::now() + self.shared.provider_keepalive,
        };
        self.run_pump(&mut decoder, pump, job).await
    }

    /// Drives a sealed message to its end (client → seal job → provider),
    /// then stops the seal job and answers the client.
    async fn run_pump(
        &mut self,
        decoder: &mut DataDecoder,
        mut pump: Pump,
        job: tokio::task::JoinHandle<()>,
    ) -> Result<Step, End> {
        let pumped = self.pump_sealed(decoder, &mut pump).await;
        let output = std::mem::replace(&mut pump.output, Output::Waiting);
        // Close the channels: the job ends (after at most its CPU work).
        pump.to_seal = None;
        pump.pending = None;
        pump.sealed = None;
        let joined = timeout(self.shared.data_timeout, job).await;
        if let Err(e) = pumped {
            if matches!(output, Output::Streaming(_)) {
                self.drop_upstream();
            }
            return Err(match e {
                End::Timeout => self.data_timed_out().await,
                e => e,
            });
        }
        let (output, abandon) = after_seal_job(joined.map(|j| j.is_ok()).unwrap_or(false), output);
        if abandon {
            tracing::error!("the seal job stopped before its end; nothing was delivered");
            self.drop_upstream();
        }
        Ok(self.finish_sealed(output, decoder, pump.started).await)
    }

    /// The session's verdict on the data, then the end of DATA at the
    /// provider (or why not): the step that ends the transaction.
    async fn finish_sealed(
        &mut self,
        output: Output,
        decoder: &DataDecoder,
        started: Instant,
    ) -> Step {
        let size = decoder.size();
        if let Err(step) = self.session.message_received(decoder.flags) {
            match output {
                Output::Streaming(_) => self.drop_upstream(),
                Output::Broken(_) => {}
                _ => self.reset_upstream().await,
            }
            self.refused("bad-data", size);
            return step;
        }
        let r = match output {
            Output::Streaming(stuffer) => {
                let Some(up) = self.upstream.as_mut() else {
                    return Step::Reply(self.session.delivered(Err(UpstreamFailure::Unavailable)));
                };
                match up.end_message(&stuffer).await {
                    Ok(r) => {
                        metrics::histogram!(names::UPSTREAM_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class())
                            .increment(1);
                        if r.is_positive() {
                            metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "sealed", "reason" => "")
                                .increment(1);
                            metrics::counter!(names::MESSAGE_BYTES_TOTAL, "outcome" => "sealed")
                                .increment(size);
                        }
                        self.session.delivered(Ok(r))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "provider connection failed");
                        self.drop_upstream();
                        self.refused("provider", size);
                        self.session.delivered(Err(UpstreamFailure::Unavailable))
                    }
                }
            }
            Output::Waiting | Output::SealFailed => {
                tracing::error!("sealing failed; nothing was sent to the provider");
                self.refused("seal-failed", size);
                self.reset_upstream().await;
                self.session.delivered(Err(UpstreamFailure::SealFailed))
            }
            Output::Refused(r) => {
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class()).increment(1);
                // DATA refused: the provider's transaction goes (as above).
                self.reset_upstream().await;
                self.session.delivered(Ok(r))
            }
            Output::Broken(failure) => {
                self.refused(
                    if failure == UpstreamFailure::SealFailed {
                        "seal-failed"
                    } else {
                        "provider"
                    },
                    size,
                );
                self.session.delivered(Err(failure))
            }
        };
        Step::Reply(r)
    }

    /// How long the next wait during DATA may take: `data_timeout`, or
    /// less when the phase's `data_max` ends sooner (zero once it has).
    fn data_wait(&self, deadline: Instant) -> std::time::Duration {
        self.shared
            .data_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
    }

    /// Runs client, seal job and provider together until the data is over
    /// and the seal job done (or no longer wanted). Each wait is bounded by
    /// `data_timeout` (`Err(End::Timeout)`).
    async fn pump_sealed(&mut self, decoder: &mut DataDecoder, pump: &mut Pump) -> Result<(), End> {
        let deadline = pump.started + self.shared.data_max;
        loop {
            let wait = self.data_wait(deadline).min(
                (pump.active + self.shared.data_timeout).saturating_duration_since(Instant::now()),
            );
            let keepalive = matches!(pump.output, Output::Waiting) && self.upstream.is_some();
            let next_noop = tokio::time::Instant::from_std(pump.next_noop);
            if !pump.reading && pump.pending.is_none() {
                // End of data for the seal job.
                pump.to_seal = None;
                if pump.sealed.is_none() {
                    return Ok(());
                }
            }
            let client = &mut self.client;
            let event = timeout(wait, async {
                tokio::select! {
                    r = read_chunk(client, decoder), if pump.reading && pump.pending.is_none() => {
                        Event::Read(r)
                    }
                    permit = reserve(&pump.to_seal), if pump.pending.is_some() => match permit {
                        Some(permit) => {
                            permit.send(pump.pending.take().unwrap_or_default());
                            Event::Handed
                        }
                        None => Event::SealerGone,
                    },
                    chunk = recv(&mut pump.sealed), if pump.sealed.is_some() => Event::Sealed(chunk),
                    _ = tokio::time::sleep_until(next_noop), if keepalive => Event::Keepalive,
                }
            })
            .await
            .map_err(|_| End::Timeout)?;
            if !matches!(event, Event::Keepalive) {
                pump.active = Instant::now();
            }
            match event {
                Event::Keepalive => self.keep_provider_awake(pump).await,
                Event::Read(chunk) => {
                    let chunk = chunk?;
                    if chunk.last {
                        pump.reading = false;
                    }
                    if Session::refuses(&decoder.flags) {
                        // Refused whatever the seal job makes of it, and
                        // nothing more reaches the provider: not this chunk
                        // (a bare CR next to a dot in it could end DATA at
                        // a next hop that takes a lone CR for a line end:
                        // an already-sealed message passes through as it
                        // is), nor what the job still makes. The rest is
                        // read to its end and refused.
                        pump.pending = None;
                        pump.to_seal = None;
                        pump.sealed = None;
                        continue;
                    }
                    if !chunk.data.is_empty() && pump.to_seal.is_some() {
                        pump.pending = Some(chunk.data);
                    }
                }
                Event::Handed => {}
                Event::SealerGone => {
                    // The seal job failed: keep reading to the end of the
                    // data, then fail the message closed.
                    pump.to_seal = None;
                    pump.pending = None;
                }
                Event::Sealed(None) => pump.sealed = None,
                Event::Sealed(Some(Err(_))) => {
                    pump.sealed = None;
                    pump.output = match pump.output {
                        Output::Streaming(_) => {
                            self.drop_upstream();
                            Output::Broken(UpstreamFailure::SealFailed)
                        }
                        _ => Output::SealFailed,
                    };
                }
                Event::Sealed(Some(Ok(bytes))) => self.forward_sealed(pump, &bytes).await,
            }
        }
    }

    /// `NOOP` to the provider while it waits for DATA (see
    /// `smtp.provider_keepalive_secs`). A provider that fails or answers
    /// other than 2xx (a stale `421` timeout) is dropped: the message ends
    /// as [`Output::Broken`] (451 4.4.2 once the client's data is in).
    async fn keep_provider_awake(&mut self, pump: &mut Pump) {
        pump.next_noop = Instant::now() + self.shared.provider_keepalive;
        let alive = match self.upstream.as_mut() {
            Some(up) => matches!(up.command("NOOP").await, Ok(r) if r.is_positive()),
            None => false,
        };
        if !alive {
            tracing::warn!("provider connection lost while a message was being received");
            self.drop_upstream();
            pump.output = Output::Broken(UpstreamFailure::Unavailable);
            pump.sealed = None;
        }
    }

    /// Sealed bytes to the provider, opening DATA there on the first ones.
    /// A provider that refuses DATA or fails ends the seal job's output.
    async fn forward_sealed(&mut self, pump: &mut Pump, bytes: &[u8]) {
        let output = std::mem::replace(&mut pump.output, Output::Waiting);
        pump.output = match output {
            Output::Waiting => {
                metrics::histogram!(names::SEAL_SECONDS)
                    .record(pump.started.elapsed().as_secs_f64());
                let Some(up) = self.upstream.as_mut() else {
                    pump.sealed = None;
                    pump.output = Output::Broken(UpstreamFailure::Unavailable);
                    return;
                };
                match up.begin_message().await {
                    Ok(r) if r.code == 354 => {
                        let mut stuffer = DotStuffer::default();
                        match up.write_message(&mut stuffer, bytes).await {
                            Ok(()) => Output::Streaming(stuffer),
                            Err(_) => Output::Broken(UpstreamFailure::Unavailable),
                        }
                    }
                    // A positive answer other than 354 says nothing was
                    // delivered; passed on, it would tell the client its
                    // message was (the connection is out of step).
                    Ok(r) if r.is_positive() => Output::Broken(UpstreamFailure::Unavailable),
                    Ok(r) => Output::Refused(r),
                    Err(_) => Output::Broken(UpstreamFailure::Unavailable),
                }
            }
            Output::Streaming(mut stuffer) => {
                let written = match self.upstream.as_mut() {
                    Some(up) => up.write_message(&mut stuffer, bytes).await.is_ok(),
                    None => false,
                };
                if written {
                    Output::Streaming(stuffer)
                } else {
                    Output::Broken(UpstreamFailure::Unavailable)
                }
            }
            other => other,
        };
        match pump.output {
            Output::Streaming(_) => {}
            Output::Broken(_) => {
                tracing::warn!("provider connection failed during DATA");
                self.drop_upstream();
                pump.sealed = None;
            }
            _ => pump.sealed = None,
        }
    }

    /// Plaintext delivery in lockstep: DATA is opened at the provider
    /// first, then the message streams through as it arrives.
    async fn plaintext_message(&mut self) -> Result<Step, End> {
        let Some(up) = self.upstream.as_mut() else {
            let r = self.session.delivered(Err(UpstreamFailure::Unavailable));
            return Ok(Step::Reply(r));
        };
        let r = match up.begin_message().await {
            Ok(r) => r,
            Err(_) => {
                self.upstream = None;
                let r = self.session.delivered(Err(UpstreamFailure::Unavailable));
                return Ok(Step::Reply(r));
            }
        };
        if r.code != 354 {
            if r.is_positive() {
                // Nothing was delivered, whatever it says: not passed on
                // as a success (the connection is out of step).
                tracing::warn!(
                    code = r.code,
                    "the provider answered DATA with neither 354 nor a refusal"
                );
                self.drop_upstream();
                let r = self.session.delivered(Err(UpstreamFailure::Unavailable));
                return Ok(Step::Reply(r));
            }
            // The provider still holds the transaction's MAIL and RCPTs
            // (a refused DATA ends nothing, RFC 5321 §4.1.1.4), which writ
            // forgets: RSET there, or the client's next MAIL meets a
            // nested-MAIL refusal.
            self.reset_upstream().await;
            return Ok(Step::Reply(self.session.delivered(Ok(r))));
        }
        self.reply(&r);
        self.flush(true).await?;
        let mut decoder = self.session.data_decoder();
        let mut stuffer = DotStuffer::default();
        let mut upstream_ok = true;
        let deadline = Instant::now() + self.shared.data_max;
        loop {
            let read = timeout(
                self.data_wait(deadline),
                read_chunk(&mut self.client, &mut decoder),
            )
            .await;
            let chunk = match read {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    // Client gone mid-DATA: abandon the provider's DATA too.
                    self.drop_upstream();
                    return Err(e);
                }
                Err(_) => {
                    self.drop_upstream();
                    return Err(self.data_timed_out().await);
                }
            };
            // Nothing more goes to the provider once the data is refused
            // (see `pump_sealed`): the refused chunk could end DATA there.
            if !Session::refuses(&decoder.flags)
                && upstream_ok
                && !chunk.data.is_empty()
                && let Some(up) = self.upstream.as_mut()
                && up.write_message(&mut stuffer, &chunk.data).await.is_err()
            {
                upstream_ok = false;
            }
            if chunk.last {
                break;
            }
        }
        let size = decoder.size();
        if let Err(step) = self.session.message_received(decoder.flags) {
            self.drop_upstream();
            self.refused("bad-data", size);
            return Ok(step);
        }
        let result = match (upstream_ok, self.upstream.as_mut()) {
            (true, Some(up)) => up
                .end_message(&stuffer)
                .await
                .map_err(|_| UpstreamFailure::Unavailable),
            _ => Err(UpstreamFailure::Unavailable),
        };
        if result.is_err() {
            self.upstream = None;
        }
        if let Ok(r) = &result {
            metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class()).increment(1);
            if r.is_positive() {
                metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "relayed", "reason" => "")
                    .increment(1);
                metrics::counter!(names::MESSAGE_BYTES_TOTAL, "outcome" => "relayed")
                    .increment(size);
            }
        }
        Ok(Step::Reply(self.session.delivered(result)))
    }
}

/// The blocking seal job reads the message from the connection task.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The blocking seal job hands the sealed message back.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the connection went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seal job that panics after its first output ends its channel as
    /// one that returned does: the message is whole only if it returned.
    #[tokio::test]
    async fn a_seal_job_that_panicked_halfway_delivers_nothing() {
        let panicked = tokio::task::spawn_blocking(|| panic!("a sealer fault"))
            .await
            .is_ok();
        let returned = tokio::task::spawn_blocking(|| ()).await.is_ok();
        assert!(!panicked && returned);
        let streaming = || Output::Streaming(DotStuffer::default());
        assert!(matches!(
            after_seal_job(panicked, streaming()),
            (Output::Broken(UpstreamFailure::SealFailed), true)
        ));
        assert!(matches!(
            after_seal_job(returned, streaming()),
            (Output::Streaming(_), false)
        ));
        assert!(matches!(
            after_seal_job(panicked, Output::Waiting),
            (Output::SealFailed, false)
        ));
    }
}
