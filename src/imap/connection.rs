//! One client connection: move bytes between the sockets and the
//! [`Session`], which decides everything. This file only reads, writes,
//! upgrades to TLS, connects to the provider and keeps time.
//!
//! - The provider is connected to only when the session first has bytes
//!   for it (the client's first command that needs it): a client that
//!   connects and says nothing costs the provider nothing. writ's greeting
//!   is its own (no capabilities in it), so nothing is lost by waiting.
//! - Before login the client has `imap.login_timeout_secs` from connecting
//!   (a deadline, not a per-read timer: trickling bytes does not extend
//!   it); after login each silence may last `imap.idle_timeout_secs`.
//!   Either way the client is told BYE and the connection closed.
//! - Writing to the client is bound by the same clock: before login the
//!   login deadline, after it the idle timeout for each write. A client
//!   that stops reading is disconnected then (no BYE: it would not read
//!   it), with its slots and provider connection.
//! - The client is read only while the session wants more
//!   ([`Session::wants_client_input`]): what a client pipelines behind a
//!   running FETCH or SEARCH plan waits in its socket, not in writ. The
//!   timeouts run meanwhile all the same.
//! - The connection holds its [`Slots`]; the pre-login one is given back
//!   at login.
//! - After COMPRESS DEFLATE ([`Step::Compress`]) the client's side is raw
//!   DEFLATE ([`Deflate`]): each batch written is compressed and
//!   sync-flushed; what is read is inflated a step at a time, only while
//!   the session takes input, with the bomb cap of [`super::compress`]
//!   (over it: BYE, closed). The provider's side is never compressed.
//! - Answers the session composes from writ's cache are asked for one
//!   chunk at a time, each once the previous one is written
//!   ([`Session::has_more_output`]; the pool composes the next meanwhile):
//!   a FETCH of a whole cached folder holds two chunks in memory, not the
//!   folder. The size of each write is the
//!   `writ_imap_client_write_bytes` histogram. Likewise provider
//!   responses already read wait in the session while its output for
//!   the client is at [`super::session::CLIENT_OUTPUT_BYTES`]
//!   ([`Session::output_full`]), and are taken once it is written: what
//!   the session holds for a slow client is bounded, and the provider is
//!   read no further meanwhile.
//! - The session's heavy work (opening sealed messages, SEARCH over them,
//!   the cache) runs on the process-wide pool, never on this task: while
//!   the session is [`Session::working`], its [`Session::work_done`] wakes
//!   this loop to run `advance` again. The provider is read only while
//!   the session takes its bytes ([`Session::wants_provider_input`]).
//! - Both sockets have TCP_NODELAY (the provider's: [`crate::net`]); the
//!   client's is set to acknowledge at once after each read ([`ack_now`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;

use super::compress::{Deflate, Refused};
use super::session::{Context, Session, SharedKeys, Step};
use super::upstream::{Target, Upstream};
use crate::admin::names;
use crate::net::{self, PerIpGuard, Stream};

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct Shared {
    pub target: Target,
    pub acceptor: TlsAcceptor,
    pub starttls_listener: bool,
    pub allow_plaintext_auth: bool,
    pub max_literal_size: u32,
    /// `imap.login_timeout_secs`: from connecting to a successful login.
    pub login_timeout: Duration,
    /// `imap.idle_timeout_secs`: each silence of a logged-in client.
    pub idle_timeout: Duration,
    /// For logs and metrics.
    pub listener: &'static str,
    /// The unlocked keyring: opens sealed messages.
    pub keys: SharedKeys,
    /// Seals APPENDed messages.
    pub sealer: crate::envelope::Sealer,
    /// Opened messages, shared by every session.
    pub cache: Option<Arc<super::cache::Cache>>,
}

/// After a refused compressed input (a bomb, a corrupt stream), what the
/// client still sends is read and dropped for at most this long and this
/// much after the BYE: closing with unread input would reset the
/// connection and the client could lose the BYE that says why.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// Longest a TLS handshake with a client may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client that did not log in within the login timeout is told.
const LOGIN_BYE: &str = "Login timeout: log in sooner after connecting";
/// What a logged-in client silent for the idle timeout is told.
const IDLE_BYE: &str = "Idle too long: reconnect when needed";

async fn write_all(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    if !bytes.is_empty() {
        stream.write_all(bytes).await?;
        stream.flush().await?;
    }
    Ok(())
}

/// Acknowledges what the client sends at once (TCP_QUICKACK, re-armed
/// after each read: the kernel drops it by itself). A client that leaves
/// Nagle on (Python's imaplib) sends an APPEND's literal and its final
/// CRLF in two writes, the second held until the first is acknowledged:
/// with delayed ACKs that cost 40 ms per APPEND.
fn ack_now(stream: &Stream) {
    let tcp = match stream {
        Stream::Plain(tcp) => tcp,
        Stream::Server(tls) => tls.get_ref().0,
        Stream::Client(tls) => tls.get_ref().0,
        Stream::Upgrading => return,
    };
    let _ = rustix::net::sockopt::set_tcp_quickack(tcp, true);
}

