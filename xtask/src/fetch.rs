//! PLACEHOLDER owned by the data work (issue 4).
/// Options of `fetch-mnist`.
#[derive(Debug, clap::Args)]
pub struct MnistArgs {}
/// Options of `fetch-anime`.
#[derive(Debug, clap::Args)]
pub struct AnimeArgs {}
pub fn mnist(_: MnistArgs) -> anyhow::Result<()> { anyhow::bail!("fetch-mnist is not built yet") }
pub fn anime(_: AnimeArgs) -> anyhow::Result<()> { anyhow::bail!("fetch-anime is not built yet") }
