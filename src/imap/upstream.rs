//! The connection to the provider's IMAP server: TCP, then implicit TLS,
//! STARTTLS, or (to loopback only) nothing ([`crate::net::Endpoint`]); then
//! the greeting, and `STARTTLS` when configured. What comes after is the
//! typed flow's business ([`super::session`]).

use std::io;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::time::timeout;

use crate::config::UpstreamSecurity;
use crate::net::{self, ConnectError, LineEnd, Stream};

/// Longest greeting or STARTTLS reply line accepted.
const MAX_LINE: usize = 16 * 1024;

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
    #[error("provider connection: {0}")]
    Io(#[from] io::Error),
}

/// Where and how to reach the provider's IMAP server; built at start-up
/// with `Target::from_config`.
pub type Target = net::Endpoint;

/// A provider connection past its greeting (and STARTTLS), ready for the
/// client's first command.
pub struct Upstream {
    pub stream: Stream,
    /// Bytes the provider sent after its greeting, not yet parsed.
    pub pending: Vec<u8>,
}

impl Upstream {
    pub async fn connect(t: &Target) -> Result<Upstream, UpstreamError> {
        let stream = t.connect("IMAP").await?;
        let mut conn = BufReader::new(stream);
        let mut line = Vec::new();
        read(t, &mut conn, &mut line).await?;
        check_greeting(&line)?;
        if t.security == UpstreamSecurity::Starttls {
            conn.get_mut().write_all(b"W0 STARTTLS\r\n").await?;
            loop {
                read(t, &mut conn, &mut line).await?;
                if line.starts_with(b"W0 ") {
                    break;
                }
            }
            if !starts_with_ignore_case(&line[3..], b"OK") {
                return Err(UpstreamError::Refused(format!(
                    "STARTTLS: {}",
                    String::from_utf8_lossy(net::trim_eol(&line))
                )));
            }
            // Whatever was buffered before the handshake is dropped with
            // the reader: it cannot be trusted.
            let stream = t.starttls_handshake(conn.into_inner()).await?;
            // After STARTTLS the server sends no new greeting.
            return Ok(Upstream {
                stream,
                pending: Vec::new(),
            });
        }
        let pending = conn.buffer().to_vec();
        Ok(Upstream {
            stream: conn.into_inner(),
            pending,
        })
    }
}

async fn read(
    t: &Target,
    conn: &mut BufReader<Stream>,
    line: &mut Vec<u8>,
) -> Result<(), UpstreamError> {
    match timeout(t.timeout, net::read_line(conn, line, MAX_LINE))
        .await
        .map_err(|_| UpstreamError::Timeout(t.timeout.as_secs()))??
    {
        Some(LineEnd::Lf) => Ok(()),
        Some(LineEnd::TooLong) => Err(UpstreamError::Refused("overlong line".into())),
        Some(LineEnd::Eof) | None => Err(UpstreamError::Closed),
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `* OK ...` (or PREAUTH) is a greeting to go on with; `* BYE` and
/// anything else is a refusal.
fn check_greeting(line: &[u8]) -> Result<(), UpstreamError> {
    if starts_with_ignore_case(line, b"* OK") || starts_with_ignore_case(line, b"* PREAUTH") {
        Ok(())
    } else {
        Err(UpstreamError::Refused(
            String::from_utf8_lossy(net::trim_eol(line)).into_owned(),
        ))
    }
}
