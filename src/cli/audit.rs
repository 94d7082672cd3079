//! `writ audit`: check, print, export and import the audit log, on the
//! backend `[state]` names (the keyring directory's files, or PostgreSQL).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use writ::audit;
use writ::keys::Keyring;
use writ::state::AuditLog;

use super::{Context, audit_record, out};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every record's signature and the hash chain; name the first
    /// bad record. Needs only the audit public key
    Verify {
        /// The audit public key to check against [default: audit.pub in the
        /// keyring directory]; give a copy kept elsewhere
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,

        /// A head noted earlier (N:HASH, as printed by verify): the log must
        /// still hold that record N
        #[arg(long, value_name = "N:HASH")]
        head: Option<String>,
    },

    /// Print the records
    Show {
        /// Only records at or after DATE (YYYY-MM-DD or
        /// YYYY-MM-DDTHH:MM:SSZ, UTC)
        #[arg(long, value_name = "DATE")]
        since: Option<String>,

        /// Print a JSON array of the records as stored
        #[arg(long)]
        json: bool,
    },

    /// Write the chain (PostgreSQL backend) to a new directory (0700, its
    /// files 0600) as the files backend keeps it (audit.log, audit.head,
    /// audit.pub), for an auditor: `writ --keys DIR audit verify` checks
    /// it. A chain that does not verify is not exported
    Export {
        /// The directory to create
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },

    /// Move the keyring directory's audit log (verified first) into the
    /// empty PostgreSQL chain, which every gateway then continues
    Import,

    /// Create the audit key for a keyring made before the audit log
    Init {
        /// Begin a new log for a keyring whose log is lost for good (after
        /// trying a backup): its first record (audit.restart) says so, and
        /// `audit verify` reports it
        #[arg(long)]
        new_chain: bool,
    },
}

pub fn run(ctx: &Context, command: AuditCommand) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    match command {
        AuditCommand::Verify { public_key, head } => {
            let log = ctx.audit_log()?;
            let verified = ctx.block_on(log.verify(public_key.as_deref()))??;
            if let Some(head) = head {
                let (n, hash) = head
                    .split_once(':')
                    .and_then(|(n, h)| Some((n.parse::<u64>().ok()?, h)))
                    .context("--head: expected N:HASH, as printed by `writ audit verify`")?;
                ctx.block_on(log.check_noted_head(n, hash))??;
            }
            let restarted = if verified.restarted {
                "note: this log was begun anew (audit.restart): the records before it are lost\n"
            } else {
                ""
            };
            out(&format!(
                "{}: {} records, chain and signatures OK\nhead: {}:{}\n{restarted}",
                log.location(),
                verified.records,
                verified.records,
                verified.head
            ))
        }
        AuditCommand::Show { since, json } => {
            let since = since.as_deref().map(audit::parse_since).transpose()?;
            let log = ctx.audit_log()?;
            let records: Vec<audit::Record> = ctx
                .block_on(log.records())??
                .into_iter()
                .filter(|r| since.as_deref().is_none_or(|s| audit::is_since(r, s)))
                .collect();
            if json {
                let mut text = serde_json::to_string_pretty(&records)?;
                text.push('\n');
                return out(&text);
            }
            let mut text = String::new();
            for r in &records {
                let params: Vec<String> = r
                    .params
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                let line = format!(
                    "{:>4}  {}  {:<12}  {:<16}  {}",
                    r.seq,
                    r.time,
                    r.operator,
                    r.action,
                    params.join(" ")
                );
                // One record, one line, whatever a parameter holds.
                text.extend(line.chars().map(|c| if c.is_control() { '?' } else { c }));
                text.push('\n');
            }
            out(&text)
        }
        AuditCommand::Export { out: to } => {
            let AuditLog::Postgres(pg) = ctx.audit_log()? else {
                anyhow::bail!(
                    "audit export is for the PostgreSQL backend: the files backend's log is \
                     already {} (copy it)",
                    dir.join(audit::LOG_FILE).display()
                );
            };
            let exported = ctx.block_on(pg.export(&to))??;
            out(&format!(
                "exported {} records to {}, chain and signatures OK\nhead: {}:{}\n",
                exported.verified.records,
                exported.dir.display(),
                exported.verified.records,
                exported.verified.head
            ))
        }
        AuditCommand::Import => {
            let AuditLog::Postgres(pg) = ctx.audit_log()? else {
                anyhow::bail!(
                    "audit import moves the file log into PostgreSQL: set [state] backend = \
                     \"postgres\" first"
                );
            };
            let verified = ctx.block_on(pg.import())??;
            out(&format!(
                "imported {} records from {} into {}\nhead: {}:{}\n",
                verified.records,
                dir.join(audit::LOG_FILE).display(),
                pg.target(),
                verified.records,
                verified.head
            ))
        }
        AuditCommand::Init { new_chain } => init(ctx, new_chain),
    }
}

/// `audit init`: the audit key and the chain's first record for a keyring
/// made before the audit log; with `new_chain`, a new chain for a keyring
/// whose log is lost (the key is kept if it is there).
fn init(ctx: &Context, new_chain: bool) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    let keyring = Keyring::load(dir)?;
    let oldest = keyring.epochs().first().map(|e| e.id.clone());
    let chain = ctx.audit_log()?;
    let log = chain.location();
    let has_records = ctx.block_on(chain.has_records())??;
    if new_chain {
        if has_records {
            anyhow::bail!(
                "{log} holds records: there is no lost log to begin anew (`writ audit verify` \
                 tells what is wrong with it)"
            );
        }
        let created = !audit::has_key(dir);
        if created {
            audit::create_key(dir)?;
        }
        audit_record(
            ctx,
            audit::RESTART,
            audit::params([("epoch", oldest.into()), ("new_key", created.into())]),
        )?;
        return out(&format!(
            "began a new audit log {log} (audit.restart): the records before it are lost\n"
        ));
    }
    if audit::has_key(dir) {
        anyhow::bail!(
            "{} exists: this keyring already has an audit key",
            dir.join(audit::PUBLIC_FILE).display()
        );
    }
    if has_records || dir.join(audit::LOG_FILE).exists() {
        return Err(audit::AuditError::Exists {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    audit::create_key(dir)?;
    audit_record(ctx, "audit.init", audit::params([("epoch", oldest.into())]))?;
    out(&format!(
        "created the audit key {}\n",
        dir.join(audit::PUBLIC_FILE).display()
    ))
}
