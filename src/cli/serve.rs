//! `writ serve` and `writ check-config`.

use anyhow::Result;
use writ::config;
use writ::keys::{self, Keyring};

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
    // The IMAP proxy and the sweep open sealed mail: unlock before serving, so that a
    // wrong passphrase is a start-up error, not a failure per message.
    let keys = if ctx.config.imap.listeners.is_empty() && !ctx.config.sweep.enabled {
        None
    } else {
        Some(open_keys(ctx)?)
    };
    runtime.block_on(async {
        let server = writ::serve::Server::prepare(&ctx.config, ctx.keys_dir.clone(), keys).await?;
        server.run().await?;
        Ok(())
    })
}

/// Unlocks the keyring, and says how to unlock it again on SIGHUP: the
/// passphrase file (`--passphrase-file`, `WRIT_PASSPHRASE_FILE`, or the
/// systemd credential `passphrase`) is read again, so a reload after
/// `keys passwd` works with the new file (not with the credential: systemd
/// copies it at start, so that needs a restart); a passphrase typed at the prompt
/// is kept (zeroized on exit) since nobody is there to type it again. An
/// HSM keyring takes the token PIN the same ways (`--pin-file`,
/// `WRIT_PIN_FILE`, the credential `pin`, the prompt).
fn open_keys(ctx: &super::Context) -> Result<writ::serve::OpenKeys> {
    use std::sync::Arc;
    let on_token = Keyring::load(&ctx.keys_dir)?.token().is_some();
    let (file, secret) = if on_token {
        let file = ctx.pin_file.clone().or_else(keys::credential_pin_file);
        let pin = keys::pin_from(file.as_deref(), "Token PIN: ")?;
        (file, pin)
    } else {
        let file = ctx
            .passphrase_file
            .clone()
            .or_else(keys::credential_passphrase_file);
        let passphrase = keys::passphrase_from(file.as_deref(), "Keyring passphrase: ", false)?;
        (file, passphrase)
    };
    let unlock_with = move |keyring: Keyring, secret: &secrecy::SecretString| {
        if on_token {
            keyring.unlock_on_token(secret)
        } else {
            keyring.unlock(secret)
        }
    };
    let live = Arc::new(keys::LiveKeys::new(unlock_with(
        Keyring::load(&ctx.keys_dir)?,
        &secret,
    )?));
    let keys_dir = ctx.keys_dir.clone();
    enum Again {
        ReadFile(std::path::PathBuf),
        Kept(secrecy::SecretString),
    }
    let again = match file {
        Some(f) => Again::ReadFile(f),
        None => Again::Kept(secret),
    };
    let unlock: writ::serve::Unlock = Arc::new(move || {
        let secret = match &again {
            Again::Kept(kept) => kept.clone(),
            Again::ReadFile(file) if on_token => keys::read_pin_file(file)?,
            Again::ReadFile(file) => keys::read_passphrase_file(file)?,
        };
        unlock_with(Keyring::load(&keys_dir)?, &secret)
    });
    Ok(writ::serve::OpenKeys { live, unlock })
}

pub fn check_config(ctx: &Context) -> Result<()> {
    let mut problems = ctx.config.smtp.problems(&ctx.config.provider);
    problems.extend(ctx.config.imap.problems(&ctx.config.provider));
    problems.extend(ctx.config.serve.problems());
    problems.extend(ctx.config.jobs.problems());
    problems.extend(ctx.config.notify.problems(&ctx.config.provider));
    problems.extend(ctx.config.scanner.problems());
    problems.extend(ctx.config.auth.problems());
    problems.extend(ctx.config.sweep.problems(&ctx.config.provider));
    problems.extend(ctx.config.state.problems());
    if !problems.is_empty() {
        anyhow::bail!("{}: {}", ctx.config_source, problems.join("; "));
    }
    writ::policy::Policy::from_config(&ctx.config.smtp)?;
    if ctx.config.auth.enabled && ctx.config.auth.arc.enabled {
        // The ARC signing key must load now, not at `serve`.
        writ::smtp::arc_seal::ArcSigner::from_config(&ctx.config.auth.arc, &ctx.keys_dir)?;
    }
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let active = keyring.active()?;
    let seal = &ctx.config.seal;
    let mut text = format!(
        "config: {} OK\n\
         keyring: {} OK, {} epoch(s), active {}{}\n\
         new mail is sealed to {} recipient(s): active epoch{}{}\n",
        ctx.config_source,
        ctx.keys_dir.display(),
        keyring.epochs().len(),
        active.id,
        match keyring.token() {
            Some(t) => format!(", on token `{}` (key `{}`)", t.token_label, t.key_label),
            None => String::new(),
        },
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
    if keyring.escrow_unrecorded() {
        text.push_str(super::keys::UNRECORDED_ESCROW);
    }
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
