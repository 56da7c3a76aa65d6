//! PLACEHOLDER owned by the networks work (issue 3).
/// Options of `forward`.
#[derive(Debug, clap::Args)]
pub struct Args {}
pub fn run(_: Args) -> anyhow::Result<()> { anyhow::bail!("forward is not built yet") }
