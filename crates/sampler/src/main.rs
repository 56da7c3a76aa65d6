//! `sampler`: draw image grids from a trained DDPM (a run's checkpoint, or weights exported
//! from the PyTorch reference). A thin command line over `ddpm_image` and `ddpm_train`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use clap::Parser;
use ddpm_image::{Trajectory, grid, save_image, to_u8};
use ddpm_diffusion::{BetaKind, GenerateOptions, NoiseRng, SamplerConfig, Schedule, Variance, generate};
use ddpm_train::checkpoint;
use ddpm_unet::{ImageShape, Model, ModelKind, ModelSpec, ResidualFrom};
use indicatif::{ProgressBar, ProgressStyle};

/// Sample an image grid from a trained DDPM.
///
/// With no option it samples the newest run under runs/ (its latest checkpoint, EMA weights
/// when present) with 1000-step DDPM into <run>/samples/. DDIM (--sampler ddim --steps 50) is
/// 20x faster; see docs/sampling.md for what each option trades off.
#[derive(Debug, Parser)]
#[command(name = "sampler", version)]
struct Args {
    /// A run directory (its latest checkpoint) or a checkpoint directory [default: the most
    /// recently modified run under runs/]
    #[arg(long, conflicts_with = "weights")]
    checkpoint: Option<PathBuf>,
    /// Weights exported from the PyTorch reference (state_dict names, safetensors); describe
    /// the network with --model, --channels, --pe-dim, --n-steps, --image.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// With --weights: ref | ref-bn | res | modern
    #[arg(long, default_value = "ref")]
    model: ModelKind,
    /// With --weights: channel widths per level.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    channels: Vec<usize>,
    /// With --weights: time-encoding width.
    #[arg(long, default_value_t = 20)]
    pe_dim: usize,
    /// With --weights: diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    n_steps: usize,
    /// With --weights: image shape CxHxW.
    #[arg(long, default_value = "1x28x28")]
    image: ImageShape,
    /// With --weights: take the reference blocks' residual from the raw input.
    #[arg(long)]
    residual_from_input: bool,
    /// With --weights: linear | linear-scaled | cosine
    #[arg(long, default_value = "linear")]
    schedule: BetaKind,
    /// ddpm | ddim
    #[arg(long, default_value = "ddpm")]
    sampler: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM η: 0 deterministic, 1 DDPM-like.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDPM step variance: beta (the reference) | posterior
    #[arg(long, default_value = "beta")]
    var: String,
    /// Clip the predicted x0 to [-1, 1] at every step.
    #[arg(long)]
    clip_x0: bool,
    /// Number of images.
    #[arg(long, default_value_t = 81)]
    n: usize,
    /// Images per grid row.
    #[arg(long, default_value_t = 9)]
    nrow: usize,
    /// Pixels between tiles.
    #[arg(long, default_value_t = 0)]
    padding: usize,
    /// Seed of x_T and of the sampling noise (same seed → identical PNG).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the raw weights even when the checkpoint has EMA weights.
    #[arg(long)]
    no_ema: bool,
    /// Start from this x_T (safetensors tensor `x_T`, shape (n,C,H,W)) instead of drawing it.
    #[arg(long)]
    init_noise: Option<PathBuf>,
    /// Also write the final float samples (tensor `samples`) and x_T (`x_T`) before
    /// quantisation.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Output PNG [default: <run>/samples/sample-<timestamp>.png, or samples/ with --weights]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every image as its own PNG into DIR.
    #[arg(long, value_name = "DIR")]
    save_individual: Option<PathBuf>,
    /// Write the denoising process of the first images: a strip (.png) or animation (.gif).
    #[arg(long)]
    trajectory: Option<PathBuf>,
    /// Images denoised at once (bounds memory for large --n).
    #[arg(long, default_value_t = 81)]
    batch_size: usize,
    /// cpu | cuda | cuda:N [default: CUDA when available]
    #[arg(long)]
    device: Option<String>,
}

impl Args {
    fn sampler(&self) -> Result<SamplerConfig> {
        Ok(match self.sampler.as_str() {
            "ddpm" => SamplerConfig::Ddpm {
                variance: match self.var.as_str() {
                    "beta" => Variance::Beta,
                    "posterior" => Variance::Posterior,
                    other => bail!("unknown --var `{other}`: use beta or posterior"),
                },
                clip_x0: self.clip_x0,
            },
            "ddim" => SamplerConfig::Ddim {
                steps: self.steps,
                eta: self.eta,
                clip_x0: self.clip_x0,
            },
            other => bail!("unknown --sampler `{other}`: use ddpm or ddim"),
        })
    }
}

