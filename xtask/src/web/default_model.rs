//! `cargo xtask web-model RUN`: the page's default model, `web/model/`, from a trained run: its
//! manifest and its EMA weights in f16 (the frozen time table, rebuilt on load, left out).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use ddpm_run::checkpoint;
use ddpm_unet::PE_TABLE_NAME;

use super::{MODEL_DIR, WEB_DIR, workspace_root};

/// `cargo xtask web-model` options.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The run directory (its latest checkpoint) or checkpoint directory to take the weights
    /// from (`cargo run --release -p trainer` makes one: runs/embedded-quick-<time>).
    run: PathBuf,
}

/// Writes `web/model/manifest.json` and `web/model/model.safetensors` from `args.run`.
pub fn run(args: ModelArgs) -> Result<()> {
    let dir = checkpoint::resolve(&args.run)?;
    let loaded = checkpoint::load_model(&dir, &Device::Cpu, true)?;
    if !loaded.used_ema {
        println!(
            "note: {} has no EMA weights: using the raw weights",
            dir.display()
        );
    }
    let mut tensors = HashMap::new();
    let mut worst = 0f32;
    for (name, tensor) in loaded.model.state_dict()? {
        if name == PE_TABLE_NAME {
            continue;
        }
        let stored = if tensor.dtype().is_float() {
            let half = tensor.to_dtype(DType::F16)?;
            let error = (half.to_dtype(DType::F32)? - tensor.to_dtype(DType::F32)?)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            worst = worst.max(error);
            half
        } else {
            tensor
        };
        tensors.insert(name, stored);
    }
    let out = workspace_root().join(WEB_DIR).join(MODEL_DIR);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let weights = out.join(checkpoint::MODEL_FILE);
    candle_core::safetensors::save(&tensors, &weights)?;
    let manifest = out.join(checkpoint::MANIFEST_FILE);
    std::fs::write(&manifest, serde_json::to_string_pretty(&loaded.manifest)?)
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    let size = std::fs::metadata(&weights)?.len();
    println!(
        "wrote {} ({:.2} MB, {} tensors in f16, largest rounding {worst:.2e}) and {} from {}",
        weights.display(),
        size as f64 / 1e6,
        tensors.len(),
        manifest.display(),
        dir.display()
    );
    Ok(())
}
