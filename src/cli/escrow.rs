//! `writ escrow`: the escrow key split among custodians.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use writ::audit;
use writ::envelope::{self, EnvelopeError};
use writ::escrow;
use writ::keys::{self, Keyring};

use super::{Context, audit_if_possible, audit_record, input, out, parse_recipient, peek_header};

#[derive(Subcommand)]
pub enum EscrowCommand {
    /// Create the escrow key, split it into one share per custodian (each
    /// share file encrypted to that custodian), and seal all new mail to it
    /// too (keys/escrow.txt). The whole key is never stored
    Init {
        /// Number of shares: one per --custodian
        #[arg(long, value_name = "N")]
        shares: usize,

        /// Number of shares needed to rebuild the key
        #[arg(long, value_name = "M")]
        threshold: usize,

        /// Who holds each share, once per share, in share order: an age
        /// recipient (age1...), or passphrase-file:FILE for a share
        /// encrypted with the passphrase in FILE (age scrypt)
        #[arg(long, value_name = "AGE1...|passphrase-file:FILE", value_parser = parse_custodian, required = true)]
        custodian: Vec<CustodianArg>,

        /// Where the share files go (escrow-share-I-of-N.age)
        #[arg(long, value_name = "DIR", default_value = "escrow-shares")]
        out: PathBuf,
    },

