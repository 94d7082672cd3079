//! `[scanner]`: spam and malware scanning of the plaintext before sealing,
//! off by default. The provider cannot scan sealed content, so writ hands
//! each message to the organisation's rspamd (its HTTP protocol, `POST
//! /checkv2` on the normal worker) before sealing it, and acts on the
//! verdict (see `crate::smtp::scanner`).

use serde::Deserialize;

/// What to do when the scanner cannot give a verdict (down, slow past
/// `timeout_secs`, or a reply writ cannot read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanFailure {
    /// Fail closed (the default): 451 4.7.1 to the client, which retries
    /// later; nothing is delivered.
    #[default]
    Tempfail,
    /// Fail open: deliver unscanned, log a warning and count
    /// `writ_scanner_failures_total`.
    Deliver,
}

/// `[scanner]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// Off (the default): messages are sealed unscanned.
    pub enabled: bool,
    /// rspamd's normal worker, `host:port` (plain HTTP: keep it on
    /// loopback or a private network).
    pub address: String,
    /// Whole exchange with the scanner (connect, send, verdict), 1..=300 s
    /// (default 30).
    pub timeout_secs: u64,
    /// Scanner down or slow: `tempfail` (fail closed, default) or
    /// `deliver` (fail open).
    pub on_failure: ScanFailure,
    /// Largest message sent to the scanner (default 32 MiB); larger
    /// messages are delivered unscanned (logged, counted as
    /// `outcome="too-large"`), as rspamd's own proxies do.
    pub max_message_bytes: u64,
    /// Also scan what submission listeners take from authenticated users
    /// (default: relay listeners only).
    pub submission: bool,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            enabled: false,
            address: "127.0.0.1:11333".into(),
            timeout_secs: 30,
            on_failure: ScanFailure::Tempfail,
            max_message_bytes: 32 * 1024 * 1024,
            submission: false,
        }
    }
}

impl ScannerConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        if !(1..=300).contains(&self.timeout_secs) {
            out.push("scanner.timeout_secs must be 1..=300".into());
        }
        if self
            .address
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            out.push(format!(
                "scanner.address: `{}` is not host:port",
                self.address
            ));
        }
        if self.max_message_bytes == 0 {
            out.push("scanner.max_message_bytes must be more than 0".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = crate::config::Config::default();
        assert!(!c.scanner.enabled);
        assert_eq!(c.scanner.on_failure, ScanFailure::Tempfail);
        assert!(c.scanner.problems().is_empty());
        let bad = ScannerConfig {
            enabled: true,
            address: "nohost".into(),
            timeout_secs: 0,
            ..ScannerConfig::default()
        };
        let p = bad.problems();
        assert!(p.iter().any(|p| p.contains("timeout_secs")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("scanner.address")), "{p:?}");
    }

    #[test]
    fn on_failure_reads_tempfail_or_deliver() {
        let c: ScannerConfig =
            toml::from_str("enabled = true\non_failure = \"deliver\"\n").unwrap();
        assert_eq!(c.on_failure, ScanFailure::Deliver);
        assert!(toml::from_str::<ScannerConfig>("on_failure = \"maybe\"\n").is_err());
    }
}
