//! `writ mailbox`: bulk work on the mail stored at the provider.

use std::borrow::Borrow;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use writ::imap::upstream::Target;
use writ::jobs::census;
use writ::jobs::checkpoint::lease_mailbox;
use writ::jobs::client::ClientError;
use writ::jobs::login::{Credentials, SecretSource};
use writ::jobs::mover::{Kind, MailboxReport, Mover, Progress};
use writ::jobs::retry::Backoff;
use writ::keys::{self, Keyring, Unlocked};

use super::{Context, out};

#[derive(clap::Subcommand)]
pub enum MailboxCommand {
    /// Seal the plaintext messages already stored at the provider, in
    /// place: each is replaced by its sealed copy (same flags and date)
    /// once the copy is read back and opens to the original
    Seal {
        #[command(flatten)]
        target: Mailboxes,
        #[command(flatten)]
        run: RunArgs,
    },

    /// Move messages sealed under an old epoch onto the active one (found
    /// with the provider's own search), in place
    Reseal {
        /// The epoch to move away from (see `writ keys list`)
        #[arg(long, value_name = "ID")]
        from_epoch: String,
        #[command(flatten)]
        target: Mailboxes,
        #[command(flatten)]
        run: RunArgs,
    },

    /// Count per mailbox: plaintext, sealed per epoch, undecryptable (every
    /// sealed message is downloaded and opened). Exits non-zero if any
    /// message is undecryptable
    Verify {
        #[command(flatten)]
        target: Mailboxes,
        /// Print JSON (one object per mailbox) for monitoring
        #[arg(long)]
        json: bool,
    },
}

/// Which accounts and mailboxes, and how to log in.
#[derive(clap::Args)]
pub struct Mailboxes {
    #[command(flatten)]
    pub login: LoginArgs,

    /// A mailbox to work on (repeat for several)
    #[arg(long, value_name = "NAME", required_unless_present = "all")]
    pub mailbox: Vec<String>,

    /// Every selectable mailbox of each account
    #[arg(long, conflicts_with = "mailbox")]
    pub all: bool,
}

/// Provider accounts and their credentials.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The account at the provider (repeat for several; they share the
    /// credential options)
    #[arg(long, value_name = "USER", required = true)]
    pub account: Vec<String>,

    #[command(flatten)]
    pub secret: SecretArgs,
}

/// How to log in to the provider (for whichever account).
#[derive(clap::Args)]
pub struct SecretArgs {
    /// Read the password from FILE (first line) [default: the
    /// WRIT_PROVIDER_PASSWORD environment variable]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Log in with XOAUTH2, the bearer token read from FILE
    #[arg(long, value_name = "FILE")]
    pub oauth2_token_file: Option<PathBuf>,

    /// Log in with XOAUTH2, the bearer token printed by CMD (run with sh
    /// -c, the account in WRIT_ACCOUNT, without WRIT_PROVIDER_PASSWORD,
    /// WRIT_PASSPHRASE_FILE and WRIT_PIN_FILE)
    #[arg(long, value_name = "CMD")]
    pub oauth2_token_command: Option<String>,

    /// Log in as this master user on each account's behalf (Dovecot:
    /// USER*MASTER); the password is the master's
    #[arg(long, value_name = "NAME")]
    pub master_user: Option<String>,

    /// What joins account and master user
    #[arg(long, value_name = "SEP", default_value = "*")]
    pub master_separator: String,
}

impl SecretArgs {
    /// The login for `user`.
    pub fn credentials_for(&self, user: &str) -> Result<Credentials> {
        let source = SecretSource {
            password_file: self.password_file.clone(),
            oauth2_token_file: self.oauth2_token_file.clone(),
            oauth2_token_command: self.oauth2_token_command.clone(),
        };
        Ok(Credentials {
            user: user.to_string(),
            master: self.master_user.clone(),
            separator: self.master_separator.clone(),
            secret: source.resolve(user)?,
        })
    }
}

