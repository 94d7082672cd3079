//! A provider's server as writ reaches it, whatever the protocol: the TCP
//! connection, implicit TLS or (to loopback only) plain, and the TLS
//! handshake after a STARTTLS the protocol has negotiated. Greetings and
//! commands are the protocol's business (`smtp::upstream`,
//! `imap::upstream`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::stream::Stream;
use crate::config::{UpstreamConfig, UpstreamSecurity};

/// Why a provider connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the provider at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS with the provider failed: {0}")]
    Tls(io::Error),
    #[error(
        "the provider at {address} is not on loopback: plain {protocol} is refused (use implicit or starttls)"
    )]
    PlainNotLoopback {
        address: String,
        /// `SMTP`, `IMAP`: what is refused in plain.
        protocol: &'static str,
    },
    #[error("the provider did not answer within {0} s")]
    Timeout(u64),
    #[error("the provider closed the connection")]
    Closed,
    #[error("provider connection: {0}")]
    Io(#[from] io::Error),
    #[error("invalid provider TLS settings: {0}")]
    Settings(String),
}

/// Where and how to reach a provider's server; built once at start-up.
#[derive(Clone)]
pub struct Endpoint {
    pub address: String,
    pub security: UpstreamSecurity,
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
    pub timeout: Duration,
}

impl Endpoint {
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Endpoint, ConnectError> {
        let connector = crate::tls::connector(cfg.ca_file.as_deref())
            .map_err(|e| ConnectError::Settings(e.to_string()))?;
        let name = cfg
            .server_name
            .clone()
            .unwrap_or_else(|| cfg.host().to_owned());
        let server_name =
            crate::tls::server_name(&name).map_err(|e| ConnectError::Settings(e.to_string()))?;
        Ok(Endpoint {
            address: cfg.address.clone(),
            security: cfg.security,
            connector,
            server_name,
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
        })
    }

    /// Connects over TCP, then: implicit TLS does its handshake (a
    /// [`Stream::Client`]); STARTTLS stays plain for the protocol to
    /// upgrade with [`Endpoint::starttls_handshake`]; plain is refused
    /// unless the peer is on loopback (`protocol` names what is refused).
    pub async fn connect(&self, protocol: &'static str) -> Result<Stream, ConnectError> {
        let tcp = timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| ConnectError::Timeout(self.timeout.as_secs()))?
            .map_err(|source| ConnectError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let peer: SocketAddr = tcp.peer_addr()?;
        let _ = tcp.set_nodelay(true);
        Ok(match self.security {
            UpstreamSecurity::Implicit => Stream::Client(Box::new(self.handshake(tcp).await?)),
            UpstreamSecurity::Starttls => Stream::Plain(tcp),
            UpstreamSecurity::Plain => {
                if !crate::tls::plain_allowed(&peer) {
                    return Err(ConnectError::PlainNotLoopback {
                        address: self.address.clone(),
                        protocol,
                    });
                }
                Stream::Plain(tcp)
            }
        })
    }

    /// The TLS handshake after the provider accepted STARTTLS. `stream`
    /// must be the plain connection, taken out of any buffered reader:
    /// nothing read before the handshake may be kept.
    pub async fn starttls_handshake(&self, mut stream: Stream) -> Result<Stream, ConnectError> {
        let tcp = stream.take_plain().ok_or(ConnectError::Closed)?;
        Ok(Stream::Client(Box::new(self.handshake(tcp).await?)))
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        timeout(
            self.timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ConnectError::Timeout(self.timeout.as_secs()))?
        .map_err(ConnectError::Tls)
    }
}
