//! `writ keys`: the keyring on disk.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use secrecy::ExposeSecret;
use writ::audit;
use writ::keys::{self, EpochState, KeyError, Keyring};

use super::{Context, audit_record, out};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a new keyring: a master key sealed with the passphrase and one
    /// active epoch
    Init {
        /// Also seal all mail to this escrow recipient (its secret is kept
        /// offline)
        #[arg(long, value_name = "AGE1...", value_parser = parse_recipient)]
        escrow_recipient: Option<age::x25519::Recipient>,

        /// scrypt work factor for the passphrase, log2 of N [default: age's,
        /// about one second]
        #[arg(long, value_name = "N", value_parser = work_factor_parser())]
        work_factor: Option<u8>,
    },

    /// List the epochs (the active one is marked with *)
    List,

    /// Start a new active epoch; the current one becomes decrypt-only.
    /// Needs no passphrase
    Rotate,

    /// Change the passphrase (and with --new-master, the master key)
    Passwd {
        /// Also replace the master key and re-encrypt every epoch file
        #[arg(long)]
        new_master: bool,

        /// Read the new passphrase from FILE instead of asking
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,

        /// scrypt work factor for the new passphrase, log2 of N [default:
        /// age's]
        #[arg(long, value_name = "N", value_parser = work_factor_parser())]
        work_factor: Option<u8>,
    },

    /// Print an epoch's private age identity (AGE-SECRET-KEY-1...) on stdout
    ExportIdentity {
        /// Epoch id, as shown by `writ keys list`
        epoch: String,
    },

    /// Retire a decrypt-only epoch: delete its private key. Refused while
    /// the provider still holds mail sealed under it (searched in every
    /// mailbox of the given accounts; move it with `writ mailbox reseal`)
    Retire {
        /// Epoch id, as shown by `writ keys list`
        epoch: String,

        #[command(flatten)]
        login: super::mailbox::LoginArgs,
    },
}

pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    age::x25519::Recipient::from_str(s.trim())
        .map_err(|e| format!("not an age X25519 recipient: {e}"))
}

pub fn work_factor_parser() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(1..=i64::from(keys::MAX_WORK_FACTOR))
}

