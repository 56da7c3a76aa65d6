//! `cargo xtask experiment NAME`: the reference's comparisons, measured. Each experiment trains
//! its arms with `ddpm-train`, samples them with `ddpm-image`, scores the samples with
//! `ddpm-eval` and writes `docs/experiments/NAME.md` with the figures, the grids, the command,
//! the machine and the wall time.

mod arms;
mod guidance;
mod report;
mod sweep;
mod tint;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ddpm_data::DatasetSpec;
use ddpm_data::{ImageSet, Split, load_mnist_dir};
use ddpm_diffusion::{GenerateOptions, NoiseRng, SamplerConfig, Schedule, generate};
use ddpm_eval::{Classifier, MnistEvaluator, QualityReport};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_run::checkpoint;
use ddpm_train::{RunOptions, TrainConfig, TrainingState};
use ddpm_unet::Model;

pub use arms::Experiment;

/// How much compute an experiment may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Budget {
    /// Minutes on a 2-core CPU: the embedded digits, a few hundred steps, 81 samples per arm.
    Small,
    /// The reference's scale (a GPU): full MNIST, thousands of steps, 1,000 samples per arm.
    Full,
}

/// Options of `experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which experiment.
    #[arg(value_enum)]
    pub name: Experiment,
    /// small (2-core CPU, minutes) or full (GPU).
    #[arg(long, value_enum, default_value = "small")]
    pub budget: Budget,
    /// Override the optimizer steps per trained arm.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Real digits to compare with (MNIST folder; its test split is used).
    #[arg(long, default_value = ddpm_data::MNIST_DIR)]
    pub real: PathBuf,
    /// Where the arms' runs go (reused when already complete).
    #[arg(long, default_value = "runs/experiments")]
    pub runs: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "docs/experiments")]
    pub docs: PathBuf,
    /// cpu | cuda | cuda:N
    #[arg(long)]
    pub device: Option<String>,
    /// samplers, guidance: the trained run (or checkpoint) to sample.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Samples per point or arm [default: 1000 for samplers, guidance and objectives; 128
    /// for tint; 81 (small) or 999 (full) for the others].
    #[arg(long)]
    pub samples: Option<usize>,
    /// tint: the RGB image folder to train on (the anime faces, or any folder of photos).
    #[arg(long, default_value = ddpm_data::ANIME_DIR)]
    pub data: PathBuf,
}

/// Where the arms' decoded image folders are cached.
const CACHE_DIR: &str = "data/.cache";

/// The scale of one experiment run.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Training images.
    pub dataset: DatasetSpec,
    /// Optimizer steps per arm.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Samples per evaluation (a multiple of 9).
    pub samples: usize,
}

impl Scale {
    fn new(args: &Args) -> Self {
        let (dataset, steps, batch_size, samples) = match (args.name, args.budget) {
            // RGB: 32x32 on a CPU (DDPM-1000 sampling dominates), the anime size on a GPU.
            (Experiment::Tint, Budget::Small) => (rgb(32), 1200, 64, 128),
            (Experiment::Tint, Budget::Full) => (rgb(64), 20_000, 128, 1000),
            (_, Budget::Small) => (DatasetSpec::Embedded, 600, 64, 81),
            (_, Budget::Full) => (DatasetSpec::Mnist, 10_000, 128, 999),
        };
        // Arms compared by Fréchet distance need at least 1,000 samples each.
        let samples = match args.name {
            Experiment::Objectives => samples.max(1000),
            _ => samples,
        };
        Scale {
            dataset,
            steps: args.steps.unwrap_or(steps),
            batch_size,
            samples: args.samples.unwrap_or(samples),
        }
    }
}

/// An RGB image folder at `size` x `size`.
fn rgb(size: usize) -> DatasetSpec {
    DatasetSpec::Folder { size, channels: 3 }
}

/// Shared machinery of the experiments: device, evaluator, where things go.
pub struct Lab {
    device: Device,
    /// The MNIST test split the digit experiments score against (loaded on first use).
    real: PathBuf,
    evaluator: std::cell::OnceCell<MnistEvaluator>,
    runs: PathBuf,
    figures: PathBuf,
    scale: Scale,
}

/// A trained arm: its run directory and its final mean loss.
pub struct Trained {
    run: PathBuf,
    loss: f64,
    train_s: f64,
}

/// One set of samples and its scores.
pub struct Scored {
    /// Quality against real digits.
    pub quality: QualityReport,
    /// Smallest, largest and mean value of the raw samples before quantisation.
    pub range: (f32, f32, f32),
    /// Fraction of samples that are (nearly) one flat grey level: the reference's "all black
    /// or all white" tiles.
    pub flat: f64,
    /// Sampling wall time, seconds.
    pub sample_s: f64,
    /// The grid, relative to the report.
    pub grid: String,
}

impl Lab {
    fn new(args: &Args) -> Result<Self> {
        let device = ddpm_run::select_device(args.device.as_deref())?;
        Ok(Lab {
            device,
            real: args.real.clone(),
            evaluator: std::cell::OnceCell::new(),
            // Shared by all experiments: arms with the same configuration are trained once.
            runs: args.runs.clone(),
            figures: args.docs.join(args.name.slug()),
            scale: Scale::new(args),
        })
    }

