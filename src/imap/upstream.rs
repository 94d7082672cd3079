//! The connection to the provider's IMAP server: TCP, then implicit TLS,
//! STARTTLS, or (to loopback only) nothing; then the greeting. What comes
//! after is the typed flow's business ([`super::session`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{UpstreamConfig, UpstreamSecurity};
use crate::smtp::stream::{self as net, LineEnd, Stream};

/// Longest greeting or STARTTLS reply line accepted.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the provider at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS with the provider failed: {0}")]
    Tls(io::Error),
    #[error(
        "the provider at {0} is not on loopback: plain IMAP is refused (use implicit or starttls)"
    )]
    PlainNotLoopback(String),
    #[error("the provider did not answer within {0} s")]
    Timeout(u64),
    #[error("the provider closed the connection")]
    Closed,
    #[error("the provider refused the session: {0}")]
    Refused(String),
    #[error("provider connection: {0}")]
    Io(#[from] io::Error),
    #[error("invalid provider TLS settings: {0}")]
    Settings(String),
}

/// Where and how to reach the provider's IMAP server; built at start-up.
#[derive(Clone)]
pub struct Target {
    pub address: String,
    pub security: UpstreamSecurity,
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
    pub timeout: Duration,
}

impl Target {
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Target, UpstreamError> {
        let connector = crate::tls::connector(cfg.ca_file.as_deref())
            .map_err(|e| UpstreamError::Settings(e.to_string()))?;
        let name = cfg
            .server_name
            .clone()
            .unwrap_or_else(|| cfg.host().to_owned());
        let server_name =
            crate::tls::server_name(&name).map_err(|e| UpstreamError::Settings(e.to_string()))?;
        Ok(Target {
            address: cfg.address.clone(),
            security: cfg.security,
            connector,
            server_name,
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
        })
    }
}

/// A provider connection past its greeting (and STARTTLS), ready for the
/// client's first command.
pub struct Upstream {
    pub stream: Stream,
    /// Bytes the provider sent after its greeting, not yet parsed.
    pub pending: Vec<u8>,
}

impl Upstream {
    pub async fn connect(t: &Target) -> Result<Upstream, UpstreamError> {
        let tcp = timeout(t.timeout, TcpStream::connect(&t.address))
            .await
            .map_err(|_| UpstreamError::Timeout(t.timeout.as_secs()))?
            .map_err(|source| UpstreamError::Connect {
                address: t.address.clone(),
                source,
            })?;
        let peer: SocketAddr = tcp.peer_addr()?;
        let _ = tcp.set_nodelay(true);
        let stream = match t.security {
            UpstreamSecurity::Implicit => Stream::Client(Box::new(handshake(t, tcp).await?)),
            UpstreamSecurity::Starttls => Stream::Plain(tcp),
            UpstreamSecurity::Plain => {
                if !crate::tls::plain_allowed(&peer) {
                    return Err(UpstreamError::PlainNotLoopback(t.address.clone()));
                }
                Stream::Plain(tcp)
            }
        };
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
            let mut stream = conn.into_inner();
            let tcp = stream.take_plain().ok_or(UpstreamError::Closed)?;
            let tls = handshake(t, tcp).await?;
            // After STARTTLS the server sends no new greeting.
            return Ok(Upstream {
                stream: Stream::Client(Box::new(tls)),
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

async fn handshake(
    t: &Target,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    timeout(t.timeout, t.connector.connect(t.server_name.clone(), tcp))
        .await
        .map_err(|_| UpstreamError::Timeout(t.timeout.as_secs()))?
        .map_err(UpstreamError::Tls)
}
