//! `[state]`: where writ keeps what several gateways must share (the
//! audit chain, disclosure requests, mailbox-job and sweep checkpoints
//! with their leases): the embedded files in the keyring directory (the default,
//! nothing to install) or a PostgreSQL database.
//!
//! No database password ever sits in the config file: a `url` holding one
//! is refused (without echoing it); the password comes with a URL read from
//! `url_file` or from a systemd credential (`url_credential`), and is read
//! only when the database is opened.
//!
//! TLS is used when the URL says `sslmode=require`, and then the server's
//! certificate is always verified (`ca_file`, else the system roots);
//! writ does no opportunistic, unverified TLS: the default `prefer` means
//! a plain connection (a unix socket, or a trusted network).

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Longest gateway name, in bytes.
pub const MAX_GATEWAY_NAME: usize = 64;

/// Most pooled connections per gateway.
pub const MAX_POOL_SIZE: usize = 64;

/// Longest timeout in seconds (connect, lock, statement).
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// Shortest and longest mailbox lease in seconds (`lease_secs`).
pub const MIN_LEASE_SECS: u64 = 2;
pub const MAX_LEASE_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files in the keyring directory (audit.log, audit.head).
    #[default]
    Files,
    /// A PostgreSQL database shared by every gateway.
    Postgres,
}

