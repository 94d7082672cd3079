//! What a listener does when `accept` fails.
//!
//! Usually the process is out of file descriptors (EMFILE, ENFILE): the
//! waiting connection stays in the kernel's backlog, the socket stays
//! readable, and an immediate retry fails the same way, so a loop that
//! retried at once would burn a core and log without end. Invariant: every
//! accept loop (SMTP, IMAP, admin) calls [`back_off`] after a failed
//! accept, so it retries at most once per [`ACCEPT_BACKOFF`] and logs at
//! most once per retry; it keeps serving once descriptors free up.

use std::time::Duration;

/// How long a listener waits after a failed accept before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Logs the failed accept of `listener` (one line) and waits
/// [`ACCEPT_BACKOFF`].
pub async fn back_off(listener: &'static str, error: &std::io::Error) {
    tracing::warn!(
        listener,
        error = %error,
        "accept failed (out of file descriptors? raise LimitNOFILE); retrying in 100 ms"
    );
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_accept_waits_before_the_next() {
        let started = tokio::time::Instant::now();
        let e = std::io::Error::from_raw_os_error(24);
        back_off("test", &e).await;
        assert!(started.elapsed() >= ACCEPT_BACKOFF);
    }
}
