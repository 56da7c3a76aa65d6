//! The trainer's exit statuses and error output: 2 for bad input, 3 for a diverged run, the
//! message chain without a backtrace (even with RUST_BACKTRACE=1) unless --debug, and a
//! damaged latest checkpoint refused with the intact one named and resumable with --from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ddpm_tests::chaos::tiny_run_args;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-exit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn trainer(args: &[String]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited, not killed"), stderr)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A tiny run of `steps` steps with a checkpoint every `save_every`, into `out`, with the
/// options in `extra` (`--name value` pairs) in place of the tiny run's own.
fn tiny(steps: u64, save_every: u64, out: &Path, extra: &[&str]) -> Vec<String> {
    let base = tiny_run_args(steps, save_every);
    let mut args = Vec::new();
    let mut pairs = base.iter();
    while let Some(arg) = pairs.next() {
        let value = pairs.next().expect("the tiny run's options are pairs");
        if !extra.contains(&arg.as_str()) {
            args.extend([arg.clone(), value.clone()]);
        }
    }
    args.extend(strings(extra));
    args.extend(["--out".into(), out.display().to_string()]);
    args
}

#[test]
fn bad_input_exits_2_with_its_message_alone_and_debug_adds_the_backtrace() {
    let missing = temp("missing").display().to_string();
    let (code, stderr) = trainer(&strings(&["--resume", &missing]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot resume"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let (code, stderr) = trainer(&strings(&["--resume", &missing, "--debug"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("Stack backtrace"), "{stderr}");

    let (code, stderr) = trainer(&strings(&["--epochs", "0"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--epochs must be at least 1"), "{stderr}");
}

#[test]
fn a_diverged_run_exits_3_and_keeps_its_last_good_checkpoint() {
    let out = temp("nan");
    let args = tiny(
        20,
        1,
        &out,
        &["--lr", "1e30", "--grad-clip", "0", "--warmup-steps", "0"],
    );
    let (code, stderr) = trainer(&args);
    assert_eq!(code, 3, "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("Error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("the loss became"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(out.join("checkpoints/latest").is_file(), "{stderr}");
}

/// A bit flipped in the latest checkpoint: --resume refuses it, naming the file and the newest
/// intact checkpoint; --from that one retrains the lost steps exactly (the new checkpoint's
/// digests are those recorded for the damaged one before the flip).
#[test]
fn a_damaged_latest_checkpoint_names_the_intact_one_and_from_resumes_it() {
    let out = temp("damaged");
    let (code, stderr) = trainer(&tiny(6, 2, &out, &[]));
    assert_eq!(code, 0, "{stderr}");
    let last = out.join("checkpoints/step_6");
    let digests = std::fs::read(last.join("digests.json")).unwrap();
    let model = last.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&model, bytes).unwrap();

    let run = out.display().to_string();
    let (code, stderr) = trainer(&strings(&["--resume", &run]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("model.safetensors is corrupt"), "{stderr}");
    let hint = format!("--resume {run} --from step_4");
    assert!(stderr.contains(&hint), "{stderr}");

    let (code, stderr) = trainer(&strings(&["--resume", &run, "--from", "step_4"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(last.join("digests.json")).unwrap(), digests);
}

/// A checkpoint saved before digests existed (no digests.json) resumes, with a warning.
#[test]
fn a_checkpoint_without_digests_resumes_with_a_warning() {
    let out = temp("no-digests");
    let (code, stderr) = trainer(&tiny(4, 2, &out, &[]));
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_file(out.join("checkpoints/step_4/digests.json")).unwrap();
    let run = out.display().to_string();
    let (code, stderr) = trainer(&strings(&["--resume", &run, "--max-steps", "6"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("not verified"), "{stderr}");
    assert!(out.join("checkpoints/step_6/digests.json").is_file());
}
