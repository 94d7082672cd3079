//! One client connection: the tokio shell around [`Session`]. It reads
//! command lines, executes the session's [`Step`]s (replies, TLS, provider
//! round trips), and moves message data: sealed as it arrives on a blocking
//! thread, or streamed to the provider in lockstep for plaintext delivery.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::data::{DataDecoder, DotStuffer};
use super::reply::Reply;
use super::session::{Delivery, Session, SessionConfig, Step, UpstreamFailure};
use super::upstream::{Target, Upstream};
use crate::admin::names;
use crate::config::SealConfig;
use crate::envelope::Sealer;
use crate::keys::{self, Keyring};
use crate::net::{self, LineEnd, Stream};
use crate::policy::Policy;

/// What every connection of one listener shares.
pub struct Shared {
    pub session: SessionConfig,
    pub policy: Arc<Policy>,
    pub target: Target,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub keys_dir: PathBuf,
    pub seal: SealConfig,
    pub max_line_length: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Label for metrics: submission, submissions, relay.
    pub listener: &'static str,
}

impl Shared {
    /// The sealer for a delivery. The keyring is read per message, so a
    /// `keys rotate` takes effect without a restart; a keyring that cannot
    /// be read fails the message closed (451).
    fn sealer(&self, delivery: &Delivery) -> Result<Option<Sealer>, keys::KeyError> {
        match delivery {
            Delivery::Plaintext => Ok(None),
            Delivery::SealForOrganisation => {
                let keyring = Keyring::load(&self.keys_dir)?;
                Ok(Some(keys::sealer(&keyring, &self.seal)?))
            }
            Delivery::SealTo(recipients) => {
                // The marker names the first recipient's key.
                let epoch = recipients.first().map(keys::epoch_id).unwrap_or_default();
                Ok(Some(keys::external_sealer(
                    epoch,
                    recipients.clone(),
                    &self.seal,
                )))
            }
        }
    }
}

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    /// The client went away or broke the protocol badly: just close.
    Gone,
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> End {
        End::Gone
    }
}

struct Conn {
    client: BufReader<Stream>,
    out: Vec<u8>,
    session: Session,
    upstream: Option<Upstream>,
    shared: Arc<Shared>,
    line: Vec<u8>,
}

