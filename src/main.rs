//! The `writ` command line: parse arguments, dispatch, report errors. The
//! work itself lives in the library (`writ::keys`, `writ::config`, ...).
#![forbid(unsafe_code)]
// No unwrap/expect outside tests: a panic on outside data is a crash of
// every session of the process (errors carry one line instead).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

use cli::Context;
use cli::audit::AuditCommand;
use cli::escrow::EscrowCommand;
use cli::keys::KeysCommand;

/// Seals mail with age before a hosted provider stores it.
#[derive(Parser)]
#[command(name = "writ", version)]
pub struct Cli {
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

    /// Read the token PIN of an HSM keyring from FILE (one trailing newline
    /// is stripped) instead of asking on the terminal
    #[arg(long, global = true, value_name = "FILE", env = "WRIT_PIN_FILE")]
    pin_file: Option<PathBuf>,

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

    /// Bulk work on the mail stored at the provider: seal what is still
    /// plaintext, reseal from an old epoch, count what is there
    #[command(subcommand)]
    Mailbox(cli::mailbox::MailboxCommand),

    /// Lawful disclosure: open exactly the named messages for a case into
    /// a signed bundle, or check such a bundle
    Disclose(Box<cli::disclose::DiscloseArgs>),

    /// Approval keys for the disclosure quorum
    #[command(subcommand)]
    Approver(cli::approver::ApproverCommand),

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

/// No core dump, no ptrace attach by the same user, no /proc/PID/mem for
/// anyone but root: any writ command may unlock the keyring, and a core
/// file or a debugger would get the epoch secrets in the clear. Set before
/// anything else runs, for every command (`RLIMIT_CORE` 0 soft and hard,
/// so a child cannot raise it again; `PR_SET_DUMPABLE` 0, which also makes
/// /proc/PID owned by root). Failing to set either is fatal.
fn forbid_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = forbid_core_dumps() {
        eprintln!("writ: cannot turn core dumps off (RLIMIT_CORE, PR_SET_DUMPABLE): {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writ: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(
        cli.config.as_deref(),
        cli.keys.clone(),
        cli.passphrase_file.clone(),
        cli.pin_file.clone(),
        cli.operator.as_deref(),
    )?;
    match cli.command {
        Command::Keys(command) => cli::keys::run(&ctx, command),
        Command::Audit(command) => cli::audit::run(&ctx, command),
        Command::Escrow(command) => cli::escrow::run(&ctx, command),
        Command::Mailbox(command) => cli::mailbox::run(&ctx, command),
        Command::Disclose(args) => cli::disclose::run(&ctx, *args),
        Command::Approver(command) => cli::approver::run(&ctx, command),
        Command::CheckConfig => cli::serve::check_config(&ctx),
        Command::Serve => cli::serve::serve(&ctx),
        Command::Seal { file } => cli::message::seal(&ctx, file.as_deref()),
        Command::Open { file, summary } => cli::message::open(&ctx, file.as_deref(), summary),
    }
}
