//! `[imap]`: the IMAP proxy's listeners and limits. The provider's IMAP
//! server is `[provider.imap]` (an [`UpstreamConfig`], like SMTP's).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::relay::ProviderConfig;

/// What a client connecting to an IMAP listener gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapListenerKind {
    /// Plain connection with STARTTLS offered (port 143).
    Imap,
    /// TLS from the first byte (port 993).
    Imaps,
}

/// One `[[imap.listeners]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapListenerConfig {
    pub kind: ImapListenerKind,
    pub listen: SocketAddr,
    /// PROXY protocol (v1 or v2) from these load balancers; empty (the
    /// default): off. As on `[[smtp.listeners]]`: only these addresses may
    /// connect, each must send the header, and the per-address limits and
    /// logs use the client address it names.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
}

/// `[imap]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    pub listeners: Vec<ImapListenerConfig>,
    /// PEM certificate chain and key for STARTTLS and implicit TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept LOGIN and AUTHENTICATE over an unencrypted connection from a
    /// client that is not on loopback. Off: such clients must STARTTLS
    /// first (they are told LOGINDISABLED, as RFC 3501 says).
    pub allow_plaintext_auth: bool,
    /// Largest literal (e.g. an APPENDed message) accepted from a
    /// logged-in client. Before login the cap is
    /// [`crate::imap::intake::MAX_PRELOGIN_LITERAL`] octets of literals per
    /// command, whatever this says.
    /// Under COMPRESS=DEFLATE it is also the allowance beyond
    /// [`crate::imap::compress::MAX_INFLATE_RATIO`] (see that module).
    pub max_literal_size: u32,
    /// Concurrent IMAP sessions, all listeners together; more are told
    /// `* BYE [UNAVAILABLE] Too many connections, try later`.
    pub max_sessions: usize,
    /// Concurrent sessions from one client address, logged in or not; more
    /// are told `* BYE [UNAVAILABLE] Too many connections from your
    /// address, try later`. Generous: an office behind one NAT address
    /// has several clients, each with several connections.
    pub max_sessions_per_ip: usize,
    /// Concurrent sessions from one client address that have not logged in
    /// yet; more are told the same BYE. Idle unauthenticated connections
    /// cost writ a slot each and must not lock users out.
    pub max_prelogin_per_ip: usize,
    /// An IPv6 client is counted by its first this many bits for the two
    /// per-address limits above (one host often has a whole /64);
    /// 32..=128. IPv4 clients are counted per address.
    pub ipv6_prefix_per_ip: u8,
    /// Seconds from connecting to a successful LOGIN or AUTHENTICATE; then
    /// the client is told `* BYE Login timeout: log in sooner` and
    /// disconnected. writ connects to the provider only when the client's
    /// first command needs it, so an idle connection costs the provider
    /// nothing.
    pub login_timeout_secs: u64,
    /// Seconds a logged-in client may stay silent (RFC 3501 §5.4: at least
    /// 30 minutes; IDLE clients re-issue IDLE within that); then `* BYE`.
    pub idle_timeout_secs: u64,
    /// Keep a cache of opened messages.
    pub cache: bool,
    /// Directory of that cache (encrypted at rest under keys derived from
    /// the unlocked keyring, so it is kept over restarts; a changed keyring
    /// reads only what it could open itself; safe to delete).
    pub cache_dir: PathBuf,
    /// Bytes the cache may hold on disk; least recently used entries go.
    pub cache_max_bytes: u64,
    /// Bytes of memory the cache may use, all sessions together: three
    /// quarters for opened summaries (a warm listing reads them without
    /// touching the disk), a quarter for the index's page cache.
    pub cache_memory_bytes: u64,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            listeners: Vec::new(),
            tls_cert: None,
            tls_key: None,
            allow_plaintext_auth: false,
            max_literal_size: 50 * 1024 * 1024,
            max_sessions: 500,
            max_sessions_per_ip: 100,
            max_prelogin_per_ip: 10,
            ipv6_prefix_per_ip: crate::net::per_ip::DEFAULT_IPV6_PREFIX,
            login_timeout_secs: 60,
            idle_timeout_secs: 31 * 60,
            cache: true,
            cache_dir: PathBuf::from("cache"),
            cache_max_bytes: 1024 * 1024 * 1024,
            cache_memory_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ImapConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self, provider: &ProviderConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.listeners.is_empty() {
            return out;
        }
        if provider.imap.is_none() {
            out.push("[[imap.listeners]] need [provider.imap] (the provider's IMAP server)".into());
        }
        if self.tls_cert.is_none() || self.tls_key.is_none() {
            out.push(
                "[[imap.listeners]] need imap.tls_cert and imap.tls_key (STARTTLS and implicit TLS)"
                    .into(),
            );
        }
        for l in &self.listeners {
            for n in &l.proxy_protocol_from {
                if let Err(e) = super::relay::Network::parse(n) {
                    out.push(format!(
                        "imap listener {}: proxy_protocol_from: {e}",
                        l.listen
                    ));
                }
            }
        }
        if self.cache_memory_bytes < 1024 * 1024 {
            out.push("imap.cache_memory_bytes must be at least 1048576 (1 MiB)".into());
        }
        if self.max_literal_size < 1024 {
            out.push("imap.max_literal_size must be at least 1024".into());
        }
        if self.max_sessions == 0 {
            out.push("imap.max_sessions must be at least 1".into());
        }
        if self.max_sessions_per_ip == 0 || self.max_prelogin_per_ip == 0 {
            out.push(
                "imap.max_sessions_per_ip and imap.max_prelogin_per_ip must be at least 1".into(),
            );
        }
        if !crate::net::per_ip::IPV6_PREFIXES.contains(&self.ipv6_prefix_per_ip) {
            out.push(
                "imap.ipv6_prefix_per_ip must be between 32 and 128 (64: one host's /64)".into(),
            );
        }
        if !(5..=600).contains(&self.login_timeout_secs) {
            out.push("imap.login_timeout_secs must be between 5 and 600".into());
        }
        if self.idle_timeout_secs < 30 * 60 {
            out.push(
                "imap.idle_timeout_secs must be at least 1800 (RFC 3501 §5.4: 30 minutes)".into(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::relay::UpstreamConfig;

    #[test]
    fn the_cache_memory_bound_and_the_ipv6_prefix_are_checked() {
        let provider = ProviderConfig {
            smtp: None,
            imap: Some(UpstreamConfig {
                address: "127.0.0.1:143".into(),
                security: Default::default(),
                ca_file: None,
                server_name: None,
                timeout_secs: 60,
            }),
        };
        let mut imap = ImapConfig {
            listeners: vec![ImapListenerConfig {
                kind: ImapListenerKind::Imap,
                listen: "127.0.0.1:1143".parse().unwrap(),
                proxy_protocol_from: Vec::new(),
            }],
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..ImapConfig::default()
        };
        assert_eq!(imap.problems(&provider), Vec::<String>::new());
        imap.cache_memory_bytes = 1024 * 1024 - 1;
        assert_eq!(
            imap.problems(&provider),
            ["imap.cache_memory_bytes must be at least 1048576 (1 MiB)"]
        );
        imap.cache_memory_bytes = 1024 * 1024;
        for (prefix, ok) in [
            (31, false),
            (32, true),
            (64, true),
            (128, true),
            (129, false),
        ] {
            imap.ipv6_prefix_per_ip = prefix;
            assert_eq!(imap.problems(&provider).is_empty(), ok, "{prefix}");
        }
    }
}