/// The most recently modified run directory under `runs/` that has a checkpoint.
fn newest_run() -> Result<PathBuf> {
    let runs = Path::new("runs");
    let entries = std::fs::read_dir(runs).with_context(|| {
        "no runs/ folder here: train first (cargo run --release -p trainer) or pass --checkpoint"
    })?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("checkpoints").join("latest").is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no run under runs/ has a checkpoint yet: pass --checkpoint or train first")
}

fn timestamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> Result<()> {
    ddpm_train::configure_cpu_threads();
    let args = Args::parse();
    let sampler = args.sampler()?;
    let device = ddpm_train::select_device(args.device.as_deref())?;
    if args.nrow == 0 || !args.n.is_multiple_of(args.nrow) {
        bail!(
            "--n {} does not fill rows of --nrow {}: choose n as a multiple of nrow",
            args.n,
            args.nrow
        );
    }

    let (model, schedule, default_out) = match &args.weights {
        Some(weights) => {
            let spec = ModelSpec {
                kind: args.model,
                image: args.image,
                channels: args.channels.clone(),
                pe_dim: args.pe_dim,
                n_steps: args.n_steps,
                residual_from: if args.residual_from_input {
                    ResidualFrom::Input
                } else {
                    ResidualFrom::Normalized
                },
                attn_resolutions: None,
            };
            let model = Model::new(&spec.to_config()?, &device, 0)?;
            model.load(weights).with_context(|| {
                format!(
                    "cannot load {} into the {:?} network",
                    weights.display(),
                    args.model
                )
            })?;
            let schedule = Schedule::new(args.schedule, args.n_steps, &device)?;
            (model, schedule, PathBuf::from("samples"))
        }
        None => {
            let run = match &args.checkpoint {
                Some(path) => path.clone(),
                None => newest_run()?,
            };
            let dir = checkpoint::resolve(&run)?;
            let (model, config, used_ema) = checkpoint::load_model(&dir, &device, !args.no_ema)?;
            eprintln!(
                "sampling {} ({} weights)",
                dir.display(),
                if used_ema { "EMA" } else { "raw" }
            );
            let schedule = Schedule::new(config.schedule, config.n_steps, &device)?;
            let run_dir = dir
                .ancestors()
                .nth(2)
                .map_or_else(|| dir.clone(), Path::to_path_buf);
            (model, schedule, run_dir.join("samples"))
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out.join(format!("sample-{}.png", timestamp())));

    let image = model.config().image().dims();
    let x_init = match &args.init_noise {
        Some(path) => {
            let tensors = candle_core::safetensors::load(path, &device)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                tensors
                    .get("x_T")
                    .cloned()
                    .with_context(|| format!("{} has no tensor `x_T`", path.display()))?,
            )
        }
        None => None,
    };
    let options = GenerateOptions {
        n: args.n,
        image,
        batch_size: args.batch_size,
        sampler,
        prediction: ddpm_diffusion::Prediction::Epsilon,
    };
    let steps = sampler.timesteps(schedule.n_steps())?.len();
    let batches = args.n.div_ceil(args.batch_size.max(1));
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new((steps * batches) as u64);
        bar.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]",
        )?);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut trajectory = args
        .trajectory
        .as_ref()
        .map(|_| Trajectory::new(args.n.min(8), 10, steps));
    let mut noise = NoiseRng::new(args.seed);
    let x_t = match x_init {
        Some(x) => x,
        None => Tensor::from_vec(
            noise.normal_vec(args.n * image.iter().product::<usize>()),
            (args.n, image[0], image[1], image[2]),
            &device,
        )?,
    };
    let mut failure = None;
    let samples = generate(
        &model,
        &schedule,
        &options,
        Some(&x_t),
        &mut noise,
        &device,
        |batch, info| {
            bar.inc(1);
            if batch == 0
                && let Some(traj) = trajectory.as_mut()
                && let Err(e) = traj.observe(info.done, info.total, info.t, info.x)
            {
                failure.get_or_insert(e);
            }
        },
    )?;
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(path) = &args.save_raw {
        let raw = HashMap::from([
            ("samples".to_string(), samples.to_dtype(DType::F32)?),
            ("x_T".to_string(), x_t.clone()),
        ]);
        candle_core::safetensors::save(&raw, path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let images = to_u8(&samples)?;
    save_image(&grid(&images, args.nrow, args.padding)?, &out)?;
    eprintln!("wrote {} images to {}", args.n, out.display());
    if let Some(dir) = &args.save_individual {
        for i in 0..images.len() {
            save_image(&images.picture(i), &dir.join(format!("{i:05}.png")))?;
        }
        eprintln!("wrote {} PNGs to {}", images.len(), dir.display());
    }
    if let (Some(path), Some(traj)) = (&args.trajectory, &trajectory) {
        traj.save(path)?;
        eprintln!(
            "wrote the denoising of {} images at t = {:?} to {}",
            args.n.min(8),
            traj.timesteps(),
            path.display()
        );
    }
    Ok(())
}
