//! Checkpoint directories: `checkpoints/step_<N>/` holding `manifest.json`, the weights
//! (`model.safetensors`, PyTorch names; `ema.safetensors`) and whatever else the trainer
//! saves, with `digests.json` (the SHA-256 of every other file); `checkpoints/latest` names
//! the newest complete one.
//!
//! A checkpoint is written into `checkpoints/.tmp-step_<N>/` (each file synced to disk) and
//! renamed into place, and `latest` is replaced by renaming a temporary file, so a kill at any
//! moment leaves the previous checkpoint and `latest` intact. A write that fails (a full disk)
//! removes the temporary files and names the file and the checkpoint it was writing. Loading
//! ([`verify`], [`load_model`]) checks every file against its digest and names the one that
//! differs; checkpoints written before digests existed load unverified ([`Integrity`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ddpm_unet::Model;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
/// The SHA-256 of every other file of a checkpoint ([`verify`]).
pub const DIGESTS_FILE: &str = "digests.json";
/// The folder of a run directory that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The file of the checkpoints folder that names the newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";

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

/// Where [`save_with`] writes a checkpoint's files: [`Disk`], or a writer that fails on purpose
/// to test what a full disk does.
pub trait FileWriter {
    /// Writes `bytes` as the whole of the file `path` (created or truncated), durably.
    fn write(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
}

/// Writes to the file system, syncing each file before it is renamed into place.
pub struct Disk;

impl FileWriter for Disk {
    fn write(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// The contents of `digests.json`: file name → lowercase hex SHA-256.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Digests {
    sha256: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the file `name` of the checkpoint being assembled in `dir`, recording its digest.
fn write_file(
    writer: &mut dyn FileWriter,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    digests: &mut Digests,
) -> Result<()> {
    let path = dir.join(name);
    writer
        .write(&path, bytes)
        .map_err(io_err("writing", &path))?;
    digests.sha256.insert(name.to_string(), sha256_hex(bytes));
    Ok(())
}

fn json_bytes(name: &str, value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| RunError::Json {
        path: name.into(),
        source,
    })
}

/// Replaces the file `path` with `bytes` atomically: written (and synced) beside it as
/// `.<name>.tmp` and renamed over it, so a kill leaves the old contents or the new ones.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    if let Err(e) = Disk.write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("writing", &tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err("replacing", path))
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
    save_with(run_dir, snapshot, keep_last, &mut Disk)
}

/// [`save`] through `writer`. When a write fails, the temporary files are removed, `latest`
/// and the earlier checkpoints are left as they were, and the error ([`RunError::Save`]) names
/// the checkpoint and the file it was writing.
pub fn save_with(
    run_dir: &Path,
    snapshot: &Snapshot<'_>,
    keep_last: Option<usize>,
    writer: &mut dyn FileWriter,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let name = format!("step_{}", snapshot.step);
    let tmp = root.join(format!(".tmp-{name}"));
    let latest_tmp = root.join(".latest.tmp");
    let written = write_checkpoint(&root, &name, &tmp, snapshot, writer).and_then(|dest| {
        writer
            .write(&latest_tmp, format!("{name}\n").as_bytes())
            .map_err(io_err("writing", &latest_tmp))?;
        let latest = root.join(LATEST_FILE);
        std::fs::rename(&latest_tmp, &latest).map_err(io_err("replacing", latest))?;
        Ok(dest)
    });
    let dest = match written {
        Ok(dest) => dest,
        Err(cause) => {
            // Best effort: the error to report is the one that stopped the save.
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = std::fs::remove_file(&latest_tmp);
            return Err(RunError::Save {
                checkpoint: name,
                root,
                cause: Box::new(cause),
            });
        }
    };
    if let Some(keep) = keep_last {
        prune(&root, keep.max(1), &name)?;
    }
    Ok(dest)
}

/// Writes the files of `snapshot` into `tmp` with their digests and renames it to `root/name`.
fn write_checkpoint(
    root: &Path,
    name: &str,
    tmp: &Path,
    snapshot: &Snapshot<'_>,
    writer: &mut dyn FileWriter,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(io_err("creating", root))?;
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io_err("removing", tmp))?;
    }
    std::fs::create_dir_all(tmp).map_err(io_err("creating", tmp))?;
    let mut digests = Digests::default();
    for (file, tensors) in &snapshot.tensors {
        let bytes = safetensors::tensor::serialize(tensors.iter(), None).map_err(|e| {
            RunError::Checkpoint {
                path: tmp.join(file),
                why: format!("cannot serialise tensors: {e}"),
            }
        })?;
        write_file(writer, tmp, file, &bytes, &mut digests)?;
    }
    for (file, value) in &snapshot.json {
        write_file(writer, tmp, file, &json_bytes(file, value)?, &mut digests)?;
    }
    let manifest = json_bytes(MANIFEST_FILE, snapshot.manifest)?;
    write_file(writer, tmp, MANIFEST_FILE, &manifest, &mut digests)?;
    let digests_path = tmp.join(DIGESTS_FILE);
    writer
        .write(&digests_path, &json_bytes(DIGESTS_FILE, &digests)?)
        .map_err(io_err("writing", &digests_path))?;
    let dest = root.join(name);
    if dest.exists() {
        // The same step saved again (a run resumed from an earlier checkpoint): move the old
        // one aside first, and back if the new one cannot take its place.
        let old = root.join(format!(".old-{name}"));
        std::fs::rename(&dest, &old).map_err(io_err("moving aside", &dest))?;
        if let Err(e) = std::fs::rename(tmp, &dest) {
            let _ = std::fs::rename(&old, &dest);
            return Err(io_err("renaming into", &dest)(e));
        }
        std::fs::remove_dir_all(&old).map_err(io_err("removing", &old))?;
    } else {
        std::fs::rename(tmp, &dest).map_err(io_err("renaming into", &dest))?;
    }
    Ok(dest)
}

fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step_")?.parse().ok()
}

fn prune(root: &Path, keep: usize, latest: &str) -> Result<()> {
    let run_dir = root.parent().unwrap_or(root);
    // Newest first: everything past the newest `keep`.
    for (_, path) in list(run_dir)?.into_iter().skip(keep) {
        if path.file_name().and_then(|n| n.to_str()) != Some(latest) {
            std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint of a run directory (what `checkpoints/latest` names).
pub fn latest(run_dir: &Path) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let pointer = root.join(LATEST_FILE);
    let name = std::fs::read_to_string(&pointer).map_err(|_| RunError::Checkpoint {
        path: run_dir.to_path_buf(),
        why: "no checkpoints/latest: this run has not saved a checkpoint yet".into(),
    })?;
    named(run_dir, name.trim())
}

/// The checkpoint `checkpoints/<name>` of a run directory (`step_<N>`), if it has its weights.
pub fn named(run_dir: &Path, name: &str) -> Result<PathBuf> {
    if step_of(name).is_none() {
        return Err(RunError::Checkpoint {
            path: run_dir.join(CHECKPOINTS_DIR),
            why: format!("`{name}` is not a checkpoint name (step_<N>)"),
        });
    }
    let dir = run_dir.join(CHECKPOINTS_DIR).join(name);
    require_files(&dir, &[MODEL_FILE])?;
    Ok(dir)
}

/// The checkpoints of a run directory, newest first: (step, directory).
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(&root)
        .map_err(io_err("listing", &root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((step_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    steps.sort_by(|a, b| b.cmp(a));
    Ok(steps)
}

/// The newest checkpoint of `run_dir` before `step` that has its weights and passes [`verify`]
/// (a damaged newer one's fallback).
pub fn newest_intact_before(run_dir: &Path, step: u64) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?
        .into_iter()
        .filter(|(s, _)| *s < step)
        .map(|(_, dir)| dir)
        .find(|dir| require_files(dir, &[MODEL_FILE]).is_ok() && verify(dir).is_ok()))
}

/// The step `checkpoints/latest` names, if it is readable and names one.
pub fn latest_step(run_dir: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(run_dir.join(CHECKPOINTS_DIR).join(LATEST_FILE)).ok()?;
    step_of(name.trim())
}

/// What [`verify`] could check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every file recorded in `digests.json` is present with its digest.
    Verified,
    /// The checkpoint has no `digests.json` (written before digests existed): not checked.
    Unrecorded,
}

impl Integrity {
    /// The warning to print for the checkpoint `dir` (none when it was verified).
    pub fn warning(self, dir: &Path) -> Option<String> {
        (self == Integrity::Unrecorded).then(|| {
            format!(
                "warning: {} has no {DIGESTS_FILE} (saved before checkpoints had digests): \
                 its files are not verified",
                dir.display()
            )
        })
    }
}

/// Checks every file of a checkpoint against the SHA-256 recorded when it was saved; the error
/// names the file that is missing or differs.
pub fn verify(dir: &Path) -> Result<Integrity> {
    let path = dir.join(DIGESTS_FILE);
    if !path.is_file() {
        return Ok(Integrity::Unrecorded);
    }
    let digests: Digests = read_json(&path)?;
    let damaged = |why: String| RunError::Checkpoint {
        path: dir.to_path_buf(),
        why,
    };
    for (file, want) in &digests.sha256 {
        let bytes = std::fs::read(dir.join(file)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => damaged(format!("{file} is missing")),
            _ => io_err("reading", dir.join(file))(e),
        })?;
        let found = sha256_hex(&bytes);
        if found != *want {
            return Err(damaged(format!(
                "{file} is corrupt: its SHA-256 is {found}, but {want} was recorded when it \
                 was saved"
            )));
        }
    }
    Ok(Integrity::Verified)
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
    /// Whether the checkpoint's files were checked against their digests.
    pub integrity: Integrity,
}

/// Builds the checkpoint's network on `device` with its EMA weights when `prefer_ema` and
/// they exist, else the raw weights, after [`verify`]ing every file of the checkpoint (not only
/// the one read).
pub fn load_model(dir: &Path, device: &Device, prefer_ema: bool) -> Result<LoadedModel> {
    let integrity = verify(dir)?;
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
        integrity,
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
