//! One client connection: the tokio shell around [`Session`]. It reads
//! command lines, executes the session's [`Step`]s (replies, TLS, provider
//! round trips: `rounds`, with the pool and PIPELINING toward the
//! provider), and moves message data (`message`): sealed as it arrives
//! on a blocking thread, or streamed to the provider in lockstep for
//! plaintext delivery. On a relay listener the provider connection is
//! the session's only inside a transaction: between transactions it goes
//! back to the pool ([`super::pool`]).
//!
//! Invariant: every await on the client, the provider or a channel is
//! bounded by a timeout of the session:
//!
//! - waiting for a command line: `smtp.command_timeout_secs` (default
//!   300 s), then `421 4.4.2 Timeout waiting for a command` and close;
//! - writing replies to a client that does not read, and the TLS
//!   handshake: `smtp.command_timeout_secs`, then close; replies to
//!   pipelined commands are held back at most [`MAX_QUEUED_REPLIES`]
//!   (16 KiB), so a client that never reads them stops being read;
//! - protocol errors: [`super::session::MAX_ERRORS`] (20), then
//!   `421 4.7.0 Too many errors` and close;
//! - a command line: `smtp.max_line_length` (500 5.5.6); a line during
//!   AUTH: [`super::session::MAX_SASL_LINE`] (12,288) or
//!   `max_line_length` if larger, past which the exchange is cancelled;
//! - every wait during DATA (the client's next bytes, the seal job taking
//!   a chunk or handing sealed output back): `smtp.data_timeout_secs`
//!   (default 180 s), and the whole DATA phase: `smtp.data_max_secs`
//!   (default 3600 s), then `421 4.4.2 Timeout waiting for message data`
//!   and close; nothing is delivered;
//! - the content scanner (`[scanner]`, `message::scanned`): the whole
//!   exchange `scanner.timeout_secs` (default 30 s), its reply 64 KiB,
//!   then 451 4.7.1 (fail closed) or delivery unscanned (fail open);
//! - inbound authentication (`[auth]`, relay listeners,
//!   `message::scanned`): the whole verification `auth.timeout_secs`
//!   (default 20 s), each DNS query `auth.dns_timeout_secs` (3 s, tried
//!   twice), then `temperror` and delivery (see `super::inbound_auth`);
//! - every provider read and write: `[provider.smtp] timeout_secs`, then
//!   the provider connection is dropped and the client told 451 4.4.2;
//! - closing: [`CLOSE_TIMEOUT`] (our close_notify/FIN, then whatever the
//!   client still sends is read and dropped until it closes, so that a
//!   last reply is not lost to a reset).
//!
//! Whatever the client pipelined after STARTTLS is discarded with the
//! plaintext reader; after a refusal that closes (a bare-newline end of
//! data), nothing more is read.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use super::pool::Pool;
use super::reply::Reply;
use super::session::{Delivery, MAX_SASL_LINE, Session, SessionConfig, Step};
use super::upstream::{Target, Upstream};
use crate::config::SealConfig;
use crate::envelope::Sealer;
use crate::keys;
use crate::net::{self, LineEnd, Stream};
use crate::policy::Policy;

/// What every connection of one listener shares.
pub struct Shared {
    pub session: SessionConfig,
    pub policy: Arc<Policy>,
    pub target: Target,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub keys_dir: PathBuf,
    /// The organisation's sealer, made again when the keyring changes.
    pub org_sealer: OrgSealer,
    pub seal: SealConfig,
    pub max_line_length: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// The whole DATA phase (`smtp.data_max_secs`): past it, as past
    /// `data_timeout`, 421 and close.
    pub data_max: Duration,
    /// `NOOP` to the provider this often while a sealed message is
    /// received (`smtp.provider_keepalive_secs`).
    pub provider_keepalive: Duration,
    /// Label for metrics: submission, submissions, relay.
    pub listener: &'static str,
    /// Idle provider connections to take and give back: relay listeners
    /// only (a submission session's provider connection is logged in as
    /// its user); `None` when `smtp.provider_pool_size` is 0.
    pub pool: Option<Arc<Pool>>,
    /// The content scanner for this listener's sealed mail (`[scanner]`),
    /// `None` when off or not for this listener kind.
    pub scanner: Option<Arc<super::scanner::Scanner>>,
    /// Inbound authentication (`[auth]`): relay listeners only, `None`
    /// when off.
    pub auth: Option<Arc<super::inbound_auth::InboundAuth>>,
}

