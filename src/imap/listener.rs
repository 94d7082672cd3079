//! An IMAP listener: accepts connections up to the session limits and runs
//! one task per connection. On shutdown it stops accepting; sessions are
//! told BYE (IMAP has no transaction to finish, but a command in flight
//! gets the grace period to complete).
//!
//! Limits (each refusal is one `* BYE [UNAVAILABLE] ...` line, written in
//! plain text even on an implicit-TLS port, where the client sees a failed
//! handshake instead, as from a full server): `imap.max_sessions` in all,
//! `imap.max_sessions_per_ip` per client address, and of those
//! `imap.max_prelogin_per_ip` not logged in yet (the slot is given back at
//! login, see [`connection`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, Shared, Slots};
use crate::admin::names;
use crate::net::PerIp;

pub struct Listener {
    pub socket: TcpListener,
    pub shared: Arc<Shared>,
    pub implicit_tls: bool,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_prelogin_per_ip: usize,
    /// Sessions per client address, shared by all IMAP listeners.
    pub per_ip: PerIp,
    /// Sessions not logged in yet per client address, shared likewise.
    pub prelogin: PerIp,
    pub grace: Duration,
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
        let sessions = Arc::new(Semaphore::new(self.max_sessions));
        let mut tasks = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = self.socket.accept() => a,
                _ = shutdown.changed() => break,
            };
            while tasks.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(session) = sessions.clone().try_acquire_owned() else {
                tasks.spawn(refuse(
                    tcp,
                    b"* BYE [UNAVAILABLE] Too many connections, try later\r\n",
                ));
                continue;
            };
            let ip = peer.ip();
            let (Some(ip_slot), Some(prelogin_slot)) = (
                self.per_ip.try_take(ip, self.max_sessions_per_ip),
                self.prelogin.try_take(ip, self.max_prelogin_per_ip),
            ) else {
                tracing::info!(%peer, "too many IMAP connections from one address");
                tasks.spawn(refuse(
                    tcp,
                    b"* BYE [UNAVAILABLE] Too many connections from your address, try later\r\n",
                ));
                continue;
            };
            let slots = Slots {
                session,
                per_ip: ip_slot,
                prelogin: Some(prelogin_slot),
            };
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            let tls = self.implicit_tls;
            metrics::counter!(names::IMAP_SESSIONS_TOTAL, "listener" => shared.listener)
                .increment(1);
            tasks.spawn(async move {
                metrics::gauge!(names::IMAP_SESSIONS_ACTIVE).increment(1.0);
                connection::serve(tcp, peer, shared, tls, rx, slots).await;
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
