//! The sampler command line on a checkpoint made by the trainer, and on PyTorch weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use ddpm_train::{DatasetSpec, Every, Overrides, RunOptions, TrainConfig};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-sampler-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains a tiny reference UNet for two steps and returns its run directory.
fn tiny_run(dir: &Path) -> PathBuf {
    let overrides = Overrides {
        channels: Some(vec![4, 8]),
        pe_dim: Some(8),
        n_steps: Some(20),
        batch_size: Some(8),
        epochs: Some(1),
        max_steps: Some(2),
        ema: Some(0.9),
        save_every: Some(Every::Steps(100)),
        ..Overrides::default()
    };
    let config = TrainConfig::resolve("ref-mnist", DatasetSpec::Embedded, &overrides).unwrap();
    let run = dir.join("run");
    let options = RunOptions {
        out_dir: run.clone(),
        resume: false,
        device: Device::Cpu,
        cache_dir: dir.join("cache"),
        stop: Arc::new(AtomicBool::new(false)),
        world: ddpm_train::WorldInfo::single(),
    };
    ddpm_train::train(&config, &options).unwrap();
    run
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
    let checkpoint = ddpm_train::checkpoint::latest(&run).unwrap();
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
        &["--checkpoint", run_s, "--sampler", "euler"],
        "unknown --sampler",
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