pub fn run(ctx: &Context, command: KeysCommand) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    match command {
        KeysCommand::Init {
            escrow_recipient,
            work_factor,
        } => {
            // Refuse before asking for a passphrase that would be wasted.
            if Keyring::exists(dir) {
                return Err(KeyError::AlreadyExists {
                    dir: dir.to_path_buf(),
                }
                .into());
            }
            // A shared chain that has records belongs to another keyring.
            ctx.block_on(ctx.audit_log()?.check_can_begin())??;
            let passphrase = ctx.passphrase("New keyring passphrase: ", true)?;
            let keyring = Keyring::init(dir, &passphrase, escrow_recipient, work_factor)?;
            let active = keyring.active()?;
            audit_record(
                ctx,
                "keys.init",
                audit::params([
                    ("epoch", active.id.clone().into()),
                    ("recipient", active.recipient.to_string().into()),
                    (
                        "master_recipient",
                        keyring.master_recipient().to_string().into(),
                    ),
                    ("escrow", keyring.escrow().map(|e| e.to_string()).into()),
                ]),
            )?;
            let mut text = format!(
                "created keyring in {}\nactive epoch {}: {}\n",
                dir.display(),
                active.id,
                active.recipient
            );
            if let Some(escrow) = keyring.escrow() {
                text.push_str(&format!("escrow: {escrow}\n"));
            }
            out(&text)
        }
        KeysCommand::List => {
            let keyring = Keyring::load(dir)?;
            let mut text = format!(
                "  {:<16}  {:<12}  {:<20}  RECIPIENT\n",
                "EPOCH", "STATE", "CREATED"
            );
            for e in keyring.epochs() {
                let mark = if e.state == EpochState::Active {
                    '*'
                } else {
                    ' '
                };
                text.push_str(&format!(
                    "{mark} {:<16}  {:<12}  {:<20}  {}\n",
                    e.id,
                    e.state.to_string(),
                    e.created,
                    e.recipient
                ));
            }
            if let Some(escrow) = keyring.escrow() {
                text.push_str(&format!("escrow: {escrow}\n"));
            }
            out(&text)
        }
        KeysCommand::Rotate => {
            let mut keyring = Keyring::load(dir)?;
            ctx.check_audit_writable()?;
            let previous = keyring.active().ok().map(|e| e.id.clone());
            let active = keyring.rotate()?;
            audit_record(
                ctx,
                "keys.rotate",
                audit::params([
                    ("epoch", active.id.clone().into()),
                    ("recipient", active.recipient.to_string().into()),
                    ("previous", previous.clone().into()),
                ]),
            )?;
            let mut text = format!("epoch {} is now active: {}\n", active.id, active.recipient);
            if let Some(previous) = previous {
                text.push_str(&format!("epoch {previous} is now decrypt-only\n"));
            }
            out(&text)
        }
        KeysCommand::Passwd {
            new_master,
            new_passphrase_file,
            work_factor,
        } => {
            let keyring = Keyring::load(dir)?;
            ctx.check_audit_writable()?;
            let old = ctx.passphrase("Current keyring passphrase: ", false)?;
            let new = keys::passphrase_from(
                new_passphrase_file.as_deref(),
                "New keyring passphrase: ",
                true,
            )?;
            keyring.passwd(&old, &new, new_master, work_factor)?;
            let master = Keyring::load(dir)?.master_recipient().to_string();
            audit_record(
                ctx,
                "keys.passwd",
                audit::params([
                    ("new_master", new_master.into()),
                    ("master_recipient", master.into()),
                ]),
            )?;
            if new_master {
                out(&format!(
                    "passphrase and master key changed; {} epoch files re-encrypted\n",
                    keyring.epochs().len()
                ))
            } else {
                out("passphrase changed\n")
            }
        }
        KeysCommand::Retire { epoch, login } => retire(ctx, &epoch, &login),
        KeysCommand::ExportIdentity { epoch } => {
            let keyring = Keyring::load(dir)?;
            // Unknown id: say so before asking for the passphrase.
            keyring.epoch(&epoch)?;
            // An export that cannot be recorded does not happen.
            ctx.check_audit_writable()?;
            let passphrase = ctx.passphrase("Keyring passphrase: ", false)?;
            let unlocked = keyring.unlock(&passphrase)?;
            let identity = unlocked
                .identity(&epoch)
                .ok_or_else(|| KeyError::UnknownEpoch { id: epoch.clone() })?;
            // Recorded before the key is shown: a record without an export
            // (a closed pipe) is better than an export without a record.
            audit_record(
                ctx,
                "keys.export-identity",
                audit::params([("epoch", epoch.clone().into())]),
            )?;
            eprintln!(
                "writ: warning: this is the private key of epoch {epoch}: whoever holds it can read \
                 all mail sealed under that epoch. Keep it as safe as the keyring, delete it after use."
            );
            let secret = identity.to_string();
            let mut line = zeroize::Zeroizing::new(secret.expose_secret().to_string());
            line.push('\n');
            out(&line)
        }
    }
}

/// `writ keys retire`: the provider is asked first; the key goes only
/// when no account given holds mail that needs it.
fn retire(ctx: &Context, epoch: &str, login: &super::mailbox::LoginArgs) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    let mut keyring = Keyring::load(dir)?;
    match keyring.epoch(epoch)?.state {
        EpochState::Active => return Err(KeyError::RetireActive { id: epoch.into() }.into()),
        EpochState::Retired => return Err(KeyError::AlreadyRetired { id: epoch.into() }.into()),
        EpochState::DecryptOnly => {}
    }
    ctx.check_audit_writable()?;
    let target = super::mailbox::provider_target(ctx)?;
    let credentials = login.credentials()?;
    let backoff = super::mailbox::backoff(ctx);
    let in_use = super::mailbox::runtime()?.block_on(async {
        let mut in_use = Vec::new();
        for creds in &credentials {
            for (mailbox, n) in backoff
                .run(
                    || writ::jobs::census::epoch_in_use(&target, creds, epoch),
                    super::mailbox::say_retry(&creds.user),
                )
                .await
                .with_context(|| format!("searching the mailboxes of {}", creds.user))?
            {
                in_use.push(format!("{} {mailbox}: {n}", creds.user));
            }
        }
        anyhow::Ok(in_use)
    })?;
    if !in_use.is_empty() {
        anyhow::bail!(
            "epoch {epoch} is still in use, not retired; move that mail first with `writ mailbox \
             reseal --from-epoch {epoch}`: {}",
            in_use.join(", ")
        );
    }
    keyring.retire(epoch)?;
    let accounts: Vec<String> = credentials.iter().map(|c| c.user.clone()).collect();
    audit_record(
        ctx,
        "keys.retire",
        audit::params([
            ("epoch", epoch.to_string().into()),
            ("checked_accounts", accounts.into()),
        ]),
    )?;
    out(&format!(
        "epoch {epoch} retired: its private key is deleted; no mail at the provider needed it\n"
    ))
}
