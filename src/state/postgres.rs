//! The connection to PostgreSQL: the URL resolved from the config (never
//! from the config file itself when it holds a password), a bounded pool,
//! and the schema migrated on first connect.
//!
//! [`Db::open`] reads the settings (URL, gateway name, TLS roots) and
//! builds the pool without touching the network, so a bad `[state]` is
//! told apart from a database that is down; [`Db::migrate`] connects and
//! migrates ([`Db::connect`] does both).
//!
//! Invariants: the password is read only here, lives only inside the
//! `tokio_postgres::Config` the pool holds, and appears in no error or log:
//! errors name the database by [`Db::target`] (hosts, port, database,
//! user). Every connection has a `lock_timeout` and a `statement_timeout`
//! (unless the URL sets `options` itself), so no wait on the database is
//! unbounded. TLS only with `sslmode=require`, always verified (roots from
//! `ca_file` or the system bundle, as for the provider: `crate::tls`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::StateError;
use super::schema;
use crate::config::{StateConfig, check_gateway_name};

/// Longest URL file read, in bytes.
const MAX_URL_FILE: u64 = 64 * 1024;

/// A pool of connections to the shared database, and this gateway's name.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    gateway: String,
    target: String,
}

/// This gateway's name: the configured one, else the host name.
pub fn gateway_name(config: &StateConfig) -> Result<String, StateError> {
    let name = match &config.gateway {
        Some(name) => name.clone(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    check_gateway_name(&name).map_err(|e| {
        StateError::Config(format!(
            "[state] gateway: {e} (the host name {name:?} does not fit: set gateway)"
        ))
    })?;
    Ok(name)
}

/// Reads a URL file (a secret: zeroized after parsing).
fn read_url_file(path: &Path) -> Result<tokio_postgres::Config, StateError> {
    use std::io::Read as _;
    let io = |source| StateError::UrlFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_URL_FILE)
        .read_to_string(&mut text)
        .map_err(io)?;
    // Never echo the text or the parser's error: it may quote the password.
    tokio_postgres::Config::from_str(text.trim()).map_err(|_| StateError::BadUrl {
        path: path.to_path_buf(),
    })
}

fn pg_config(config: &StateConfig) -> Result<tokio_postgres::Config, StateError> {
    if let Some(url) = &config.url {
        // Checked when the config was read: it parses, without password.
        return tokio_postgres::Config::from_str(url)
            .map_err(|_| StateError::Config("[state] url: not a PostgreSQL URL".into()));
    }
    if let Some(path) = &config.url_file {
        return read_url_file(path);
    }
    let name = config.url_credential.clone().unwrap_or_default();
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
        .ok_or_else(|| StateError::NoCredentials { name: name.clone() })?;
    read_url_file(&PathBuf::from(dir).join(&name))
}

/// A host on this machine: a Unix socket, `localhost` or a loopback
/// address.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The database for people and errors: hosts, port, database, user; never
/// the password.
fn describe(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("(default user)");
    let db = pg.get_dbname().unwrap_or(user);
    format!("{}:{port}/{db} as {user}", hosts.join(","))
}

impl Db {
    /// Connects (within `connect_timeout_secs`), then migrates the schema
    /// to this writ's version, refusing a newer one.
    pub async fn connect(config: &StateConfig) -> Result<Db, StateError> {
        let db = Db::open(config)?;
        db.migrate().await?;
        Ok(db)
    }

    /// The database `config` names, not connected yet: every error here is
    /// in the settings (`[state]`, the URL file or credential, `ca_file`),
    /// none comes from the database.
    pub fn open(config: &StateConfig) -> Result<Db, StateError> {
        let gateway = gateway_name(config)?;
        let mut pg = pg_config(config)?;
        let target = describe(&pg);
        let connect = Duration::from_secs(config.connect_timeout_secs);
        pg.connect_timeout(connect);
        pg.application_name(format!("writ {gateway}"));
        if pg.get_options().is_none() {
            let lock = config.lock_timeout_secs;
            pg.options(format!(
                "-c lock_timeout={}s -c statement_timeout={}s",
                lock,
                lock * 2
            ));
        }
        // Verified TLS when required; never opportunistic TLS that would
        // accept any certificate (prefer, the default, is plain). Plain
        // only on this host, or when the URL says `sslmode=disable`: over
        // a network, `prefer` (said or left out) would send the password
        // where anyone on the path could ask for it in the clear.
        let local = pg.get_hosts().iter().all(is_local)
            && pg.get_hostaddrs().iter().all(|a| a.is_loopback());
        if pg.get_ssl_mode() == SslMode::Prefer && !local {
            return Err(StateError::Config(format!(
                "[state] url: {target} is reached over the network: add sslmode=require \
                 (with ca_file) to the URL, or sslmode=disable to send the password in the clear"
            )));
        }
        if pg.get_ssl_mode() != SslMode::Require {
            pg.ssl_mode(SslMode::Disable);
        }
        let tls = if pg.get_ssl_mode() == SslMode::Require {
            crate::tls::client_config(config.ca_file.as_deref())?
        } else {
            // Never used (TLS is off), so no roots to read.
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(crate::tls::TlsError::from)?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        };
        let tls = MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect))
            .create_timeout(Some(connect))
            .recycle_timeout(Some(connect))
            .build()
            .map_err(|e| StateError::Pool {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        Ok(Db {
            pool,
            gateway,
            target,
        })
    }

    /// Connects (within `connect_timeout_secs`) and migrates the schema to
    /// this writ's version, refusing a newer one. May be called again after
    /// it failed (the database down or failing over).
    pub async fn migrate(&self) -> Result<(), StateError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client, &self.target).await
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StateError> {
        use deadpool_postgres::PoolError;
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(source) => StateError::Db {
                target: self.target.clone(),
                source,
            },
            PoolError::Timeout(_) => StateError::Pool {
                target: self.target.clone(),
                detail: "timed out (raise [state] connect_timeout_secs, or check the server)"
                    .into(),
            },
            other => StateError::Pool {
                target: self.target.clone(),
                detail: other.to_string(),
            },
        })
    }

    /// This gateway's name.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The database for people: hosts, port, database, user.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Wraps a database error with the target.
    pub(crate) fn err(&self) -> impl Fn(tokio_postgres::Error) -> StateError + '_ {
        |source| StateError::Db {
            target: self.target.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;

    fn config(url: &str) -> StateConfig {
        StateConfig {
            backend: Backend::Postgres,
            url: Some(url.into()),
            gateway: Some("gw".into()),
            ..StateConfig::default()
        }
    }

    #[test]
    fn plain_connections_over_a_network_need_sslmode_disable_said() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Refused before any connection is tried (the host is no real one).
        for url in [
            "postgresql://writ@db.invalid/writ",
            "postgresql://writ@db.invalid/writ?sslmode=prefer",
            "host=db.invalid,localhost user=writ dbname=writ",
            // hostaddr is where it connects, whatever host names.
            "host=localhost hostaddr=192.0.2.7 user=writ dbname=writ",
            "hostaddr=192.0.2.7 user=writ dbname=writ",
        ] {
            let e = rt.block_on(Db::connect(&config(url))).err().unwrap();
            let text = e.to_string();
            assert!(
                text.contains("sslmode=require") && text.contains("over the network"),
                "{url}: {text}"
            );
        }
        for host in [
            Host::Tcp("localhost".into()),
            Host::Tcp("127.0.0.1".into()),
            Host::Tcp("::1".into()),
            Host::Unix("/run/postgresql".into()),
        ] {
            assert!(is_local(&host), "{host:?}");
        }
        assert!(!is_local(&Host::Tcp("db.example".into())));
        assert!(!is_local(&Host::Tcp("192.0.2.7".into())));
    }
}
