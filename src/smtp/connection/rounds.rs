//! A connection's commands to the provider: taking a connection (from the
//! pool, or a new one), giving it back between transactions, and
//! PIPELINING MAIL/RCPT toward a provider that offers it.
//!
//! Pipelining (RFC 2920) keeps lockstep: when the session sends a MAIL or
//! RCPT and the client has already sent more RCPT lines (they are in the
//! read buffer, complete), a copy of the session is asked what it would
//! send for each if every reply so far were positive; the lines it would
//! send go to the provider in the same write. The real session then takes
//! the client's lines one by one as before (they are queued in
//! [`Conn::queued`]), and each command it sends that was sent ahead gets
//! the provider's reply to exactly that command, read in order. A line
//! the real session does not send after all (the MAIL was refused, so
//! its RCPT is answered `503` by writ) has its provider reply read and
//! dropped; the provider refused it too (it had no transaction), and if it
//! did not, the connection is dropped rather than left out of step.

use std::time::Instant;

use super::{Conn, End};
use crate::admin::names;
use crate::net;
use crate::smtp::reply::Reply;
use crate::smtp::session::{Step, UpstreamFailure};
use crate::smtp::upstream::{Upstream, UpstreamError};

/// Commands sent to the provider in one batch, at most: the first and
/// this many RCPTs the client pipelined after it (the session's own
/// `max_recipients` also stops a batch).
const MAX_AHEAD: usize = 100;

/// Is `line` a command that may head or join a batch?
fn verb_is(line: &[u8], verb: &[u8]) -> bool {
    line.len() > verb.len()
        && line[..verb.len()].eq_ignore_ascii_case(verb)
        && line[verb.len()] == b' '
}

impl Conn {
    /// Between transactions: the provider connection goes back to the
    /// pool (relay listeners), and the session opens (takes) one again at
    /// its next MAIL. A connection the session no longer counts as open
    /// (it gave up on it) is never pooled.
    pub(super) fn release_upstream(&mut self) {
        let Some(pool) = &self.shared.pool else {
            return;
        };
        if !self.session.upstream_open() {
            return;
        }
        if let Some(up) = self.upstream.take() {
            pool.give_back(up);
        }
        self.session.upstream_dropped();
    }

    /// What the client pipelined after `line` that can go to the provider
    /// with it: the session's lines for the RCPTs already complete in the
    /// read buffer, as a copy of the session would send them if every
    /// reply were positive, and the client bytes each takes.
    fn lines_ahead(&self, line: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        // Lines already queued come first: the buffer is not next.
        if !self.queued.is_empty() {
            return out;
        }
        if !(verb_is(line.as_bytes(), b"MAIL") || verb_is(line.as_bytes(), b"RCPT")) {
            return out;
        }
        let positive = || Ok(Reply::new(250, "2.0.0 OK"));
        let mut probe = self.session.clone();
        probe.upstream_reply(positive());
        let buf = self.client.buffer();
        let mut pos = 0;
        while out.len() < MAX_AHEAD {
            let Some(n) = buf[pos..].iter().position(|&b| b == b'\n') else {
                break;
            };
            if n + 1 > self.shared.max_line_length {
                break;
            }
            let cmd = net::trim_eol(&buf[pos..pos + n + 1]);
            if !verb_is(cmd, b"RCPT") {
                break;
            }
            match probe.command(cmd) {
                Step::Upstream { open: false, line } => out.push((line, n + 1)),
                _ => break,
            }
            probe.upstream_reply(positive());
            pos += n + 1;
        }
        out
    }

    /// Moves the client lines sent ahead from the read buffer to
    /// [`Conn::queued`]: the session takes them next, in order.
    fn queue_ahead(&mut self, ahead: &[(String, usize)]) {
        use tokio::io::AsyncBufReadExt;
        for (_, len) in ahead {
            let line = net::trim_eol(&self.client.buffer()[..*len]).to_vec();
            self.client.consume(*len);
            self.queued.push_back(line);
        }
    }

    /// Runs the session on a queued client line (its command was sent
    /// ahead). Queued lines and commands sent ahead pair up in order: if
    /// the session did not send this one after all (no reply was taken
    /// for it), its reply is read and dropped; a positive one would leave
    /// the provider out of step, so the connection is dropped.
    pub(super) async fn queued_command(&mut self, line: &[u8]) -> Result<bool, End> {
        let owed = self.upstream.as_ref().map_or(0, Upstream::ahead);
        let step = self.session.command(line);
        let close = self.execute(step).await?;
        if owed > 0
            && let Some(up) = self.upstream.as_mut()
            && up.ahead() == owed
        {
            let in_step = matches!(up.reply_ahead().await, Ok(r) if !r.is_positive());
            if !in_step {
                tracing::warn!("provider accepted a pipelined command writ withdrew; dropping it");
                self.upstream = None;
                self.session.upstream_dropped();
            }
        }
        Ok(close)
    }