impl Shared {
    /// The sealer for a delivery. The keyring is looked at per message
    /// (`org_sealer`: read again when its files changed), so a `keys
    /// rotate` takes effect without a restart; a keyring that cannot be
    /// read fails the message closed (451).
    fn sealer(&self, delivery: &Delivery) -> Result<Option<Sealer>, keys::KeyError> {
        match delivery {
            Delivery::Plaintext => Ok(None),
            Delivery::SealForOrganisation => {
                Ok(Some(self.org_sealer.get(&self.keys_dir, &self.seal)?))
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
    /// A wait during DATA passed `smtp.data_timeout_secs`: 421, close.
    Timeout,
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> End {
        End::Gone
    }
}

mod message;
mod org_sealer;
mod rounds;

pub use org_sealer::OrgSealer;

/// How long closing the client connection (a TLS close_notify, then
/// draining what it still sends) and saying QUIT to the provider may take
/// after the session is over (5 s; the session's slots are already free).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the client reader's buffer (and so of a chunk of DATA).
const READ_BUFFER: usize = 64 * 1024;

/// Replies held back for a pipelining client (16 KiB): past this they are
/// sent even though more commands are waiting in the read buffer.
const MAX_QUEUED_REPLIES: usize = 16 * 1024;

struct Conn {
    client: BufReader<Stream>,
    /// Client command lines already taken from the read buffer because
    /// their commands were sent ahead to the provider (`rounds`); the
    /// session takes them before reading more.
    queued: VecDeque<Vec<u8>>,
    out: Vec<u8>,
    session: Session,
    upstream: Option<Upstream>,
    shared: Arc<Shared>,
    line: Vec<u8>,
    /// The client's address (behind a load balancer, from its PROXY
    /// header): told to the content scanner.
    peer: SocketAddr,
}

/// Serves one client until it quits, fails, or the server shuts down.
/// `slots` (the session's place under the connection
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
        let Some(tls) = net::accept_tls(&acceptor, tcp, shared.command_timeout).await else {
            tracing::debug!(%peer, "TLS handshake failed");
            return;
        };
        tls
    } else {
        Stream::Plain(tcp)
    };
    let session = Session::new(shared.session.clone(), shared.policy.clone(), implicit_tls);
    let mut conn = Conn {
        client: BufReader::with_capacity(READ_BUFFER, stream),
        queued: VecDeque::new(),
        out: Vec::new(),
        session,
        upstream: None,
        shared,
        line: Vec::new(),
        peer,
    };
    let _ = conn.run(&mut shutdown).await;
    // The client is done: give its slots back and close its connection
    // now, not after the provider has answered our QUIT (up to the
    // provider timeout).
    drop(slots);
    conn.release_upstream();
    if let Some(up) = conn.upstream.take() {
        tokio::spawn(timeout(CLOSE_TIMEOUT, up.quit()));
    }
    if *shutdown.borrow() {
        // The server is stopping: no lingering.
        let _ = timeout(CLOSE_TIMEOUT, conn.client.get_mut().shutdown()).await;
    } else {
        let _ = timeout(CLOSE_TIMEOUT, linger(&mut conn.client)).await;
    }
}

/// Closes our side, then reads and drops whatever the client still sends
/// until it closes too (bounded by the caller): closing with unread data
/// makes the kernel send a reset, which can destroy the last reply (a 554
/// after a bare-newline end, a 552 for runaway data) before the client
/// has read it.
async fn linger(client: &mut BufReader<Stream>) {
    let _ = client.get_mut().shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

impl Conn {
    fn reply(&mut self, r: &Reply) {
        self.out.extend_from_slice(r.render().as_bytes());
    }

    /// Sends buffered replies. With PIPELINING, replies to a batch of
    /// commands go out together when the client has nothing more queued,
    /// or once [`MAX_QUEUED_REPLIES`] are waiting (a client whose writes
    /// never end at a line end would otherwise have them queue without
    /// bound).
    async fn flush(&mut self, force: bool) -> io::Result<()> {
        let pipelined = (!self.client.buffer().is_empty() || !self.queued.is_empty())
            && self.out.len() < MAX_QUEUED_REPLIES;
        if self.out.is_empty() || (!force && pipelined) {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let w = self.client.get_mut();
        timeout(self.shared.command_timeout, async {
            w.write_all(&out).await?;
            w.flush().await
        })
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), End> {
        let greeting = self.session.greeting();
        self.reply(&greeting);
        self.flush(true).await?;
        loop {
            if !self.session.in_transaction() && self.queued.is_empty() {
                self.release_upstream();
            }
            self.flush(false).await?;
            if let Some(line) = self.queued.pop_front() {
                // Sent ahead to the provider: the session takes it now.
                if self.queued_command(&line).await? {
                    return Ok(());
                }
                continue;
            }
            let max = if self.session.in_auth() {
                self.shared.max_line_length.max(MAX_SASL_LINE)
            } else {
                self.shared.max_line_length
            };
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
                    let step = if self.session.in_auth() {
                        self.session.auth_line_too_long()
                    } else {
                        self.session.line_too_long()
                    };
                    if self.execute(step).await? {
                        return Ok(());
                    }
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
                Step::ReadData(r354, delivery) => self.message(r354, delivery).await?,
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
        let tls = net::accept_tls(&acceptor, tcp, self.shared.command_timeout)
            .await
            .ok_or(End::Gone)?;
        self.client = BufReader::with_capacity(READ_BUFFER, tls);
        self.session.tls_started();
        Ok(())
    }
}