impl LoginArgs {
    pub fn credentials(&self) -> Result<Vec<Credentials>> {
        self.account
            .iter()
            .map(|user| self.secret.credentials_for(user))
            .collect()
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Only count what would be moved
    #[arg(long)]
    dry_run: bool,

    /// Without UIDPLUS at the provider, expunge with EXPUNGE, which also
    /// removes every other message marked \Deleted in the mailbox
    #[arg(long)]
    allow_expunge_all: bool,

    /// Mailboxes worked on at once [default: `[jobs] parallel`]
    #[arg(long, value_name = "N")]
    parallel: Option<usize>,

    /// Messages per batch [default: `[jobs] batch`]
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
}

/// The provider's IMAP server, from `[provider.imap]`.
pub fn provider_target(ctx: &Context) -> Result<Target> {
    let cfg = ctx.config.provider.imap.as_ref().with_context(|| {
        format!(
            "{}: no [provider.imap]: mailbox jobs need the provider's IMAP server",
            ctx.config_source
        )
    })?;
    Ok(Target::from_config(cfg)?)
}

/// Loads and unlocks the keyring (jobs open what they read back).
pub fn unlock(ctx: &Context) -> Result<(Keyring, Unlocked)> {
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let unlocked = ctx.unlock(&keyring)?;
    Ok((keyring, unlocked))
}

/// The `[jobs]` retry settings; a retry is said on stderr.
pub fn backoff(ctx: &Context) -> Backoff {
    Backoff {
        retries: ctx.config.jobs.retries,
        first: Duration::from_millis(ctx.config.jobs.backoff_ms),
    }
}

/// Says a retry on stderr.
pub fn say_retry(what: &str) -> impl FnMut(u32, &ClientError) + '_ {
    move |attempt, e| eprintln!("writ: {what}: {e}; retrying (attempt {attempt})")
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs to stderr for jobs (warnings by default; WRIT_LOG overrides, with
/// library output capped: [`super::init_logging`]).
fn init_logging() {
    super::init_logging("writ=warn");
}

pub fn run(ctx: &Context, command: MailboxCommand) -> Result<()> {
    init_logging();
    match command {
        MailboxCommand::Seal { target, run } => move_mail(ctx, Kind::Seal, target, run),
        MailboxCommand::Reseal {
            from_epoch,
            target,
            run,
        } => {
            let keyring = Keyring::load(&ctx.keys_dir)?;
            let epoch = keyring.epoch(&from_epoch)?;
            if Some(epoch.id.as_str()) == keyring.active().ok().map(|a| a.id.as_str()) {
                anyhow::bail!(
                    "epoch {from_epoch} is the active epoch: there is nothing newer to move to \
                     (run `writ keys rotate` first)"
                );
            }
            move_mail(ctx, Kind::Reseal { from: from_epoch }, target, run)
        }
        MailboxCommand::Verify { target, json } => verify(ctx, target, json),
    }
}

fn move_mail(ctx: &Context, kind: Kind, target: Mailboxes, run: RunArgs) -> Result<()> {
    let problems = ctx.config.jobs.problems();
    if !problems.is_empty() {
        anyhow::bail!("{}: {}", ctx.config_source, problems.join("; "));
    }
    let provider = provider_target(ctx)?;
    let credentials = target.login.credentials()?;
    let (keyring, unlocked) = unlock(ctx)?;
    let sealer = keys::sealer(&keyring, &ctx.config.seal)?;
    let verb = match kind {
        Kind::Seal => "sealed",
        Kind::Reseal { .. } => "resealed",
    };
    let progress = Arc::new(Reporter::new(verb));
    let jobs = &ctx.config.jobs;
    let parallel = run.parallel.unwrap_or(jobs.parallel).clamp(1, 64);
    let runtime = runtime()?;
    // Checkpoints in `[jobs] dir`, or in the shared database with leases.
    let checkpoints = runtime
        .block_on(writ::state::checkpoint_store(
            &ctx.config.state,
            &jobs.dir,
            &ctx.config.sweep.dir,
        ))
        .with_context(|| format!("{}: [state]", ctx.config_source))?;
    let mover = Arc::new(Mover {
        kind,
        target: provider.clone(),
        sealer,
        keys: Arc::new(unlocked),
        checkpoints,
        batch: run.batch.unwrap_or(jobs.batch).clamp(1, 1000),
        retries: jobs.retries,
        backoff: Duration::from_millis(jobs.backoff_ms),
        allow_expunge_all: run.allow_expunge_all,
        dry_run: run.dry_run,
        progress: progress.clone(),
    });
    let dry_run = run.dry_run;
    let backoff = backoff(ctx);
    let results = runtime.block_on(async move {
        let mut work = Vec::new();
        for creds in credentials {
            let listed = backoff
                .run(
                    || writ::jobs::mover::mailboxes(&provider, &creds, &target.mailbox, target.all),
                    say_retry(&creds.user),
                )
                .await
                .with_context(|| format!("account {}", creds.user))?;
            // A dry run changes nothing: it may count.
            if listed.labels && target.all && !dry_run {
                anyhow::bail!(
                    "account {}: the provider is Gmail (it offers X-GM-EXT-1), whose folders are \
                     labels: --all would seal each message once per label and leave its \
                     original in [Gmail]/All Mail; name the mailbox instead, --mailbox \
                     \"[Gmail]/All Mail\" (see the README on Gmail first)",
                    creds.user
                );
            }
            for name in listed.names {
                work.push((creds.clone(), name));
            }
        }
        let work = unique(work);
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for (n, (creds, name)) in work.into_iter().enumerate() {
            let mover = mover.clone();
            let gate = gate.clone();
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let r = mover.run_mailbox(&creds, &name).await;
                (n, creds.user, name, r)
            });
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            results.push(done.context("a mailbox task failed")?);
        }
        results.sort_by_key(|r| r.0);
        anyhow::Ok(results)
    })?;
    progress.finish();

