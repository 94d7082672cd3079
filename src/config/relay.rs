//! Configuration of `writ serve`: the SMTP relay's listeners, limits and
//! policy, the provider it relays to, the admin endpoint.
//!
//! Durations are whole seconds (`*_secs`), sizes whole bytes: no unit
//! parsing to get wrong.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// `[serve]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// After SIGTERM/SIGINT, in-flight transactions get this long to finish.
    pub grace_secs: u64,
    /// `host:port` of the admin endpoint (/healthz, /metrics); none if unset.
    pub admin_listen: Option<SocketAddr>,
    /// Load balancers that put a PROXY protocol header in front of each
    /// admin connection (see `proxy_protocol_from` on the listeners).
    pub admin_proxy_protocol_from: Vec<String>,
    /// On listeners with `proxy_protocol_from`: the whole PROXY header must
    /// arrive within this many seconds, else the connection is closed.
    pub proxy_header_timeout_secs: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            grace_secs: 30,
            admin_listen: None,
            admin_proxy_protocol_from: Vec::new(),
            proxy_header_timeout_secs: 5,
        }
    }
}

impl ServeConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=60).contains(&self.proxy_header_timeout_secs) {
            out.push("serve.proxy_header_timeout_secs must be between 1 and 60".into());
        }
        for n in &self.admin_proxy_protocol_from {
            if let Err(e) = Network::parse(n) {
                out.push(format!("serve.admin_proxy_protocol_from: {e}"));
            }
        }
        out
    }
}

/// What happens to a recipient outside the protected domains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalPolicy {
    /// Delivered as sent (the organisation's mail to the outside world).
    #[default]
    Plaintext,
    /// Refused at RCPT.
    Reject,
    /// Sealed to the recipient's own age key from the directory; refused
    /// when the directory has none.
    Seal,
}

/// The kind of an SMTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 587 style: STARTTLS offered, AUTH required before MAIL.
    Submission,
    /// Port 465 style: TLS from the first byte, AUTH required before MAIL.
    Submissions,
    /// For MTAs and the MX path: clients from `allowed_networks`, no AUTH,
    /// recipients only in protected domains.
    Relay,
}

/// `[[smtp.listeners]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub kind: ListenerKind,
    /// `address:port` to listen on.
    pub listen: SocketAddr,
    /// Relay listeners: client networks allowed to connect, as CIDR
    /// (`10.0.0.0/8`, `::1/128`) or single addresses.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// PROXY protocol (v1 or v2) from these load balancers (CIDR or single
    /// addresses); empty (the default): off. When set, only these
    /// addresses may connect, each connection must start with a PROXY
    /// header, and `allowed_networks`, the per-address limits and the logs
    /// use the client address the header names.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
}

/// Most `smtp.max_recipients`: a message sealed to each external
/// recipient's own key (`external = "seal"`) holds an age stanza of two
/// lines per recipient, within the readers'
/// `envelope::MAX_AGE_HEADER_LINES` (512).
pub const MAX_RECIPIENTS: usize = 200;

const _: () = assert!(2 * MAX_RECIPIENTS + 2 <= crate::envelope::MAX_AGE_HEADER_LINES);
const _: () =
    assert!(2 * (2 + super::MAX_EXTRA_RECIPIENTS) + 2 <= crate::envelope::MAX_AGE_HEADER_LINES);

