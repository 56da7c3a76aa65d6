//! Chaos resume: a training run killed (SIGKILL) at seeded random moments and resumed after
//! each kill must end bit-identical to the same run left alone — the same final weights, EMA,
//! optimizer moments and counters, and the same loss at every step. Used by
//! `cargo xtask chaos` and by the trainer's tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The files of the final checkpoint that must match byte for byte (`config.json` and the
/// manifest are the same by construction; `digests.json` follows from these).
const COMPARED_FILES: [&str; 4] = [
    "model.safetensors",
    "ema.safetensors",
    "optimizer.safetensors",
    "state.json",
];

/// What to train and how often to kill it.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// The trainer executable.
    pub trainer: PathBuf,
    /// Its training options, without `--out` or `--resume` (they must include `--max-steps`
    /// and `--log-every 1`, so that every step's loss is logged).
    pub args: Vec<String>,
    /// SIGKILLs to send.
    pub kills: usize,
    /// Seed of the kill moments.
    pub seed: u64,
    /// A work folder (emptied first): `reference/` and `chaos/` runs and their logs.
    pub dir: PathBuf,
}

/// What a chaos run measured.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// SIGKILLs sent (each followed by a resume).
    pub kills: usize,
    /// Lives killed before the run's first checkpoint (restarted from nothing).
    pub restarts: usize,
    /// Optimizer steps of the run.
    pub steps: u64,
    /// Steps trained more than once (done after the last checkpoint before a kill).
    pub redone_steps: usize,
    /// Seconds of the uninterrupted run.
    pub reference_s: f64,
    /// Seconds of the killed and resumed run, all lives together.
    pub chaos_s: f64,
    /// Everything that differs from the uninterrupted run (empty: bit-identical).
    pub differences: Vec<String>,
}

/// Trainer options of the tests' tiny network: the reference UNet at widths 4,8 and T = 20 on the
/// embedded digits, batch 8, an LR horizon of 100 epochs. Tests add the run's control.
pub const TINY_NETWORK_ARGS: [&str; 14] = [
    "--preset",
    "ref-mnist",
    "--dataset",
    "embedded",
    "--channels",
    "4,8",
    "--pe-dim",
    "8",
    "--n-steps",
    "20",
    "--batch-size",
    "8",
    "--epochs",
    "100",
];

/// The options of a tiny run (a 4,8-channel reference UNet with EMA, warmup, cosine LR and
/// clipping on the embedded digits, on the CPU) of `steps` steps with a checkpoint every
/// `save_every` steps: what the test and `cargo xtask chaos` train.
pub fn tiny_run_args(steps: u64, save_every: u64) -> Vec<String> {
    let recipe = [
        "--ema",
        "0.9",
        "--warmup-steps",
        "5",
        "--lr-schedule",
        "cosine",
        "--grad-clip",
        "1",
        "--log-every",
        "1",
        "--device",
        "cpu",
    ];
    let mut args: Vec<String> = TINY_NETWORK_ARGS
        .iter()
        .chain(&recipe)
        .map(|a| a.to_string())
        .collect();
    args.extend([
        "--max-steps".into(),
        steps.to_string(),
        "--save-every".into(),
        format!("{save_every}s"),
    ]);
    args
}

