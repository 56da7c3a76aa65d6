//! The sampler command line on a checkpoint made by the trainer, and on PyTorch weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use ddpm_diffusion::{BetaKind, Prediction, SamplerConfig, Variance};
use ddpm_run::checkpoint::{self, EMA_FILE, MODEL_FILE, Snapshot};
use ddpm_run::{RunManifest, SampleSettings};
use ddpm_unet::{ImageShape, Model, ModelKind, ModelSpec, ResidualFrom};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-sampler-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run directory holding one checkpoint of a tiny reference UNet (seeded weights: the
/// sampler's behaviour does not depend on how well it was trained), sampled by default with
/// `sampler`; with `classes`, a tiny residual UNet conditioned on them.
fn run_with(dir: &Path, sampler: SamplerConfig, classes: &[&str]) -> PathBuf {
    let model = ModelSpec {
        kind: if classes.is_empty() {
            ModelKind::Ref
        } else {
            ModelKind::Res
        },
        image: ImageShape::MNIST,
        channels: vec![4, 8],
        pe_dim: 8,
        n_steps: 20,
        residual_from: ResidualFrom::Normalized,
        attn_resolutions: None,
        num_classes: classes.len(),
    }
    .to_config()
    .unwrap();
    let manifest = RunManifest {
        model: model.clone(),
        schedule: BetaKind::Linear,
        n_steps: 20,
        zero_terminal_snr: false,
        prediction: Prediction::Epsilon,
        sample: SampleSettings {
            n: 81,
            nrow: 9,
            sampler,
            guidance: if classes.is_empty() {
                ddpm_run::NO_GUIDANCE
            } else {
                2.0
            },
            guidance_interval: ddpm_diffusion::GuidanceInterval::ALL,
        },
        classes: (!classes.is_empty()).then(|| classes.iter().map(|c| c.to_string()).collect()),
    };
    let weights = |seed| -> std::collections::HashMap<_, _> {
        let net = Model::new(&model, &Device::Cpu, seed).unwrap();
        net.state_dict().unwrap().into_iter().collect()
    };
    let run = dir.join("run");
    let snapshot = Snapshot {
        step: 2,
        manifest: &manifest,
        json: vec![],
        tensors: vec![(MODEL_FILE, weights(0)), (EMA_FILE, weights(1))],
    };
    checkpoint::save(&run, &snapshot, None).unwrap();
    run
}

/// A run whose own sampler is the reference's DDPM (σ² = β, no clipping).
fn tiny_run(dir: &Path) -> PathBuf {
    run_with(
        dir,
        SamplerConfig::Ddpm {
            variance: Variance::Beta,
            clip_x0: false,
        },
        &[],
    )
}

fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) {
    let out = sampler(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(args: &[&str], needle: &str) {
    let out = sampler(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected `{needle}` in: {stderr}"
    );
}

#[test]
fn samples_a_trained_checkpoint_with_both_samplers_deterministically() {
    let dir = temp("ckpt");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    let png = |name: &str| dir.join(name).to_str().unwrap().to_string();
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("ddpm.png"),
        "--seed",
        "3",
    ]);
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("ddpm2.png"),
        "--seed",
        "3",
    ]);
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("ddim.png"),
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--clip-x0",
    ]);
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("other.png"),
        "--seed",
        "4",
        "--n",
        "6",
        "--nrow",
        "3",
        "--padding",
        "2",
    ]);
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(read("ddpm.png"), read("ddpm2.png"), "same seed, same PNG");
    for name in ["ddpm.png", "ddim.png"] {
        let img = image::open(dir.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (252, 252), "{name}");
    }
    let small = image::open(dir.join("other.png")).unwrap();
    assert_eq!(
        (small.width(), small.height()),
        (3 * 28 + 2 * 2, 2 * 28 + 2)
    );
    // Default output: the run's samples folder.
    ok(&[
        "--checkpoint",
        run_s,
        "--n",
        "9",
        "--nrow",
        "3",
        "--sampler",
        "ddim",
        "--steps",
        "2",
    ]);
    let written = std::fs::read_dir(run.join("samples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("sample-"));
    assert!(written);
}

#[test]
fn given_x_t_and_ddim_eta_zero_reproduce_the_raw_samples() {
    let dir = temp("raw");
    let run = tiny_run(&dir);
    let (run_s, raw, again) = (
        run.to_str().unwrap(),
        dir.join("raw.safetensors"),
        dir.join("again.safetensors"),
    );
    let (png_a, png_b) = (dir.join("a.png"), dir.join("b.png"));
    let common = [
        "--checkpoint",
        run_s,
        "--sampler",
        "ddim",
        "--steps",
        "4",
        "--n",
        "3",
        "--nrow",
        "3",
    ];
    let mut first = common.to_vec();
    first.extend(["--seed", "1", "--save-raw", raw.to_str().unwrap()]);
    first.extend(["--out", png_a.to_str().unwrap()]);
    ok(&first);
    // Another seed, but the same x_T: DDIM with η = 0 has no other randomness.
    let mut second = common.to_vec();
    second.extend([
        "--seed",
        "9",
        "--init-noise",
        raw.to_str().unwrap(),
        "--save-raw",
        again.to_str().unwrap(),
    ]);
    second.extend(["--out", png_b.to_str().unwrap()]);
    ok(&second);
    let a = candle_core::safetensors::load(&raw, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(&again, &Device::Cpu).unwrap();
    ddpm_tests::assert_close(&a["samples"], &b["samples"], 0.0, "samples");
    assert_eq!(a["samples"].dims(), &[3, 1, 28, 28]);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = temp("errors");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    fails_with(
        &["--checkpoint", run_s, "--n", "10"],
        "does not fill rows of --nrow 9",
    );
    fails_with(
        &["--checkpoint", dir.join("nothing").to_str().unwrap()],
        "neither a run directory",
    );
    let corrupt = dir.join("corrupt");
    let checkpoint = checkpoint::latest(&run).unwrap();
    std::fs::create_dir_all(&corrupt).unwrap();
    for entry in std::fs::read_dir(&checkpoint).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), corrupt.join(entry.file_name())).unwrap();
    }
    std::fs::write(corrupt.join("model.safetensors"), b"not a tensor file").unwrap();
    fails_with(
        &["--checkpoint", corrupt.to_str().unwrap(), "--no-ema"],
        "model.safetensors",
    );
    // The raw weights truncated: a sample of the EMA weights is refused too, naming them.
    std::fs::copy(
        checkpoint.join("model.safetensors"),
        corrupt.join("model.safetensors"),
    )
    .unwrap();
    let bytes = std::fs::read(corrupt.join("model.safetensors")).unwrap();
    std::fs::write(corrupt.join("model.safetensors"), &bytes[..bytes.len() - 8]).unwrap();
    fails_with(
        &["--checkpoint", corrupt.to_str().unwrap()],
        "model.safetensors is corrupt",
    );
    let wrong = dir.join("wrong.safetensors");
    std::fs::copy(checkpoint.join("model.safetensors"), &wrong).unwrap();
    fails_with(
        &[
            "--weights",
            wrong.to_str().unwrap(),
            "--channels",
            "4,16",
            "--pe-dim",
            "8",
            "--n-steps",
            "20",
        ],
        "has shape",
    );
    fails_with(
        &["--checkpoint", run_s, "--sampler", "nope"],
        "unknown sampler `nope`",
    );
    fails_with(
        &["--checkpoint", run_s, "--sampler", "ddim", "--order", "3"],
        "--order does not apply to ddim",
    );
}