/// Serves one client until it quits, fails, or the server shuts down.
/// Serves one client. `slots` (the session's place under the connection
/// limits) is given back when the session is over, before the client sees
/// its connection close: a client that reconnects at once is never refused
/// for a session of its own that has ended.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    implicit_tls: bool,
    mut shutdown: watch::Receiver<bool>,
    slots: impl Send,
) {
    let _ = tcp.set_nodelay(true);
    let stream = if implicit_tls {
        let Some(acceptor) = shared.acceptor.clone() else {
            return;
        };
        match timeout(shared.command_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Stream::Server(Box::new(tls)),
            _ => {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    let session = Session::new(shared.session.clone(), shared.policy.clone(), implicit_tls);
    let mut conn = Conn {
        client: BufReader::with_capacity(64 * 1024, stream),
        out: Vec::new(),
        session,
        upstream: None,
        shared,
        line: Vec::new(),
    };
    let _ = conn.run(&mut shutdown).await;
    // The client is done: give its slots back and close its connection
    // now, not after the provider has answered our QUIT (up to the
    // provider timeout).
    drop(slots);
    let _ = conn.client.get_mut().shutdown().await;
    if let Some(up) = conn.upstream.take() {
        tokio::spawn(up.quit());
    }
}

impl Conn {
    fn reply(&mut self, r: &Reply) {
        self.out.extend_from_slice(r.render().as_bytes());
    }

    /// Sends buffered replies. With PIPELINING, replies to a batch of
    /// commands go out together when the client has nothing more queued.
    async fn flush(&mut self, force: bool) -> io::Result<()> {
        if self.out.is_empty() || (!force && !self.client.buffer().is_empty()) {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let w = self.client.get_mut();
        w.write_all(&out).await?;
        w.flush().await
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), End> {
        let greeting = self.session.greeting();
        self.reply(&greeting);
        self.flush(true).await?;
        loop {
            self.flush(false).await?;
            let max = self.shared.max_line_length;
            let wait = self.shared.command_timeout;
            let read = tokio::select! {
                r = timeout(wait, net::read_line(&mut self.client, &mut self.line, max)) => r,
                _ = shutdown.changed(), if !self.session.in_transaction() => {
                    self.reply(&Reply::new(421, "4.3.2 Service shutting down"));
                    self.flush(true).await?;
                    return Ok(());
                }
            };
            let end = match read {
                Err(_) => {
                    self.reply(&Reply::new(421, "4.4.2 Timeout waiting for a command"));
                    self.flush(true).await?;
                    return Ok(());
                }
                Ok(r) => r?,
            };
            match end {
                None | Some(LineEnd::Eof) => return Err(End::Gone),
                Some(LineEnd::TooLong) => {
                    self.reply(&Reply::new(500, "5.5.6 Line too long"));
                    continue;
                }
                Some(LineEnd::Lf) => {}
            }
            let line = net::trim_eol(&self.line).to_vec();
            let step = if self.session.in_auth() {
                self.session.auth_line(&line)
            } else {
                self.session.command(&line)
            };
            if self.execute(step).await? {
                return Ok(());
            }
        }
    }

    /// Runs a step and whatever follows from it. Returns true when the
    /// connection is to close.
    async fn execute(&mut self, mut step: Step) -> Result<bool, End> {
        loop {
            step = match step {
                Step::Reply(r) => {
                    self.reply(&r);
                    return Ok(false);
                }
                Step::Close(r) => {
                    self.reply(&r);
                    self.flush(true).await?;
                    return Ok(true);
                }
                Step::StartTls(r) => {
                    self.reply(&r);
                    self.flush(true).await?;
                    self.start_tls().await?;
                    return Ok(false);
                }
                Step::Upstream { open, line } => self.upstream_round(open, &line).await,
                Step::ReadData(r354, delivery) => {
                    self.message(r354, delivery).await?;
                    return Ok(false);
                }
            };
        }
    }

    async fn start_tls(&mut self) -> Result<(), End> {
        let Some(acceptor) = self.shared.acceptor.clone() else {
            return Err(End::Gone);
        };
        // Replacing the reader drops whatever the client pipelined after
        // STARTTLS: it was sent in the clear and must not be acted on.
        let mut stream = std::mem::replace(self.client.get_mut(), Stream::Upgrading);
        let tcp = stream.take_plain().ok_or(End::Gone)?;
        let tls = timeout(self.shared.command_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| End::Gone)??;
        self.client = BufReader::with_capacity(64 * 1024, Stream::Server(Box::new(tls)));
        self.session.tls_started();
        Ok(())
    }

    /// One command to the provider (opening the connection first if asked).
    async fn upstream_round(&mut self, open: bool, line: &str) -> Step {
        let started = Instant::now();
        if open || self.upstream.is_none() {
            match Upstream::connect(&self.shared.target).await {
                Ok(up) => self.upstream = Some(up),
                Err(e) => {
                    tracing::warn!(error = %e, "provider unavailable");
                    metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => "error")
                        .increment(1);
                    return self
                        .session
                        .upstream_reply(Err(UpstreamFailure::Unavailable));
                }
            }
        }
        let Some(up) = self.upstream.as_mut() else {
            return self
                .session
                .upstream_reply(Err(UpstreamFailure::Unavailable));
        };
        let result = up.command(line).await;
        metrics::histogram!(names::UPSTREAM_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class()).increment(1);
                self.session.upstream_reply(Ok(r))
            }
            Err(e) => {
                tracing::warn!(error = %e, "provider connection failed");
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => "error").increment(1);
                self.upstream = None;
                self.session
                    .upstream_reply(Err(UpstreamFailure::Unavailable))
            }
        }
    }

    /// Resets the provider's transaction after a refused message.
    async fn reset_upstream(&mut self) {
        if let Some(up) = self.upstream.as_mut()
            && up.command("RSET").await.is_err()
        {
            self.upstream = None;
            self.session.upstream_dropped();
        }
    }

    /// Reads the next chunk of message data, decoded, into `buf`. Returns
    /// true at the end marker.
    async fn read_data(
        &mut self,
        decoder: &mut DataDecoder,
        buf: &mut Vec<u8>,
    ) -> Result<bool, End> {
        let avail = timeout(self.shared.data_timeout, self.client.fill_buf())
            .await
            .map_err(|_| End::Gone)??;
        if avail.is_empty() {
            // The client died mid-DATA: nothing is delivered.
            return Err(End::Gone);
        }
        let n = avail.len();
        let end = decoder.feed(avail, buf);
        self.client.consume(end.unwrap_or(n));
        Ok(end.is_some())
    }

    async fn message(&mut self, r354: Reply, delivery: Delivery) -> Result<(), End> {
        let sealer = match self.shared.sealer(&delivery) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot seal: keyring unavailable");
                self.refused("seal-unavailable", 0);
                let r = self.session.delivered(Err(UpstreamFailure::SealFailed));
                self.reset_upstream().await;
                self.reply(&r);
                return Ok(());
            }
        };
        match sealer {
            Some(sealer) => self.sealed_message(r354, sealer).await,
            None => self.plaintext_message().await,
        }
    }

    fn refused(&self, reason: &'static str, bytes: u64) {
        metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "refused", "reason" => reason)
            .increment(1);
        metrics::counter!(names::MESSAGE_BYTES_TOTAL, "outcome" => "refused").increment(bytes);
    }

    /// Seals while reading (on a blocking thread), then sends the sealed
    /// message to the provider.
    async fn sealed_message(&mut self, r354: Reply, sealer: Sealer) -> Result<(), End> {
        self.reply(&r354);
        self.flush(true).await?;
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(8);
        let (out_tx, mut out_rx) = mpsc::channel::<io::Result<Vec<u8>>>(8);
        let started = Instant::now();
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
        let mut decoder = DataDecoder::new(self.shared.session.max_message_size);
        loop {
            let mut buf = Vec::with_capacity(64 * 1024);
            let done = self.read_data(&mut decoder, &mut buf).await?;
            if !buf.is_empty() && in_tx.send(buf).await.is_err() {
                // The seal job ended early (it failed): keep reading to the
                // end of the data, then fail the message closed.
            }
            if done {
                break;
            }
        }
        drop(in_tx);
        let size = decoder.size();
        if let Err(r) = self.session.message_received(decoder.flags) {
            drop(out_rx);
            let _ = job.await;
            self.refused("bad-data", size);
            self.reset_upstream().await;
            self.reply(&r);
            return Ok(());
        }
        // Wait for the first sealed bytes before opening DATA upstream, so
        // that a seal failure needs only an RSET.
        let first = out_rx.recv().await;
        metrics::histogram!(names::SEAL_SECONDS).record(started.elapsed().as_secs_f64());
        let first = match first {
            Some(Ok(chunk)) => chunk,
            _ => {
                tracing::error!("sealing failed; nothing was sent to the provider");
                let _ = job.await;
                self.refused("seal-failed", size);
                let r = self.session.delivered(Err(UpstreamFailure::SealFailed));
                self.reset_upstream().await;
                self.reply(&r);
                return Ok(());
            }
        };
        let outcome = self.send_sealed(first, &mut out_rx).await;
        let _ = job.await;
        let r = match outcome {
            Ok(r) => {
                if r.is_positive() {
                    metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "sealed", "reason" => "")
                        .increment(1);
                    metrics::counter!(names::MESSAGE_BYTES_TOTAL, "outcome" => "sealed")
                        .increment(size);
                }
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class()).increment(1);
                self.session.delivered(Ok(r))
            }
            Err(failure) => {
                // The provider connection is mid-DATA or broken: drop it,
                // so the provider delivers nothing.
                self.upstream = None;
                self.session.upstream_dropped();
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
        self.reply(&r);
        Ok(())
    }

    async fn send_sealed(
        &mut self,
        first: Vec<u8>,
        rest: &mut mpsc::Receiver<io::Result<Vec<u8>>>,
    ) -> Result<Reply, UpstreamFailure> {
        let started = Instant::now();
        let up = self.upstream.as_mut().ok_or(UpstreamFailure::Unavailable)?;
        let r = up
            .begin_message()
            .await
            .map_err(|_| UpstreamFailure::Unavailable)?;
        if r.code != 354 {
            return Ok(r);
        }
        let mut stuffer = DotStuffer::default();
        up.write_message(&mut stuffer, &first)
            .await
            .map_err(|_| UpstreamFailure::Unavailable)?;
        while let Some(chunk) = rest.recv().await {
            let chunk = chunk.map_err(|_| UpstreamFailure::SealFailed)?;
            up.write_message(&mut stuffer, &chunk)
                .await
                .map_err(|_| UpstreamFailure::Unavailable)?;
        }
        let r = up
            .end_message(&stuffer)
            .await
            .map_err(|_| UpstreamFailure::Unavailable);
        metrics::histogram!(names::UPSTREAM_SECONDS).record(started.elapsed().as_secs_f64());
        r
    }

    /// Plaintext delivery in lockstep: DATA is opened at the provider
    /// first, then the message streams through as it arrives.
    async fn plaintext_message(&mut self) -> Result<(), End> {
        let Some(up) = self.upstream.as_mut() else {
            let r = self.session.delivered(Err(UpstreamFailure::Unavailable));
            self.reply(&r);
            return Ok(());
        };
        let r = match up.begin_message().await {
            Ok(r) => r,
            Err(_) => {
                self.upstream = None;
                let r = self.session.delivered(Err(UpstreamFailure::Unavailable));
                self.reply(&r);
                return Ok(());
            }
        };
        if r.code != 354 {
            let r = self.session.delivered(Ok(r));
            self.reply(&r);
            return Ok(());
        }
        self.reply(&r);
        self.flush(true).await?;
        let mut decoder = DataDecoder::new(self.shared.session.max_message_size);
        let mut stuffer = DotStuffer::default();
        let mut upstream_ok = true;
        loop {
            let mut buf = Vec::with_capacity(64 * 1024);
            let done = self.read_data(&mut decoder, &mut buf).await;
            let done = match done {
                Ok(d) => d,
                Err(e) => {
                    // Client gone mid-DATA: abandon the provider's DATA too.
                    self.upstream = None;
                    return Err(e);
                }
            };
            if upstream_ok
                && let Some(up) = self.upstream.as_mut()
                && up.write_message(&mut stuffer, &buf).await.is_err()
            {
                upstream_ok = false;
            }
            if done {
                break;
            }
        }
        let size = decoder.size();
        if let Err(r) = self.session.message_received(decoder.flags) {
            self.upstream = None;
            self.session.upstream_dropped();
            self.refused("bad-data", size);
            self.reply(&r);
            return Ok(());
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
        let r = self.session.delivered(result);
        self.reply(&r);
        Ok(())
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
