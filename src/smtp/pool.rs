//! Idle provider connections kept for the next relay session, so that a
//! client that connects once per message does not cost a provider
//! connection (TCP, greeting, EHLO, STARTTLS) per message.
//!
//! Invariants:
//!
//! - Only connections that carry nothing of a session are pooled: relay
//!   listeners only (no AUTH: a submission session's provider connection
//!   is logged in as its user and stays that session's own until it
//!   ends), and only with no transaction at the provider. A connection
//!   that may hold one ([`Upstream::in_transaction`]: a MAIL sent, even a
//!   refused one, and not yet ended by the final reply after DATA or a 250
//!   to RSET) is sent `RSET` first (in the background) and pooled only on
//!   a 250.
//! - A connection that failed, timed out, or broke lockstep is never given
//!   back: the shell drops it where the failure is seen.
//! - At most `smtp.provider_pool_size` idle connections; one idle longer
//!   than `smtp.provider_pool_idle_secs` is closed (QUIT), by the next
//!   [`Pool::take`] or by the reaper that runs every half of it. A
//!   connection on which the provider spoke or closed while idle (its own
//!   idle timeout's `421`) is closed rather than handed out.
//! - Lockstep is the shell's, unchanged: a pooled connection is handed to
//!   one session at a time, whose client still gets the provider's own
//!   reply to each command. If the first command on a pooled connection
//!   fails (the provider closed it just now) or is answered 421, the
//!   shell drops it and sends the command again on another: nothing of a
//!   message was sent yet, so nothing can be delivered twice.
//!
//! Pooled connections do not get `NOOP`s; `smtp.provider_keepalive_secs`
//! keeps its meaning (a connection waiting inside a transaction while a
//! sealed message is received). Set the idle time below the provider's own
//! idle timeout (Postfix `smtpd_timeout`: 300 s).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::time::timeout;

use super::connection::CLOSE_TIMEOUT;
use super::upstream::Upstream;
use crate::admin::names;

struct Idle {
    up: Upstream,
    since: Instant,
}

/// The idle provider connections of a `writ serve`, shared by its relay
/// listeners.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    max_idle_time: Duration,
}

impl Pool {
    /// A pool of at most `max_idle` connections, each idle at most
    /// `max_idle_time`; starts its reaper (needs a tokio runtime).
    pub fn start(max_idle: usize, max_idle_time: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            max_idle_time,
        });
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        let every = (max_idle_time / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(pool) => pool.reap(),
                    None => return,
                }
            }
        });
        pool
    }

    /// Publishes how many connections are idle (called with the lock held,
    /// after every change).
    fn publish(idle: &[Idle]) {
        metrics::gauge!(names::UPSTREAM_IDLE).set(idle.len() as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves a plain list: still usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently pooled connection that is still fresh and on which
    /// the provider has not spoken unasked; `None` when there is none (the
    /// caller connects). The ones passed over are closed.
    pub fn take(&self) -> Option<Upstream> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.lock();
            loop {
                let Some(mut i) = idle.pop() else {
                    Self::publish(&idle);
                    break None;
                };
                if i.since.elapsed() <= self.max_idle_time && !i.up.spoke_unasked() {
                    Self::publish(&idle);
                    break Some(i.up);
                }
                stale.push(i.up);
            }
        };
        for up in stale {
            close(up);
        }
        if found.is_some() {
            metrics::counter!(names::UPSTREAM_CONNECTIONS_TOTAL, "how" => "reused").increment(1);
        }
        found
    }

    /// A connection the session is done with: pooled if there is room
    /// (after `RSET` when it may hold a transaction), else closed.
    pub fn give_back(self: &Arc<Self>, up: Upstream) {
        if self.max_idle == 0 {
            close(up);
            return;
        }
        if up.reusable() {
            self.put(up);
            return;
        }
        if up.next_ahead().is_some() {
            // Replies owed to commands sent ahead: not worth sorting out.
            close(up);
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let mut up = up;
            match timeout(CLOSE_TIMEOUT, up.command("RSET")).await {
                Ok(Ok(r)) if r.code == 250 => pool.put(up),
                // The provider kept its transaction or failed: not reusable.
                _ => {}
            }
        });
    }

    fn put(&self, up: Upstream) {
        let refused = {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.push(Idle {
                    up,
                    since: Instant::now(),
                });
                Self::publish(&idle);
                None
            } else {
                Some(up)
            }
        };
        if let Some(up) = refused {
            close(up);
        }
    }

    /// Closes the connections idle past the limit.
    fn reap(&self) {
        let expired: Vec<Upstream> = {
            let mut idle = self.lock();
            let (keep, expired): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.since.elapsed() <= self.max_idle_time);
            *idle = keep;
            Self::publish(&idle);
            expired.into_iter().map(|i| i.up).collect()
        };
        for up in expired {
            close(up);
        }
    }
}

/// Says QUIT in the background (bounded by [`CLOSE_TIMEOUT`], as is the
/// RSET before pooling), then drops the connection.
fn close(up: Upstream) {
    tokio::spawn(timeout(CLOSE_TIMEOUT, up.quit()));
}
