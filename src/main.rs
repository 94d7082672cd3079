//! The `writ` command line: parse arguments, dispatch, report errors. The
//! work itself lives in the library (`writ::keys`, `writ::config`, ...).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use writ::audit;
use writ::config::{self, Config};
use writ::envelope::{self, EnvelopeError};
use writ::escrow;
use writ::keys::{self, EpochState, KeyError, Keyring};

/// Seals mail with age before a hosted provider stores it.
#[derive(Parser)]
#[command(name = "writ", version)]
struct Cli {
    /// Keyring directory [default: `[keys] dir` of the config, `keys`]
    #[arg(long, global = true, value_name = "DIR")]
    keys: Option<PathBuf>,

    /// Config file; when not given, a missing config/writ.toml means defaults
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Read the keyring passphrase from FILE (one trailing newline is
    /// stripped) instead of asking on the terminal
    #[arg(long, global = true, value_name = "FILE", env = "WRIT_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,

    /// Who runs this command, as named in audit records [default: `[audit]
    /// operator` of the config, else $USER or $LOGNAME]
    #[arg(long, global = true, value_name = "NAME")]
    operator: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the keyring
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Check or print the audit log of key events
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Escrow: a key every new message is also sealed to, split M-of-N
    /// among custodians
    #[command(subcommand)]
    Escrow(EscrowCommand),

    /// Check the config file and the keyring's public part
    CheckConfig,

    /// Run the configured services (SMTP relay listeners, admin endpoint)
    /// until SIGTERM or SIGINT
    Serve,
    /// Seal a message (FILE or stdin) to the active epoch, escrow and
    /// extra recipients; write the sealed message to stdout. Needs no
    /// passphrase. A message that is already sealed is copied unchanged.
    Seal {
        /// The message (RFC 5322, any line endings) [default: stdin]
        file: Option<PathBuf>,
    },

    /// Open a sealed message (FILE or stdin) and write the original to
    /// stdout, byte for byte, after any fields the provider put above the
    /// X-Writ marker. Needs the passphrase.
    Open {
        /// The sealed message as stored [default: stdin]
        file: Option<PathBuf>,

        /// Print the summary (JSON: size, header, MIME structure) instead
        #[arg(long)]
        summary: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
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
}

#[derive(Subcommand)]
enum AuditCommand {
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
    Init,
}

#[derive(Subcommand)]
enum EscrowCommand {
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
    /// to FILE (0600)
    Recover {
        /// A share file (give at least the threshold)
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
enum CustodianArg {
    Recipient(age::x25519::Recipient),
    PassphraseFile(PathBuf),
}

fn parse_custodian(s: &str) -> Result<CustodianArg, String> {
    match s.strip_prefix("passphrase-file:") {
        Some(path) if !path.is_empty() => Ok(CustodianArg::PassphraseFile(PathBuf::from(path))),
        Some(_) => Err("passphrase-file: needs a file name".into()),
        None => parse_recipient(s).map(CustodianArg::Recipient),
    }
}

fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    age::x25519::Recipient::from_str(s.trim())
        .map_err(|e| format!("not an age X25519 recipient: {e}"))
}

fn work_factor_parser() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(1..=i64::from(keys::MAX_WORK_FACTOR))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writ: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, joined by ": ".
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| cause.to_string().replace(['\r', '\n'], " "))
        .collect::<Vec<_>>()
        .join(": ")
}

/// What every command gets: the loaded config and the resolved options.
struct Context {
    config: Config,
    config_source: String,
    keys_dir: PathBuf,
    passphrase_file: Option<PathBuf>,
    operator: String,
}

impl Context {
    fn new(cli: &Cli) -> Result<Context> {
        let (config, config_source) = match &cli.config {
            Some(path) => (Config::load(path)?, path.display().to_string()),
            None => {
                let path = Path::new(config::DEFAULT_PATH);
                let source = if path.exists() {
                    path.display().to_string()
                } else {
                    format!("defaults ({} not found)", path.display())
                };
                (Config::load_or_default(path)?, source)
            }
        };
        let keys_dir = cli.keys.clone().unwrap_or_else(|| config.keys.dir.clone());
        Ok(Context {
            config_source,
            keys_dir,
            passphrase_file: cli.passphrase_file.clone(),
            operator: writ::audit::operator(
                cli.operator.as_deref(),
                config.audit.operator.as_deref(),
            ),
            config,
        })
    }

