//! An IMAP listener: accepts connections up to the session limits, reads
//! the PROXY header where the listener takes one (`net::proxy_header`: only
//! from the configured load balancers, before TLS and the greeting; the
//! limits below then count the real client), and runs one task per
//! connection. On shutdown it stops accepting; sessions are
//! told BYE (IMAP has no transaction to finish, but a command in flight
//! gets the grace period to complete). A failed accept (out of file
//! descriptors) is retried after [`crate::net::accept::ACCEPT_BACKOFF`],
//! not at once.
//!
//! Limits (each refusal is one `* BYE [UNAVAILABLE] ...` line, written in
//! plain text even on an implicit-TLS port, where the client sees a failed
//! handshake instead, as from a full server): `imap.max_sessions` in all,
//! `imap.max_sessions_per_ip` per client address, and of those
//! `imap.max_prelogin_per_ip` not logged in yet (the slot is given back at
//! login, see [`connection`]). Each counts the sessions of all IMAP
//! listeners together (143 and 993): they share one semaphore and the
//! per-address counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, Shared, Slots};
use crate::admin::names;
use crate::net::{PerIp, PerIpGuard, ProxyProtocol};

pub struct Listener {
    pub socket: TcpListener,
    /// Replaced by a keyring reload (SIGHUP); each connection takes the
    /// current one when accepted.
    pub shared: watch::Receiver<Arc<Shared>>,
    pub implicit_tls: bool,
    /// `imap.max_sessions`: one semaphore shared by all IMAP listeners.
    pub sessions: Arc<Semaphore>,
    pub max_sessions_per_ip: usize,
    pub max_prelogin_per_ip: usize,
    /// Sessions per client address, shared by all IMAP listeners.
    pub per_ip: PerIp,
    /// Sessions not logged in yet per client address, shared likewise.
    pub prelogin: PerIp,
    /// PROXY protocol from these load balancers (`None`: off).
    pub proxy: Option<ProxyProtocol>,
    pub grace: Duration,
}

/// What a connection must pass before its session starts.
struct Checks {
    max_sessions_per_ip: usize,
    max_prelogin_per_ip: usize,
    per_ip: PerIp,
    prelogin: PerIp,
    proxy: Option<ProxyProtocol>,
}

impl Checks {
    /// The client's address (from the PROXY header when the listener takes
    /// one) with its per-address slots. `None`: refused (with a BYE, except
    /// for a bad PROXY header, which is closed without a word).
    async fn admit(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        listener: &'static str,
    ) -> Option<(TcpStream, SocketAddr, PerIpGuard, PerIpGuard)> {
        let client =
            crate::net::proxy_header::client_of(self.proxy.as_ref(), &mut tcp, peer, listener)
                .await?;
        let ip = client.ip();
        let (Some(ip_slot), Some(prelogin_slot)) = (
            self.per_ip.try_take(ip, self.max_sessions_per_ip),
            self.prelogin.try_take(ip, self.max_prelogin_per_ip),
        ) else {
            tracing::info!(%client, "too many IMAP connections from one address");
            refuse(
                tcp,
                b"* BYE [UNAVAILABLE] Too many connections from your address, try later\r\n",
            )
            .await;
            return None;
        };
        Some((tcp, client, ip_slot, prelogin_slot))
    }
}

/// Refuses a connection with one line, without reading anything.
async fn refuse(mut tcp: TcpStream, line: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = tcp.write_all(line).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

impl Listener {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let sessions = self.sessions;
        let mut tasks = JoinSet::new();
        let checks = Arc::new(Checks {
            max_sessions_per_ip: self.max_sessions_per_ip,
            max_prelogin_per_ip: self.max_prelogin_per_ip,
            per_ip: self.per_ip,
            prelogin: self.prelogin,
            proxy: self.proxy,
        });
        loop {
            let accepted = tokio::select! {
                a = self.socket.accept() => a,
                _ = shutdown.changed() => break,
            };
            while tasks.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, usually: wait rather than spin.
                    let listener = self.shared.borrow().listener;
                    tokio::select! {
                        () = crate::net::accept::back_off(listener, &e) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            };
            if let Some(proxy) = &checks.proxy
                && !proxy.trusts(peer.ip())
            {
                tracing::info!(%peer, "not a configured load balancer (proxy_protocol_from)");
                tasks.spawn(refuse(tcp, b"* BYE Access denied\r\n"));
                continue;
            }
            // Taken before the PROXY header is read: connections waiting
            // for theirs count against max_sessions.
            let Ok(session) = sessions.clone().try_acquire_owned() else {
                tasks.spawn(refuse(
                    tcp,
                    b"* BYE [UNAVAILABLE] Too many connections, try later\r\n",
                ));
                continue;
            };
            let shared = self.shared.borrow().clone();
            let reloads = self.shared.clone();
            let rx = shutdown.clone();
            let tls = self.implicit_tls;
            let checks = checks.clone();
            tasks.spawn(async move {
                let Some((tcp, client, per_ip, prelogin)) =
                    checks.admit(tcp, peer, shared.listener).await
                else {
                    return;
                };
                let slots = Slots {
                    session,
                    per_ip,
                    prelogin: Some(prelogin),
                };
                metrics::counter!(names::IMAP_SESSIONS_TOTAL, "listener" => shared.listener)
                    .increment(1);
                metrics::gauge!(names::IMAP_SESSIONS_ACTIVE).increment(1.0);
                connection::serve(tcp, client, (shared, reloads), tls, rx, slots).await;
                metrics::gauge!(names::IMAP_SESSIONS_ACTIVE).decrement(1.0);
            });
        }
        drop(self.socket);
        let drained = tokio::time::timeout(self.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}
