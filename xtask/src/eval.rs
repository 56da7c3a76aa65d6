//! PLACEHOLDER owned by the evaluation work (issue 9).
/// Options of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}
/// Options of `train-classifier`.
#[derive(Debug, clap::Args)]
pub struct TrainClassifierArgs {}
pub fn run(_: EvalArgs) -> anyhow::Result<()> { anyhow::bail!("eval is not built yet") }
pub fn train_classifier(_: TrainClassifierArgs) -> anyhow::Result<()> { anyhow::bail!("train-classifier is not built yet") }
