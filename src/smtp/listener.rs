//! An SMTP listener: accepts connections, applies the connection limits and
//! (for relay listeners) the allowed client networks, and runs one task per
//! connection. On shutdown it stops accepting and gives in-flight sessions
//! the grace period before closing them.

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
use crate::net::PerIp;

pub struct Listener {
    pub socket: TcpListener,
    pub shared: Arc<Shared>,
    pub implicit_tls: bool,
    /// Empty: anyone may connect (submission ports authenticate instead).
    pub allowed: Vec<Network>,
    pub max_sessions: usize,
    pub max_per_ip: usize,
    pub grace: Duration,
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
        let sessions = Arc::new(Semaphore::new(self.max_sessions));
        let per_ip = PerIp::default();
        let mut tasks = JoinSet::new();
        let label = self.shared.listener;
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
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let ip = peer.ip();
            if !self.allowed.is_empty() && !self.allowed.iter().any(|n| n.contains(ip)) {
                tracing::info!(%peer, "client not in allowed_networks");
                tasks.spawn(refuse(tcp, "554 5.7.1 Access denied\r\n"));
                continue;
            }
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                tasks.spawn(refuse(
                    tcp,
                    "421 4.7.0 Too many connections, try again later\r\n",
                ));
                continue;
            };
            let Some(ip_slot) = per_ip.try_take(ip, self.max_per_ip) else {
                tasks.spawn(refuse(
                    tcp,
                    "421 4.7.0 Too many connections from your address\r\n",
                ));
                continue;
            };
            metrics::counter!(names::SMTP_SESSIONS_TOTAL, "listener" => label).increment(1);
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            let tls = self.implicit_tls;
            tasks.spawn(async move {
                metrics::gauge!(names::SMTP_SESSIONS_ACTIVE).increment(1.0);
                connection::serve(tcp, peer, shared, tls, rx, (ip_slot, permit)).await;
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
