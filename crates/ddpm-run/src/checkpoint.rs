//! Checkpoint directories: `checkpoints/step_<N>/` holding `manifest.json`, the weights
//! (`model.safetensors`, PyTorch names; `ema.safetensors`) and whatever else the trainer
//! saves; `checkpoints/latest` names the newest complete one.
//!
//! A checkpoint is written into `checkpoints/.tmp-step_<N>/` and renamed into place, and
//! `latest` is replaced by renaming a temporary file, so a kill at any moment leaves the
//! previous checkpoint and `latest` intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ddpm_unet::Model;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::io_err;
use crate::{Result, RunError, RunManifest};

/// The network's weights.
pub const MODEL_FILE: &str = "model.safetensors";
/// The EMA weights (present when EMA is on).
pub const EMA_FILE: &str = "ema.safetensors";
/// The [`RunManifest`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// The run's training configuration (in the run directory and in every checkpoint).
pub const CONFIG_FILE: &str = "config.json";
/// The folder of a run directory that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// What to write into one checkpoint directory.
pub struct Snapshot<'a> {
    /// Optimizer steps done (names the directory `step_<N>`).
    pub step: u64,
    /// The manifest.
    pub manifest: &'a RunManifest,
    /// JSON files beside it: (file name, value).
    pub json: Vec<(&'static str, serde_json::Value)>,
    /// Safetensors files: (file name, named tensors).
    pub tensors: Vec<(&'static str, HashMap<String, Tensor>)>,
}

/// Serialises `value` for a [`Snapshot`].
pub fn to_json(
    name: &'static str,
    value: &impl Serialize,
) -> Result<(&'static str, serde_json::Value)> {
    let value = serde_json::to_value(value).map_err(|source| RunError::Json {
        path: name.into(),
        source,
    })?;
    Ok((name, value))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| RunError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(io_err("writing", path))
}

/// Reads a JSON file, naming it when it is missing or malformed.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    serde_json::from_str(&text).map_err(|source| RunError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `checkpoints/step_<N>` of `run_dir` atomically, points `latest` at it and, with
/// `keep_last`, removes the oldest others. Returns the checkpoint directory.
pub fn save(run_dir: &Path, snapshot: &Snapshot<'_>, keep_last: Option<usize>) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
    let name = format!("step_{}", snapshot.step);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    for (file, tensors) in &snapshot.tensors {
        let path = tmp.join(file);
        candle_core::safetensors::save(tensors, &path).map_err(|e| RunError::Checkpoint {
            path: path.clone(),
            why: format!("cannot write tensors: {e}"),
        })?;
    }
    for (file, value) in &snapshot.json {
        write_json(&tmp.join(file), value)?;
    }
    write_json(&tmp.join(MANIFEST_FILE), snapshot.manifest)?;
    let dest = root.join(&name);
    if dest.exists() {
        // The same step saved again (a resumed run): move the old one aside first.
        let old = root.join(format!(".old-{name}"));
        std::fs::rename(&dest, &old).map_err(io_err("moving aside", &dest))?;
        std::fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))?;
        std::fs::remove_dir_all(&old).map_err(io_err("removing", &old))?;
    } else {
        std::fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))?;
    }
    let latest_tmp = root.join(".latest.tmp");
    std::fs::write(&latest_tmp, format!("{name}\n")).map_err(io_err("writing", &latest_tmp))?;
    std::fs::rename(&latest_tmp, root.join("latest"))
        .map_err(io_err("replacing", root.join("latest")))?;
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
        .map_err(io_err("listing", root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((step_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for (_, path) in steps.into_iter().take(excess) {
        if path.file_name().and_then(|n| n.to_str()) != Some(latest) {
            std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint of a run directory (what `checkpoints/latest` names).
pub fn latest(run_dir: &Path) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let pointer = root.join("latest");
    let name = std::fs::read_to_string(&pointer).map_err(|_| RunError::Checkpoint {
        path: run_dir.to_path_buf(),
        why: "no checkpoints/latest: this run has not saved a checkpoint yet".into(),
    })?;
    let dir = root.join(name.trim());
    require_files(&dir, &[MODEL_FILE])?;
    Ok(dir)
}

/// Accepts a run directory (its latest checkpoint) or a checkpoint directory.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(MODEL_FILE).is_file() {
        Ok(path.to_path_buf())
    } else if path.join(CHECKPOINTS_DIR).is_dir() {
        latest(path)
    } else {
        Err(RunError::Checkpoint {
            path: path.to_path_buf(),
            why: format!(
                "neither a run directory (with {CHECKPOINTS_DIR}/) nor a checkpoint directory \
                 (with {MODEL_FILE})"
            ),
        })
    }
}

/// The run directory a checkpoint directory belongs to (`<run>/checkpoints/step_<N>`).
pub fn run_dir_of(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir
        .ancestors()
        .nth(2)
        .map_or_else(|| checkpoint_dir.to_path_buf(), Path::to_path_buf)
}

/// Fails with a message naming the first of `files` that `dir` lacks.
pub fn require_files(dir: &Path, files: &[&str]) -> Result<()> {
    match files.iter().find(|f| !dir.join(f).is_file()) {
        Some(file) => Err(RunError::Checkpoint {
            path: dir.to_path_buf(),
            why: format!("{file} is missing"),
        }),
        None => Ok(()),
    }
}

/// Reads a checkpoint's manifest. A checkpoint written before manifests existed has its
/// `config.json` read instead (its network, schedule and sampling fields are the manifest's).
pub fn read_manifest(dir: &Path) -> Result<RunManifest> {
    let manifest = dir.join(MANIFEST_FILE);
    if manifest.is_file() {
        return read_json(&manifest);
    }
    let legacy = dir.join(CONFIG_FILE);
    if legacy.is_file() {
        return read_json(&legacy);
    }
    Err(RunError::Checkpoint {
        path: dir.to_path_buf(),
        why: format!("{MANIFEST_FILE} is missing"),
    })
}

/// Reads a safetensors file of a checkpoint, naming the file when it is corrupt.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| RunError::Checkpoint {
        path: path.to_path_buf(),
        why: format!("cannot read tensors: {e}"),
    })
}

