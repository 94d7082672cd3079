//! `[auth]`: inbound mail authentication on relay listeners, off by default.
//! Sealing changes the body, so the sender's DKIM signature no longer
//! verifies at the provider; writ checks SPF, DKIM, DMARC and an ARC chain
//! already on the message *before* sealing, records the outcome in an
//! `Authentication-Results` field of its own authserv-id (kept in the outer
//! header), can act on the sender's DMARC policy, and can ARC-seal the
//! sealed message for a provider that trusts writ as a sealer
//! (`[auth.arc]`). See `crate::smtp::inbound_auth`.

use std::path::PathBuf;

use serde::Deserialize;

/// What writ does with the sender domain's DMARC policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcAction {
    /// DMARC is not evaluated (SPF, DKIM and ARC still are).
    Off,
    /// Evaluated and recorded (`dmarc=` in Authentication-Results, logs,
    /// metrics); nothing is refused or marked. The default.
    #[default]
    Monitor,
    /// `p=reject` failures are refused at the end of DATA (550 5.7.1),
    /// before anything reaches the provider; `p=quarantine` failures are
    /// marked with `X-DMARC-Quarantine` (outer header) for the provider's
    /// rules.
    Enforce,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Off (the default): messages are sealed unverified.
    pub enabled: bool,
    /// writ's authserv-id (RFC 8601): the first word of the
    /// Authentication-Results field it adds. Incoming fields claiming it
    /// are removed. Default: `[smtp] hostname`.
    pub authserv_id: Option<String>,
    /// DNS servers (`ip:port` or `ip`, port 53) for SPF, DKIM, DMARC and
    /// ARC lookups; empty (the default): the system's (/etc/resolv.conf).
    pub dns_servers: Vec<String>,
    /// One DNS query, 1..=30 s (default 3); each is tried twice.
    pub dns_timeout_secs: u64,
    /// The whole verification of one message, 1..=120 s (default 20).
    /// Past it the message is recorded `temperror` and delivered (never
    /// refused for DMARC).
    pub timeout_secs: u64,
    /// Largest message verified (default 32 MiB): a larger one is
    /// delivered unverified (recorded `none`, never refused, not
    /// ARC-sealed).
    pub max_message_bytes: u64,
    /// `off`, `monitor` (default) or `enforce`.
    pub dmarc: DmarcAction,
    /// ARC sealing of the sealed message (`[auth.arc]`).
    pub arc: ArcConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            authserv_id: None,
            dns_servers: Vec::new(),
            dns_timeout_secs: 3,
            timeout_secs: 20,
            max_message_bytes: 32 * 1024 * 1024,
            dmarc: DmarcAction::Monitor,
            arc: ArcConfig::default(),
        }
    }
}

/// `[auth.arc]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArcConfig {
    /// Off (the default): the sealed message carries no ARC set of writ's.
    pub enabled: bool,
    /// The signing domain (`d=`), whose `<selector>._domainkey` TXT record
    /// publishes the public key.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The private key, PKCS#8 PEM (RSA, 2048 bits or more, or Ed25519); a
    /// relative path is relative to the keys directory (`[keys] dir`).
    pub key_file: PathBuf,
}

impl AuthConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        if !(1..=30).contains(&self.dns_timeout_secs) {
            out.push("auth.dns_timeout_secs must be 1..=30".into());
        }
        if !(1..=120).contains(&self.timeout_secs) {
            out.push("auth.timeout_secs must be 1..=120".into());
        }
        if self.max_message_bytes == 0 {
            out.push("auth.max_message_bytes must be more than 0".into());
        }
        for s in &self.dns_servers {
            if parse_dns_server(s).is_none() {
                out.push(format!("auth.dns_servers: `{s}` is not ip or ip:port"));
            }
        }
        if let Some(id) = &self.authserv_id
            && (id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            out.push(format!(
                "auth.authserv_id: `{id}` must be a host name (letters, digits, '.', '-')"
            ));
        }
        if self.arc.enabled {
            let name_ok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            };
            if !name_ok(&self.arc.domain) {
                out.push("auth.arc.domain must be a domain name".into());
            }
            if !name_ok(&self.arc.selector) {
                out.push("auth.arc.selector must be a selector name".into());
            }
            if self.arc.key_file.as_os_str().is_empty() {
                out.push("auth.arc.key_file must name the ARC signing key (PKCS#8 PEM)".into());
            }
        }
        out
    }
}

/// `ip` or `ip:port` (`[v6]:port`), port 53 by default.
pub fn parse_dns_server(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Some(addr);
    }
    s.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid_and_bad_values_are_named() {
        let c = AuthConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.dmarc, DmarcAction::Monitor);
        let bad = AuthConfig {
            enabled: true,
            dns_servers: vec!["127.0.0.1:5353".into(), "nonsense".into()],
            authserv_id: Some("a b".into()),
            timeout_secs: 0,
            arc: ArcConfig {
                enabled: true,
                ..ArcConfig::default()
            },
            ..AuthConfig::default()
        };
        let p = bad.problems();
        for want in [
            "`nonsense`",
            "authserv_id",
            "timeout_secs",
            "arc.domain",
            "arc.key_file",
        ] {
            assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
        }
        assert!(!p.iter().any(|p| p.contains("5353")), "{p:?}");
        let c: AuthConfig = toml::from_str(
            "enabled = true\ndmarc = \"enforce\"\ndns_servers = [\"::1\"]\n[arc]\nenabled = true\ndomain = \"d.example\"\nselector = \"s1\"\nkey_file = \"arc.pem\"\n",
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(toml::from_str::<AuthConfig>("dmarc = \"maybe\"\n").is_err());
    }
}
