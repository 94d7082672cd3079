//! `writ approver`: approval keys for the disclosure quorum. (Being built.)

use anyhow::Result;

use super::Context;

#[derive(clap::Subcommand)]
pub enum ApproverCommand {
    /// Create an approval key
    Init,
}

pub fn run(_ctx: &Context, _command: ApproverCommand) -> Result<()> {
    anyhow::bail!("writ approver is not built yet")
}