/// A network read back from a checkpoint.
pub struct LoadedModel {
    /// The network with the checkpoint's weights.
    pub model: Model,
    /// The checkpoint's manifest.
    pub manifest: RunManifest,
    /// True when the EMA weights were loaded.
    pub used_ema: bool,
}

/// Builds the checkpoint's network on `device` with its EMA weights when `prefer_ema` and
/// they exist, else the raw weights.
pub fn load_model(dir: &Path, device: &Device, prefer_ema: bool) -> Result<LoadedModel> {
    let manifest = read_manifest(dir)?;
    let ema_path = dir.join(EMA_FILE);
    let used_ema = prefer_ema && ema_path.is_file();
    let path = if used_ema {
        ema_path
    } else {
        dir.join(MODEL_FILE)
    };
    let model = model_with_weights(&manifest, &read_tensors(&path, device)?, &path, device)?;
    Ok(LoadedModel {
        model,
        manifest,
        used_ema,
    })
}

/// Reads a manifest held in memory (a file read without a file system, e.g. in a browser);
/// `name` names it in errors.
pub fn manifest_from_bytes(json: &[u8], name: &str) -> Result<RunManifest> {
    serde_json::from_slice(json).map_err(|source| RunError::Json {
        path: name.into(),
        source,
    })
}

/// Builds the network of `manifest` on `device` with the weights of a safetensors file held
/// in memory (any float dtype: converted to the network's); `name` names the file in errors.
pub fn model_from_bytes(
    manifest: &RunManifest,
    weights: &[u8],
    name: &str,
    device: &Device,
) -> Result<Model> {
    let tensors = candle_core::safetensors::load_buffer(weights, device).map_err(|e| {
        RunError::Checkpoint {
            path: name.into(),
            why: format!("cannot read tensors: {e}"),
        }
    })?;
    model_with_weights(manifest, &tensors, Path::new(name), device)
}

/// The network of `manifest` with `tensors` (read from `path`) loaded into it.
fn model_with_weights(
    manifest: &RunManifest,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    device: &Device,
) -> Result<Model> {
    let model = manifest.build_model(device)?;
    model
        .load_state_dict(tensors)
        .map_err(|e| RunError::Checkpoint {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    Ok(model)
}
