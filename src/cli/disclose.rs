//! `writ disclose`: open exactly the named messages for a case. (Being built.)

use anyhow::Result;

use super::Context;

#[derive(clap::Args)]
pub struct DiscloseArgs {
    /// Case reference
    #[arg(long)]
    pub case: String,
}

pub fn run(_ctx: &Context, _args: DiscloseArgs) -> Result<()> {
    anyhow::bail!("writ disclose is not built yet")
}
