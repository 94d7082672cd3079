//! An SMTP listener: accepts connections, reads the PROXY header where the
//! listener takes one (`net::proxy_header`: only from the configured load
//! balancers, before anything else), applies the connection limits and (for
//! relay listeners) the allowed client networks to the real client, and runs
//! one task per connection. The limits count the sessions of all SMTP
//! listeners together (`smtp.max_sessions` in all, `smtp.max_sessions_per_ip`
//! per client address): the listeners share one semaphore and one
//! [`PerIp`]. On shutdown it stops accepting and gives in-flight sessions
//! the grace period before closing them. A failed accept (out of file
//! descriptors) is retried after [`crate::net::accept::ACCEPT_BACKOFF`],
//! not at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, Shared};
use crate::admin::names;
use crate::config::Network;
use crate::net::{PerIp, PerIpGuard, ProxyProtocol};

pub struct Listener {
    pub socket: TcpListener,
    pub shared: Arc<Shared>,
    pub implicit_tls: bool,
    /// Empty: anyone may connect (submission ports authenticate instead).
    pub allowed: Vec<Network>,
    /// `smtp.max_sessions`: one semaphore shared by all SMTP listeners.
    pub sessions: Arc<Semaphore>,
    pub max_per_ip: usize,
    /// Sessions per client address, shared by all SMTP listeners.
    pub per_ip: PerIp,
    /// PROXY protocol from these load balancers (`None`: off).
    pub proxy: Option<ProxyProtocol>,
    pub grace: Duration,
}

/// What a connection must pass before its session starts.
struct Checks {
    allowed: Vec<Network>,
    max_per_ip: usize,
    proxy: Option<ProxyProtocol>,
    per_ip: PerIp,
}

impl Checks {
    /// Whether `allowed_networks` lets `ip` in (empty: anyone).
    fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(ip))
    }

    /// The client's address (from the PROXY header when the listener takes
    /// one), checked against `allowed_networks` and the per-address limit.
    /// `None`: refused (and answered, except for a bad PROXY header, which
    /// is closed without a word).
    async fn admit(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        listener: &'static str,
    ) -> Option<(TcpStream, SocketAddr, PerIpGuard)> {
        let client =
            crate::net::proxy_header::client_of(self.proxy.as_ref(), &mut tcp, peer, listener)
                .await?;
        let ip = client.ip();
        if !self.allows(ip) {
            tracing::info!(%client, "client not in allowed_networks");
            refuse(tcp, "554 5.7.1 Access denied\r\n").await;
            return None;
        }
        let Some(ip_slot) = self.per_ip.try_take(ip, self.max_per_ip) else {
            tracing::info!(%client, "too many SMTP connections from one address");
            refuse(tcp, "421 4.7.0 Too many connections from your address\r\n").await;
            return None;
        };
        Some((tcp, client, ip_slot))
    }
}

/// Refuses a connection with one reply line, without reading anything.
async fn refuse(mut tcp: TcpStream, line: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = tcp.write_all(line.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

impl Listener {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let sessions = self.sessions;
        let mut tasks = JoinSet::new();
        let checks = Arc::new(Checks {
            allowed: self.allowed,
            max_per_ip: self.max_per_ip,
            proxy: self.proxy,
            per_ip: self.per_ip,
        });
        loop {
            let accepted = tokio::select! {
                a = self.socket.accept() => a,
                _ = shutdown.changed() => break,
            };
            // Reap finished sessions as we go.
            while tasks.try_join_next().is_some() {}
            let (tcp, peer): (TcpStream, SocketAddr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, usually: wait rather than spin.
                    tokio::select! {
                        () = crate::net::accept::back_off(self.shared.listener, &e) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            };
            // Without a PROXY header to wait for, an address outside
            // allowed_networks is refused before it takes a session slot.
            let refused = match &checks.proxy {
                Some(proxy) if !proxy.trusts(peer.ip()) => {
                    Some("not a configured load balancer (proxy_protocol_from)")
                }
                None if !checks.allows(peer.ip()) => Some("client not in allowed_networks"),
                _ => None,
            };
            if let Some(why) = refused {
                tracing::info!(%peer, "{why}");
                tasks.spawn(refuse(tcp, "554 5.7.1 Access denied\r\n"));
                continue;
            }
            // Taken before the PROXY header is read: connections waiting
            // for theirs count against max_sessions.
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                tasks.spawn(refuse(
                    tcp,
                    "421 4.7.0 Too many connections, try again later\r\n",
                ));
                continue;
            };
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            let tls = self.implicit_tls;
            let checks = checks.clone();
            tasks.spawn(async move {
                let Some((tcp, client, ip_slot)) = checks.admit(tcp, peer, shared.listener).await
                else {
                    return;
                };
                metrics::counter!(names::SMTP_SESSIONS_TOTAL, "listener" => shared.listener)
                    .increment(1);
                metrics::gauge!(names::SMTP_SESSIONS_ACTIVE).increment(1.0);
                connection::serve(tcp, client, shared, tls, rx, (ip_slot, permit)).await;
                metrics::gauge!(names::SMTP_SESSIONS_ACTIVE).decrement(1.0);
            });
        }
        drop(self.socket);
        // In-flight transactions get the grace period, then are cut.
        let drained = tokio::time::timeout(self.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = tasks.len(),
                "grace period over: closing sessions"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}