    let mut text = String::new();
    let mut failed = 0;
    let mut first_stop = None;
    for (_, account, mailbox, r) in results {
        match r {
            Ok(report) => {
                failed += report.failed.len();
                text.push_str(&describe(&report, verb, dry_run));
            }
            Err(e) => {
                failed += 1;
                let line = format!(
                    "{account} {mailbox}: stopped: {}",
                    super::one_line(&e.into())
                );
                text.push_str(&line);
                text.push('\n');
                first_stop.get_or_insert(line);
            }
        }
    }
    out(&text)?;
    if let Some(line) = first_stop {
        anyhow::bail!("{line} (run again to resume)");
    }
    if failed > 0 {
        anyhow::bail!("{failed} message(s) were left as they were (see above); run again to retry");
    }
    Ok(())
}

/// Each mailbox of each account once, INBOX in any case as `INBOX` (RFC
/// 3501 §5.1: the name is case-insensitive): `--mailbox INBOX --mailbox
/// inbox`, or an account given twice, would otherwise have two runs work on
/// one mailbox at once. The first of each stays, in order.
fn unique<C: Borrow<Credentials>>(work: Vec<(C, String)>) -> Vec<(C, String)> {
    let mut seen = std::collections::HashSet::new();
    work.into_iter()
        .filter_map(|(creds, name)| {
            let name = lease_mailbox(&name).to_string();
            seen.insert((creds.borrow().user.clone(), name.clone()))
                .then_some((creds, name))
        })
        .collect()
}

