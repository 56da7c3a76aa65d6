//! `trainer`: train a DDPM. A thin command line over `ddpm_train`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ddpm_train::{
    DatasetSpec, DefaultData, Overrides, RunOptions, TrainConfig, TrainError, WorldInfo,
};

/// Train a DDPM (Ho et al. 2020) on MNIST, anime faces or any image folder.
///
/// Presets: quick (default: a small modern UNet on the embedded MNIST digits, minutes on a
/// laptop CPU), ref-mnist, ref-mnist-res, ref-anime, ref-anime-small (the reference blog's
/// runs, faithful: no EMA, no LR schedule, no clipping), anime (our recommended recipe).
/// Explicit options override the preset. Networks: see docs/networks.md.
#[derive(Debug, Parser)]
#[command(name = "trainer", version)]
struct Args {
    /// mnist | anime | embedded | folder:PATH [default: embedded for quick; mnist if data/mnist
    /// holds it, else embedded, for the MNIST presets; anime for the anime presets]
    #[arg(long)]
    dataset: Option<String>,
    /// Folder of the dataset (default data/mnist or data/anime-faces).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    #[arg(long)]
    preset: Option<String>,
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
    /// Continue the run in DIR from its latest checkpoint (only run-control options such as
    /// --epochs, --max-steps, --log-every, --save-every may be given with it).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
}

impl Args {
    fn preset(&self) -> &str {
        match (&self.preset, self.dataset.as_deref()) {
            (Some(preset), _) => preset,
            (None, Some("anime")) => "anime",
            (None, _) => "quick",
        }
    }

    fn dataset(&self) -> Result<DatasetSpec> {
        let default = ddpm_train::Recipe::preset(self.preset())?.default_data;
        let data_dir = self.data_dir.as_deref();
        Ok(match (&self.dataset, default) {
            (Some(name), _) => {
                DatasetSpec::parse(name, data_dir, self.image_size, self.image_channels)?
            }
            (None, DefaultData::Anime) => {
                DatasetSpec::parse("anime", data_dir, self.image_size, 3)?
            }
            (None, DefaultData::MnistIfPresent) => DatasetSpec::default_mnist(data_dir),
            (None, DefaultData::Embedded) => DatasetSpec::Embedded,
        })
    }
}

fn main() -> Result<()> {
    ddpm_train::configure_cpu_threads();
    let args = Args::parse();
    match run(&args) {
        Err(e) if e.downcast_ref::<TrainError>().is_some_and(is_peer_failure) => {
            // Another rank failed first: say so, and exit with the status the launcher reads
            // as "not the cause".
            eprintln!("Error: {e:#}");
            std::process::exit(ddpm_dist::EXIT_PEER_LOST);
        }
        other => other,
    }
}

fn is_peer_failure(e: &TrainError) -> bool {
    matches!(e, TrainError::Dist(d) if d.is_peer_failure())
}

/// The resolved configuration and run directory.
fn resolve(args: &Args) -> Result<(TrainConfig, PathBuf)> {
    let overrides = &args.overrides;
    Ok(match &args.resume {
        Some(dir) => {
            let changes = overrides.training_changes();
            if !changes.is_empty()
                || args.dataset.is_some()
                || args.out.is_some()
                || args.preset.is_some()
            {
                bail!(
                    "--resume continues the saved run as configured; remove {}",
                    [changes.join(", ").as_str(), "--preset/--dataset/--out"]
                        .join(" ")
                        .trim()
                );
            }
            let mut config = TrainConfig::load(&dir.join("config.json"))
                .with_context(|| format!("cannot resume {}", dir.display()))?;
            overrides.apply_run_control(&mut config);
            (config, dir.clone())
        }
        None => {
            let config = TrainConfig::resolve(args.preset(), args.dataset()?, overrides)?;
            let out = args.out.clone().unwrap_or_else(|| {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from("runs").join(format!(
                    "{}-{}-{stamp}",
                    config.dataset.short_name(),
                    config.preset
                ))
            });
            (config, out)
        }
    })
}

/// `--gpus N`: runs this command as N rank processes with a shared run directory.
fn launch_ranks(args: &Args, out_dir: &std::path::Path) -> Result<()> {
    let mut child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.resume.is_none() && args.out.is_none() {
        child_args.extend(["--out".into(), out_dir.as_os_str().to_owned()]);
    }
    // The ranks handle Ctrl-C themselves (they stop together after a checkpoint).
    ctrlc::set_handler(|| eprintln!("\nwaiting for the ranks to save and stop"))?;
    eprintln!("launching {} ranks into {}", args.gpus, out_dir.display());
    ddpm_dist::launch(args.gpus, &std::env::current_exe()?, &child_args, &[])?;
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let (config, out_dir) = resolve(args)?;
    if args.gpus > 1 && !WorldInfo::env_present() {
        return launch_ranks(args, &out_dir);
    }
    let world = WorldInfo::from_env()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        eprintln!(
            "\nstopping after this step: saving a checkpoint and the final grid (Ctrl-C again to abort)"
        );
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })?;
    let device = match (args.device.as_deref(), world.is_distributed()) {
        // One GPU per rank: LOCAL_RANK picks it.
        (Some("cuda") | None, true) if candle_core::utils::cuda_is_available() => {
            ddpm_train::select_device(Some(&format!("cuda:{}", world.local_rank)))?
        }
        (choice, _) => ddpm_train::select_device(choice)?,
    };
    if world.is_main() {
        eprintln!(
            "training on {} ({} images) with the {} preset on {}{} into {}",
            config.dataset.short_name(),
            config.model.image(),
            config.preset,
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
        device,
        cache_dir: args.cache_dir.clone(),
        stop,
        world: world.clone(),
    };
    let summary = ddpm_train::train(&config, &options)?;
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
