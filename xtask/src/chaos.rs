//! `cargo xtask chaos`: a tiny training run killed with SIGKILL at seeded random moments and
//! resumed after each kill, compared bit for bit with the same run left alone
//! (`ddpm_tests::chaos`; measured figures in docs/reliability.md).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use ddpm_tests::chaos::{self, ChaosPlan};

/// Options of `cargo xtask chaos`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SIGKILLs to send (each followed by --resume).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Optimizer steps of the run.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 10)]
    save_every: u64,
    /// Seed of the kill moments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Work folder (emptied first): both runs and their logs.
    #[arg(long, default_value = "target/chaos")]
    dir: PathBuf,
}

/// Builds the trainer, runs the chaos plan and prints what it measured; fails when the killed
/// run differs from the uninterrupted one.
pub fn run(args: Args) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "-p", "trainer"])
        .status()
        .context("building the trainer")?;
    if !built.success() {
        bail!("building the trainer failed ({built})");
    }
    let trainer = std::env::current_exe()?.with_file_name("trainer");
    let plan = ChaosPlan {
        trainer,
        args: chaos::tiny_run_args(args.steps, args.save_every),
        kills: args.kills,
        seed: args.seed,
        dir: args.dir,
    };
    eprintln!(
        "chaos: {} steps, a checkpoint every {}, {} kills (seed {}) in {}",
        args.steps,
        args.save_every,
        args.kills,
        args.seed,
        plan.dir.display()
    );
    let report = chaos::run(&plan).context("chaos run")?;
    println!(
        "{} kills survived ({} before the first checkpoint, restarted), {} steps, {} steps \
         trained again after a kill; uninterrupted {:.1} s, under kills {:.1} s",
        report.kills,
        report.restarts,
        report.steps,
        report.redone_steps,
        report.reference_s,
        report.chaos_s
    );
    if !report.differences.is_empty() {
        bail!(
            "the killed run differs from the uninterrupted one:\n{}",
            report.differences.join("\n")
        );
    }
    println!("bit-identical: final weights, EMA, optimizer moments, state and every step's loss");
    Ok(())
}