fn describe(r: &MailboxReport, verb: &str, dry_run: bool) -> String {
    if dry_run {
        return format!(
            "{} {}: {} message(s) would be {verb}\n",
            r.account, r.mailbox, r.found
        );
    }
    let mut s = format!(
        "{} {}: {} {verb}, {} duplicate(s) from an interrupted run removed, {} failed",
        r.account,
        r.mailbox,
        r.moved,
        r.duplicates_removed,
        r.failed.len()
    );
    if r.retries > 0 {
        s.push_str(&format!(", {} retries", r.retries));
    }
    s.push('\n');
    for f in &r.failed {
        s.push_str(&format!("  UID {}: {}\n", f.uid, f.why));
    }
    s
}

fn verify(ctx: &Context, target: Mailboxes, json: bool) -> Result<()> {
    let provider = provider_target(ctx)?;
    let credentials = target.login.credentials()?;
    let (_, unlocked) = unlock(ctx)?;
    let backoff = backoff(ctx);
    let censuses = runtime()?.block_on(async {
        let mut all = Vec::new();
        for creds in &credentials {
            let listed = backoff
                .run(
                    || writ::jobs::mover::mailboxes(&provider, creds, &target.mailbox, target.all),
                    say_retry(&creds.user),
                )
                .await
                .with_context(|| format!("account {}", creds.user))?;
            let names = unique(listed.names.into_iter().map(|n| (creds, n)).collect());
            for (_, name) in names {
                let what = format!("{} {name}", creds.user);
                let c = backoff
                    .run(
                        || census::census(&provider, creds, &name, &unlocked),
                        say_retry(&what),
                    )
                    .await
                    .with_context(|| what.clone())?;
                all.push(c);
            }
        }
        anyhow::Ok(all)
    })?;
    let undecryptable: usize = censuses.iter().map(|c| c.undecryptable.len()).sum();
    if json {
        let mut text = serde_json::to_string_pretty(&censuses)?;
        text.push('\n');
        out(&text)?;
    } else {
        let mut text = String::new();
        for c in &censuses {
            let sealed: Vec<String> = c
                .sealed
                .iter()
                .map(|(epoch, n)| format!("{n} under {epoch}"))
                .collect();
            text.push_str(&format!(
                "{} {}: {} plaintext, sealed: {}, {} undecryptable\n",
                c.account,
                c.mailbox,
                c.plaintext,
                if sealed.is_empty() {
                    "none".to_string()
                } else {
                    sealed.join(", ")
                },
                c.undecryptable.len()
            ));
            for u in &c.undecryptable {
                text.push_str(&format!("  UID {}: {}\n", u.uid, u.why));
            }
        }
        out(&text)?;
    }
    if undecryptable > 0 {
        anyhow::bail!("{undecryptable} message(s) cannot be opened with this keyring");
    }
    Ok(())
}

/// Progress on stderr: a bar on a terminal, a line every few seconds
/// otherwise (logs of unattended runs).
struct Reporter {
    verb: &'static str,
    bar: Option<indicatif::ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Reporter {
    fn new(verb: &'static str) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {msg} {per_sec} ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(verb);
            bar
        });
        Reporter {
            verb,
            bar,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn line(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 && total > done {
            format!(", ETA {:.0} s", (total - done) as f64 / rate)
        } else {
            String::new()
        };
        eprintln!(
            "writ: {} {done}/{total} messages ({rate:.1}/s{eta})",
            self.verb
        );
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => {
                if self.total.load(Ordering::Relaxed) > 0 {
                    self.line();
                }
            }
        }
    }
}

impl Progress for Reporter {
    fn found(&self, _account: &str, _mailbox: &str, messages: u64) {
        self.total.fetch_add(messages, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc_length(messages);
        }
    }

    fn moved(&self, messages: u64) {
        self.done.fetch_add(messages, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(messages),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    drop(last);
                    self.line();
                }
            }
        }
    }

    fn retrying(&self, account: &str, mailbox: &str, attempt: u32, why: &ClientError) {
        let text = format!("writ: {account} {mailbox}: {why}; retrying (attempt {attempt})");
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}
