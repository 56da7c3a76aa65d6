//! Run directories: atomic checkpoints, `latest`, keep-last, reading a network back (also from
//! a run written before manifests existed), digests that catch a flipped bit, writes that fail
//! part-way (a full disk) without harm, and errors that name what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ddpm_diffusion::{BetaKind, Prediction, SamplerConfig, Schedule, Variance};
use ddpm_run::checkpoint::{
    self, DIGESTS_FILE, Disk, EMA_FILE, FileWriter, Integrity, MANIFEST_FILE, MODEL_FILE, Snapshot,
};
use ddpm_run::{RunManifest, SampleSettings};
use ddpm_unet::{ImageShape, Model, ModelKind, ModelSpec, ResidualFrom};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn manifest() -> RunManifest {
    RunManifest {
        model: ModelSpec {
            kind: ModelKind::Res,
            image: ImageShape::MNIST,
            channels: vec![4, 8],
            pe_dim: 8,
            n_steps: 10,
            residual_from: ResidualFrom::Normalized,
            attn_resolutions: None,
            num_classes: 0,
        }
        .to_config()
        .unwrap(),
        schedule: BetaKind::LinearScaled,
        n_steps: 10,
        zero_terminal_snr: false,
        prediction: Prediction::Epsilon,
        sample: SampleSettings {
            n: 16,
            nrow: 4,
            sampler: SamplerConfig::Ddpm {
                variance: Variance::Posterior,
                clip_x0: true,
            },
            guidance: ddpm_run::NO_GUIDANCE,
            guidance_interval: ddpm_diffusion::GuidanceInterval::ALL,
        },
        classes: None,
    }
}

fn weights(manifest: &RunManifest, seed: u64) -> HashMap<String, Tensor> {
    let model = Model::new(&manifest.model, &Device::Cpu, seed).unwrap();
    model.state_dict().unwrap().into_iter().collect()
}

fn save(run: &Path, step: u64, keep_last: Option<usize>) -> PathBuf {
    save_with(run, step, keep_last, &mut Disk).unwrap()
}

fn save_with(
    run: &Path,
    step: u64,
    keep_last: Option<usize>,
    writer: &mut dyn FileWriter,
) -> ddpm_run::Result<PathBuf> {
    let m = manifest();
    let snapshot = Snapshot {
        step,
        manifest: &m,
        json: vec![checkpoint::to_json("extra.json", &serde_json::json!({"step": step})).unwrap()],
        tensors: vec![(MODEL_FILE, weights(&m, 1)), (EMA_FILE, weights(&m, 2))],
    };
    checkpoint::save_with(run, &snapshot, keep_last, writer)
}

/// A disk that fills up after `budget` bytes: the write that crosses it stores what fits and
/// fails as a full disk does. Records the size of every file it was asked to write.
struct FillingDisk {
    budget: usize,
    sizes: Vec<usize>,
}

impl FileWriter for FillingDisk {
    fn write(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.sizes.push(bytes.len());
        let fits = bytes.len().min(self.budget);
        Disk.write(path, &bytes[..fits])?;
        self.budget -= fits;
        if fits < bytes.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

/// Flips one bit in the middle of a file (inside a tensor's data, past the header).
fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    a.iter()
        .map(|(name, t)| ddpm_tests::max_abs_diff(t, &b[name]))
        .fold(0.0, f64::max)
}

#[test]
fn checkpoints_round_trip_with_latest_and_keep_last() {
    let run = temp("round-trip");
    for step in [1, 2, 3] {
        save(&run, step, Some(2));
    }
    let latest = checkpoint::latest(&run).unwrap();
    assert_eq!(latest, run.join("checkpoints/step_3"));
    assert_eq!(checkpoint::resolve(&run).unwrap(), latest);
    assert_eq!(checkpoint::resolve(&latest).unwrap(), latest);
    assert_eq!(checkpoint::run_dir_of(&latest), run);
    assert!(!run.join("checkpoints/step_1").exists(), "keep-last 2");
    assert!(run.join("checkpoints/step_2").is_dir());
    assert!(latest.join("extra.json").is_file());

    let m = manifest();
    assert_eq!(checkpoint::read_manifest(&latest).unwrap(), m);
    let ema = checkpoint::load_model(&latest, &Device::Cpu, true).unwrap();
    assert!(ema.used_ema);
    assert_eq!(ema.manifest, m);
    let got: HashMap<_, _> = ema.model.state_dict().unwrap().into_iter().collect();
    assert_eq!(max_diff(&got, &weights(&m, 2)), 0.0);
    let raw = checkpoint::load_model(&latest, &Device::Cpu, false).unwrap();
    assert!(!raw.used_ema);
    let got: HashMap<_, _> = raw.model.state_dict().unwrap().into_iter().collect();
    assert_eq!(max_diff(&got, &weights(&m, 1)), 0.0);
}

/// Runs written before manifests existed hold the same fields in their `config.json`.
#[test]
fn a_checkpoint_without_a_manifest_reads_its_older_config() {
    let run = temp("legacy");
    let dir = save(&run, 5, None);
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let mut legacy = serde_json::to_value(manifest()).unwrap();
    legacy["preset"] = "quick".into();
    legacy["lr"] = 0.002.into();
    std::fs::write(dir.join("config.json"), legacy.to_string()).unwrap();
    assert_eq!(checkpoint::read_manifest(&dir).unwrap(), manifest());
}

/// A manifest records zero terminal SNR only when it is on (older manifests read as off), and
/// the schedule it rebuilds follows it.
#[test]
fn a_manifest_rebuilds_a_zero_terminal_snr_schedule() {
    // (The fixture's scaled linear schedule has β > 1 at T = 10.)
    let plain = RunManifest {
        schedule: BetaKind::Linear,
        ..manifest()
    };
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("zero_terminal_snr").is_none(), "{json}");
    assert_eq!(serde_json::from_value::<RunManifest>(json).unwrap(), plain);
    let schedule = plain.schedule(&Device::Cpu).unwrap();
    assert!(!schedule.zero_terminal_snr() && schedule.alpha_bars()[9] > 0.0);