/// `[smtp]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The name writ gives in its greeting and EHLO reply.
    pub hostname: String,
    pub listeners: Vec<ListenerConfig>,
    /// PEM certificate chain and private key for STARTTLS and implicit TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mail for these domains (and their subdomains when written `.example.org`)
    /// is sealed to the organisation's keys.
    pub protected_domains: Vec<String>,
    /// What happens to other recipients.
    pub external: ExternalPolicy,
    /// TOML file mapping external addresses to age recipients, for
    /// `external = "seal"`: `"bob@partner.example" = "age1..."`.
    pub directory: Option<PathBuf>,
    /// Largest message accepted (SIZE), in bytes.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Concurrent sessions, in all (every listener together) and per
    /// client address.
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// An IPv6 client is counted by its first this many bits for
    /// `max_sessions_per_ip` (one host often has a whole /64); 32..=128.
    /// IPv4 clients are counted per address.
    pub ipv6_prefix_per_ip: u8,
    /// Longest command line, in octets (RFC 5321 says at least 512);
    /// longer: `500 5.5.6 Line too long`. Lines of an AUTH exchange may be
    /// 12,288 octets (RFC 4954 §4) when that is more.
    pub max_line_length: usize,
    /// Waiting for a command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_secs: u64,
    /// Waiting for each chunk of DATA (RFC 5321: 3 minutes).
    pub data_timeout_secs: u64,
    /// The whole DATA phase, however the client paces it: a client that
    /// trickles a byte just inside `data_timeout_secs` cannot hold a
    /// session for ever.
    pub data_max_secs: u64,
    /// While a message to be sealed is received, the provider connection
    /// waits after RCPT (DATA opens there with the first sealed bytes):
    /// writ sends it `NOOP` this often, so that a provider idle timeout
    /// (Postfix's `smtpd_timeout`, 300 s) does not end it under a slow
    /// sender. A provider that then fails or answers other than 2xx (a
    /// stale `421` timeout) is dropped and the client told `451 4.4.2`.
    pub provider_keepalive_secs: u64,
    /// Idle provider connections kept for the next relay session (relay
    /// listeners only: submission sessions log in at the provider as
    /// their user and keep their own connection). A connection is pooled
    /// between transactions with no transaction open at the provider
    /// (`RSET` first when needed) and used by one session at a time; one
    /// the provider closed or answers 421 is not used for a message. Past
    /// this many idle connections, a released one is closed (QUIT). 0
    /// turns pooling off: one provider connection per client session.
    pub provider_pool_size: usize,
    /// An idle pooled connection older than this is closed (QUIT). Keep it
    /// below the provider's idle timeout (Postfix `smtpd_timeout`: 300 s;
    /// hosted providers often less). Pooled connections are not sent
    /// `NOOP` (`provider_keepalive_secs` is for a connection waiting inside
    /// a transaction).
    pub provider_pool_idle_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "writ.localhost".into(),
            listeners: Vec::new(),
            tls_cert: None,
            tls_key: None,
            protected_domains: Vec::new(),
            external: ExternalPolicy::default(),
            directory: None,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: 200,
            max_sessions_per_ip: 20,
            ipv6_prefix_per_ip: crate::net::per_ip::DEFAULT_IPV6_PREFIX,
            max_line_length: 4096,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            data_max_secs: 3600,
            provider_keepalive_secs: 60,
            provider_pool_size: 16,
            provider_pool_idle_secs: 30,
        }
    }
}

/// How writ talks to the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSecurity {
    /// TLS from the first byte (port 465, 993).
    Implicit,
    /// Plain connect, then STARTTLS before anything else (port 587, 143).
    #[default]
    Starttls,
    /// No TLS at all: allowed only to a loopback address.
    Plain,
}

/// `[provider.smtp]` (and later `[provider.imap]`)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`.
    pub address: String,
    #[serde(default)]
    pub security: UpstreamSecurity,
    /// Verify the provider against this CA file instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the provider's certificate (default: the host of
    /// `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Seconds to wait for the provider to answer.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
}

fn default_upstream_timeout() -> u64 {
    60
}

impl UpstreamConfig {
    /// The host part of `address`.
    pub fn host(&self) -> &str {
        match self.address.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => &self.address,
        }
    }
}

/// `[provider]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub smtp: Option<UpstreamConfig>,
    pub imap: Option<UpstreamConfig>,
}

