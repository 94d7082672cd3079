//! The connection to the provider's SMTP server: connect (implicit TLS,
//! STARTTLS or, to loopback only, plain: [`crate::net::Endpoint`]), EHLO,
//! then one command at a time in lockstep with the client's session.
//! Every read and write waits at most the provider timeout
//! (`[provider.smtp] timeout_secs`); past it the provider connection is
//! given up and the client told 451 4.4.2. A reply line past 64 KiB, or
//! a reply past [`super::reply::MAX_REPLY_LINES`] lines or
//! [`super::reply::MAX_REPLY_BYTES`] in all, is malformed: the connection
//! is given up and the client told 451 4.4.1.
//!
//! Written on tokio directly rather than with lettre: lockstep needs every
//! provider reply verbatim (to mirror it) and SASL exchanges relayed step by
//! step, which a mail-sending library hides.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufStream};
use tokio::time::timeout;

use super::data::DotStuffer;
use super::reply::{Reply, ReplyParser};
use crate::config::{UpstreamConfig, UpstreamSecurity};
use crate::net::{self, ConnectError, Endpoint, LineEnd, Stream};

/// Longest reply line accepted from the provider.
const MAX_REPLY_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP, TLS, the loopback-only rule for plain, the TLS settings.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the provider did not answer within {0} s")]
    Timeout(u64),
    #[error("the provider closed the connection")]
    Closed,
    #[error("the provider refused the session: {0}")]
    Refused(String),
    #[error("the provider sent a malformed reply")]
    Malformed,
    #[error("provider connection: {0}")]
    Io(#[from] io::Error),
}

/// Where and how to reach the provider; built once at start-up.
#[derive(Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    /// The name writ gives in EHLO.
    pub ehlo_name: String,
}

impl Target {
    pub fn from_config(cfg: &UpstreamConfig, ehlo_name: &str) -> Result<Target, UpstreamError> {
        Ok(Target {
            endpoint: Endpoint::from_config(cfg)?,
            ehlo_name: ehlo_name.to_owned(),
        })
    }
}

pub struct Upstream {
    conn: BufStream<Stream>,
    line: Vec<u8>,
    wait: Duration,
    /// The provider may hold a transaction (or state from a refused MAIL)
    /// on this connection: a MAIL sent, not yet ended by the reply after
    /// the end of data or by a 250 to RSET. Such a connection is reset
    /// before it is pooled.
    in_transaction: bool,
    /// The provider offers PIPELINING (RFC 2920) in its EHLO reply.
    pipelining: bool,
    /// Command lines sent ahead in a batch whose replies are not read yet,
    /// in order ([`Upstream::command_batch`]).
    ahead: VecDeque<String>,
}