#[test]
fn pytorch_reference_weights_sample_directly() {
    let Some(weights) = ddpm_tests::shared_file("fixtures/unet_small_1x28x28_weights.safetensors")
    else {
        return;
    };
    let dir = temp("weights");
    let out = dir.join("w.png");
    ok(&[
        "--weights",
        weights.to_str().unwrap(),
        "--model",
        "ref",
        "--channels",
        "10,20,40,80",
        "--pe-dim",
        "20",
        "--n-steps",
        "1000",
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--n",
        "9",
        "--nrow",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (84, 84));
}

#[test]
fn a_run_is_sampled_with_its_own_settings_unless_told_otherwise() {
    let dir = temp("defaults");
    let own = SamplerConfig::ddim(4, 0.0, true);
    let run = run_with(&dir, own, &[]);
    let run_s = run.to_str().unwrap();
    let png = |name: &str| dir.join(name).to_str().unwrap().to_string();
    ok(&["--checkpoint", run_s, "--out", &png("default.png")]);
    let explicit = [
        "--sampler",
        "ddim",
        "--steps",
        "4",
        "--eta",
        "0",
        "--clip-x0",
        "--n",
        "81",
        "--nrow",
        "9",
    ];
    let mut args = vec!["--checkpoint", run_s, "--out"];
    let explicit_png = png("explicit.png");
    args.push(&explicit_png);
    args.extend(explicit);
    ok(&args);
    let unclipped_png = png("unclipped.png");
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &unclipped_png,
        "--clip-x0",
        "false",
    ]);
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(
        read("default.png"),
        read("explicit.png"),
        "no option = the run's DDIM-4 with clipping"
    );
    assert_ne!(
        read("default.png"),
        read("unclipped.png"),
        "--clip-x0 false turns the run's clipping off"
    );
    fails_with(
        &["--checkpoint", run_s, "--sampler", "ddpm", "--steps", "3"],
        "--steps (DDPM visits all T steps) does not apply to ddpm",
    );
}