    let rescaled = RunManifest {
        zero_terminal_snr: true,
        prediction: Prediction::V,
        ..plain.clone()
    };
    let json = serde_json::to_value(&rescaled).unwrap();
    assert_eq!(json["zero_terminal_snr"], true);
    assert_eq!(
        serde_json::from_value::<RunManifest>(json).unwrap(),
        rescaled
    );
    let schedule = rescaled.schedule(&Device::Cpu).unwrap();
    assert!(schedule.zero_terminal_snr());
    assert_eq!(schedule.alpha_bars()[9], 0.0);
    let want = Schedule::new(BetaKind::Linear, 10, &Device::Cpu)
        .unwrap()
        .with_zero_terminal_snr()
        .unwrap();
    assert_eq!(schedule.betas(), want.betas());
}

#[test]
fn missing_and_corrupt_pieces_are_named() {
    let run = temp("errors");
    let none = checkpoint::latest(&run).unwrap_err().to_string();
    assert!(none.contains("no checkpoints/latest"), "{none}");
    let neither = checkpoint::resolve(&run).unwrap_err().to_string();
    assert!(neither.contains("neither a run directory"), "{neither}");

    let dir = save(&run, 1, None);
    let missing = checkpoint::require_files(&dir, &[MODEL_FILE, "optimizer.safetensors"])
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("optimizer.safetensors is missing"),
        "{missing}"
    );
    std::fs::write(dir.join(EMA_FILE), b"not tensors").unwrap();
    let corrupt = checkpoint::load_model(&dir, &Device::Cpu, true)
        .err()
        .unwrap()
        .to_string();
    assert!(corrupt.contains(EMA_FILE), "{corrupt}");
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let no_manifest = checkpoint::read_manifest(&dir).unwrap_err().to_string();
    assert!(
        no_manifest.contains("manifest.json is missing"),
        "{no_manifest}"
    );
}

