//! `writ approver`: approval keys for the disclosure quorum. Approvers run
//! these on their own machines; they need no keyring and no config.
//! `--passphrase-file` (or `WRIT_PASSPHRASE_FILE`, or the prompt) gives
//! the approval key's passphrase here, not the keyring's.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use writ::disclose::{self, Request, approval};

use super::{Context, out};

#[derive(clap::Subcommand)]
pub enum ApproverCommand {
    /// Create an approval key (Ed25519) in FILE, encrypted with your
    /// passphrase, and its public key in FILE.pub for the gateway's
    /// [disclosure] approvers
    Init {
        /// The key file to create (0600; must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,

        /// Your name as approver [default: the operator name]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,

        /// scrypt work factor for the passphrase, log2 of N [default:
        /// age's, about one second]
        #[arg(long, value_name = "N", value_parser = super::keys::work_factor_parser())]
        work_factor: Option<u8>,
    },

    /// Approve a disclosure request (as `writ disclose request` prints it)
    /// for case REF: writes an approval file to hand to the operator
    Approve {
        /// Your approval key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,

        /// The case reference you approve (must be the request's)
        #[arg(long, value_name = "REF")]
        case: String,

        /// The request file
        #[arg(long, value_name = "REQUEST_FILE")]
        request: PathBuf,

        /// The approval file to write (must not exist)
        #[arg(long, value_name = "APPROVAL_FILE")]
        out: PathBuf,
    },
}

pub fn run(ctx: &Context, command: ApproverCommand) -> Result<()> {
    match command {
        ApproverCommand::Init {
            out: path,
            name,
            work_factor,
        } => {
            let name = name.unwrap_or_else(|| ctx.operator.clone());
            writ::config::check_approver_name(&name).map_err(disclose::DiscloseError::BadName)?;
            // Refuse before asking for a passphrase that would be wasted.
            for p in [path.clone(), approval::public_path(&path)] {
                if p.exists() {
                    return Err(disclose::DiscloseError::Exists { path: p }.into());
                }
            }
            let passphrase = ctx.passphrase("New approval key passphrase: ", true)?;
            let public = approval::create_key(&path, &name, &passphrase, work_factor)?;
            use base64::Engine as _;
            let public = base64::engine::general_purpose::STANDARD.encode(public);
            out(&format!(
                "approval key of {name} written to {} (encrypted with your passphrase)\n\
                 public key in {}: give it to the gateway's administrator, for config/writ.toml:\n\
                 [disclosure]\n\
                 approvers = [\n  {{ name = {}, public_key = \"{public}\" }},\n]\n",
                path.display(),
                approval::public_path(&path).display(),
                toml::Value::String(name.clone()),
            ))
        }
        ApproverCommand::Approve {
            key,
            case,
            request,
            out: approval_path,
        } => {
            let bytes = std::fs::read(&request)
                .with_context(|| format!("cannot read {}", request.display()))?;
            let parsed =
                Request::parse(&bytes).with_context(|| format!("request {}", request.display()))?;
            if parsed.case != case {
                return Err(disclose::DiscloseError::CaseDiffers {
                    request: parsed.case,
                    given: case,
                }
                .into());
            }
            if approval_path.exists() {
                return Err(disclose::DiscloseError::Exists {
                    path: approval_path,
                }
                .into());
            }
            let passphrase = ctx.passphrase("Approval key passphrase: ", false)?;
            let approval_key = approval::load_key(&key, &passphrase)?;
            let approval = approval::approve(&approval_key, &parsed);
            write_new(&approval_path, &approval.to_file())?;
            let mut text = format!(
                "{} approves disclosure for case {:?} of {} message(s), in this order:\n",
                approval_key.name,
                parsed.case,
                parsed.messages.len()
            );
            for (i, m) in parsed.messages.iter().enumerate() {
                text.push_str(&format!("  {}. {m}\n", i + 1));
            }
            text.push_str(&format!(
                "request sha256 {}\napproval written to {}\n",
                parsed.digest_hex(),
                approval_path.display()
            ));
            out(&text)
        }
    }
}

/// Writes a file that must not exist yet.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