impl Upstream {
    /// Connects, reads the greeting, says EHLO, and upgrades with STARTTLS
    /// when configured. The connection is then ready for MAIL or AUTH.
    pub async fn connect(t: &Target) -> Result<Upstream, UpstreamError> {
        let stream = t.endpoint.connect("SMTP").await?;
        let mut up = Upstream {
            conn: BufStream::new(stream),
            line: Vec::new(),
            wait: t.endpoint.timeout,
            in_transaction: false,
            pipelining: false,
            ahead: VecDeque::new(),
        };
        let greeting = up.read_reply().await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Refused(
                greeting.render().trim_end().to_owned(),
            ));
        }
        up.ehlo(t).await?;
        if t.endpoint.security == UpstreamSecurity::Starttls {
            let r = up.command("STARTTLS").await?;
            if r.code != 220 {
                return Err(UpstreamError::Refused(format!(
                    "STARTTLS: {}",
                    r.render().trim_end()
                )));
            }
            // Nothing may be buffered from before the handshake.
            let stream = std::mem::replace(up.conn.get_mut(), Stream::Upgrading);
            let tls = t.endpoint.starttls_handshake(stream).await?;
            up.conn = BufStream::new(tls);
            up.ehlo(t).await?;
        }
        Ok(up)
    }

    async fn ehlo(&mut self, t: &Target) -> Result<(), UpstreamError> {
        let r = self.command(&format!("EHLO {}", t.ehlo_name)).await?;
        if r.code != 250 {
            return Err(UpstreamError::Refused(format!(
                "EHLO: {}",
                r.render().trim_end()
            )));
        }
        self.pipelining = r
            .lines
            .iter()
            .skip(1)
            .any(|l| l.trim().eq_ignore_ascii_case("PIPELINING"));
        Ok(())
    }

    /// May the provider hold a transaction on this connection (a MAIL it
    /// accepted and nothing since that ended it)?
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Does the provider take pipelined commands (RFC 2920)?
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// Has the provider spoken or closed while nobody asked it anything
    /// (an idle timeout's `421`, a FIN, a reset)? Such a connection is not
    /// used for a message. Looks without waiting: only what has already
    /// arrived counts.
    pub fn spoke_unasked(&mut self) -> bool {
        use std::pin::Pin;
        use std::task::{Context, Waker};
        use tokio::io::AsyncBufRead;
        let mut cx = Context::from_waker(Waker::noop());
        // Ready with data, EOF (empty) or an error: in every case not
        // idle any more.
        Pin::new(&mut self.conn).poll_fill_buf(&mut cx).is_ready()
    }

    async fn read_reply(&mut self) -> Result<Reply, UpstreamError> {
        let mut parser = ReplyParser::default();
        loop {
            let end = timeout(
                self.wait,
                net::read_line(&mut self.conn, &mut self.line, MAX_REPLY_LINE),
            )
            .await
            .map_err(|_| UpstreamError::Timeout(self.wait.as_secs()))??;
            match end {
                None | Some(LineEnd::Eof) => return Err(UpstreamError::Closed),
                Some(LineEnd::TooLong) => return Err(UpstreamError::Malformed),
                Some(LineEnd::Lf) => {}
            }
            let line = net::trim_eol(&self.line);
            match parser.line(line) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(_) => return Err(UpstreamError::Malformed),
            }
        }
    }

    /// Sends one command line and returns the provider's reply (refused,
    /// as malformed, while replies to commands sent ahead are owed).
    pub async fn command(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        self.command_batch(std::slice::from_ref(&line.to_owned()))
            .await
    }

    /// Sends `lines` in one write (PIPELINING, RFC 2920) and returns the
    /// reply to the first. The replies to the others are read in order,
    /// one at a time, by [`Upstream::reply_ahead`]: each still answers
    /// exactly its own command.
    pub async fn command_batch(&mut self, lines: &[String]) -> Result<Reply, UpstreamError> {
        let Some((first, rest)) = lines.split_first() else {
            return Err(UpstreamError::Malformed);
        };
        if !self.ahead.is_empty() {
            // Replies still owed: a new batch would read them as its own.
            return Err(UpstreamError::Malformed);
        }
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.send(&out, true).await?;
        self.ahead = rest.iter().cloned().collect();
        let r = self.read_reply().await?;
        self.track(first, &r);
        Ok(r)
    }

    /// The next command sent ahead whose reply is still to be read.
    pub fn next_ahead(&self) -> Option<&str> {
        self.ahead.front().map(String::as_str)
    }

    /// How many commands sent ahead still owe their reply.
    pub fn ahead(&self) -> usize {
        self.ahead.len()
    }

    /// Reads the reply to the next command sent ahead (see
    /// [`Upstream::next_ahead`]).
    pub async fn reply_ahead(&mut self) -> Result<Reply, UpstreamError> {
        let Some(line) = self.ahead.pop_front() else {
            return Err(UpstreamError::Malformed);
        };
        let r = self.read_reply().await?;
        self.track(&line, &r);
        Ok(r)
    }

    /// Can the connection serve another session: no transaction at the
    /// provider and no reply owed?
    pub fn reusable(&self) -> bool {
        !self.in_transaction && self.ahead.is_empty()
    }

    /// Follows the provider's transaction state from a command and its
    /// reply (see [`Upstream::in_transaction`]). Any MAIL counts, even a
    /// refused one: it may leave state behind (Postfix keeps a refused
    /// `SIZE=` and refuses the next MAIL too, until RSET).
    fn track(&mut self, line: &str, r: &Reply) {
        let verb = line.split(' ').next().unwrap_or("");
        if verb.eq_ignore_ascii_case("MAIL") {
            self.in_transaction = true;
        } else if verb.eq_ignore_ascii_case("RSET") && r.code == 250 {
            self.in_transaction = false;
        }
    }

    /// Writes (and flushes, when `flush`) within the provider timeout: a
    /// provider that stops reading cannot hold the session.
    async fn send(&mut self, bytes: &[u8], flush: bool) -> Result<(), UpstreamError> {
        let conn = &mut self.conn;
        timeout(self.wait, async {
            conn.write_all(bytes).await?;
            if flush {
                conn.flush().await?;
            }
            Ok::<(), io::Error>(())
        })
        .await
        .map_err(|_| UpstreamError::Timeout(self.wait.as_secs()))??;
        Ok(())
    }

    /// Sends DATA. On 354 the caller streams the message with
    /// [`Upstream::write_message`] and ends it with [`Upstream::end_message`];
    /// any other reply is the provider's answer to the transaction.
    pub async fn begin_message(&mut self) -> Result<Reply, UpstreamError> {
        self.command("DATA").await
    }

    /// Message bytes after a 354, dot-stuffed on the way.
    pub async fn write_message(
        &mut self,
        stuffer: &mut DotStuffer,
        chunk: &[u8],
    ) -> Result<(), UpstreamError> {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        stuffer.stuff(chunk, &mut out);
        self.send(&out, false).await
    }

    /// The end marker, then the provider's final reply.
    pub async fn end_message(&mut self, stuffer: &DotStuffer) -> Result<Reply, UpstreamError> {
        let mut out = Vec::new();
        stuffer.finish(&mut out);
        self.send(&out, true).await?;
        let r = self.read_reply().await?;
        if (300..400).contains(&r.code) {
            // The end of data is answered 2xx, 4xx or 5xx (RFC 5321
            // §4.1.1.4): a 3xx says the connection is out of step. Not a
            // delivery; the caller drops the connection.
            return Err(UpstreamError::Malformed);
        }
        // Whatever the reply, the transaction is over (RFC 5321 §4.1.1.4).
        self.in_transaction = false;
        Ok(r)
    }

    /// Says goodbye; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = timeout(Duration::from_secs(5), self.command("QUIT")).await;
        let _ = timeout(Duration::from_secs(5), self.conn.shutdown()).await;
    }
}