/// A disk that fills up anywhere in a save (one byte short of, or exactly at, the end of each
/// file): the error names the checkpoint and the file, no temporary file is left, and `latest`
/// still names the previous checkpoint, which loads and verifies.
#[test]
fn a_disk_that_fills_up_mid_save_leaves_the_previous_checkpoint_and_no_debris() {
    let run = temp("full-disk");
    save(&run, 1, None);
    let mut probe = FillingDisk {
        budget: usize::MAX,
        sizes: Vec::new(),
    };
    save_with(&run, 2, None, &mut probe).unwrap();
    std::fs::remove_dir_all(run.join("checkpoints/step_2")).unwrap();
    std::fs::write(run.join("checkpoints/latest"), "step_1\n").unwrap();
    let total: usize = probe.sizes.iter().sum();
    let ends: Vec<usize> = probe
        .sizes
        .iter()
        .scan(0, |sum, size| {
            *sum += size;
            Some(*sum)
        })
        .collect();
    let budgets = std::iter::once(0).chain(ends.iter().flat_map(|&end| [end - 1, end]));
    let root = run.join("checkpoints");
    for budget in budgets.filter(|&b| b < total) {
        let mut disk = FillingDisk {
            budget,
            sizes: Vec::new(),
        };
        let err = save_with(&run, 2, None, &mut disk).unwrap_err().to_string();
        assert!(
            err.contains("cannot save checkpoint step_2") && err.contains("writing"),
            "{err}"
        );
        let failed_on = if disk.sizes.len() == probe.sizes.len() {
            ".latest.tmp".to_string()
        } else {
            ".tmp-step_2/".to_string()
        };
        assert!(err.contains(&failed_on), "budget {budget}: {err}");
        let debris: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(debris.is_empty(), "budget {budget}: left {debris:?}");
        let latest = checkpoint::latest(&run).unwrap();
        assert_eq!(latest, root.join("step_1"), "budget {budget}");
        assert_eq!(checkpoint::verify(&latest).unwrap(), Integrity::Verified);
        checkpoint::load_model(&latest, &Device::Cpu, false).unwrap();
        // The last file is `latest`'s: the new checkpoint itself was complete, and is intact.
        if failed_on == ".latest.tmp" {
            checkpoint::verify(&root.join("step_2")).unwrap();
            std::fs::remove_dir_all(root.join("step_2")).unwrap();
        } else {
            assert!(!root.join("step_2").exists(), "budget {budget}");
        }
    }
    save_with(
        &run,
        2,
        None,
        &mut FillingDisk {
            budget: total,
            sizes: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(checkpoint::latest(&run).unwrap(), root.join("step_2"));
}

/// Every file's digest is checked on load, not only the file read: a bit flipped in the raw
/// weights stops a load of the EMA weights, naming the file.
#[test]
fn a_flipped_bit_in_any_file_is_named_on_load() {
    let run = temp("bit-flip");
    let dir = save(&run, 1, None);
    assert!(dir.join(DIGESTS_FILE).is_file());
    assert_eq!(checkpoint::verify(&dir).unwrap(), Integrity::Verified);
    let loaded = checkpoint::load_model(&dir, &Device::Cpu, true).unwrap();
    assert_eq!(loaded.integrity, Integrity::Verified);
    assert_eq!(loaded.integrity.warning(&dir), None);

    flip_a_bit(&dir.join(MODEL_FILE));
    let err = checkpoint::load_model(&dir, &Device::Cpu, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors is corrupt"), "{err}");
    assert!(err.contains("SHA-256"), "{err}");

    let run = temp("truncated");
    let dir = save(&run, 1, None);
    let json = dir.join("extra.json");
    std::fs::remove_file(&json).unwrap();
    let err = checkpoint::verify(&dir).unwrap_err().to_string();
    assert!(err.contains("extra.json is missing"), "{err}");
}

/// Checkpoints saved before digests existed still load, unverified, with a warning to print.
#[test]
fn a_checkpoint_without_digests_loads_unverified() {
    let run = temp("no-digests");
    let dir = save(&run, 1, None);
    std::fs::remove_file(dir.join(DIGESTS_FILE)).unwrap();
    let loaded = checkpoint::load_model(&dir, &Device::Cpu, true).unwrap();
    assert_eq!(loaded.integrity, Integrity::Unrecorded);
    let warning = loaded.integrity.warning(&dir).unwrap();
    assert!(warning.contains("not verified"), "{warning}");
}

/// Behind a damaged checkpoint, the newest intact earlier one is found.
#[test]
fn the_newest_intact_checkpoint_before_a_damaged_one_is_found() {
    let run = temp("intact");
    for step in [1, 2, 3] {
        save(&run, step, None);
    }
    let root = run.join("checkpoints");
    assert_eq!(checkpoint::latest_step(&run), Some(3));
    assert_eq!(
        checkpoint::newest_intact_before(&run, 3).unwrap(),
        Some(root.join("step_2"))
    );
    flip_a_bit(&root.join("step_2").join(EMA_FILE));
    assert_eq!(
        checkpoint::newest_intact_before(&run, 3).unwrap(),
        Some(root.join("step_1"))
    );
    std::fs::remove_file(root.join("step_1").join(MODEL_FILE)).unwrap();
    assert_eq!(checkpoint::newest_intact_before(&run, 3).unwrap(), None);
    assert!(checkpoint::named(&run, "latest").is_err());
    assert_eq!(
        checkpoint::named(&run, "step_3").unwrap(),
        root.join("step_3")
    );
}