/// `[state]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: Backend,
    /// This gateway's name in records it writes to shared state (default:
    /// the host name). Each gateway sharing a database needs its own.
    pub gateway: Option<String>,
    /// The database as a URL without password
    /// (`postgresql://writ@db.example/writ`, or key=value form
    /// `host=/run/postgresql dbname=writ user=writ`).
    #[serde(deserialize_with = "de_public_url")]
    pub url: Option<String>,
    /// A file holding the URL (which may hold the password), e.g. 0600
    /// root-owned.
    pub url_file: Option<PathBuf>,
    /// A systemd credential holding the URL: the file of that name in
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=` in the unit).
    pub url_credential: Option<String>,
    /// TLS (the URL's `sslmode=require`) verifies the server against the
    /// certificates in this PEM file only (default: the system roots).
    pub ca_file: Option<PathBuf>,
    /// Connections to the database this gateway keeps at most.
    pub pool_size: usize,
    /// How long connecting (and waiting for a pooled connection) may take.
    pub connect_timeout_secs: u64,
    /// How long an audit append waits for the chain head another gateway
    /// holds (PostgreSQL `lock_timeout`) and any statement may run
    /// (`statement_timeout`, twice this).
    pub lock_timeout_secs: u64,
    /// How long a gateway's lease on a mailbox lasts without renewal
    /// (mailbox jobs and the sweep, backend = "postgres"): renewed every
    /// third of it while the run goes on; a gateway that dies holds the
    /// mailbox this long at most.
    pub lease_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::Files,
            gateway: None,
            url: None,
            url_file: None,
            url_credential: None,
            ca_file: None,
            pool_size: 4,
            connect_timeout_secs: 10,
            lock_timeout_secs: 30,
            lease_secs: 60,
        }
    }
}

fn de_public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    // Never echo the URL: it may hold a password.
    let parsed = tokio_postgres::Config::from_str(&url).map_err(|_| {
        serde::de::Error::custom(
            "not a PostgreSQL connection URL (postgresql://user@host:port/dbname or \
             `host=... dbname=... user=...`)",
        )
    })?;
    if parsed.get_password().is_some() {
        return Err(serde::de::Error::custom(
            "holds a password: no password belongs in the config file; put the whole URL in \
             a file named by url_file (0600) or a systemd credential named by url_credential",
        ));
    }
    Ok(Some(url))
}

impl StateConfig {
    /// Everything wrong with the table, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let sources = [
            self.url.is_some(),
            self.url_file.is_some(),
            self.url_credential.is_some(),
        ]
        .iter()
        .filter(|&&given| given)
        .count();
        match self.backend {
            Backend::Postgres if sources != 1 => p.push(
                "[state] backend = \"postgres\" needs exactly one of url, url_file, \
                 url_credential"
                    .to_string(),
            ),
            Backend::Files if sources != 0 => p.push(
                "[state] url, url_file and url_credential are for backend = \"postgres\" \
                 (the backend is \"files\")"
                    .to_string(),
            ),
            _ => {}
        }
        if let Some(name) = &self.url_credential
            && !is_credential_name(name)
        {
            p.push(format!(
                "[state] url_credential = {name:?}: a credential name (letters, digits, . _ -)"
            ));
        }
        if let Some(gateway) = &self.gateway
            && let Err(e) = check_gateway_name(gateway)
        {
            p.push(format!("[state] gateway = {gateway:?}: {e}"));
        }
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            p.push(format!(
                "[state] pool_size = {}: must be 1..={MAX_POOL_SIZE}",
                self.pool_size
            ));
        }
        for (key, value) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("lock_timeout_secs", self.lock_timeout_secs),
        ] {
            if value == 0 || value > MAX_TIMEOUT_SECS {
                p.push(format!(
                    "[state] {key} = {value}: must be 1..={MAX_TIMEOUT_SECS}"
                ));
            }
        }
        if !(MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&self.lease_secs) {
            p.push(format!(
                "[state] lease_secs = {}: must be {MIN_LEASE_SECS}..={MAX_LEASE_SECS}",
                self.lease_secs
            ));
        }
        p
    }
}

fn is_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A gateway name: 1 to [`MAX_GATEWAY_NAME`] bytes of printable ASCII
/// without spaces (a host name fits).
pub fn check_gateway_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_GATEWAY_NAME {
        return Err(format!("must be 1 to {MAX_GATEWAY_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("printable ASCII without spaces only".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), src).map_err(|e| e.to_string())
    }

    #[test]
    fn default_is_files_without_problems() {
        let c = parse("").unwrap();
        assert_eq!(c.state.backend, Backend::Files);
        assert!(c.state.problems().is_empty());
    }

    #[test]
    fn password_in_url_refused_without_echo() {
        let e =
            parse("[state]\nbackend = \"postgres\"\nurl = \"postgresql://writ:hunter2@db/writ\"\n")
                .unwrap_err();
        assert!(e.contains("url_file"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("[state]\nurl = \"host=db password=hunter2\"\n").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("[state]\nurl = \"postgresql://a:hunter2@db:notaport/x\"\n").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn example_config_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/writ.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&path, &text).unwrap();
        assert_eq!(c.state, StateConfig::default());
        for key in [
            "[state]",
            "backend",
            "gateway",
            "url",
            "url_file",
            "url_credential",
            "ca_file",
            "pool_size",
            "connect_timeout_secs",
            "lock_timeout_secs",
            "lease_secs",
        ] {
            assert!(
                text.contains(key),
                "config/writ.toml does not document {key}"
            );
        }
    }

    #[test]
    fn lease_secs_is_bounded() {
        let c = parse("[state]\nlease_secs = 1\n").unwrap();
        assert!(c.state.problems()[0].contains("lease_secs = 1"));
        let c = parse("[state]\nlease_secs = 3601\n").unwrap();
        assert_eq!(c.state.problems().len(), 1);
        let c = parse("[state]\nlease_secs = 5\n").unwrap();
        assert!(c.state.problems().is_empty());
        assert_eq!(StateConfig::default().lease_secs, 60);
    }

    #[test]
    fn postgres_needs_one_source() {
        let c = parse("[state]\nbackend = \"postgres\"\n").unwrap();
        assert_eq!(c.state.problems().len(), 1);
        let c = parse(
            "[state]\nbackend = \"postgres\"\nurl = \"postgresql://writ@db/writ\"\nurl_credential = \"db\"\n",
        )
        .unwrap();
        assert_eq!(c.state.problems().len(), 1);
        let c = parse(
            "[state]\nbackend = \"postgres\"\nurl_credential = \"writ-db\"\ngateway = \"gw-1\"\n",
        )
        .unwrap();
        assert!(c.state.problems().is_empty(), "{:?}", c.state.problems());
        let c = parse("[state]\nurl_credential = \"../x\"\ngateway = \"a b\"\npool_size = 0\n")
            .unwrap();
        assert_eq!(c.state.problems().len(), 4, "{:?}", c.state.problems());
    }
}