    /// Rebuild the escrow identity from at least M share files and write it
    /// to FILE (0600); with keys/escrow.txt present (or the recipient
    /// keyring.toml records), the key must be its
    Recover {
        /// A share file (give at least the threshold; with more, shares
        /// that do not fit are found, named and left out)
        #[arg(long, value_name = "FILE", required = true)]
        share: Vec<PathBuf>,

        /// An age identity file of a custodian, to decrypt the shares
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,

        /// A custodian's passphrase (in FILE), for shares made with
        /// passphrase-file:
        #[arg(long, value_name = "FILE")]
        share_passphrase_file: Vec<PathBuf>,

        /// Where to write the rebuilt identity (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },

    /// Open a sealed message (FILE or stdin) with the escrow identity; needs
    /// no keyring
    Open {
        /// The sealed message as stored [default: stdin]
        file: Option<PathBuf>,

        /// The escrow identity file `writ escrow recover` wrote
        #[arg(long, value_name = "FILE")]
        escrow_identity: PathBuf,

        /// Print the summary (JSON) instead
        #[arg(long)]
        summary: bool,
    },
}

#[derive(Clone)]
pub enum CustodianArg {
    Recipient(age::x25519::Recipient),
    PassphraseFile(PathBuf),
}

pub fn parse_custodian(s: &str) -> Result<CustodianArg, String> {
    match s.strip_prefix("passphrase-file:") {
        Some(path) if !path.is_empty() => Ok(CustodianArg::PassphraseFile(PathBuf::from(path))),
        Some(_) => Err("passphrase-file: needs a file name".into()),
        None => parse_recipient(s).map(CustodianArg::Recipient),
    }
}

pub fn run(ctx: &Context, command: EscrowCommand) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    match command {
        EscrowCommand::Init {
            shares,
            threshold,
            custodian,
            out: out_dir,
        } => {
            if shares != custodian.len() {
                return Err(escrow::EscrowError::CustodianCount {
                    shares,
                    custodians: custodian.len(),
                }
                .into());
            }
            Keyring::load(dir)?;
            ctx.check_audit_writable()?;
            let custodian = custodian
                .into_iter()
                .map(|c| match c {
                    CustodianArg::Recipient(r) => Ok(escrow::Custodian::Recipient(r)),
                    CustodianArg::PassphraseFile(p) => {
                        keys::read_passphrase_file(&p).map(escrow::Custodian::Passphrase)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let created = escrow::init(dir, &out_dir, threshold, &custodian)?;
            if let Some(e) = &created.unrecorded {
                eprintln!(
                    "warning: escrow is set up, but keyring.toml could not record its recipient ({}); \
                     it is recorded at the keyring's next rewrite (`writ keys rotate`)",
                    writ::one_line(e)
                );
            }
            audit_record(
                ctx,
                "escrow.init",
                audit::params([
                    ("escrow", created.recipient.to_string().into()),
                    ("shares", shares.into()),
                    ("threshold", threshold.into()),
                    (
                        "custodians",
                        custodian
                            .iter()
                            .map(escrow::Custodian::describe)
                            .collect::<Vec<_>>()
                            .into(),
                    ),
                ]),
            )?;
            let mut text = format!(
                "escrow recipient {} written to {}\nnew mail is sealed to it too; any {threshold} of these {shares} shares rebuild its key:\n",
                created.recipient,
                dir.join(escrow::ESCROW_FILE).display()
            );
            for (path, c) in created.share_files.iter().zip(&custodian) {
                text.push_str(&format!("  {} (for {})\n", path.display(), c.describe()));
            }
            out(&text)
        }
        EscrowCommand::Recover {
            share,
            identity,
            share_passphrase_file,
            out: out_file,
        } => {
            if identity.is_empty() && share_passphrase_file.is_empty() {
                anyhow::bail!(
                    "give the custodians' keys: --identity FILE or --share-passphrase-file FILE"
                );
            }
            let openers = escrow::Openers {
                identities: if identity.is_empty() {
                    Vec::new()
                } else {
                    escrow::read_identities(&identity)?
                },
                passphrases: share_passphrase_file
                    .iter()
                    .map(|p| keys::read_passphrase_file(p))
                    .collect::<Result<_, _>>()?,
            };
            // The keyring's own escrow recipient, when it is here: shares
            // anyone could have made (they are encrypted to the custodians'
            // public keys) must rebuild that key, not the one they name.
            let expected = escrow::keyring_escrow(dir)?;
            let recovered = escrow::recover(&share, &openers, expected.as_ref())?;
            escrow::write_identity(&out_file, &recovered.identity)?;
            let escrow = recovered.identity.to_public().to_string();
            if recovered.misfits_ambiguous {
                let names: Vec<String> = recovered
                    .misfits
                    .iter()
                    .map(|(path, x)| format!("{} (number {x})", path.display()))
                    .collect();
                eprintln!(
                    "writ: warning: one or more of shares {} do not fit the others (damaged or forged), \
                     which cannot be told: they differ only in bits the key ignores; the key is right; \
                     ask their custodians",
                    names.join(", ")
                );
            }
            for (path, x) in recovered
                .misfits
                .iter()
                .filter(|_| !recovered.misfits_ambiguous)
            {
                eprintln!(
                    "writ: warning: share {} (number {x}) does not fit the others: damaged or forged, left out; \
                     ask its custodian",
                    path.display()
                );
            }
            if expected.is_none() {
                eprintln!(
                    "writ: warning: no {} to check against: {escrow} is the key the shares name; \
                     check that it is this organisation's escrow recipient (a backup of escrow.txt, \
                     the escrow.init audit record)",
                    dir.join(escrow::ESCROW_FILE).display()
                );
            }
            let used: Vec<u64> = recovered.used.iter().map(|&x| u64::from(x)).collect();
            let misfit: Vec<u64> = recovered
                .misfits
                .iter()
                .map(|&(_, x)| u64::from(x))
                .collect();
            audit_if_possible(
                ctx,
                "escrow.recover",
                audit::params([
                    ("escrow", escrow.clone().into()),
                    ("shares_used", used.into()),
                    ("shares_misfit", misfit.into()),
                    ("checked_against_keyring", expected.is_some().into()),
                    ("out", out_file.display().to_string().into()),
                ]),
            );
            eprintln!(
                "writ: warning: {} holds the escrow private key: whoever holds it can read all mail sealed \
                 since escrow was set up. Keep it offline, delete it after use.",
                out_file.display()
            );
            out(&format!(
                "escrow identity {escrow} rebuilt into {}\n",
                out_file.display()
            ))
        }
        EscrowCommand::Open {
            file,
            escrow_identity,
            summary,
        } => {
            let identities = escrow::read_identities(&[escrow_identity])?;
            let mut input = input(file.as_deref())?;
            let head = peek_header(&mut input)?;
            let detected = envelope::detect(&head).ok_or(EnvelopeError::NotSealed)?;
            let stored = std::io::Cursor::new(head).chain(input);
            let name = file
                .as_deref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string());
            if summary {
                let summary = envelope::read_summary(stored, &identities)?;
                let mut json = serde_json::to_string_pretty(&summary)?;
                json.push('\n');
                out(&json)?;
            } else {
                let stdout = std::io::stdout().lock();
                let mut output = BufWriter::with_capacity(64 * 1024, stdout);
                envelope::open(stored, &identities, &mut output)?;
                output.flush()?;
            }
            audit_if_possible(
                ctx,
                "escrow.open",
                audit::params([
                    ("epoch", detected.epoch.into()),
                    ("file", name.into()),
                    ("summary_only", summary.into()),
                ]),
            );
            Ok(())
        }
    }
}