/// A parsed `allowed_networks` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network (a.b.c.d/n or ::/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // IPv4-mapped IPv6 clients match IPv4 networks.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl SmtpConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self, provider: &ProviderConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.listeners.is_empty() {
            return out;
        }
        if provider.smtp.is_none() {
            out.push("[provider.smtp] is required when SMTP listeners are configured".into());
        }
        let needs_tls = self.listeners.iter().any(|l| l.kind != ListenerKind::Relay);
        if needs_tls && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            out.push(
                "smtp.tls_cert and smtp.tls_key are required by submission and submissions listeners"
                    .into(),
            );
        }
        for l in &self.listeners {
            if l.kind == ListenerKind::Relay && l.allowed_networks.is_empty() {
                out.push(format!(
                    "relay listener {}: allowed_networks must name the client networks",
                    l.listen
                ));
            }
            for n in l.allowed_networks.iter().chain(&l.proxy_protocol_from) {
                if let Err(e) = Network::parse(n) {
                    out.push(format!("listener {}: {e}", l.listen));
                }
            }
        }
        if self.protected_domains.is_empty() {
            out.push("smtp.protected_domains must list the organisation's domains".into());
        }
        if self.external == ExternalPolicy::Seal && self.directory.is_none() {
            out.push("smtp.external = \"seal\" needs smtp.directory".into());
        }
        if self.max_line_length < 512 {
            out.push("smtp.max_line_length must be at least 512 (RFC 5321)".into());
        }
        if !crate::net::per_ip::IPV6_PREFIXES.contains(&self.ipv6_prefix_per_ip) {
            out.push(
                "smtp.ipv6_prefix_per_ip must be between 32 and 128 (64: one host's /64)".into(),
            );
        }
        if !(1..=MAX_RECIPIENTS).contains(&self.max_recipients) {
            out.push(format!(
                "smtp.max_recipients must be between 1 and {MAX_RECIPIENTS} (a message sealed \
                 to each recipient's own key holds one age stanza per recipient, and readers \
                 take at most {} lines of them)",
                crate::envelope::MAX_AGE_HEADER_LINES
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Network::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", ""] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ipv6_prefix_per_ip_is_checked() {
        let provider = ProviderConfig {
            smtp: Some(UpstreamConfig {
                address: "127.0.0.1:25".into(),
                security: Default::default(),
                ca_file: None,
                server_name: None,
                timeout_secs: 60,
            }),
            imap: None,
        };
        let mut smtp = SmtpConfig {
            listeners: vec![ListenerConfig {
                kind: ListenerKind::Relay,
                listen: "127.0.0.1:2525".parse().unwrap(),
                allowed_networks: vec!["127.0.0.1".into()],
                proxy_protocol_from: Vec::new(),
            }],
            protected_domains: vec!["example.org".into()],
            ..SmtpConfig::default()
        };
        assert_eq!(smtp.ipv6_prefix_per_ip, 128);
        for (max, ok) in [
            (0, false),
            (1, true),
            (100, true),
            (MAX_RECIPIENTS, true),
            (MAX_RECIPIENTS + 1, false),
        ] {
            smtp.max_recipients = max;
            assert_eq!(smtp.problems(&provider).is_empty(), ok, "{max}");
        }
        smtp.max_recipients = 100;
        for (prefix, ok) in [
            (31, false),
            (32, true),
            (64, true),
            (128, true),
            (129, false),
        ] {
            smtp.ipv6_prefix_per_ip = prefix;
            assert_eq!(smtp.problems(&provider).is_empty(), ok, "{prefix}");
        }
    }

    #[test]
    fn serve_problems_name_the_proxy_settings() {
        assert!(ServeConfig::default().problems().is_empty());
        let bad = ServeConfig {
            proxy_header_timeout_secs: 0,
            admin_proxy_protocol_from: vec!["10.0.0.0/99".into()],
            ..ServeConfig::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("proxy_header_timeout_secs"));
        assert!(problems[1].contains("admin_proxy_protocol_from"));
    }
}
