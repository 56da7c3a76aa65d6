//! `trainer`: train a DDPM. A thin command line over `ddpm_train`.
//!
//! Exit status: 0 when the run finished, 130 when stopped by Ctrl-C (SIGINT) and 143 when
//! stopped by SIGTERM (after saving a checkpoint and the final grid, as shells expect), 2 on
//! bad input (options, configuration, data, the checkpoint to resume; clap's status for bad
//! options too), 3 when training diverged (a non-finite loss), `ddpm_dist::EXIT_PEER_LOST`
//! (75) when another rank of a data-parallel run failed, and 1 on any other error. An error
//! prints its message chain; `--debug` adds the backtrace.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ddpm_data::DatasetSpec;
use ddpm_train::{DefaultData, Overrides, Preset, RunOptions, TrainConfig, TrainError, WorldInfo};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Train a DDPM (Ho et al. 2020) on MNIST, anime faces or any image folder.
///
/// Presets: quick (default: a small modern UNet on the embedded MNIST digits, minutes on a
/// laptop CPU), ref-mnist, ref-mnist-res, ref-anime, ref-anime-small (the reference blog's
/// runs, faithful: no EMA, no LR schedule, no clipping), anime (our recommended recipe).
/// Explicit options override the preset. Networks: see docs/networks.md.
///
/// Exit status: 0 finished, 130 stopped by Ctrl-C, 143 stopped by SIGTERM (both after saving
/// a checkpoint), 2 bad input (options, configuration, data, checkpoint), 3 training diverged
/// (non-finite loss), 75 another rank failed, 1 any other error.
#[derive(Debug, Parser)]
#[command(name = "trainer", version)]
struct Args {
    /// mnist | anime | embedded | folder:PATH [default: embedded for quick; mnist if data/mnist
    /// holds it, else embedded, for the MNIST presets; anime for the anime presets]
    #[arg(long)]
    dataset: Option<String>,
    /// Side of the square images (anime and folder datasets).
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    /// Channels of folder datasets: 1 (gray) or 3 (RGB).
    #[arg(long, default_value_t = 3)]
    image_channels: usize,
    /// Where decoded image folders are cached.
    #[arg(long, default_value = "data/.cache")]
    cache_dir: PathBuf,
    /// quick | ref-mnist | ref-mnist-res | ref-anime | ref-anime-small | anime
    /// [default: anime with --dataset anime, else quick]
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// Repeat the run described by a saved config.json (its dataset, recipe and run
    /// control); other options change it.
    #[arg(long, value_name = "FILE", conflicts_with = "dataset")]
    config: Option<PathBuf>,
    /// What to change from the preset.
    #[command(flatten)]
    overrides: Overrides,
    /// cpu | cuda | cuda:N [default: CUDA when built with it and a GPU is present]
    #[arg(long)]
    device: Option<String>,
    /// Run directory [default: runs/<dataset>-<preset>-<timestamp>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Data-parallel processes on this machine, one GPU each (CPU processes with --device cpu).
    /// Across machines, start one process per GPU with torchrun's RANK, WORLD_SIZE,
    /// LOCAL_RANK, MASTER_ADDR and MASTER_PORT set instead (docs/gpu.md).
    #[arg(long, default_value_t = 1)]
    gpus: usize,
    /// Continue the run in DIR from its latest checkpoint. Only run-control options (--max-steps,
    /// --log-every, --save-every, --sample-every, --keep-last, --data-dir) may be given with it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["preset", "config", "dataset", "out"])]
    resume: Option<PathBuf>,
    /// With --resume: continue from this checkpoint (step_N) instead of the latest, e.g. when
    /// the latest is damaged (later checkpoints are replaced as the run reaches them).
    #[arg(long, value_name = "step_N", requires = "resume")]
    from: Option<String>,
    /// Print an error's backtrace after its message (RUST_BACKTRACE alone does not).
    #[arg(long)]
    debug: bool,
}

