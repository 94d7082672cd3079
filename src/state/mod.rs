//! Where shared state lives, chosen by `[state] backend`: the embedded
//! files of the keyring directory (the default; nothing to install) or a
//! PostgreSQL database several gateways share.
//!
//! That state is the audit chain and, on PostgreSQL, disclosure requests
//! and approvals ([`PgDisclosure`]) and the checkpoints and leases of
//! mailbox jobs and the sweep ([`PgCheckpoints`]; [`checkpoint_store`]
//! picks the store for either backend, [`CheckpointBackend`] checks its
//! settings first and connects later). [`AuditLog`] is the one thing
//! callers hold: the same operations (check, append, verify, read) on
//! either backend, so a command recording a key event does not care where
//! the record goes. Both backends keep the chain rules of [`crate::audit`]
//! (a chain begins with the keyring's creation; every record signed by the
//! audit key and chained by SHA-256); on PostgreSQL every record also names
//! the gateway that wrote it.
//!
//! The files backend does blocking file I/O on tokio's blocking pool, so
//! every method may be awaited on a runtime thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{self, AuditError, Record, Verified};
use crate::config::{Backend, StateConfig};
use crate::jobs::checkpoint::Store;

mod audit_pg;
mod checkpoint_pg;
mod disclosure_pg;
mod postgres;
mod schema;

pub use audit_pg::PgAudit;
pub use checkpoint_pg::{MAX_LEASE_SECS, MIN_LEASE_SECS, PgCheckpoints};
pub use disclosure_pg::{MAX_APPROVAL_BYTES, MAX_APPROVALS_READ, PgDisclosure, RefusedApproval};
pub use postgres::{Db, gateway_name};
pub use schema::SCHEMA_VERSION;

/// Errors of the state backends. None ever holds a database password.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0} (fix [state] in the config file)")]
    Config(String),
    #[error("cannot read the PostgreSQL URL from {}", .path.display())]
    UrlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the PostgreSQL URL in {} is not a connection URL (postgresql://user:password@host:port/dbname)",
        .path.display()
    )]
    BadUrl { path: PathBuf },
    #[error(
        "[state] url_credential = {name:?}, but $CREDENTIALS_DIRECTORY is not set (give \
         LoadCredential={name}:FILE in the systemd unit, or use url_file)"
    )]
    NoCredentials { name: String },
    #[error("cannot use PostgreSQL {target}")]
    Db {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to PostgreSQL {target}: {detail}")]
    Pool { target: String, detail: String },
    #[error(
        "PostgreSQL {target} holds writ schema version {found}, newer than this writ knows \
         ({known}): upgrade writ on this gateway to the release the database was migrated by"
    )]
    NewerSchema {
        target: String,
        found: i32,
        known: i32,
    },
    #[error(
        "the audit chain in PostgreSQL {target} is empty, but {} holds a keyring: move its \
         file log there with `writ audit import`, or restore the database from a backup",
        .dir.display()
    )]
    Missing { target: String, dir: PathBuf },
    #[error(
        "the audit chain in PostgreSQL ({target}) does not end where its signed head says \
         (records cut or rewritten): nothing is appended; `writ audit verify` says what is \
         wrong; restore the writ_audit_* tables from a backup"
    )]
    HeadDisagrees { target: String },
    #[error(
        "the audit chain in PostgreSQL {target} already holds {records} records: {action} only \
         begins a chain (another keyring's? copy that keyring's directory to this gateway \
         instead of making a new one)"
    )]
    NotABeginning {
        target: String,
        records: u64,
        action: String,
    },
    /// The chain fails verification at record `seq`.
    #[error("the audit chain in PostgreSQL {target}: record {seq}: {problem}")]
    Broken {
        target: String,
        seq: u64,
        problem: String,
    },
    #[error("the audit chain head in PostgreSQL {target}: {problem}")]
    BadHead { target: String, problem: String },
    #[error(
        "the audit chain in PostgreSQL {target} holds {records} records ending in {actual}, \
         not {expected} as given with --head"
    )]
    HeadDiffers {
        target: String,
        records: u64,
        actual: String,
        expected: String,
    },
    #[error("cannot write the export {}", .path.display())]
    Export {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} exists: export into a new directory", .path.display())]
    ExportExists { path: PathBuf },
    #[error("[state] ca_file: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the audit files task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Where mailbox-job checkpoints live on the backend `config` names: the
/// files in `dir` (the default; its leases locked in `also_locks` too, the
/// config's other file store), or the shared database with leases of
/// `[state] lease_secs` (this connects and migrates).
pub async fn checkpoint_store(
    config: &StateConfig,
    dir: &Path,
    also_locks: &Path,
) -> Result<Arc<dyn Store>, StateError> {
    CheckpointBackend::open(config, dir, also_locks)?
        .connect()
        .await
}

/// A checkpoint store whose settings were checked but which is not
/// connected yet: `writ serve` opens it at start (a bad `[state]` stops
/// start-up) and lets the sweep connect it later, retrying while the
/// database is down.
pub enum CheckpointBackend {
    /// The files: nothing to connect.
    Files(Arc<dyn Store>),
    /// The shared database, and the lease length.
    Postgres { db: Db, lease_secs: u64 },
}

