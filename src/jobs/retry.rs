//! Backoff for a busy or flaky provider: a transient failure (`NO
//! [LIMIT]`, `[UNAVAILABLE]`, BYE, a lost connection) is tried again after
//! a pause that doubles each time, up to a limit; anything else is final.

use std::future::Future;
use std::time::Duration;

use super::client::ClientError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub retries: u32,
    /// The first pause; doubled each retry, at most [`MAX_PAUSE`].
    pub first: Duration,
}

pub const MAX_PAUSE: Duration = Duration::from_secs(60);

impl Backoff {
    /// The pause before retry number `attempt` (from 1).
    pub fn pause(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_PAUSE)
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are
    /// used up; `on_retry` hears of each retry (attempt, why).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, &E),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Transient,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    on_retry(attempt, &e);
                    tokio::time::sleep(self.pause(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// An error that may go away if tried again.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for ClientError {
    fn is_transient(&self) -> bool {
        ClientError::is_transient(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_minute() {
        let b = Backoff {
            retries: 30,
            first: Duration::from_millis(500),
        };
        assert_eq!(b.pause(1), Duration::from_millis(500));
        assert_eq!(b.pause(2), Duration::from_secs(1));
        assert_eq!(b.pause(4), Duration::from_secs(4));
        assert_eq!(b.pause(30), MAX_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_final_ones_are_not() {
        let b = Backoff {
            retries: 3,
            first: Duration::from_millis(10),
        };
        let mut calls = 0;
        let r: Result<(), ClientError> = b
            .run(
                || {
                    calls += 1;
                    async { Err(ClientError::Closed) }
                },
                |_, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 4, "the first try and three retries");
        let mut calls = 0;
        let r: Result<(), ClientError> = b
            .run(
                || {
                    calls += 1;
                    async { Err(ClientError::Invalid("x")) }
                },
                |_, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = b
            .run(
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        if n < 3 {
                            Err(ClientError::Bye("busy".into()))
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_, _| {},
            )
            .await;
        assert_eq!(r.ok(), Some(3));
    }
}
