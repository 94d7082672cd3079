//! writ's tables in PostgreSQL and their migrations, run by writ itself.
//!
//! Invariants: migrations are numbered from 1 and never edited once
//! released (a change is a new migration); each run applies, in one
//! transaction under an advisory lock (so gateways starting together
//! migrate once), every migration past the version recorded in
//! `writ_schema`, and records each. A database at a version past
//! [`SCHEMA_VERSION`] was migrated by a newer writ: this one refuses to use
//! it rather than write rows a newer schema may not expect.

use deadpool_postgres::Client;

use super::StateError;

/// The advisory lock key migrations hold ("writ" and 1).
const MIGRATION_LOCK: i64 = 0x7772_6974_0000_0001;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    // 1: the audit chain shared by every gateway. `line` holds a record's
    // exact signed bytes (what the chain hashes); `gateway` repeats the
    // record's gateway for queries (verify checks they agree). The head
    // is one row, locked by every append: appends are serialised by it.
    "CREATE TABLE writ_audit_record (
         seq bigint PRIMARY KEY CHECK (seq > 0),
         gateway text,
         line text NOT NULL,
         written timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE writ_audit_head (
         id boolean PRIMARY KEY DEFAULT true CHECK (id),
         records bigint NOT NULL CHECK (records >= 0),
         last text NOT NULL,
         line text
     );
     INSERT INTO writ_audit_head (records, last, line)
         VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000', NULL);",
    // 2: disclosure requests (under the SHA-256 approvals sign) and their
    // approvals, one per approver key, so any gateway can disclose.
    "CREATE TABLE writ_disclosure_request (
         digest text PRIMARY KEY,
         case_ref text NOT NULL,
         request text NOT NULL,
         gateway text NOT NULL,
         operator text NOT NULL,
         created timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE writ_disclosure_approval (
         digest text NOT NULL REFERENCES writ_disclosure_request ON DELETE CASCADE,
         approver_key text NOT NULL,
         approval text NOT NULL,
         gateway text NOT NULL,
         added timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (digest, approver_key)
     );",
    // 3: mailbox-job checkpoints (the files' JSON, one row per account,
    // mailbox and job) and the lease per account and mailbox that lets one
    // run at a time work there, on any gateway.
    "CREATE TABLE writ_job_checkpoint (
         account text NOT NULL,
         mailbox text NOT NULL,
         job text NOT NULL,
         checkpoint text NOT NULL,
         gateway text NOT NULL,
         updated timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (account, mailbox, job)
     );
     CREATE TABLE writ_mailbox_lease (
         account text NOT NULL,
         mailbox text NOT NULL,
         gateway text NOT NULL,
         holder text NOT NULL,
         expires timestamptz NOT NULL,
         PRIMARY KEY (account, mailbox)
     );",
];

/// The schema version this writ migrates to and works with.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) async fn migrate(client: &mut Client, target: &str) -> Result<(), StateError> {
    let err = |source| StateError::Db {
        target: target.to_string(),
        source,
    };
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS writ_schema (
             version integer PRIMARY KEY,
             applied timestamptz NOT NULL DEFAULT now(),
             writ text NOT NULL
         )",
    )
    .await
    .map_err(err)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM writ_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            target: target.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute(
            "INSERT INTO writ_schema (version, writ) VALUES ($1, $2)",
            &[&version, &env!("CARGO_PKG_VERSION")],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(())
}
