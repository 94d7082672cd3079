//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in TCP
//! mode writes one header before the client's first byte, naming the client
//! it accepted. writ reads it before TLS and before any greeting, so that
//! `allowed_networks`, the per-address limits and the logs see the real
//! client instead of the load balancer.
//!
//! Off by default; enabled per listener with `proxy_protocol_from` (the
//! load balancers' addresses). On such a listener:
//!
//! - a connection from an address that is **not** listed is refused before
//!   anything is read (a client must not name its own address by sending a
//!   header, and a listener behind a load balancer takes no direct
//!   clients: give direct clients a listener of their own);
//! - a connection from a listed address **must** start with a valid v1 or v2
//!   header, else it is closed without a greeting.
//!
//! Caps: a v1 header is at most [`V1_MAX`] bytes (the specification's
//! limit), a v2 header at most 16 + [`V2_MAX_BODY`] bytes (its length field
//! is checked before anything past the fixed part is read), and the whole
//! header must arrive within `serve.proxy_header_timeout_secs`. Exactly the
//! header's bytes are read, never more: what follows (a TLS ClientHello,
//! a pipelined command) stays in the socket for the protocol.
//!
//! Parsing is the `ppp` crate's; this file only reads the bytes and decides.
//! A `LOCAL` (v2) or `UNKNOWN` (v1) header (the balancer's own health
//! check) leaves the connection with the balancer's address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::Network;

/// The longest v1 header, CRLF included (the specification's figure).
pub const V1_MAX: usize = 107;
/// The longest v2 address-and-TLV block accepted (the length field may say
/// up to 65535): room for UNIX addresses (216 bytes) and the TLVs a balancer
/// adds (ALPN, authority, TLS details, unique id).
pub const V2_MAX_BODY: usize = 1024;
/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection from a load balancer was closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a PROXY protocol header")]
    NotAHeader,
    #[error("PROXY v1 header longer than {V1_MAX} bytes")]
    V1TooLong,
    #[error("PROXY v2 header announces {0} bytes, more than {V2_MAX_BODY}")]
    V2TooLong(usize),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// `proxy_protocol_from` of one listener, with the header timeout.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// Load balancers allowed (and required) to send a header.
    pub from: Vec<Network>,
    /// The whole header must arrive within this.
    pub timeout: Duration,
}

