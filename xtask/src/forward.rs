//! `cargo xtask forward`: runs a network on `x` and `t` read from a safetensors file and
//! writes its output `eps`, to check the port against PyTorch.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};
use ddpm_unet::{Model, ModelConfig, ModelKind, ModelSpec, ResidualFrom};

/// Options of `forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Network to run.
    #[arg(long, default_value = "ref")]
    pub model: ModelKind,
    /// Channel list (`ref`/`res`: per level; `modern`: level widths, multiples of the first).
    #[arg(long, value_delimiter = ',', default_value = "10,20,40,80")]
    pub channels: Vec<usize>,
    /// Width of the sinusoidal time encoding (`ref`/`res`).
    #[arg(long, default_value_t = 20)]
    pub pe_dim: usize,
    /// Number of diffusion steps T (rows of the encoding table of `ref`/`res`).
    #[arg(long, default_value_t = 1000)]
    pub n_steps: usize,
    /// Image shape CxHxW.
    #[arg(long, default_value = "1x28x28")]
    pub image: String,
    /// Residual source of the reference blocks: normalized (default) or input.
    #[arg(long, default_value = "normalized", value_parser = parse_residual)]
    pub residual_from: ResidualFrom,
    /// Attention resolutions of the modern UNet.
    #[arg(long, value_delimiter = ',', default_value = "7")]
    pub attn_resolutions: Vec<usize>,
    /// A JSON `ModelConfig` file; when given, it replaces every network option above.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Weights (PyTorch state dict as safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// Input file holding `x` (B,C,H,W) and `t` (B or B,1; integer).
    #[arg(long)]
    pub input: PathBuf,
    /// Output file; receives `eps`.
    #[arg(long)]
    pub out: PathBuf,
}

impl Args {
    /// The network configuration these options describe.
    fn model_config(&self) -> anyhow::Result<ModelConfig> {
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{} is not a ModelConfig", path.display()));
        }
        let spec = ModelSpec {
            kind: self.model,
            image: self.image.parse()?,
            channels: self.channels.clone(),
            pe_dim: self.pe_dim,
            n_steps: self.n_steps,
            residual_from: self.residual_from,
            attn_resolutions: Some(self.attn_resolutions.clone()),
            num_classes: 0,
        };
        Ok(spec.to_config()?)
    }
}

fn parse_residual(s: &str) -> Result<ResidualFrom, String> {
    match s {
        "normalized" => Ok(ResidualFrom::Normalized),
        "input" => Ok(ResidualFrom::Input),
        _ => Err(format!("`{s}`: use normalized or input")),
    }
}

/// Loads the network and the input, runs the forward pass in eval mode and writes `eps`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let config = args.model_config()?;
    let model = Model::new(&config, &device, 0)?;
    model.load(&args.weights)?;
    let inputs = candle_core::safetensors::load(&args.input, &device)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let get = |name: &str| -> anyhow::Result<&Tensor> {
        inputs
            .get(name)
            .with_context(|| format!("{} has no tensor `{name}`", args.input.display()))
    };
    let eps = model
        .forward(get("x")?, get("t")?, false)
        .context("forward pass failed")?;
    let out = HashMap::from([("eps".to_string(), eps)]);
    candle_core::safetensors::save(&out, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote eps {:?} to {}",
        out["eps"].dims(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ddpm_tests::{assert_close, fixture, load_tensors, shared_file};

    /// Parses `forward` options as the command line would.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn run_on_fixture(extra: &[&str], expected_key: &str) {
        let Some(weights) = shared_file("fixtures/unet_small_1x28x28_weights.safetensors") else {
            return;
        };
        let io = fixture("unet_small_1x28x28_io.safetensors");
        let out = std::env::temp_dir().join(format!(
            "xtask-forward-{}-{expected_key}.safetensors",
            std::process::id()
        ));
        let mut argv = vec!["forward", "--model", "ref", "--channels", "10,20,40,80"];
        argv.extend(["--pe-dim", "20", "--n-steps", "1000", "--image", "1x28x28"]);
        argv.extend(extra);
        let paths = [
            weights.to_str().unwrap(),
            io.to_str().unwrap(),
            out.to_str().unwrap(),
        ];
        argv.extend([
            "--weights",
            paths[0],
            "--input",
            paths[1],
            "--out",
            paths[2],
        ]);
        run(Cli::parse_from(argv).args).unwrap();
        let eps = load_tensors(&out).remove("eps").expect("eps written");
        std::fs::remove_file(&out).unwrap();
        assert_close(&eps, &load_tensors(&io)[expected_key], 1e-4, expected_key);
    }

    #[test]
    fn forward_on_the_fixture_matches_pytorch() {
        run_on_fixture(&[], "out");
    }

    #[test]
    fn residual_from_input_matches_pytorch() {
        run_on_fixture(&["--residual-from", "input"], "out_residual_input");
    }
}