impl CheckpointBackend {
    /// The backend `config` names (see [`checkpoint_store`]), without
    /// connecting: every error is in the settings.
    pub fn open(
        config: &StateConfig,
        dir: &Path,
        also_locks: &Path,
    ) -> Result<CheckpointBackend, StateError> {
        if let Some(problem) = config.problems().into_iter().next() {
            return Err(StateError::Config(problem));
        }
        Ok(match config.backend {
            Backend::Files => CheckpointBackend::Files(Arc::new(crate::jobs::checkpoint::Files(
                dir.to_path_buf(),
                vec![also_locks.to_path_buf()],
            ))),
            Backend::Postgres => CheckpointBackend::Postgres {
                db: Db::open(config)?,
                lease_secs: config.lease_secs,
            },
        })
    }

    /// The store, connected (the database's schema migrated). May be
    /// called again after it failed.
    pub async fn connect(&self) -> Result<Arc<dyn Store>, StateError> {
        Ok(match self {
            CheckpointBackend::Files(files) => files.clone(),
            CheckpointBackend::Postgres { db, lease_secs } => {
                db.migrate().await?;
                Arc::new(PgCheckpoints::new(db.clone(), *lease_secs))
            }
        })
    }
}

/// The audit chain on the configured backend.
pub enum AuditLog {
    /// `audit.log` and `audit.head` in the keyring directory.
    Files(PathBuf),
    /// One chain in PostgreSQL for every gateway.
    Postgres(PgAudit),
}

/// Runs blocking file work off the runtime threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, StateError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl AuditLog {
    /// The audit chain of the keyring in `keys_dir` on the backend
    /// `config` names. On PostgreSQL this connects and migrates the schema
    /// (refusing a newer one).
    pub async fn open(config: &StateConfig, keys_dir: &Path) -> Result<AuditLog, StateError> {
        if let Some(problem) = config.problems().into_iter().next() {
            return Err(StateError::Config(problem));
        }
        match config.backend {
            Backend::Files => Ok(AuditLog::Files(keys_dir.to_path_buf())),
            Backend::Postgres => {
                let db = Db::connect(config).await?;
                Ok(AuditLog::Postgres(PgAudit::new(db, keys_dir)))
            }
        }
    }

    /// Where the chain is, for people: a file path or the database.
    pub fn location(&self) -> String {
        match self {
            AuditLog::Files(dir) => dir.join(audit::LOG_FILE).display().to_string(),
            AuditLog::Postgres(pg) => format!("PostgreSQL {}", pg.target()),
        }
    }

    /// Whether a record can be appended (key present, chain begun),
    /// without writing: lets a command refuse before it changes anything.
    pub async fn check_writable(&self) -> Result<(), StateError> {
        match self {
            AuditLog::Files(dir) => {
                let dir = dir.clone();
                blocking(move || audit::check_writable(&dir)).await
            }
            AuditLog::Postgres(pg) => pg.check_writable().await,
        }
    }

    /// Whether a chain may begin here (a new keyring's `keys.init`): on
    /// PostgreSQL the shared chain must be empty. (The files backend checks
    /// that when the keyring is made.)
    pub async fn check_can_begin(&self) -> Result<(), StateError> {
        match self {
            AuditLog::Files(_) => Ok(()),
            AuditLog::Postgres(pg) => pg.check_can_begin("keys.init").await,
        }
    }

    /// Whether the chain holds any record.
    pub async fn has_records(&self) -> Result<bool, StateError> {
        match self {
            AuditLog::Files(dir) => {
                let log = dir.join(audit::LOG_FILE);
                Ok(std::fs::metadata(&log).is_ok_and(|m| m.len() > 0))
            }
            AuditLog::Postgres(pg) => Ok(pg.head().await?.0 > 0),
        }
    }

    /// Appends one signed record (see [`audit::append`] for the rules).
    /// `params` must hold no secret.
    pub async fn append(
        &self,
        operator: &str,
        action: &str,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Result<Record, StateError> {
        match self {
            AuditLog::Files(dir) => {
                let (dir, operator, action) =
                    (dir.clone(), operator.to_string(), action.to_string());
                blocking(move || audit::append(&dir, &operator, &action, params)).await
            }
            AuditLog::Postgres(pg) => pg.append(operator, action, params).await,
        }
    }

    /// Checks every record and the head (see [`audit::verify`]).
    pub async fn verify(&self, public_key: Option<&Path>) -> Result<Verified, StateError> {
        match self {
            AuditLog::Files(dir) => {
                let dir = dir.clone();
                let key = public_key.map(Path::to_path_buf);
                blocking(move || audit::verify(&dir, key.as_deref())).await
            }
            AuditLog::Postgres(pg) => pg.verify(public_key).await,
        }
    }

    /// Checks that record `records` still hashes to `expected` (a head
    /// noted earlier).
    pub async fn check_noted_head(&self, records: u64, expected: &str) -> Result<(), StateError> {
        match self {
            AuditLog::Files(dir) => {
                let (dir, expected) = (dir.clone(), expected.to_string());
                blocking(move || audit::check_noted_head(&dir, records, &expected)).await
            }
            AuditLog::Postgres(pg) => pg.check_noted_head(records, expected).await,
        }
    }

    /// Every record, parsed but not verified.
    pub async fn records(&self) -> Result<Vec<Record>, StateError> {
        match self {
            AuditLog::Files(dir) => {
                let dir = dir.clone();
                blocking(move || audit::read(&dir)).await
            }
            AuditLog::Postgres(pg) => pg.records().await,
        }
    }
}