impl Args {
    fn preset(&self) -> &str {
        match (&self.preset, self.dataset.as_deref()) {
            (Some(preset), _) => preset,
            (None, Some("anime")) => "anime",
            (None, _) => "quick",
        }
    }

    /// The dataset, and the overrides with the folder of `folder:PATH` as `--data-dir`.
    fn dataset(&self) -> Result<(DatasetSpec, Overrides)> {
        let mut overrides = self.overrides.clone();
        let data_dir = overrides.control.data_dir.as_deref();
        let spec = match &self.dataset {
            Some(name) => {
                let (spec, folder) =
                    DatasetSpec::parse(name, self.image_size, self.image_channels)?;
                if let Some(folder) = folder {
                    if data_dir.is_some() {
                        bail!("--dataset folder:PATH names the folder already: drop --data-dir");
                    }
                    overrides.control.data_dir = Some(folder);
                }
                spec
            }
            None => match Preset::named(self.preset())?.default_data {
                DefaultData::Anime => DatasetSpec::Anime {
                    size: self.image_size,
                },
                DefaultData::MnistIfPresent => DatasetSpec::mnist_or_embedded(data_dir),
                DefaultData::Embedded => DatasetSpec::Embedded,
            },
        };
        Ok((spec, overrides))
    }
}

/// Which signal stopped the run (0 = none yet): the exit status follows it.
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// Exit status of an error other than those below.
const EXIT_FAILED: i32 = 1;
/// Exit status of bad input: options, configuration, data, the checkpoint to resume (clap
/// exits with 2 on bad options too).
const EXIT_BAD_INPUT: i32 = 2;
/// Exit status of a run whose loss became NaN or infinite.
const EXIT_DIVERGED: i32 = 3;

fn main() {
    ddpm_nn::configure_cpu_threads();
    let args = Args::parse();
    if args.debug {
        // SAFETY: still single-threaded (no thread is started before this point), so no
        // other thread can read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = watch_signals(stop.clone(), args.gpus > 1 && !WorldInfo::env_present()) {
        eprintln!("Error: cannot watch for Ctrl-C: {e}");
        std::process::exit(EXIT_FAILED);
    }
    let outcome = resolve(&args)
        .map_err(|e| (e, EXIT_BAD_INPUT))
        .and_then(|(config, out)| {
            run(&args, &config, out, stop).map_err(|e| {
                let status = failure_status(&e);
                (e, status)
            })
        });
    let status = match outcome {
        Ok(()) => match STOPPED_BY.load(Ordering::SeqCst) {
            0 => 0,
            signal => 128 + signal,
        },
        Err((e, status)) => {
            // The message chain; the backtrace only when asked for with --debug.
            if args.debug {
                eprintln!("Error: {e:?}");
            } else {
                eprintln!("Error: {e:#}");
            }
            status
        }
    };
    std::process::exit(status);
}

/// The exit status of a run that failed with `e`.
fn failure_status(e: &anyhow::Error) -> i32 {
    let train_error = e.chain().find_map(|c| c.downcast_ref::<TrainError>());
    let signal = STOPPED_BY.load(Ordering::SeqCst);
    match train_error {
        // Another rank failed first: the status the launcher reads as "not the cause".
        Some(TrainError::Dist(d)) if d.is_peer_failure() => ddpm_dist::EXIT_PEER_LOST,
        _ if signal != 0 => 128 + signal,
        Some(TrainError::NonFiniteLoss { .. }) => EXIT_DIVERGED,
        Some(t) if t.is_bad_input() => EXIT_BAD_INPUT,
        _ => match e
            .chain()
            .find_map(|c| c.downcast_ref::<ddpm_run::RunError>())
        {
            Some(r) if r.is_bad_input() => EXIT_BAD_INPUT,
            _ => EXIT_FAILED,
        },
    }
}