    fn passphrase(&self, prompt: &str, confirm: bool) -> Result<secrecy::SecretString> {
        Ok(keys::passphrase_from(
            self.passphrase_file.as_deref(),
            prompt,
            confirm,
        )?)
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(&cli)?;
    match cli.command {
        Command::Keys(command) => run_keys(&ctx, command),
        Command::Audit(command) => run_audit(&ctx, command),
        Command::Escrow(command) => run_escrow(&ctx, command),
        Command::CheckConfig => check_config(&ctx),
        Command::Serve => serve(&ctx),
        Command::Seal { file } => seal(&ctx, file.as_deref()),
        Command::Open { file, summary } => open(&ctx, file.as_deref(), summary),
    }
}

fn run_keys(ctx: &Context, command: KeysCommand) -> Result<()> {
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
            audit::check_writable(dir)?;
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
            audit::check_writable(dir)?;
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
        KeysCommand::ExportIdentity { epoch } => {
            let keyring = Keyring::load(dir)?;
            // Unknown id: say so before asking for the passphrase.
            keyring.epoch(&epoch)?;
            let passphrase = ctx.passphrase("Keyring passphrase: ", false)?;
            let unlocked = keyring.unlock(&passphrase)?;
            let identity = unlocked
                .identity(&epoch)
                .ok_or_else(|| KeyError::UnknownEpoch { id: epoch.clone() })?;
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

/// Appends an audit record for an operation that has just succeeded.
fn audit_record(
    ctx: &Context,
    action: &str,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    audit::append(&ctx.keys_dir, &ctx.operator, action, params)
        .with_context(|| format!("{action} done, but it could not be recorded in the audit log"))?;
    Ok(())
}

fn run_audit(ctx: &Context, command: AuditCommand) -> Result<()> {
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
            out(&format!(
                "{}: {} records, chain and signatures OK\nhead: {}:{}\n",
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
        AuditCommand::Init => {
            Keyring::load(dir)?;
            if audit::has_key(dir) {
                anyhow::bail!(
                    "{} exists: this keyring already has an audit key",
                    dir.join(audit::PUBLIC_FILE).display()
                );
            }
            if dir.join(audit::LOG_FILE).exists() {
                return Err(audit::AuditError::Exists {
                    dir: dir.to_path_buf(),
                }
                .into());
            }
            audit::create_key(dir)?;
            audit_record(ctx, "audit.init", audit::params([]))?;
            out(&format!(
                "created the audit key {}\n",
                dir.join(audit::PUBLIC_FILE).display()
            ))
        }
    }
}

fn run_escrow(ctx: &Context, command: EscrowCommand) -> Result<()> {
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
            audit::check_writable(dir)?;
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
            let recovered = escrow::recover(&share, &openers)?;
            escrow::write_identity(&out_file, &recovered.identity)?;
            let escrow = recovered.identity.to_public().to_string();
            let used: Vec<u64> = recovered.used.iter().map(|&x| u64::from(x)).collect();
            audit_if_possible(
                ctx,
                "escrow.recover",
                audit::params([
                    ("escrow", escrow.clone().into()),
                    ("shares_used", used.into()),
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

/// Records an escrow operation in the keyring's audit log when there is
/// one; escrow works without a keyring (that is what it is for), so a
/// missing or unwritable log is a warning, not a failure.
fn audit_if_possible(
    ctx: &Context,
    action: &str,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) {
    if !Keyring::exists(&ctx.keys_dir) {
        eprintln!(
            "writ: warning: {action} is not recorded in an audit log: no keyring in {}",
            ctx.keys_dir.display()
        );
    } else if let Err(e) = audit::append(&ctx.keys_dir, &ctx.operator, action, params) {
        eprintln!(
            "writ: warning: {action} is not recorded in an audit log: {}",
            one_line(&e.into())
        );
    }
}

/// The message to read: a file, or stdin when none (or `-`) is given.
fn input(file: Option<&Path>) -> Result<Box<dyn BufRead>> {
    match file {
        Some(path) if path != Path::new("-") => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Box::new(BufReader::with_capacity(64 * 1024, f)))
        }
        _ => Ok(Box::new(BufReader::with_capacity(
            64 * 1024,
            std::io::stdin(),
        ))),
    }
}

fn seal(ctx: &Context, file: Option<&Path>) -> Result<()> {
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let sealer = keys::sealer(&keyring, &ctx.config.seal)?;
    let input = input(file)?;
    let stdout = std::io::stdout().lock();
    let mut output = BufWriter::with_capacity(64 * 1024, stdout);
    sealer.seal(input, &mut output)?;
    output.flush()?;
    Ok(())
}

fn open(ctx: &Context, file: Option<&Path>, summary: bool) -> Result<()> {
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let mut input = input(file)?;
    // Read the stored header first: an unknown epoch or a message that is
    // not sealed is reported before the passphrase is asked for.
    let head = peek_header(&mut input)?;
    let detected = envelope::detect(&head).ok_or(EnvelopeError::NotSealed)?;
    keyring
        .epoch(&detected.epoch)
        .map_err(|_| EnvelopeError::UnknownEpoch(detected.epoch.clone()))?;
    let passphrase = ctx.passphrase("Keyring passphrase: ", false)?;
    let unlocked = keyring.unlock(&passphrase)?;
    let stored = std::io::Cursor::new(head).chain(input);
    if summary {
        let summary = envelope::read_summary(stored, &unlocked)?;
        let mut json = serde_json::to_string_pretty(&summary)?;
        json.push('\n');
        return out(&json);
    }
    let stdout = std::io::stdout().lock();
    let mut output = BufWriter::with_capacity(64 * 1024, stdout);
    envelope::open(stored, &unlocked, &mut output)?;
    output.flush()?;
    Ok(())
}

/// Reads the header block of the stored message (up to the blank line,
/// bounded), to be replayed in front of the rest.
fn peek_header(input: &mut Box<dyn BufRead>) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = (&mut *input)
            .take(1024 * 1024)
            .read_until(b'\n', &mut head)?;
        let line = &head[start..];
        if n == 0 || line == b"\r\n" || line == b"\n" || head.len() > 8 * 1024 * 1024 {
            return Ok(head);
        }
    }
}

fn serve(ctx: &Context) -> Result<()> {
    let level = match ctx.config.log.level {
        config::LogLevel::Error => "error",
        config::LogLevel::Warn => "warn",
        config::LogLevel::Info => "info",
        config::LogLevel::Debug => "debug",
        config::LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("writ={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The IMAP proxy opens sealed mail: unlock before serving, so that a
    // wrong passphrase is a start-up error, not a failure per message.
    let keys: Option<writ::imap::session::SharedKeys> = if ctx.config.imap.listeners.is_empty() {
        None
    } else {
        let keyring = Keyring::load(&ctx.keys_dir)?;
        let passphrase = ctx.passphrase("Keyring passphrase: ", false)?;
        Some(std::sync::Arc::new(keyring.unlock(&passphrase)?))
    };
    runtime.block_on(async {
        let server = writ::serve::Server::prepare(&ctx.config, ctx.keys_dir.clone(), keys).await?;
        server.run().await?;
        Ok(())
    })
}

fn check_config(ctx: &Context) -> Result<()> {
    let mut problems = ctx.config.smtp.problems(&ctx.config.provider);
    problems.extend(ctx.config.imap.problems(&ctx.config.provider));
    if !problems.is_empty() {
        anyhow::bail!("{}: {}", ctx.config_source, problems.join("; "));
    }
    writ::policy::Policy::from_config(&ctx.config.smtp)?;
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let active = keyring.active()?;
    let seal = &ctx.config.seal;
    let text = format!(
        "config: {} OK\n\
         keyring: {} OK, {} epoch(s), active {}\n\
         new mail is sealed to {} recipient(s): active epoch{}{}\n",
        ctx.config_source,
        ctx.keys_dir.display(),
        keyring.epochs().len(),
        active.id,
        keyring.seal_recipients()?.len() + seal.extra_recipients.len(),
        if keyring.escrow().is_some() {
            ", escrow"
        } else {
            ""
        },
        match seal.extra_recipients.len() {
            0 => String::new(),
            n => format!(", {n} extra"),
        },
    );
    out(&text)
}

/// Writes to stdout, turning a closed pipe into an error instead of the
/// panic `print!` would give.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