/// Writes to the client by `deadline` (compressed once COMPRESS is on);
/// a client that does not read by then is an error like a closed
/// connection.
async fn write_by(
    deadline: Instant,
    stream: &mut Stream,
    deflate: &mut Option<Deflate>,
    bytes: &[u8],
) -> std::io::Result<()> {
    let compressed;
    let bytes = match deflate {
        Some(d) => {
            compressed = d.deflate(bytes);
            &compressed[..]
        }
        None => bytes,
    };
    match timeout_at(deadline, write_all(stream, bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Writes to the provider, each 64 KiB within `limit` (the provider's
/// `timeout_secs`): a provider that stops reading (a large APPEND to a
/// stalled server) ends the session instead of holding it for ever, while
/// a slow but moving transfer of any size goes through.
async fn write_progressing(
    stream: &mut Stream,
    bytes: &[u8],
    limit: std::time::Duration,
) -> std::io::Result<()> {
    for chunk in bytes.chunks(64 * 1024) {
        match tokio::time::timeout(limit, stream.write_all(chunk)).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
    match tokio::time::timeout(limit, stream.flush()).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// What a connection holds while it runs: its session permit and its
/// per-address slots. The pre-login slot is given back at login.
pub struct Slots {
    pub session: tokio::sync::OwnedSemaphorePermit,
    pub per_ip: PerIpGuard,
    pub prelogin: Option<PerIpGuard>,
}

/// Serves one client. `shared` is what the session started with (taken
/// from `reloads` when it was accepted); the sealer follows `reloads`.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    (shared, mut reloads): (Arc<Shared>, watch::Receiver<Arc<Shared>>),
    implicit_tls: bool,
    mut shutdown: watch::Receiver<bool>,
    mut slots: Slots,
) {
    let _ = tcp.set_nodelay(true);
    // Plaintext login from loopback needs the hop itself on loopback too:
    // behind a load balancer `peer` is the address its PROXY header names,
    // and a balancer on this host's loopback may reach writ over a network.
    let hop_loopback = tcp.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let login_deadline = Instant::now() + shared.login_timeout;
    let mut client = if implicit_tls {
        let Some(tls) = net::accept_tls(&shared.acceptor, tcp, HANDSHAKE_TIMEOUT).await else {
            tracing::debug!(%peer, "TLS handshake with the client failed");
            return;
        };
        tls
    } else {
        Stream::Plain(tcp)
    };
    let mut session = Session::new(
        Context {
            client_tls: implicit_tls,
            client_loopback: peer.ip().is_loopback() && hop_loopback,
            starttls_listener: shared.starttls_listener,
            allow_plaintext_auth: shared.allow_plaintext_auth,
            max_literal_size: shared.max_literal_size,
        },
        shared.keys.clone(),
        shared.sealer.clone(),
    )
    .with_cache(shared.cache.clone());
    let work_done = session.work_done();
    // Connected when the first command for the provider is ready, not
    // before: an idle client costs the provider nothing.
    let mut upstream: Option<Stream> = None;
    // COMPRESS=DEFLATE on the client's side, once the client asked.
    let mut deflate: Option<Deflate> = None;
    let mut linger = false;
    // The client closed its side while work was running: carried out
    // until this deadline at most (the provider's timeout), not the idle
    // timeout (a command replayed after the close, an IDLE, would
    // otherwise keep the slot that long).
    let mut client_closed: Option<Instant> = None;
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut pbuf = vec![0u8; 64 * 1024];
    // Before login the client has until the login deadline (to read as
    // to write); after it, the idle timeout each time.
    let write_deadline = |session: &Session| {
        if session.authenticated() {
            Instant::now() + shared.idle_timeout
        } else {
            login_deadline
        }
    };
    loop {
        // A keyring reload (SIGHUP) since the last step: APPENDs taken
        // from here on are sealed to the new active epoch.
        if reloads.has_changed().unwrap_or(false) {
            session.set_sealer(reloads.borrow_and_update().sealer.clone());
        }
        let step = session.advance();
        if session.authenticated() {
            slots.prelogin = None;
        }
        let out = session.take_to_provider();
        if !out.is_empty() && upstream.is_none() {
            match Upstream::connect(&shared.target).await {
                Ok(up) => {
                    session.provider_input(&up.pending);
                    upstream = Some(up.stream);
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "provider unreachable");
                    let by = write_deadline(&session);
                    let _ =
                        write_by(by, &mut client, &mut deflate, &session.take_to_client()).await;
                    let _ = write_by(
                        by,
                        &mut client,
                        &mut deflate,
                        b"* BYE [UNAVAILABLE] writ cannot reach the provider, try again later\r\n",
                    )
                    .await;
                    break;
                }
            }
        }
        if let Some(up) = upstream.as_mut()
            && let Err(e) = write_progressing(up, &out, shared.target.timeout).await
        {
            tracing::info!(%peer, error = %e, "provider connection lost");
            session.provider_closed();
        }
        let out = session.take_to_client();
        if !out.is_empty() {
            metrics::histogram!(names::IMAP_CLIENT_WRITE_BYTES).record(out.len() as f64);
        }
        if let Err(e) = write_by(write_deadline(&session), &mut client, &mut deflate, &out).await {
            tracing::info!(%peer, error = %e, authenticated = session.authenticated(), "client not reading");
            break;
        }
        if client_closed.is_some() && session.settled() {
            // Carried out, and answered by the provider (a client that
            // only half-closed still reads its OK).
            break;
        }
        match step {
            Step::Wait => {}
            Step::Close => break,
            Step::StartTls => {
                let Some(tcp) = client.take_plain() else {
                    break;
                };
                let Some(tls) = net::accept_tls(&shared.acceptor, tcp, HANDSHAKE_TIMEOUT).await
                else {
                    tracing::debug!(%peer, "STARTTLS handshake with the client failed");
                    break;
                };
                client = tls;
                session.tls_started();
                continue;
            }
            Step::Compress => {
                deflate = Some(Deflate::new(shared.max_literal_size));
                session.compression_started();
                continue;
            }
        }
        if session.has_more_output() || session.output_full() {
            // The client took what it was given: the session composes its
            // next answers (a FETCH answered from the cache, or from
            // provider responses read already) without waiting for input.
            // Other sessions run between chunks.
            if shutdown.has_changed().unwrap_or(false) {
                session.shutdown();
            }
            tokio::task::yield_now().await;
            continue;
        }
        // Compressed input already read is inflated a step at a time while
        // the session takes it, before reading more.
        if let Some(d) = deflate.as_mut()
            && d.has_pending()
            && session.wants_client_input()
        {
            match d.inflate() {
                Ok(bytes) => session.client_input(&bytes),
                Err(Refused(why)) => {
                    tracing::info!(%peer, reason = why, "compressed client input refused");
                    session.close_with(why);
                    linger = true;
                }
            }
            // Each step is bounded; let other sessions run between them.
            tokio::task::yield_now().await;
            continue;
        }
        // Before login the client has until the login deadline; after it,
        // the idle timeout for each silence.
        let (quiet_until, why) = if session.authenticated() {
            (Instant::now() + shared.idle_timeout, IDLE_BYE)
        } else {
            (login_deadline, LOGIN_BYE)
        };
        let quiet_until = client_closed.map_or(quiet_until, |by| quiet_until.min(by));
        let wants_provider = session.wants_provider_input();
        let provider_read = async {
            match upstream.as_mut() {
                Some(up) if wants_provider => up.read(&mut pbuf).await,
                _ => std::future::pending().await,
            }
        };
        let working = session.working();
        let wants_client = session.wants_client_input() && client_closed.is_none();
        let client_read = async {
            if wants_client {
                client.read(&mut cbuf).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            r = timeout_at(quiet_until, client_read) => match r {
                Ok(Ok(n)) if n > 0 => {
                    ack_now(&client);
                    match deflate.as_mut() {
                        Some(d) => d.push(&cbuf[..n]),
                        None => session.client_input(&cbuf[..n]),
                    }
                }
                // The client closed its side: what it sent before is
                // still carried out where work on it is running (an
                // APPEND being sealed goes to the provider), then the
                // connection ends.
                Ok(_) if working => {
                    client_closed = Some(Instant::now() + shared.target.timeout);
                }
                Ok(_) => break,
                Err(_) => {
                    tracing::info!(%peer, authenticated = session.authenticated(), "client timed out");
                    session.close_with(why);
                }
            },
            r = provider_read => match r {
                Ok(n) if n > 0 => session.provider_input(&pbuf[..n]),
                _ => session.provider_closed(),
            },
            // Work done off the session: `advance` takes its results.
            _ = work_done.notified(), if working => {}
            _ = shutdown.changed() => session.shutdown(),
        }
    }
    let _ = client.shutdown().await;
    if linger {
        // Dropped unread: nothing of it is inflated.
        let _ = tokio::time::timeout(LINGER, async {
            let mut left = LINGER_BYTES;
            while left > 0 {
                match client.read(&mut cbuf).await {
                    Ok(n) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
        })
        .await;
    }
    if let Some(mut up) = upstream {
        let _ = up.shutdown().await;
    }
    drop(slots);
}