/// Ctrl-C or SIGTERM sets `stop` (the run saves and stops after the current step); a second
/// Ctrl-C exits at once. A launcher of ranks only waits: its ranks stop themselves.
fn watch_signals(stop: Arc<AtomicBool>, launcher: bool) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGINT && stop.swap(true, Ordering::SeqCst) {
                std::process::exit(128 + SIGINT);
            }
            stop.store(true, Ordering::SeqCst);
            STOPPED_BY.store(signal, Ordering::SeqCst);
            if launcher {
                eprintln!("\nwaiting for the ranks to save and stop");
            } else {
                eprintln!(
                    "\nstopping after this step: saving a checkpoint and the final grid \
                     (Ctrl-C again to abort)"
                );
            }
        }
    });
    Ok(())
}

/// The resolved configuration and run directory.
fn resolve(args: &Args) -> Result<(TrainConfig, PathBuf)> {
    if let Some(dir) = &args.resume {
        let saved = TrainConfig::load(&dir.join(ddpm_run::checkpoint::CONFIG_FILE))
            .with_context(|| format!("cannot resume {}", dir.display()))?;
        let config = TrainConfig::resume(saved, &args.overrides)?;
        return Ok((config, dir.clone()));
    }
    let config = match &args.config {
        Some(file) => TrainConfig::repeat(&TrainConfig::load(file)?, &args.overrides)?,
        None => {
            let (dataset, overrides) = args.dataset()?;
            TrainConfig::resolve(args.preset(), dataset, &overrides)?
        }
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let spec = &config.spec;
        PathBuf::from("runs").join(format!(
            "{}-{}-{stamp}",
            spec.dataset.short_name(),
            spec.preset
        ))
    });
    Ok((config, out))
}

/// `--gpus N`: runs this command as N rank processes with a shared run directory.
fn launch_ranks(args: &Args, out_dir: &Path) -> Result<()> {
    let mut child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.resume.is_none() && args.out.is_none() {
        child_args.extend(["--out".into(), out_dir.as_os_str().to_owned()]);
    }
    eprintln!("launching {} ranks into {}", args.gpus, out_dir.display());
    let launched = ddpm_dist::launch(args.gpus, &std::env::current_exe()?, &child_args, &[]);
    if launched.is_err() && STOPPED_BY.load(Ordering::SeqCst) != 0 {
        // The ranks saved and stopped on the signal (their exit statuses say so).
        eprintln!("stopped");
        return Ok(());
    }
    Ok(launched?)
}

fn run(args: &Args, config: &TrainConfig, out_dir: PathBuf, stop: Arc<AtomicBool>) -> Result<()> {
    if args.gpus > 1 && !WorldInfo::env_present() {
        return launch_ranks(args, &out_dir);
    }
    let world = WorldInfo::from_env()?;
    let device = match (args.device.as_deref(), world.is_distributed()) {
        // One GPU per rank: LOCAL_RANK picks it.
        (Some("cuda") | None, true) if candle_core::utils::cuda_is_available() => {
            ddpm_run::select_device(Some(&format!("cuda:{}", world.local_rank)))?
        }
        (choice, _) => ddpm_run::select_device(choice)?,
    };
    let spec = &config.spec;
    if world.is_main() {
        eprintln!(
            "training on {} ({} images) with the {} preset on {}{} into {}",
            spec.dataset.short_name(),
            spec.network.image(),
            spec.preset,
            if device.is_cuda() { "CUDA" } else { "CPU" },
            if world.is_distributed() {
                format!(" x {} ranks", world.world_size)
            } else {
                String::new()
            },
            out_dir.display()
        );
    }
    let options = RunOptions {
        out_dir,
        resume: args.resume.is_some(),
        resume_from: args.from.clone(),
        device,
        cache_dir: args.cache_dir.clone(),
        stop,
        world: world.clone(),
    };
    let summary = ddpm_train::train(config, &options)?;
    if world.is_main() {
        eprintln!(
            "{} after {} steps; checkpoint {}; samples {}",
            if summary.interrupted {
                "stopped"
            } else {
                "done"
            },
            summary.steps,
            summary.checkpoint.display(),
            summary.final_grid.display()
        );
    }
    Ok(())
}
