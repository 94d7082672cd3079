//! An IMAP listener: accepts connections up to the session limit and runs
//! one task per connection. On shutdown it stops accepting; sessions are
//! told BYE (IMAP has no transaction to finish, but a command in flight
//! gets the grace period to complete).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, Shared};
use crate::admin::names;

pub struct Listener {
    pub socket: TcpListener,
    pub shared: Arc<Shared>,
    pub implicit_tls: bool,
    pub max_sessions: usize,
    pub grace: Duration,
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
            let (mut tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                // Plain text even on an implicit-TLS port: the client gets
                // a handshake error instead, which is what it would get
                // from a full server anyway.
                tasks.spawn(async move {
                    let _ = tcp
                        .write_all(b"* BYE [UNAVAILABLE] Too many connections, try later\r\n")
                        .await;
                });
                continue;
            };
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            let tls = self.implicit_tls;
            metrics::counter!(names::IMAP_SESSIONS_TOTAL, "listener" => shared.listener)
                .increment(1);
            tasks.spawn(async move {
                metrics::gauge!(names::IMAP_SESSIONS_ACTIVE).increment(1.0);
                connection::serve(tcp, peer, shared, tls, rx).await;
                metrics::gauge!(names::IMAP_SESSIONS_ACTIVE).decrement(1.0);
                drop(permit);
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
