//! `writ audit`: check and print the audit log.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use writ::audit;
use writ::keys::Keyring;

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
            let verified = audit::verify(dir, public_key.as_deref())?;
            if let Some(head) = head {
                let (n, hash) = head
                    .split_once(':')
                    .and_then(|(n, h)| Some((n.parse::<u64>().ok()?, h)))
                    .context("--head: expected N:HASH, as printed by `writ audit verify`")?;
                audit::check_noted_head(dir, n, hash)?;
            }
            let restarted = if verified.restarted {
                "note: this log was begun anew (audit.restart): the records before it are lost\n"
            } else {
                ""
            };
            out(&format!(
                "{}: {} records, chain and signatures OK\nhead: {}:{}\n{restarted}",
                dir.join(audit::LOG_FILE).display(),
                verified.records,
                verified.records,
                verified.head
            ))
        }
        AuditCommand::Show { since, json } => {
            let since = since.as_deref().map(audit::parse_since).transpose()?;
            let records: Vec<audit::Record> = audit::read(dir)?
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
    let log = dir.join(audit::LOG_FILE);
    let has_records = std::fs::metadata(&log).is_ok_and(|m| m.len() > 0);
    if new_chain {
        if has_records {
            anyhow::bail!(
                "{} holds records: there is no lost log to begin anew (`writ audit verify` \
                 tells what is wrong with it)",
                log.display()
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
            "began a new audit log {} (audit.restart): the records before it are lost\n",
            log.display()
        ));
    }
    if audit::has_key(dir) {
        anyhow::bail!(
            "{} exists: this keyring already has an audit key",
            dir.join(audit::PUBLIC_FILE).display()
        );
    }
    if log.exists() {
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
