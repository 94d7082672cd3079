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
    /// active epoch; with --token, the epoch is encrypted instead by an AES
    /// key on a PKCS#11 token (HSM) and unlocking needs the token's PIN
    Init {
        /// Also seal all mail to this escrow recipient (its secret is kept
        /// offline)
        #[arg(long, value_name = "AGE1...", value_parser = parse_recipient)]
        escrow_recipient: Option<age::x25519::Recipient>,

        #[command(flatten)]
        token: TokenArgs,

        /// scrypt work factor for the passphrase, log2 of N [default: age's,
        /// about one second]
        #[arg(long, value_name = "N", value_parser = work_factor_parser())]
        work_factor: Option<u8>,
    },

    /// List the epochs (the active one is marked with *)
    List,

    /// Start a new active epoch; the current one becomes decrypt-only.
    /// Needs no passphrase (an HSM keyring needs the token PIN)
    Rotate,

    /// Change the passphrase (and with --new-master, the master key); for
    /// an HSM keyring, re-encrypt under a new token key; or move a keyring
    /// onto a token (--to-token) or back to a passphrase (--to-passphrase)
    Passwd {
        /// Also replace the master key and re-encrypt every epoch file
        #[arg(long, conflicts_with_all = ["new_token_key", "to_passphrase", "to_token"])]
        new_master: bool,

        /// HSM keyring: re-encrypt every epoch file under the token key
        /// LABEL (created on the token if there is none), which new epochs
        /// then use; the old key stays on the token until you delete it
        #[arg(long, value_name = "LABEL", conflicts_with_all = ["to_passphrase", "to_token"])]
        new_token_key: Option<String>,

        /// HSM keyring: move it back to a passphrase (a new master key,
        /// master.age; the new passphrase from --new-passphrase-file or the
        /// prompt); the token key is no longer used
        #[arg(long, conflicts_with = "to_token")]
        to_passphrase: bool,

        /// Passphrase keyring: move it onto this token (with
        /// --token-module, --token-key); master.age is deleted
        #[arg(long, value_name = "LABEL")]
        to_token: Option<String>,

        /// The token's PKCS#11 module, for --to-token
        #[arg(long, value_name = "FILE", requires = "to_token")]
        token_module: Option<PathBuf>,

        /// The token key's label, for --to-token
        #[arg(long, value_name = "LABEL", requires = "to_token", default_value = DEFAULT_TOKEN_KEY)]
        token_key: String,

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

/// The label `keys init --token` gives the token key by default.
const DEFAULT_TOKEN_KEY: &str = "writ-keyring";

/// Where an HSM keyring's key is (`keys init`).
#[derive(clap::Args)]
pub struct TokenArgs {
    /// Keep the keyring on the PKCS#11 token with this label (an HSM; the
    /// PIN from --pin-file, WRIT_PIN_FILE or the prompt)
    #[arg(long, value_name = "LABEL", requires = "token_module")]
    token: Option<String>,

    /// The token vendor's PKCS#11 module (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so)
    #[arg(long, value_name = "FILE", requires = "token")]
    token_module: Option<PathBuf>,

    /// The label of the AES key on the token; generated there (never
    /// extractable) if the token has none
    #[arg(long, value_name = "LABEL", requires = "token", default_value = DEFAULT_TOKEN_KEY)]
    token_key: String,
}

impl TokenArgs {
    fn token_ref(self) -> Option<keys::TokenRef> {
        Some(keys::TokenRef {
            module: self.token_module?,
            token_label: self.token?,
            key_label: self.token_key,
        })
    }
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
            token,
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
            let keyring = match token.token_ref() {
                Some(at) => {
                    if work_factor.is_some() {
                        anyhow::bail!(
                            "--work-factor is for a passphrase keyring; an HSM keyring has no passphrase"
                        );
                    }
                    Keyring::init_on_token(dir, at, &ctx.pin()?, escrow_recipient)?
                }
                None => {
                    let passphrase = ctx.passphrase("New keyring passphrase: ", true)?;
                    Keyring::init(dir, &passphrase, escrow_recipient, work_factor)?
                }
            };
            let active = keyring.active()?;
            audit_record(
                ctx,
                "keys.init",
                audit::params([
                    ("epoch", active.id.clone().into()),
                    ("recipient", active.recipient.to_string().into()),
                    (
                        "master_recipient",
                        keyring.master_recipient().map(|m| m.to_string()).into(),
                    ),
                    ("token", token_param(&keyring)),
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
            if keyring.escrow_unrecorded() {
                text.push_str(UNRECORDED_ESCROW);
            }
            if let Some(t) = keyring.token() {
                text.push_str(&format!(
                    "token: {} key {} (module {})\n",
                    t.token_label,
                    t.key_label,
                    t.module.display()
                ));
            }
            out(&text)
        }
        KeysCommand::Rotate => {
            let mut keyring = Keyring::load(dir)?;
            ctx.check_audit_writable()?;
            let previous = keyring.active().ok().map(|e| e.id.clone());
            let active = if keyring.token().is_some() {
                keyring.rotate_on_token(&ctx.pin()?)?
            } else {
                keyring.rotate()?
            };
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
            new_token_key,
            to_passphrase,
            to_token,
            token_module,
            token_key,
            new_passphrase_file,
            work_factor,
        } => {
            let keyring = Keyring::load(dir)?;
            ctx.check_audit_writable()?;
            if keyring.token().is_some() || to_token.is_some() {
                let to_token = to_token.map(|token_label| keys::TokenRef {
                    module: token_module.unwrap_or_default(),
                    token_label,
                    key_label: token_key,
                });
                let new_passphrase = (new_passphrase_file, work_factor);
                return passwd_token(
                    ctx,
                    keyring,
                    new_token_key,
                    to_passphrase,
                    to_token,
                    new_passphrase,
                );
            }
            if new_token_key.is_some() || to_passphrase {
                return Err(KeyError::NotOnToken {
                    dir: dir.to_path_buf(),
                }
                .into());
            }
            let old = ctx.passphrase("Current keyring passphrase: ", false)?;
            let new = keys::passphrase_from(
                new_passphrase_file.as_deref(),
                "New keyring passphrase: ",
                true,
            )?;
            keyring.passwd(&old, &new, new_master, work_factor)?;
            let master = Keyring::load(dir)?
                .master_recipient()
                .map(|m| m.to_string());
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
            let unlocked = ctx.unlock(&keyring)?;
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

/// The token an HSM keyring is kept on, for audit records.
fn token_param(keyring: &Keyring) -> serde_json::Value {
    match keyring.token() {
        Some(t) => serde_json::json!({
            "module": t.module.display().to_string(),
            "token_label": t.token_label,
            "key_label": t.key_label,
        }),
        None => serde_json::Value::Null,
    }
}

/// `keys passwd` where a token is involved: re-encrypt under a new token
/// key, or move the keyring between a passphrase and a token.
fn passwd_token(
    ctx: &Context,
    keyring: Keyring,
    new_token_key: Option<String>,
    to_passphrase: bool,
    to_token: Option<keys::TokenRef>,
    (new_passphrase_file, work_factor): (Option<PathBuf>, Option<u8>),
) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    let (action, text) = if let Some(at) = to_token {
        if let Some(token) = keyring.token() {
            return Err(KeyError::OnToken {
                dir: dir.to_path_buf(),
                label: token.token_label.clone(),
            }
            .into());
        }
        let passphrase = ctx.passphrase("Current keyring passphrase: ", false)?;
        keyring.move_to_token(&passphrase, at, &ctx.pin()?)?;
        (
            "keys.passwd.to-token",
            "keyring moved onto the token; master.age deleted (backups still open with the old passphrase)\n".to_string(),
        )
    } else if to_passphrase {
        let pin = ctx.pin()?;
        let new = keys::passphrase_from(
            new_passphrase_file.as_deref(),
            "New keyring passphrase: ",
            true,
        )?;
        keyring.move_to_passphrase(&pin, &new, work_factor)?;
        (
            "keys.passwd.to-passphrase",
            "keyring moved off the token: it now opens with the new passphrase\n".to_string(),
        )
    } else if let Some(label) = new_token_key {
        keyring.rewrap_on_token(&ctx.pin()?, &label)?;
        (
            "keys.passwd.new-token-key",
            format!(
                "{} epoch files re-encrypted under token key `{label}`; the old key may now be deleted from the token\n",
                keyring.epochs().len()
            ),
        )
    } else {
        anyhow::bail!(
            "this keyring is kept on a token: give --new-token-key LABEL (re-encrypt under a new \
             token key) or --to-passphrase; the PIN itself is changed with the token's own tools \
             (e.g. pkcs11-tool --change-pin)"
        );
    };
    let after = Keyring::load(dir)?;
    audit_record(
        ctx,
        action,
        audit::params([
            ("token", token_param(&after)),
            (
                "master_recipient",
                after.master_recipient().map(|m| m.to_string()).into(),
            ),
        ]),
    )?;
    out(&text)
}

/// `writ keys retire`: the header fields of every message of every
/// mailbox of the accounts given are read first (not the provider's
/// search, which may miss X- fields); the key goes only when none holds
/// mail that needs it.
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
                .with_context(|| format!("reading the mailboxes of {}", creds.user))?
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

/// Said of a keyring whose escrow keyring.toml does not record yet.
pub(crate) const UNRECORDED_ESCROW: &str = "note: keyring.toml does not record the escrow recipient yet (a keyring made before \
     writ recorded it): a lost escrow.txt would go unnoticed until the keyring's next \
     rewrite (`writ keys rotate`, `keys passwd`) records it\n";