impl ProxyProtocol {
    /// `None` when `from` is empty (PROXY protocol off for the listener).
    pub fn new(from: &[String], timeout: Duration) -> Result<Option<ProxyProtocol>, String> {
        if from.is_empty() {
            return Ok(None);
        }
        let from = from
            .iter()
            .map(|n| Network::parse(n).map_err(|e| format!("proxy_protocol_from: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ProxyProtocol { from, timeout }))
    }

    /// Whether `ip` is one of the configured load balancers.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|n| n.contains(ip))
    }

    /// Reads the header from a connection a trusted balancer (`peer`) made
    /// and returns the client's address (`peer` itself for LOCAL/UNKNOWN).
    pub async fn client<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        peer: SocketAddr,
    ) -> Result<SocketAddr, ProxyHeaderError> {
        let header = tokio::time::timeout(self.timeout, read_header(r))
            .await
            .map_err(|_| ProxyHeaderError::Timeout(self.timeout))??;
        Ok(source(&header)?.unwrap_or(peer))
    }
}

/// The client's address for a connection a listener accepted from `peer`:
/// `peer` itself without PROXY protocol, else the address the balancer's
/// header names (logged with the balancer). `None`: the header was refused
/// (logged); the caller closes the connection without a word.
pub async fn client_of<R: AsyncRead + Unpin>(
    proxy: Option<&ProxyProtocol>,
    r: &mut R,
    peer: SocketAddr,
    listener: &'static str,
) -> Option<SocketAddr> {
    let Some(proxy) = proxy else {
        return Some(peer);
    };
    match proxy.client(r, peer).await {
        Ok(client) => {
            tracing::info!(%client, balancer = %peer, listener, "PROXY header accepted");
            Some(client)
        }
        Err(e) => {
            tracing::warn!(balancer = %peer, listener, error = %e, "PROXY header refused");
            None
        }
    }
}

/// Reads exactly one v1 or v2 header, under the caps, and nothing after it.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ProxyHeaderError> {
    let mut buf = vec![0u8; V2_SIGNATURE.len()];
    read_exact(r, &mut buf).await?;
    if buf[..] == V2_SIGNATURE[..] {
        // Version/command, family/protocol, then the length (big-endian).
        let mut fixed = [0u8; 4];
        read_exact(r, &mut fixed).await?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > V2_MAX_BODY {
            return Err(ProxyHeaderError::V2TooLong(len));
        }
        buf.extend_from_slice(&fixed);
        let start = buf.len();
        buf.resize(start + len, 0);
        read_exact(r, &mut buf[start..]).await?;
        return Ok(buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::NotAHeader);
    }
    // v1: one byte at a time up to the LF, so nothing past it is consumed
    // (at most V1_MAX reads, once per connection from a balancer).
    while buf.last() != Some(&b'\n') {
        if buf.len() >= V1_MAX {
            return Err(ProxyHeaderError::V1TooLong);
        }
        let mut byte = [0u8; 1];
        read_exact(r, &mut byte).await?;
        buf.push(byte[0]);
    }
    Ok(buf)
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyHeaderError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// The client address a complete header names; `None` for a LOCAL (v2) or
/// UNKNOWN (v1) header, or a v2 family without an IP address (UNIX).
pub fn source(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let malformed = |e: &dyn std::fmt::Display| ProxyHeaderError::Malformed(e.to_string());
    let addr = if header.starts_with(V2_SIGNATURE) {
        use ppp::v2;
        let h = v2::Header::try_from(header).map_err(|e| malformed(&e))?;
        if h.len() != header.len() {
            return Err(ProxyHeaderError::Malformed("length mismatch".into()));
        }
        match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, _) => None,
        }
    } else {
        use ppp::v1;
        let h = v1::Header::try_from(header).map_err(|e| malformed(&e))?;
        if h.header.len() != header.len() {
            return Err(ProxyHeaderError::Malformed("bytes after the CRLF".into()));
        }
        match h.addresses {
            v1::Addresses::Unknown => None,
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        }
    };
    // An IPv4 client reported over IPv6 counts as the IPv4 address.
    Ok(addr.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    async fn read_from(bytes: &[u8]) -> (Result<Vec<u8>, ProxyHeaderError>, Vec<u8>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(bytes).await.unwrap();
        drop(a);
        let header = read_header(&mut b).await;
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        (header, rest)
    }

    #[tokio::test]
    async fn v1_is_read_up_to_its_crlf_and_no_further() {
        let (h, rest) =
            read_from(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n").await;
        let h = h.unwrap();
        assert_eq!(rest, b"EHLO x\r\n");
        assert_eq!(
            source(&h).unwrap(),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        let (h, _) = read_from(b"PROXY TCP6 2001:db8::9 2001:db8::1 5 25\r\n").await;
        assert_eq!(
            source(&h.unwrap()).unwrap(),
            Some("[2001:db8::9]:5".parse().unwrap())
        );
        let (h, _) = read_from(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(source(&h.unwrap()).unwrap(), None);
    }

    #[tokio::test]
    async fn v2_is_read_by_its_length_and_no_further() {
        let mut bytes = v2(
            "192.0.2.8:1234".parse().unwrap(),
            "198.51.100.1:993".parse().unwrap(),
        );
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (h, rest) = read_from(&bytes).await;
        assert_eq!(rest, b"\x16\x03\x01");
        assert_eq!(
            source(&h.unwrap()).unwrap(),
            Some("192.0.2.8:1234".parse().unwrap())
        );
        let mapped = v2(
            "[::ffff:192.0.2.9]:1".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
        );
        let (h, _) = read_from(&mapped).await;
        assert_eq!(
            source(&h.unwrap()).unwrap(),
            Some("192.0.2.9:1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_v2_local_header_leaves_the_balancers_address() {
        // What HAProxy's `check-send-proxy` health checks send.
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let proxy = ProxyProtocol::new(&["127.0.0.1".into()], Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&local).await.unwrap();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(proxy.client(&mut b, peer).await.unwrap(), peer);
    }

    #[tokio::test]
    async fn garbage_and_oversized_headers_are_refused() {
        assert!(matches!(
            read_from(b"EHLO client.example\r\n").await.0,
            Err(ProxyHeaderError::NotAHeader)
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read_from(long.as_bytes()).await.0,
            Err(ProxyHeaderError::V1TooLong)
        ));
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read_from(&big).await.0,
            Err(ProxyHeaderError::V2TooLong(65535))
        ));
        assert!(matches!(
            read_from(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyHeaderError::Closed)
        ));
        let (h, _) = read_from(b"PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n").await;
        assert!(matches!(
            source(&h.unwrap()),
            Err(ProxyHeaderError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_slow_header_times_out() {
        let proxy = ProxyProtocol::new(&["127.0.0.1".into()], Duration::from_millis(50))
            .unwrap()
            .unwrap();
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"PROXY TCP4 ").await.unwrap();
        let peer = "127.0.0.1:9".parse().unwrap();
        let r = proxy.client(&mut b, peer).await;
        assert!(matches!(r, Err(ProxyHeaderError::Timeout(_))), "{r:?}");
        assert!(proxy.trusts("127.0.0.1".parse().unwrap()));
        assert!(!proxy.trusts("127.0.0.2".parse().unwrap()));
    }
}
