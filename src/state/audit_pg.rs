//! The audit chain in PostgreSQL: one chain for every gateway sharing the
//! database, the same records and rules as the file log
//! ([`crate::audit`]), each record naming the gateway that wrote it.
//!
//! Invariants:
//! - An append runs in one transaction that first locks the head row
//!   (`SELECT ... FOR UPDATE`): appends from any number of gateways are
//!   serialised, each sees the record before it, and a failed append
//!   leaves nothing (no record without its head, no gap).
//! - `writ_audit_record.line` is the record's exact signed line (what the
//!   chain hashes); the head row holds the count, the last line's hash and
//!   the signed head line (the file log's `audit.head`).
//! - Verification reads one consistent snapshot (repeatable read) and
//!   streams the rows: memory does not grow with the chain.
//! - [`PgAudit::export`] writes `audit.log`, `audit.head` and `audit.pub`
//!   as the file backend keeps them: `writ audit verify` on that directory
//!   checks it with the file verifier. The directory is new and made 0700,
//!   each file new (`create_new`: nothing there is followed or
//!   overwritten) and 0600, whatever the umask (the chain names operators
//!   and what they did); files and directory are fsynced.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt as _;
use tokio_postgres::IsolationLevel;

use super::{Db, StateError};
use crate::audit::{
    self, AuditError, Begin, ChainCheck, GENESIS, HeadProblem, Record, Verified, check_begin,
};
use crate::hash::sha256_hex;

/// The audit chain of the keyring in `keys_dir` (its audit key signs),
/// kept in the database.
pub struct PgAudit {
    db: Db,
    keys_dir: PathBuf,
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub verified: Verified,
    pub dir: PathBuf,
}

/// No parameters, for `query_raw`.
fn none() -> std::iter::Empty<&'static (dyn tokio_postgres::types::ToSql + Sync)> {
    std::iter::empty()
}

impl PgAudit {
    pub fn new(db: Db, keys_dir: &Path) -> PgAudit {
        PgAudit {
            db,
            keys_dir: keys_dir.to_path_buf(),
        }
    }

    /// The database for people.
    pub fn target(&self) -> &str {
        self.db.target()
    }

    /// The database connection (shared with the other state kept there).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// This gateway's name, as its records carry it.
    pub fn gateway(&self) -> &str {
        self.db.gateway()
    }