    /// Sends `line` and what can go with it on `up`; the reply to `line`.
    async fn send_batch(
        up: &mut Upstream,
        line: &str,
        ahead: &[(String, usize)],
    ) -> Result<Reply, UpstreamError> {
        if ahead.is_empty() {
            return up.command(line).await;
        }
        let mut lines = Vec::with_capacity(ahead.len() + 1);
        lines.push(line.to_owned());
        lines.extend(ahead.iter().map(|(l, _)| l.clone()));
        up.command_batch(&lines).await
    }

    /// The first command of a transaction on a pooled connection. One the
    /// provider has closed or is closing (the command fails, or is
    /// answered 421: its idle timeout) is dropped and the next tried;
    /// nothing of a message went over it. `None`: no pooled connection
    /// answered (the caller connects).
    async fn pooled_round(&mut self, line: &str) -> Option<Reply> {
        /// Pooled connections tried for one command before connecting.
        const TRIES: usize = 2;
        let pool = self.shared.pool.clone()?;
        for _ in 0..TRIES {
            let mut up = pool.take()?;
            let ahead = if up.pipelining() {
                self.lines_ahead(line)
            } else {
                Vec::new()
            };
            match Self::send_batch(&mut up, line, &ahead).await {
                Ok(r) if r.code != 421 => {
                    self.queue_ahead(&ahead);
                    self.upstream = Some(up);
                    return Some(r);
                }
                Ok(_) | Err(_) => {
                    tracing::debug!("pooled provider connection was closed; trying another");
                }
            }
        }
        None
    }

    /// One command to the provider (opening the connection first if
    /// asked), or the reply to it if it was sent ahead.
    pub(super) async fn upstream_round(&mut self, open: bool, line: &str) -> Step {
        let started = Instant::now();
        let mut result = None;
        if !open
            && let Some(up) = self.upstream.as_mut()
            && up.next_ahead() == Some(line)
        {
            result = Some(up.reply_ahead().await);
        }
        if result.is_none() && !open && self.upstream.is_none() {
            // A command of a transaction, or of an AUTH exchange, whose
            // connection is gone: a new one would hold neither (its MAIL,
            // its login), so the command is not sent on one.
            return self
                .session
                .upstream_reply(Err(UpstreamFailure::Unavailable));
        }
        if result.is_none() && open {
            if let Some(r) = self.pooled_round(line).await {
                result = Some(Ok(r));
            } else {
                match Upstream::connect(&self.shared.target).await {
                    Ok(up) => {
                        metrics::counter!(names::UPSTREAM_CONNECTIONS_TOTAL, "how" => "new")
                            .increment(1);
                        self.upstream = Some(up)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "provider unavailable");
                        metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => "error")
                            .increment(1);
                        return self
                            .session
                            .upstream_reply(Err(UpstreamFailure::Unavailable));
                    }
                }
            }
        }
        let result = match result {
            Some(r) => r,
            None => {
                let pipelining = self.upstream.as_ref().is_some_and(Upstream::pipelining);
                let ahead = if pipelining {
                    self.lines_ahead(line)
                } else {
                    Vec::new()
                };
                let Some(up) = self.upstream.as_mut() else {
                    return self
                        .session
                        .upstream_reply(Err(UpstreamFailure::Unavailable));
                };
                let r = Self::send_batch(up, line, &ahead).await;
                if r.is_ok() {
                    self.queue_ahead(&ahead);
                }
                r
            }
        };
        metrics::histogram!(names::UPSTREAM_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => r.class()).increment(1);
                self.session.upstream_reply(Ok(r))
            }
            Err(e) => {
                tracing::warn!(error = %e, "provider connection failed");
                metrics::counter!(names::UPSTREAM_REPLIES_TOTAL, "class" => "error").increment(1);
                self.upstream = None;
                self.session
                    .upstream_reply(Err(UpstreamFailure::Unavailable))
            }
        }
    }

    /// Resets the provider's transaction after a refused message.
    pub(super) async fn reset_upstream(&mut self) {
        if let Some(up) = self.upstream.as_mut()
            && up.command("RSET").await.is_err()
        {
            self.upstream = None;
            self.session.upstream_dropped();
        }
    }
}