/// Trains `plan` once uninterrupted and once under kills, and compares the two.
pub fn run(plan: &ChaosPlan) -> std::io::Result<ChaosReport> {
    let _ = std::fs::remove_dir_all(&plan.dir);
    std::fs::create_dir_all(&plan.dir)?;
    let reference = plan.dir.join("reference");
    let started = Instant::now();
    let mut child = start(plan, &reference, false, "reference")?;
    // Start-up: until the first step is logged.
    let mut startup_s = None;
    while child.try_wait()?.is_none() {
        if startup_s.is_none() && reference.join("metrics.jsonl").is_file() {
            startup_s = Some(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    finished(&mut child, plan, "reference")?;
    let reference_s = started.elapsed().as_secs_f64();
    let startup_s = startup_s.unwrap_or(0.0);

    let chaos = plan.dir.join("chaos");
    // Each life lasts from half the start-up to the start-up plus a kill's share of the
    // training time: some kills land in start-up (or the first save), most in training, and
    // the lives add up to about half the training, so every kill is sent.
    let train_s = (reference_s - startup_s).max(0.0);
    let lives = 0.5 * startup_s..startup_s + train_s / plan.kills.max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let (mut kills, mut restarts) = (0, 0);
    let started = Instant::now();
    loop {
        let resume = chaos.join("checkpoints/latest").is_file();
        if !resume && chaos.exists() {
            // Killed before the first checkpoint: nothing was saved, start again.
            std::fs::remove_dir_all(&chaos)?;
            restarts += 1;
        }
        let mut child = start(plan, &chaos, resume, "chaos")?;
        if kills == plan.kills {
            finished(&mut child, plan, "chaos")?;
            break;
        }
        let life = Duration::from_secs_f64(rng.random_range(lives.clone()));
        let born = Instant::now();
        while born.elapsed() < life && child.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait()?.is_some() {
            // It finished before its kill came: the remaining kills are not sent.
            finished(&mut child, plan, "chaos")?;
            break;
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        kills += 1;
    }
    let chaos_s = started.elapsed().as_secs_f64();

    let mut differences = compare_checkpoints(&reference, &chaos)?;
    let (steps, redone_steps, loss_differences) = compare_losses(&reference, &chaos)?;
    differences.extend(loss_differences);
    Ok(ChaosReport {
        kills,
        restarts,
        steps,
        redone_steps,
        reference_s,
        chaos_s,
        differences,
    })
}

/// Starts the trainer on `out` (a new run, or resuming it), its output appended to
/// `<dir>/<log>.log`.
fn start(plan: &ChaosPlan, out: &Path, resume: bool, log: &str) -> std::io::Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(plan.dir.join(format!("{log}.log")))?;
    let mut command = Command::new(&plan.trainer);
    if resume {
        command.arg("--resume").arg(out);
    } else {
        command.args(&plan.args).arg("--out").arg(out);
    }
    command
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
}

/// Waits for `child` and fails, with its log, unless it finished with status 0.
fn finished(child: &mut Child, plan: &ChaosPlan, log: &str) -> std::io::Result<()> {
    let status = child.wait()?;
    if status.success() {
        return Ok(());
    }
    let path = plan.dir.join(format!("{log}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    Err(std::io::Error::other(format!(
        "the {log} run failed ({status}); its log {}:\n{text}",
        path.display()
    )))
}

fn latest_checkpoint(run: &Path) -> std::io::Result<PathBuf> {
    let name = std::fs::read_to_string(run.join("checkpoints/latest"))?;
    Ok(run.join("checkpoints").join(name.trim()))
}

/// The final checkpoints' files that differ.
fn compare_checkpoints(reference: &Path, chaos: &Path) -> std::io::Result<Vec<String>> {
    let (a, b) = (latest_checkpoint(reference)?, latest_checkpoint(chaos)?);
    let mut differences = Vec::new();
    if a.file_name() != b.file_name() {
        differences.push(format!(
            "the final checkpoints differ: {} vs {}",
            a.display(),
            b.display()
        ));
    }
    for file in COMPARED_FILES {
        if std::fs::read(a.join(file))? != std::fs::read(b.join(file))? {
            differences.push(format!("the final {file} differs"));
        }
    }
    Ok(differences)
}

/// A logged step: (step, epoch, loss, lr), compared bit for bit.
type Logged = (u64, u64, u64, u64);

fn logged_steps(run: &Path) -> std::io::Result<Vec<Logged>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| std::io::Error::other(format!("{}: {e}: {line}", run.display())))?;
            let int = |k: &str| value[k].as_u64().unwrap_or(u64::MAX);
            let float = |k: &str| value[k].as_f64().map_or(u64::MAX, f64::to_bits);
            Ok((int("step"), int("epoch"), float("loss"), float("lr")))
        })
        .collect()
}

/// The run's steps, the steps logged more than once under kills, and every logged step of
/// the killed run that differs from (or is missing in) the uninterrupted run's log.
fn compare_losses(reference: &Path, chaos: &Path) -> std::io::Result<(u64, usize, Vec<String>)> {
    let want: BTreeMap<u64, Logged> = logged_steps(reference)?
        .into_iter()
        .map(|l| (l.0, l))
        .collect();
    let got = logged_steps(chaos)?;
    let mut seen = BTreeMap::new();
    let mut differences = Vec::new();
    for line in &got {
        *seen.entry(line.0).or_insert(0usize) += 1;
        if want.get(&line.0) != Some(line) {
            let loss = |l: &Logged| f64::from_bits(l.2);
            differences.push(format!(
                "step {}: loss {} under kills, {} uninterrupted",
                line.0,
                loss(line),
                want.get(&line.0).map_or(f64::NAN, loss)
            ));
        }
    }
    differences.extend(
        want.keys()
            .filter(|s| !seen.contains_key(s))
            .map(|s| format!("step {s} was never logged under kills")),
    );
    let redone = seen.values().map(|n| n - 1).sum();
    let steps = want.keys().next_back().copied().unwrap_or(0);
    Ok((steps, redone, differences))
}
