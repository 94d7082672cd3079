//! The account's watcher: NOTIFY (RFC 5465) where the provider offers it,
//! IDLE ([`super::idle`]) where it does not, polling alone otherwise.
//!
//! With NOTIFY, one provider connection per account, nothing selected,
//! asks for new-message events in every mailbox of the personal namespace
//! (`NOTIFY SET (personal (MessageNew MessageExpunge))`); each `STATUS`
//! the provider then sends for a mailbox the sweep sweeps wakes the
//! account's loop, so mail delivered into any folder (not only those
//! named in `[sweep] idle`) is sealed within seconds. The loop is woken
//! once more whenever a watch is (re)established, for what arrived before
//! it was in place. Events for mailboxes the sweep leaves alone (`skip`,
//! `skip_special_use` as LIST says when the watch starts, or not in
//! `mailboxes`) are dropped: saving a draft every few seconds does not
//! make the sweep run rounds.
//!
//! A provider that does not list NOTIFY among its capabilities, or
//! refuses `NOTIFY SET` (NO or BAD), is watched with IDLE on the `idle`
//! mailboxes instead, one connection each, from then on. A watcher that
//! fails otherwise backs off like a round and reconnects.
//!
//! Bounds: every wait is at most `poll_secs` (then `NOOP`, which keeps
//! the session past the provider's autologout) plus one provider timeout;
//! every response read is at most [`WATCH_MAX_RESPONSE`] bytes; at most
//! [`MAX_EVENTS`] mailbox names are taken per wake-up (the rest of a burst
//! is read and dropped: one wake-up covers every mailbox anyway).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::account::MAX_MAILBOXES;
use super::{Sweep, SweepError, idle, pause, stopping};
use crate::jobs::client::{Client, ClientError, WATCH_MAX_RESPONSE};

/// Mailbox names taken from one burst of NOTIFY events, at most.
pub const MAX_EVENTS: usize = 64;

/// How a NOTIFY watch ended: it cannot be had at this provider.
enum Unavailable {
    /// No NOTIFY among the capabilities.
    Absent,
    /// `NOTIFY SET` answered NO or BAD.
    Refused(ClientError),
}

/// Watches `user`'s mailboxes until `stop`, waking `wake` on new mail:
/// NOTIFY if the provider has it, else IDLE on the `idle` mailboxes.
pub async fn watch(
    sweep: Arc<Sweep>,
    user: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let unavailable = loop {
        let watched = tokio::select! {
            _ = stopping(&mut stop) => return,
            r = watch_once(&sweep, &user, &wake, &mut failures) => r,
        };
        match watched {
            Ok(unavailable) => break unavailable,
            Err(e) => {
                let wait = sweep.failed(&user, &mut failures);
                tracing::warn!(
                    account = %user, error = %e, retry_in_secs = wait.as_secs(),
                    "sweep: NOTIFY watch failed"
                );
                // Something may have arrived unseen meanwhile.
                wake.notify_one();
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
        }
    };
    match &unavailable {
        Unavailable::Absent => tracing::info!(
            account = %user, "sweep: no NOTIFY at the provider; watching with IDLE"
        ),
        Unavailable::Refused(e) => tracing::info!(
            account = %user, error = %e, "sweep: NOTIFY refused; watching with IDLE"
        ),
    }
    idle_instead(sweep, user, wake, stop).await;
}

/// IDLE watchers on the `idle` mailboxes the sweep does not skip, until
/// `stop`.
async fn idle_instead(
    sweep: Arc<Sweep>,
    user: String,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    let mut watchers = tokio::task::JoinSet::new();
    for mailbox in &sweep.config.idle {
        if sweep.config.skips(mailbox, &[]) {
            continue;
        }
        watchers.spawn(idle::watch(
            sweep.clone(),
            user.clone(),
            mailbox.clone(),
            wake.clone(),
            stop.clone(),
        ));
    }
    while watchers.join_next().await.is_some() {}
}

/// One connection's NOTIFY watch: returns only when NOTIFY cannot be had
/// (`Ok`) or with an error (it is renewed by the caller).
async fn watch_once(
    sweep: &Sweep,
    user: &str,
    wake: &Notify,
    failures: &mut u32,
) -> Result<Unavailable, SweepError> {
    let creds = sweep.credentials(user).await?;
    let mut client = Client::login_limited(&sweep.target, &creds, WATCH_MAX_RESPONSE).await?;
    if !client.has_capability("NOTIFY") {
        client.logout().await;
        return Ok(Unavailable::Absent);
    }
    let left_alone = left_alone(sweep, &mut client).await?;
    match client.notify_new_mail().await {
        Ok(()) => {}
        Err(e @ ClientError::Refused { .. }) if !e.is_transient() => {
            client.logout().await;
            return Ok(Unavailable::Refused(e));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(account = %user, "sweep: watching every mailbox with NOTIFY");
    // Mail that arrived after the account's last round and before this
    // watch was in place was announced to nobody: one round now.
    wake.notify_one();
    let each = Duration::from_secs(sweep.config.poll_secs.clamp(1, 1740));
    loop {
        let mailboxes = client.notified(each, MAX_EVENTS).await?;
        *failures = 0;
        if let Some(mailbox) = mailboxes
            .iter()
            .find(|m| sweeps(sweep, &left_alone, m.as_str()))
        {
            tracing::debug!(account = %user, %mailbox, "sweep: NOTIFY reports new mail");
            wake.notify_one();
        }
    }
}

/// The mailboxes LIST names that the sweep leaves alone (by name or
/// special use), at most [`MAX_MAILBOXES`] looked at.
async fn left_alone(sweep: &Sweep, client: &mut Client) -> Result<HashSet<String>, SweepError> {
    Ok(client
        .list_with_attributes()
        .await?
        .into_iter()
        .take(MAX_MAILBOXES)
        .filter(|(name, attributes)| sweep.config.skips(name, attributes))
        .map(|(name, _)| name)
        .collect())
}

/// Is `mailbox` one the sweep sweeps (as far as the watcher knows)?
fn sweeps(sweep: &Sweep, left_alone: &HashSet<String>, mailbox: &str) -> bool {
    let same = |a: &str, b: &str| {
        a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
    };
    let wanted = &sweep.config.mailboxes;
    !left_alone.contains(mailbox)
        && !sweep.config.skips(mailbox, &[])
        && (wanted.is_empty() || wanted.iter().any(|w| same(w, mailbox)))
}
