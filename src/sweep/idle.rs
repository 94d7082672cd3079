//! IDLE watchers (RFC 2177), for a provider without NOTIFY
//! ([`super::notify`]): one provider connection per account and
//! watched mailbox, in IDLE, renewed every `poll_secs`; when the provider
//! reports a change there, the account's sweep is woken, and once when
//! a watch is (re)established, for what arrived before it was in place. A watcher that
//! fails backs off like a round; a provider without IDLE is polled only
//! (the account's rounds run every `poll_secs` either way, so a watcher
//! only makes the sweep faster, never necessary).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{Sweep, SweepError, pause, stopping};
use crate::jobs::client::Client;

/// Watches `mailbox` of `user` until `stop`, waking `wake` on changes.
pub async fn watch(
    sweep: Arc<Sweep>,
    user: String,
    mailbox: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let watched = tokio::select! {
            _ = stopping(&mut stop) => return,
            r = watch_once(&sweep, &user, &mailbox, &wake, &mut failures) => r,
        };
        match watched {
            Err(SweepError::NoIdle) => {
                tracing::info!(account = %user, %mailbox, "sweep: no IDLE at the provider; polling");
                return;
            }
            Err(SweepError::Client(e)) if !e.is_transient() && is_missing(&e) => {
                tracing::warn!(
                    account = %user, %mailbox, error = %e,
                    "sweep: cannot watch this mailbox; polling the others"
                );
                return;
            }
            Err(e) => {
                let wait = sweep.failed(&user, &mut failures);
                tracing::warn!(
                    account = %user, %mailbox, error = %e, retry_in_secs = wait.as_secs(),
                    "sweep: IDLE watch failed"
                );
                // Something may have arrived unseen meanwhile.
                wake.notify_one();
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
            Ok(()) => {}
        }
    }
}

/// A SELECT refused (no such mailbox): watching it again will not help.
fn is_missing(e: &crate::jobs::client::ClientError) -> bool {
    matches!(
        e,
        crate::jobs::client::ClientError::Refused {
            command: "EXAMINE",
            ..
        }
    )
}

/// One connection's watch: returns only with an error (it is renewed by
/// the caller).
async fn watch_once(
    sweep: &Sweep,
    user: &str,
    mailbox: &str,
    wake: &Notify,
    failures: &mut u32,
) -> Result<(), SweepError> {
    let creds = sweep.credentials(user).await?;
    let mut client = Client::login(&sweep.target, &creds).await?;
    if !client.has_capability("IDLE") {
        client.logout().await;
        return Err(SweepError::NoIdle);
    }
    client.select(mailbox, true).await?;
    // Mail that arrived after the account's last round and before this
    // watch was in place was announced to nobody: one round now.
    wake.notify_one();
    let each = Duration::from_secs(sweep.config.poll_secs.clamp(1, 1740));
    loop {
        let changed = client.idle(each).await?;
        *failures = 0;
        if changed {
            wake.notify_one();
        }
    }
}