#[test]
fn every_sampler_runs_from_the_command_line() {
    let dir = temp("every");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    for args in [
        &["--sampler", "dpm++", "--steps", "5", "--order", "3"][..],
        &["--sampler", "dpm++", "--steps", "5", "--karras"],
        &["--sampler", "unipc", "--steps", "5"],
        &["--sampler", "euler", "--steps", "5", "--karras"],
        &["--sampler", "heun", "--steps", "3"],
        &["--sampler", "ddim", "--steps", "5", "--spacing", "trailing"],
    ] {
        let out = dir.join(format!("{}.png", args[1]));
        let mut all = vec!["--checkpoint", run_s, "--n", "9", "--nrow", "3", "--out"];
        all.push(out.to_str().unwrap());
        all.extend(args);
        ok(&all);
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (84, 84), "{args:?}");
    }
}

#[test]
fn a_conditional_run_draws_the_requested_classes() {
    let dir = temp("conditional");
    let run = run_with(
        &dir,
        SamplerConfig::ddim(5, 0.0, false),
        &["cat", "dog", "owl"],
    );
    let run_s = run.to_str().unwrap();
    let png = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let size = |name: &str| image::image_dimensions(dir.join(name)).unwrap();
    // By default one row of --nrow images per class.
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("all.png"),
        "--nrow",
        "4",
    ]);
    assert_eq!(size("all.png"), (4 * 28, 3 * 28));
    // A list: its classes in rows, in the order given.
    ok(&[
        "--checkpoint",
        run_s,
        "--out",
        &png("two.png"),
        "--nrow",
        "2",
        "--class",
        "owl,0",
    ]);
    assert_eq!(size("two.png"), (2 * 28, 2 * 28));
    // One class for every image, by label or by name: the same images.
    let one = [
        "--checkpoint",
        run_s,
        "--n",
        "6",
        "--nrow",
        "3",
        "--guidance",
        "4",
    ];
    ok(&[&one[..], &["--class", "1", "--out", &png("one.png")]].concat());
    ok(&[&one[..], &["--class", "dog", "--out", &png("dog.png")]].concat());
    assert_eq!(size("one.png"), (3 * 28, 2 * 28));
    assert_eq!(
        std::fs::read(dir.join("one.png")).unwrap(),
        std::fs::read(dir.join("dog.png")).unwrap()
    );
    // The guidance scale changes the images.
    ok(&[
        &one[..6],
        &["--guidance", "0", "--class", "1", "--out", &png("w0.png")],
    ]
    .concat());
    assert_ne!(
        std::fs::read(dir.join("one.png")).unwrap(),
        std::fs::read(dir.join("w0.png")).unwrap()
    );
    fails_with(
        &["--checkpoint", run_s, "--class", "bird"],
        "unknown class `bird`",
    );
    fails_with(&["--checkpoint", run_s, "--class", "3"], "cat, dog, owl");
    fails_with(
        &["--checkpoint", run_s, "--class", "0,1", "--n", "4"],
        "conflicts with a list",
    );
    fails_with(&["--checkpoint", run_s, "--guidance=-1"], "guidance scale");
    fails_with(
        &["--checkpoint", run_s, "--guidance-interval", "0.7,0.2"],
        "0 <= FROM <= TO <= 1",
    );
    // An unconditional run takes no class.
    let plain = tiny_run(&temp("unconditional"));
    fails_with(
        &["--checkpoint", plain.to_str().unwrap(), "--class", "1"],
        "need a class-conditional run",
    );
}
