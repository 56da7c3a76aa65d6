//! Run directories: atomic checkpoints, `latest`, keep-last, reading a network back (also from
//! a run written before manifests existed), and errors that name what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ddpm_diffusion::{BetaKind, Prediction, SamplerConfig, Schedule, Variance};
use ddpm_run::checkpoint::{self, EMA_FILE, MANIFEST_FILE, MODEL_FILE, Snapshot};
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
    let m = manifest();
    let snapshot = Snapshot {
        step,
        manifest: &m,
        json: vec![checkpoint::to_json("extra.json", &serde_json::json!({"step": step})).unwrap()],
        tensors: vec![(MODEL_FILE, weights(&m, 1)), (EMA_FILE, weights(&m, 2))],
    };
    checkpoint::save(run, &snapshot, keep_last).unwrap()
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
