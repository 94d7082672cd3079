//! `writ serve` and `writ check-config`.

use anyhow::Result;
use writ::config;
use writ::keys::Keyring;

use super::{Context, out};

pub fn serve(ctx: &Context) -> Result<()> {
    let level = match ctx.config.log.level {
        config::LogLevel::Error => "error",
        config::LogLevel::Warn => "warn",
        config::LogLevel::Info => "info",
        config::LogLevel::Debug => "debug",
        config::LogLevel::Trace => "trace",
    };
    super::init_logging(&format!("writ={level}"));
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

pub fn check_config(ctx: &Context) -> Result<()> {
    let mut problems = ctx.config.smtp.problems(&ctx.config.provider);
    problems.extend(ctx.config.imap.problems(&ctx.config.provider));
    problems.extend(ctx.config.jobs.problems());
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
    let disclosure = &ctx.config.disclosure;
    let names: Vec<&str> = disclosure
        .approvers
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    let text = match disclosure.quorum {
        0 => format!("{text}disclosure: no approval required (quorum 0)\n"),
        m => format!(
            "{text}disclosure: {m} of {} approvers ({}) must approve each request\n",
            names.len(),
            names.join(", ")
        ),
    };
    out(&text)
}
