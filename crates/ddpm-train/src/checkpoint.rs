//! Checkpoint directories: `checkpoints/step_<N>/` with `model.safetensors` (PyTorch names),
//! `ema.safetensors`, `optimizer.safetensors`, `state.json` and a copy of `config.json`;
//! `checkpoints/latest` names the newest complete one.
//!
//! A checkpoint is written into `checkpoints/.tmp-step_<N>/` and renamed into place, and
//! `latest` is replaced by renaming a temporary file, so a kill at any moment leaves the
//! previous checkpoint and `latest` intact.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ddpm_diffusion::NoiseRngState;
use ddpm_unet::Model;
use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{AdamState, Result, TrainConfig, TrainError};

/// File names inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// EMA weights (present when EMA is on).
pub const EMA_FILE: &str = "ema.safetensors";
/// Adam moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// [`CheckpointState`] as JSON.
pub const STATE_FILE: &str = "state.json";
/// The run's configuration.
pub const CONFIG_FILE: &str = "config.json";

/// Where training stood when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch the next batch belongs to.
    pub epoch: u64,
    /// The index of the next batch within that epoch.
    pub batch_in_epoch: usize,
    /// The training-noise generator (t and ε draws).
    pub noise: NoiseRngState,
    /// Adam's counters.
    pub adam: AdamState,
    /// [`TrainConfig::training_digest`] of the run.
    pub config_digest: String,
    /// The loss of the last step.
    pub loss: Option<f32>,
}

/// What to write.
pub struct Snapshot<'a> {
    /// The run's configuration.
    pub config: &'a TrainConfig,
    /// Counters and RNG state.
    pub state: &'a CheckpointState,
    /// The model's state dict.
    pub model: BTreeMap<String, Tensor>,
    /// The EMA state dict, if EMA is on.
    pub ema: Option<BTreeMap<String, Tensor>>,
    /// Adam moments.
    pub optimizer: HashMap<String, Tensor>,
}

fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(io_err(path))
}

fn save_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<()> {
    let owned: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    candle_core::safetensors::save(&owned, path)?;
    Ok(())
}

/// Writes `checkpoints/step_<N>` atomically, points `latest` at it and, with `keep_last`,
/// removes the oldest others. Returns the checkpoint directory.
pub fn save(run_dir: &Path, snapshot: &Snapshot<'_>, keep_last: Option<usize>) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let name = format!("step_{}", snapshot.state.step);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    save_tensors(&tmp.join(MODEL_FILE), &snapshot.model)?;
    if let Some(ema) = &snapshot.ema {
        save_tensors(&tmp.join(EMA_FILE), ema)?;
    }
    save_tensors(&tmp.join(OPTIMIZER_FILE), &snapshot.optimizer)?;
    write_json(&tmp.join(CONFIG_FILE), snapshot.config)?;
    write_json(&tmp.join(STATE_FILE), snapshot.state)?;
    let dest = root.join(&name);
    if dest.exists() {
        // The same step saved again (a resumed run): move the old one aside first.
        let old = root.join(format!(".old-{name}"));
        std::fs::rename(&dest, &old).map_err(io_err(&dest))?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    }
    let latest_tmp = root.join(".latest.tmp");
    std::fs::write(&latest_tmp, format!("{name}\n")).map_err(io_err(&latest_tmp))?;
    std::fs::rename(&latest_tmp, root.join("latest")).map_err(io_err(root.join("latest")))?;
    if let Some(keep) = keep_last {
        prune(&root, keep.max(1), &name)?;
    }
    Ok(dest)
}

fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step_")?.parse().ok()
}

fn prune(root: &Path, keep: usize, latest: &str) -> Result<()> {
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((step_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for (_, path) in steps.into_iter().take(excess) {
        if path.file_name().and_then(|n| n.to_str()) != Some(latest) {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint of a run directory (what `checkpoints/latest` names).
pub fn latest(run_dir: &Path) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let pointer = root.join("latest");
    let name = std::fs::read_to_string(&pointer).map_err(|_| TrainError::Checkpoint {
        path: run_dir.to_path_buf(),
        why: "no checkpoints/latest: this run has not saved a checkpoint yet".into(),
    })?;
    let dir = root.join(name.trim());
    check_complete(&dir)?;
    Ok(dir)
}

/// Accepts a run directory (its latest checkpoint) or a checkpoint directory.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        check_complete(path)?;
        Ok(path.to_path_buf())
    } else if path.join("checkpoints").is_dir() {
        latest(path)
    } else {
        Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            why: "neither a run directory (with checkpoints/) nor a checkpoint directory (with \
                  state.json)"
                .into(),
        })
    }
}

fn check_complete(dir: &Path) -> Result<()> {
    for file in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE] {
        if !dir.join(file).is_file() {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                why: format!("{file} is missing"),
            });
        }
    }
    Ok(())
}

/// Reads a checkpoint's configuration and state.
pub fn read_meta(dir: &Path) -> Result<(TrainConfig, CheckpointState)> {
    let config = TrainConfig::load(&dir.join(CONFIG_FILE))?;
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let state = serde_json::from_str(&text).map_err(|source| TrainError::Json { path, source })?;
    Ok((config, state))
}

/// Reads a safetensors file of a checkpoint, naming the file when it is corrupt.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        why: format!("cannot read tensors: {e}"),
    })
}

/// Builds the checkpoint's network on `device` with its EMA weights when `prefer_ema` and
/// they exist, else the raw weights. Returns the model, its configuration and whether EMA
/// weights were used.
pub fn load_model(
    dir: &Path,
    device: &Device,
    prefer_ema: bool,
) -> Result<(Model, TrainConfig, bool)> {
    let (config, _) = read_meta(dir)?;
    let model = Model::new(&config.model, device, config.seed)?;
    let ema_path = dir.join(EMA_FILE);
    let use_ema = prefer_ema && ema_path.is_file();
    let path = if use_ema {
        ema_path
    } else {
        dir.join(MODEL_FILE)
    };
    model
        .load_state_dict(&read_tensors(&path, device)?)
        .map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            why: e.to_string(),
        })?;
    Ok((model, config, use_ema))
}
