//! One client connection: connect to the provider, then move bytes between
//! the sockets and the [`Session`], which decides everything. This file
//! only reads, writes, upgrades to TLS and keeps time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::session::{Context, Session, SharedKeys, Step};
use super::upstream::{Target, Upstream};
use crate::net::Stream;

/// What every connection of one listener shares.
pub struct Shared {
    pub target: Target,
    pub acceptor: TlsAcceptor,
    pub starttls_listener: bool,
    pub allow_plaintext_auth: bool,
    pub max_literal_size: u32,
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

/// Longest a TLS handshake with a client may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

async fn write_all(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    if !bytes.is_empty() {
        stream.write_all(bytes).await?;
        stream.flush().await?;
    }
    Ok(())
}

pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    implicit_tls: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut client = if implicit_tls {
        match timeout(HANDSHAKE_TIMEOUT, shared.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Stream::Server(Box::new(tls)),
            _ => {
                tracing::debug!(%peer, "TLS handshake with the client failed");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    let mut provider = match Upstream::connect(&shared.target).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "provider unreachable");
            let _ = write_all(
                &mut client,
                b"* BYE [UNAVAILABLE] writ cannot reach the provider, try again later\r\n",
            )
            .await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let mut session = Session::new(
        Context {
            client_tls: implicit_tls,
            client_loopback: peer.ip().is_loopback(),
            starttls_listener: shared.starttls_listener,
            allow_plaintext_auth: shared.allow_plaintext_auth,
            max_literal_size: shared.max_literal_size,
        },
        shared.keys.clone(),
        shared.sealer.clone(),
    )
    .with_cache(shared.cache.clone());
    session.provider_input(&std::mem::take(&mut provider.pending));
    let mut upstream = provider.stream;
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut pbuf = vec![0u8; 64 * 1024];
    loop {
        let step = session.advance();
        let out = session.take_to_provider();
        if let Err(e) = write_all(&mut upstream, &out).await {
            tracing::info!(%peer, error = %e, "provider connection lost");
            session.provider_closed();
        }
        let out = session.take_to_client();
        if write_all(&mut client, &out).await.is_err() {
            break;
        }
        match step {
            Step::Wait => {}
            Step::Close => break,
            Step::StartTls => {
                let Some(tcp) = client.take_plain() else {
                    break;
                };
                match timeout(HANDSHAKE_TIMEOUT, shared.acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => client = Stream::Server(Box::new(tls)),
                    _ => {
                        tracing::debug!(%peer, "STARTTLS handshake with the client failed");
                        break;
                    }
                }
                session.tls_started();
                continue;
            }
        }
        tokio::select! {
            r = timeout(shared.idle_timeout, client.read(&mut cbuf)) => match r {
                Ok(Ok(n)) if n > 0 => session.client_input(&cbuf[..n]),
                Ok(_) => break,
                Err(_) => {
                    tracing::info!(%peer, "client idle too long");
                    session.shutdown();
                }
            },
            r = upstream.read(&mut pbuf) => match r {
                Ok(n) if n > 0 => session.provider_input(&pbuf[..n]),
                _ => session.provider_closed(),
            },
            _ = shutdown.changed() => session.shutdown(),
        }
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}