    /// (records, hash of the last record) as the head row says.
    pub async fn head(&self) -> Result<(u64, String), StateError> {
        let client = self.db.client().await?;
        let row = client
            .query_one("SELECT records, last FROM writ_audit_head", &[])
            .await
            .map_err(self.db.err())?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get(1)))
    }

    fn missing(&self) -> StateError {
        StateError::Missing {
            target: self.target().to_string(),
            dir: self.keys_dir.clone(),
        }
    }

    pub async fn check_writable(&self) -> Result<(), StateError> {
        audit::load_key(&self.keys_dir)?;
        if self.head().await?.0 == 0 {
            return Err(self.missing());
        }
        Ok(())
    }

    /// Refuses when the chain already has records (`action` would begin
    /// one).
    pub async fn check_can_begin(&self, action: &str) -> Result<(), StateError> {
        let (records, _) = self.head().await?;
        if records > 0 {
            return Err(StateError::NotABeginning {
                target: self.target().to_string(),
                records,
                action: action.to_string(),
            });
        }
        Ok(())
    }

    /// Appends one signed record naming this gateway, serialised with
    /// every other gateway's appends by the head row's lock.
    pub async fn append(
        &self,
        operator: &str,
        action: &str,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Result<Record, StateError> {
        let pair = audit::load_key(&self.keys_dir)?;
        let err = self.db.err();
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(&err)?;
        let row = tx
            .query_one(
                "SELECT records, last, line FROM writ_audit_head FOR UPDATE",
                &[],
            )
            .await
            .map_err(&err)?;
        let count = row.get::<_, i64>(0).max(0) as u64;
        // The head row's columns are not signed, its line is: nothing is
        // appended unless the line, the columns and the last record agree
        // (a chain cut, with the columns rewritten to match, would verify
        // again once the next record and head were signed over its end).
        if count > 0 {
            let public = audit::public_key(&self.keys_dir)?;
            let named = row
                .get::<_, Option<String>>(2)
                .and_then(|line| audit::head_names(&line, &public));
            let last_row = tx
                .query_opt(
                    "SELECT seq, line FROM writ_audit_record ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(&err)?
                .map(|r| {
                    (
                        r.get::<_, i64>(0).max(0) as u64,
                        sha256_hex(r.get::<_, String>(1).as_bytes()),
                    )
                });
            let last: String = row.get(1);
            let agrees = named.as_ref() == Some(&(count, last.clone()))
                && last_row.as_ref() == Some(&(count, last));
            if !agrees {
                return Err(StateError::HeadDisagrees {
                    target: self.target().to_string(),
                });
            }
        }
        match check_begin(count, action) {
            Ok(()) => {}
            Err(Begin::Missing) => return Err(self.missing()),
            Err(Begin::NotABeginning) => {
                return Err(StateError::NotABeginning {
                    target: self.target().to_string(),
                    records: count,
                    action: action.to_string(),
                });
            }
        }
        let mut record = Record {
            seq: count + 1,
            time: crate::keys::now_rfc3339(),
            operator: operator.to_string(),
            gateway: Some(self.gateway().to_string()),
            action: action.to_string(),
            params,
            prev: row.get(1),
            sig: String::new(),
        };
        let line = audit::sign_record(&pair, &mut record);
        let hash = sha256_hex(line.as_bytes());
        let seq = record.seq as i64;
        tx.execute(
            "INSERT INTO writ_audit_record (seq, gateway, line) VALUES ($1, $2, $3)",
            &[&seq, &record.gateway, &line],
        )
        .await
        .map_err(&err)?;
        let head = audit::head_line(&pair, record.seq, &hash);
        tx.execute(
            "UPDATE writ_audit_head SET records = $1, last = $2, line = $3",
            &[&seq, &hash, &head],
        )
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(record)
    }

    /// Checks every record (signature, sequence, chain, place, and that
    /// the row's columns agree with the signed record), then the head.
    /// `sink` gets each line as checked (the export writes it).
    async fn check_all(
        &self,
        public_key: Option<&Path>,
        mut sink: impl FnMut(&str) -> Result<(), StateError>,
    ) -> Result<(Verified, Option<String>), StateError> {
        let pub_path =
            public_key.map_or_else(|| self.keys_dir.join(audit::PUBLIC_FILE), Path::to_path_buf);
        let mut chain = ChainCheck::new(&self.keys_dir, audit::read_public_key(&pub_path)?);
        let err = self.db.err();
        let mut client = self.db.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(&err)?;
        let head: Option<String> = tx
            .query_one("SELECT line FROM writ_audit_head", &[])
            .await
            .map_err(&err)?
            .get(0);
        let rows = tx
            .query_raw(
                "SELECT seq, gateway, line FROM writ_audit_record ORDER BY seq",
                none(),
            )
            .await
            .map_err(&err)?;
        let mut rows = std::pin::pin!(rows);
        let broken = |seq: u64, problem: String| StateError::Broken {
            target: self.target().to_string(),
            seq,
            problem,
        };
        while let Some(row) = rows.try_next().await.map_err(&err)? {
            let line: String = row.get(2);
            let record = chain
                .line(line.as_bytes(), false)
                .map_err(|(seq, problem)| broken(seq, problem))?;
            let seq: i64 = row.get(0);
            if seq != record.seq as i64 {
                return Err(broken(
                    record.seq,
                    format!("stored as row {seq}: the row was altered"),
                ));
            }
            let gateway: Option<String> = row.get(1);
            if gateway != record.gateway {
                return Err(broken(
                    record.seq,
                    "the row's gateway differs from the signed record's: the row was altered"
                        .into(),
                ));
            }
            sink(&line)?;
        }
        chain.head(head.as_deref()).map_err(|p| match p {
            HeadProblem::Bad(problem) => StateError::BadHead {
                target: self.target().to_string(),
                problem,
            },
            HeadProblem::TailCut(seq, problem) => broken(seq, problem),
        })?;
        if chain.count == 0 && crate::keys::Keyring::exists(&self.keys_dir) {
            return Err(self.missing());
        }
        Ok((chain.verified(), head))
    }

    /// Checks the whole chain (see [`audit::verify`]).
    pub async fn verify(&self, public_key: Option<&Path>) -> Result<Verified, StateError> {
        Ok(self.check_all(public_key, |_| Ok(())).await?.0)
    }

    /// Checks that record `records` hashes to `expected`.
    pub async fn check_noted_head(&self, records: u64, expected: &str) -> Result<(), StateError> {
        let client = self.db.client().await?;
        let seq = i64::try_from(records).unwrap_or(i64::MAX);
        let row = client
            .query_opt("SELECT line FROM writ_audit_record WHERE seq = $1", &[&seq])
            .await
            .map_err(self.db.err())?;
        let actual = match (records, row) {
            (0, _) => GENESIS.to_string(),
            (_, Some(row)) => sha256_hex(row.get::<_, String>(0).as_bytes()),
            _ => "nothing (the chain is shorter)".to_string(),
        };
        if actual != expected.to_ascii_lowercase() {
            return Err(StateError::HeadDiffers {
                target: self.target().to_string(),
                records,
                actual,
                expected: expected.to_string(),
            });
        }
        Ok(())
    }

    /// Every record, parsed but not verified.
    pub async fn records(&self) -> Result<Vec<Record>, StateError> {
        let client = self.db.client().await?;
        let rows = client
            .query("SELECT seq, line FROM writ_audit_record ORDER BY seq", &[])
            .await
            .map_err(self.db.err())?;
        rows.iter()
            .map(|row| {
                serde_json::from_str(row.get(1)).map_err(|_| StateError::Broken {
                    target: self.target().to_string(),
                    seq: row.get::<_, i64>(0).max(0) as u64,
                    problem: "not a record (run `writ audit verify`)".into(),
                })
            })
            .collect()
    }

    /// Writes the chain to the new directory `out` (0700; its files 0600)
    /// as the file backend keeps it (audit.log, audit.head, audit.pub),
    /// checking it on the way; a chain that does not verify is not exported
    /// (the partial directory is removed).
    pub async fn export(&self, out: &Path) -> Result<Exported, StateError> {
        let io = |source| StateError::Export {
            path: out.to_path_buf(),
            source,
        };
        let exists = || StateError::ExportExists {
            path: out.to_path_buf(),
        };
        if std::fs::symlink_metadata(out).is_ok() {
            return Err(exists());
        }
        let public = self.keys_dir.join(audit::PUBLIC_FILE);
        audit::read_public_key(&public)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Not recursive: fails if `out` appeared meanwhile.
        match DirBuilder::new().mode(0o700).create(out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(e) => return Err(io(e)),
        }
        let result = self.export_into(out, &public).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(out);
        }
        result
    }

    async fn export_into(&self, out: &Path, public: &Path) -> Result<Exported, StateError> {
        let io = |source| StateError::Export {
            path: out.to_path_buf(),
            source,
        };
        let public = std::fs::read(public).map_err(|source| AuditError::Io {
            path: public.to_path_buf(),
            source,
        })?;
        write_new(&out.join(audit::PUBLIC_FILE), &public).map_err(io)?;
        let log = create_new(&out.join(audit::LOG_FILE)).map_err(io)?;
        let mut log = std::io::BufWriter::new(log);
        let (verified, head) = self
            .check_all(None, |line| {
                log.write_all(line.as_bytes())
                    .and_then(|()| log.write_all(b"\n"))
                    .map_err(io)
            })
            .await?;
        log.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        if let Some(mut head) = head {
            head.push('\n');
            write_new(&out.join(audit::HEAD_FILE), head.as_bytes()).map_err(io)?;
        }
        File::open(out).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(Exported {
            verified,
            dir: out.to_path_buf(),
        })
    }

    /// Moves the keyring directory's file log into the empty chain here,
    /// after verifying it: the same records, the same chain, continued by
    /// every gateway from then on. The file log is then renamed to
    /// [`audit::IMPORTED_FILE`], which closes it for appends.
    pub async fn import(&self) -> Result<Verified, StateError> {
        // A chain here already (imported, or begun by a gateway): said
        // before the file log is looked at (it may be closed already).
        let (records, _) = self.head().await?;
        if records > 0 {
            return Err(StateError::NotABeginning {
                target: self.target().to_string(),
                records,
                action: "audit import".into(),
            });
        }
        let dir = self.keys_dir.clone();
        let verified = tokio::task::spawn_blocking(move || audit::verify(&dir, None)).await??;
        let pair = audit::load_key(&self.keys_dir)?;
        let path = self.keys_dir.join(audit::LOG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let err = self.db.err();
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(&err)?;
        let records: i64 = tx
            .query_one("SELECT records FROM writ_audit_head FOR UPDATE", &[])
            .await
            .map_err(&err)?
            .get(0);
        if records > 0 {
            return Err(StateError::NotABeginning {
                target: self.target().to_string(),
                records: records as u64,
                action: "audit import".into(),
            });
        }
        let insert = tx
            .prepare("INSERT INTO writ_audit_record (seq, gateway, line) VALUES ($1, $2, $3)")
            .await
            .map_err(&err)?;
        // Exactly the lines verified: the file read again must still end
        // in the verified head (nothing changed in between).
        let changed = || AuditError::Broken {
            path: path.clone(),
            line: verified.records,
            problem: "changed while it was imported; nothing imported (try again)".into(),
        };
        let mut last = GENESIS.to_string();
        for line in text.lines().take(verified.records as usize) {
            let record: Record = serde_json::from_str(line).map_err(|_| changed())?;
            tx.execute(&insert, &[&(record.seq as i64), &record.gateway, &line])
                .await
                .map_err(&err)?;
            last = sha256_hex(line.as_bytes());
        }
        if last != verified.head {
            return Err(changed().into());
        }
        let head = audit::head_line(&pair, verified.records, &verified.head);
        tx.execute(
            "UPDATE writ_audit_head SET records = $1, last = $2, line = $3",
            &[&(verified.records as i64), &verified.head, &head],
        )
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        // The file chain is closed: renamed, so that no config without
        // `[state]` appends to it (a fork of the chain no auditor looks
        // at). A crash before leaves it live, as before this rename.
        let imported = self.keys_dir.join(audit::IMPORTED_FILE);
        std::fs::rename(&path, &imported)
            .and_then(|()| File::open(&self.keys_dir).and_then(|d| d.sync_all()))
            .map_err(|source| AuditError::Io {
                path: imported,
                source,
            })?;
        Ok(verified)
    }
}

/// A new file (never one already there, nor through a symlink), 0600.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A new 0600 file holding `bytes`, fsynced.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
