//! PLACEHOLDER owned by the networks work (issue 3).
/// Options of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}
pub fn run(_: Args) -> anyhow::Result<()> { anyhow::bail!("bench is not built yet") }
