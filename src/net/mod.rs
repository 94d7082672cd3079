//! What the SMTP relay and the IMAP proxy share below their protocols:
//!
//! - [`accept`]: backing off after a failed accept (out of file
//!   descriptors) instead of retrying at once.
//! - [`stream`]: a TCP connection that may become TLS in place (either
//!   side), and reading it line by line.
//! - [`provider`]: where and how to reach a provider's server ([`Endpoint`]):
//!   TCP, then implicit TLS, STARTTLS later, or (to loopback only) nothing;
//!   and the [`ConnectError`] both protocols' upstream errors wrap.
//! - [`per_ip`]: connections counted per client address, for the
//!   listeners' per-address limits.
//! - [`proxy_header`]: the PROXY protocol header a load balancer sends
//!   first, naming the real client (before TLS, before any greeting).

pub mod accept;
pub mod per_ip;
pub mod provider;
pub mod proxy_header;
pub mod stream;

pub use per_ip::{PerIp, PerIpGuard};
pub use provider::{ConnectError, Endpoint};
pub use proxy_header::{ProxyHeaderError, ProxyProtocol};
pub use stream::{LineEnd, Stream, accept_tls, read_line, trim_eol};
