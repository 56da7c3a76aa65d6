//! `sampler`: draw image grids from a trained DDPM (a run's checkpoint, or weights exported
//! from the PyTorch reference). A thin command line over `ddpm_image` and `ddpm_train`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use clap::Parser;
use ddpm_diffusion::sampler::Spacing;
use ddpm_diffusion::{
    BetaKind, GenerateOptions, Guidance, GuidanceInterval, NoiseRng, Prediction, SamplerChoices,
    SamplerConfig, Schedule, Variance, class_rows, generate,
};
use ddpm_image::{Trajectory, grid, save_image, to_u8};
use ddpm_run::{ClassChoice, NO_GUIDANCE, SampleSettings, checkpoint};
use ddpm_unet::{ImageShape, Model, ModelKind, ModelSpec, ResidualFrom};
use indicatif::{ProgressBar, ProgressStyle};

/// Sample an image grid from a trained DDPM.
///
/// With no option it samples the newest run under runs/ (its latest checkpoint, EMA weights
/// when present) the way the run samples its own grids (its sampler, grid size and layout)
/// into <run>/samples/. Every sampling option overrides the run's choice; see
/// docs/sampling.md for what each one trades off.
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
    /// ddpm | ddim | dpm++ | unipc | euler | heun [default: the run's own; ddpm with --weights]
    #[arg(long)]
    sampler: Option<String>,
    /// Network evaluations (ddim, dpm++, unipc) or noise levels (euler; heun makes 2·N−1
    /// evaluations) [default: the run's, else 50 for ddim, 20 for the others, 10 for heun].
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM η: 0 deterministic, 1 DDPM-like [default: the run's, else 0].
    #[arg(long)]
    eta: Option<f64>,
    /// DDPM step variance: beta (the reference) | posterior [default: the run's, else beta]
    #[arg(long)]
    var: Option<String>,
    /// Clip the predicted x0 to [-1, 1] at every step, ddpm and ddim (`--clip-x0 false` turns
    /// a run's clipping off) [default: the run's, else off].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    clip_x0: Option<bool>,
    /// DPM-Solver++'s order: 1, 2 (2M) or 3 (3M) [default: the run's, else 2].
    #[arg(long)]
    order: Option<usize>,
    /// Karras-spaced noise levels (dpm++, euler, heun); `--karras false` turns them off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    karras: Option<bool>,
    /// DDIM timestep spacing: even (ours, both ends) | leading | trailing | linspace (diffusers')
    #[arg(long)]
    spacing: Option<Spacing>,
    /// Class-conditional runs: the class to draw (label or name), a comma-separated list of
    /// classes (one grid row of --nrow images each), or `all` (a row per class, the default).
    #[arg(long)]
    class: Option<String>,
    /// Class-conditional runs: classifier-free guidance scale w (0 = unconditional, 1 = plain
    /// conditional, higher = more typical of the class) [default: the run's].
    #[arg(long)]
    guidance: Option<f64>,
    /// Class-conditional runs: guide only the steps whose time t lies in FROM·T..=TO·T
    /// (fractions of the diffusion steps; `0,1` = every step) [default: the run's].
    #[arg(long, value_name = "FROM,TO")]
    guidance_interval: Option<GuidanceInterval>,
    /// Number of images [default: the run's grid size, else 81; with a list of classes, one
    /// row per class].
    #[arg(long)]
    n: Option<usize>,
    /// Images per grid row [default: the run's, else 9].
    #[arg(long)]
    nrow: Option<usize>,
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
    /// Print an error's backtrace after its message (RUST_BACKTRACE alone does not).
    #[arg(long)]
    debug: bool,
}

impl Args {
    /// The sampling settings: the run's own (`defaults`), changed by the given options.
    fn settings(&self, defaults: SampleSettings) -> Result<SampleSettings> {
        let variance = match self.var.as_deref() {
            None => None,
            Some("beta") => Some(Variance::Beta),
            Some("posterior") => Some(Variance::Posterior),
            Some(other) => bail!("unknown --var `{other}`: use beta or posterior"),
        };
        let choices = SamplerChoices {
            kind: self.sampler.clone(),
            steps: self.steps,
            eta: self.eta,
            variance,
            clip_x0: self.clip_x0,
            order: self.order,
            karras: self.karras,
            spacing: self.spacing,
        };
        Ok(SampleSettings {
            n: self.n.unwrap_or(defaults.n),
            nrow: self.nrow.unwrap_or(defaults.nrow),
            sampler: defaults.sampler.with(&choices)?,
            guidance: self.guidance.unwrap_or(defaults.guidance),
            guidance_interval: self.guidance_interval.unwrap_or(defaults.guidance_interval),
        })
    }