    /// The digit evaluator against the MNIST test split (loaded on the first call).
    fn evaluator(&self) -> Result<&MnistEvaluator> {
        if let Some(evaluator) = self.evaluator.get() {
            return Ok(evaluator);
        }
        let real: ImageSet = load_mnist_dir(&self.real, Split::Test)
            .with_context(|| {
                format!(
                    "real digits: run `cargo xtask fetch-mnist --out {}`",
                    self.real.display()
                )
            })?
            .0;
        let evaluator =
            MnistEvaluator::new(Classifier::committed(&self.device)?, &real, 0, &self.device)?;
        Ok(self.evaluator.get_or_init(|| evaluator))
    }

    /// Trains `config` into `runs/experiments/<arm>` unless a complete run of the same
    /// configuration is already there.
    fn train(&self, arm: &str, config: &TrainConfig) -> Result<Trained> {
        let run = self.runs.join(arm);
        if let Ok(dir) = checkpoint::latest(&run)
            && let Ok(saved) = TrainConfig::load(&dir.join(checkpoint::CONFIG_FILE))
            && let Ok(state) = TrainingState::read(&dir)
            && saved.spec.digest() == config.spec.digest()
            && Some(state.step) == config.control.max_steps
        {
            eprintln!("[{arm}] reusing {}", run.display());
            return Ok(Trained {
                loss: final_loss(&run),
                run,
                train_s: f64::NAN,
            });
        }
        let _ = std::fs::remove_dir_all(&run);
        eprintln!(
            "[{arm}] training {} steps into {}",
            self.scale.steps,
            run.display()
        );
        let started = Instant::now();
        let options = RunOptions {
            out_dir: run.clone(),
            resume: false,
            resume_from: None,
            device: self.device.clone(),
            cache_dir: PathBuf::from(CACHE_DIR),
            stop: Arc::new(AtomicBool::new(false)),
            world: ddpm_train::WorldInfo::single(),
        };
        ddpm_train::train(config, &options).with_context(|| format!("training arm {arm}"))?;
        Ok(Trained {
            loss: final_loss(&run),
            run,
            train_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Samples a trained arm (raw or EMA weights) and scores the samples.
    fn score(
        &self,
        trained: &Trained,
        ema: bool,
        sampler: SamplerConfig,
        label: &str,
    ) -> Result<Scored> {
        let dir = checkpoint::latest(&trained.run)?;
        let loaded = checkpoint::load_model(&dir, &self.device, ema)?;
        let schedule = loaded.manifest.schedule(&self.device)?;
        self.score_model(
            &loaded.model,
            &schedule,
            loaded.manifest.prediction,
            sampler,
            label,
        )
    }

    fn score_model(
        &self,
        model: &Model,
        schedule: &Schedule,
        prediction: ddpm_diffusion::Prediction,
        sampler: SamplerConfig,
        label: &str,
    ) -> Result<Scored> {
        let options = GenerateOptions {
            n: self.scale.samples,
            image: model.config().image().dims(),
            batch_size: 81,
            sampler,
            prediction,
            guidance: None,
        };
        let started = Instant::now();
        let x = generate(
            model,
            schedule,
            &options,
            None,
            &mut NoiseRng::new(1),
            &self.device,
            |_, _| {},
        )?;
        let sample_s = started.elapsed().as_secs_f64();
        let images = to_u8(&x)?;
        let grid_name = format!("{label}.png");
        let shown = images_prefix(&x, 81)?;
        save_image(
            &grid(&to_u8(&shown)?, 9, 0)?,
            &self.figures.join(&grid_name),
        )?;
        let set = ImageSet::new(images.pixels.clone(), 1, 28, 28)?;
        let quality = self.evaluator()?.evaluate(&set)?;
        Ok(Scored {
            quality,
            range: value_range(&x)?,
            flat: flat_fraction(&images.pixels, 28 * 28),
            sample_s,
            grid: format!(
                "{}/{grid_name}",
                self.figures
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
            ),
        })
    }
}

fn images_prefix(x: &Tensor, n: usize) -> Result<Tensor> {
    Ok(x.narrow(0, 0, n.min(x.dim(0)?))?)
}

fn value_range(x: &Tensor) -> Result<(f32, f32, f32)> {
    let flat = x.flatten_all()?;
    Ok((
        flat.min(0)?.to_scalar::<f32>()?,
        flat.max(0)?.to_scalar::<f32>()?,
        flat.mean_all()?.to_scalar::<f32>()?,
    ))
}

/// The fraction of images whose pixels have a standard deviation under 8 grey levels.
fn flat_fraction(pixels: &[u8], image_len: usize) -> f64 {
    let images = pixels.chunks(image_len);
    let n = pixels.len() / image_len;
    let flat = images
        .filter(|img| {
            let mean = img.iter().map(|&p| p as f64).sum::<f64>() / img.len() as f64;
            let var =
                img.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / img.len() as f64;
            var.sqrt() < 8.0
        })
        .count();
    flat as f64 / n as f64
}

fn final_loss(run: &Path) -> f64 {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .ok()
        .and_then(|text| {
            let last = text.lines().last()?.to_string();
            serde_json::from_str::<serde_json::Value>(&last).ok()?["loss"].as_f64()
        })
        .unwrap_or(f64::NAN)
}

/// Runs an experiment and writes its report.
pub fn run(args: Args) -> Result<()> {
    ddpm_nn::configure_cpu_threads();
    let started = Instant::now();
    let lab = Lab::new(&args)?;
    let body = arms::run(&args, &lab)?;
    let path = args.docs.join(format!("{}.md", args.name.slug()));
    report::write(
        &path,
        &args,
        &lab.scale,
        &body,
        started.elapsed().as_secs_f64(),
    )?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
