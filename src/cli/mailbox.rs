//! `writ mailbox`: bulk work on mail stored at the provider. (Being built.)

use anyhow::Result;

use super::Context;

#[derive(clap::Subcommand)]
pub enum MailboxCommand {
    /// Seal the plaintext mail already at the provider
    Seal,
}

pub fn run(_ctx: &Context, _command: MailboxCommand) -> Result<()> {
    anyhow::bail!("writ mailbox is not built yet")
}