    /// The class of every image and the guidance scale for a run conditioned on `classes`
    /// (`None` for an unconditional run), with the number of images that makes.
    fn guidance(
        &self,
        classes: Option<&[String]>,
        settings: &SampleSettings,
    ) -> Result<(usize, Option<Guidance>)> {
        let Some(names) = classes else {
            if self.class.is_some() || self.guidance.is_some() || self.guidance_interval.is_some() {
                bail!(
                    "--class, --guidance and --guidance-interval need a class-conditional run; \
                     this one has no classes"
                );
            }
            return Ok((settings.n, None));
        };
        let choice = ClassChoice::parse(self.class.as_deref().unwrap_or("all"), names)?;
        let (n, labels) = match choice {
            ClassChoice::One(class) => (settings.n, vec![class; settings.n]),
            ClassChoice::Rows(list) => {
                if let Some(n) = self.n {
                    bail!(
                        "--n {n} conflicts with a list of classes: each class fills one row of \
                         --nrow images (choose --nrow, or a single --class)"
                    );
                }
                (list.len() * settings.nrow, class_rows(&list, settings.nrow))
            }
        };
        Ok((
            n,
            Some(Guidance {
                classes: labels,
                scale: settings.guidance,
                interval: settings.guidance_interval,
            }),
        ))
    }
}

/// The reference's way of sampling, for weights that come without a run.
const REFERENCE_SAMPLING: SampleSettings = SampleSettings {
    n: 81,
    nrow: 9,
    sampler: SamplerConfig::Ddpm {
        variance: Variance::Beta,
        clip_x0: false,
    },
    guidance: NO_GUIDANCE,
    guidance_interval: GuidanceInterval::ALL,
};

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

fn main() {
    ddpm_nn::configure_cpu_threads();
    let args = Args::parse();
    if args.debug {
        // SAFETY: still single-threaded, so no other thread reads the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
    }
    if let Err(e) = run(&args) {
        // The message chain; the backtrace only when asked for with --debug.
        if args.debug {
            eprintln!("Error: {e:?}");
        } else {
            eprintln!("Error: {e:#}");
        }
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    let device = ddpm_run::select_device(args.device.as_deref())?;
    let (model, schedule, prediction, defaults, default_out, classes) = match &args.weights {
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
                num_classes: 0,
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
            (
                model,
                schedule,
                Prediction::Epsilon,
                REFERENCE_SAMPLING,
                PathBuf::from("samples"),
                None,
            )
        }
        None => {
            let run = match &args.checkpoint {
                Some(path) => path.clone(),
                None => newest_run()?,
            };
            let dir = checkpoint::resolve(&run)?;
            let loaded = checkpoint::load_model(&dir, &device, !args.no_ema)?;
            if let Some(warning) = loaded.integrity.warning(&dir) {
                eprintln!("{warning}");
            }
            eprintln!(
                "sampling {} ({} weights)",
                dir.display(),
                if loaded.used_ema { "EMA" } else { "raw" }
            );
            let schedule = loaded.manifest.schedule(&device)?;
            let samples = checkpoint::run_dir_of(&dir).join("samples");
            let manifest = loaded.manifest;
            (
                loaded.model,
                schedule,
                manifest.prediction,
                manifest.sample,
                samples,
                manifest.classes,
            )
        }
    };
    let settings = args.settings(defaults)?;
    let SampleSettings { nrow, sampler, .. } = settings;
    let (n, guidance) = args.guidance(classes.as_deref(), &settings)?;
    if nrow == 0 || !n.is_multiple_of(nrow) {
        bail!("--n {n} does not fill rows of --nrow {nrow}: choose n as a multiple of nrow");
    }
    let guided = guidance
        .as_ref()
        .map_or(String::new(), |g| match g.interval {
            GuidanceInterval::ALL => format!(", guidance {}", g.scale),
            interval => format!(", guidance {} at t/T in [{interval}]", g.scale),
        });
    eprintln!(
        "{n} images with {}{guided}{}",
        sampler,
        if settings == defaults {
            " (the run's own settings)"
        } else {
            ""
        }
    );
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
        n,
        image,
        batch_size: args.batch_size,
        sampler,
        prediction,
        guidance,
    };
    let steps = sampler.build(&schedule, prediction)?.timesteps().len();
    let batches = n.div_ceil(args.batch_size.max(1));
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
        .map(|_| Trajectory::new(n.min(8), 10, steps));
    let mut noise = NoiseRng::new(args.seed);
    let x_t = match x_init {
        Some(x) => x,
        None => Tensor::from_vec(
            noise.normal_vec(n * image.iter().product::<usize>()),
            (n, image[0], image[1], image[2]),
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
    save_image(&grid(&images, nrow, args.padding)?, &out)?;
    eprintln!("wrote {n} images to {}", out.display());
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
            n.min(8),
            traj.timesteps(),
            path.display()
        );
    }
    Ok(())
}
