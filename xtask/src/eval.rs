//! `cargo xtask eval` (MNIST sample quality, or colour statistics of RGB samples) and
//! `cargo xtask train-classifier` (the classifier behind `eval`). See docs/evaluation.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use ddpm_data::{DataError, ImageSet, Split, load_mnist_dir};
use ddpm_eval::{
    Classifier, ColourReport, GridGeometry, MnistEvaluator, QualityReport, TrainOptions,
    load_images, train_classifier as train,
};
use sha2::{Digest, Sha256};

/// Options of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Samples: a grid picture (cut with --tile and --padding) or a folder of pictures.
    #[arg(long)]
    pub samples: PathBuf,
    /// Real data: an MNIST folder (its test split is used; with --colour its train split),
    /// or a folder of pictures, or a grid picture.
    #[arg(long, default_value = ddpm_data::MNIST_DIR)]
    pub real: PathBuf,
    /// Tile side of grid pictures (and the size folders of pictures are resized to).
    #[arg(long, default_value_t = 28)]
    pub tile: usize,
    /// Pixels between neighbouring tiles of grid pictures.
    #[arg(long, default_value_t = 0)]
    pub padding: usize,
    /// Classifier weights (safetensors); the committed ones when absent.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Seed of the shuffle that picks the real digits of each half.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Report per-channel colour statistics (RGB) instead of the MNIST quality figures.
    #[arg(long)]
    pub colour: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `train-classifier`.
#[derive(Debug, clap::Args)]
pub struct TrainClassifierArgs {
    /// MNIST folder (train split for training, test split for the reported accuracy).
    #[arg(long, default_value = ddpm_data::MNIST_DIR)]
    pub data: PathBuf,
    /// Output weights; a PROVENANCE.json is written beside them.
    #[arg(long, default_value = ddpm_eval::COMMITTED_WEIGHTS)]
    pub out: PathBuf,
    /// Passes over the 60,000 training digits.
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Images per Adam step.
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate (half-cosine decay to 0).
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    pub lr: f64,
    /// Seed of the initialisation and the shuffles.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
}

/// The `split` of MNIST when `path` is a folder holding it; `None` when it holds no MNIST file.
fn try_mnist(path: &Path, split: Split) -> anyhow::Result<Option<ImageSet>> {
    if !path.is_dir() {
        return Ok(None);
    }
    match load_mnist_dir(path, split) {
        Ok((images, _)) => Ok(Some(images)),
        Err(DataError::MnistMissing { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Real images for the comparison: an MNIST split, or pictures like the samples.
fn load_real(
    path: &Path,
    split: Split,
    geometry: GridGeometry,
    channels: usize,
) -> anyhow::Result<ImageSet> {
    match try_mnist(path, split)? {
        Some(images) => Ok(images),
        None => load_images(path, geometry, channels)
            .with_context(|| format!("cannot read the real images {}", path.display())),
    }
}

/// `cargo xtask eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let geometry = GridGeometry {
        tile: args.tile,
        padding: args.padding,
    };
    if args.colour {
        return colour(&args, geometry);
    }
    let device = Device::Cpu;
    let classifier = match &args.classifier {
        Some(path) => Classifier::load(path, &device)?,
        None => Classifier::committed(&device)?,
    };
    let samples = load_images(&args.samples, geometry, 1)
        .with_context(|| format!("cannot read the samples {}", args.samples.display()))?;
    let real = load_real(&args.real, Split::Test, geometry, 1)?;
    let start = Instant::now();
    let evaluator = MnistEvaluator::new(classifier, &real, args.seed, &device)?;
    let report = evaluator.evaluate(&samples)?;
    println!(
        "samples: {} ({} images)",
        args.samples.display(),
        samples.len()
    );
    println!("real:    {} ({} images)", args.real.display(), real.len());
    println!("{report}");
    eprintln!("evaluated in {:.1} s", start.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        write_json(path, &quality_json(&report, &args))?;
    }
    Ok(())
}

fn quality_json(r: &QualityReport, args: &EvalArgs) -> serde_json::Value {
    serde_json::json!({
        "samples": args.samples, "real": args.real, "seed": args.seed,
        "n": r.n, "samples_given": r.samples_given,
        "frechet": r.frechet, "frechet_floor": r.frechet_floor,
        "confidence": r.confidence, "real_confidence": r.real_confidence,
        "class_entropy": r.class_entropy, "real_class_entropy": r.real_class_entropy,
        "class_counts": r.class_counts,
    })
}

/// `eval --colour`: per-channel statistics of samples and real images.
fn colour(args: &EvalArgs, geometry: GridGeometry) -> anyhow::Result<()> {
    let mnist = try_mnist(&args.real, Split::Train)?;
    let channels = if mnist.is_some() { 1 } else { 3 };
    let samples = load_images(&args.samples, geometry, channels)
        .with_context(|| format!("cannot read the samples {}", args.samples.display()))?;
    let real = match mnist {
        Some(images) => images,
        None => load_real(&args.real, Split::Train, geometry, channels)?,
    };
    let report = ColourReport::new(&samples, &real)?;
    print!("{report}");
    if let Some(path) = &args.json {
        let value = serde_json::json!({
            "samples": args.samples, "real": args.real,
            "n_samples": report.n_samples, "n_real": report.n_real,
            "sample_mean": report.samples.mean, "sample_std": report.samples.std,
            "real_mean": report.real.mean, "real_std": report.real.std,
            "mean_shift": report.mean_shift(),
        });
        write_json(path, &value)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `cargo xtask train-classifier`.
pub fn train_classifier(args: TrainClassifierArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let (train_images, train_labels) = load_mnist_dir(&args.data, Split::Train)?;
    let (test_images, test_labels) = load_mnist_dir(&args.data, Split::Test)?;
    let opts = TrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
    };
    let start = Instant::now();
    let mut running = 0.0f64;
    let trained = train(&train_images, &train_labels, &opts, &device, |p| {
        running = if p.step == 0 {
            f64::from(p.loss)
        } else {
            0.98 * running + 0.02 * f64::from(p.loss)
        };
        if (p.step + 1) % 100 == 0 || p.step + 1 == p.steps_per_epoch {
            eprintln!(
                "epoch {} step {}/{}: loss {:.4} (smoothed {:.4}), lr {:.2e}, {:.0} s",
                p.epoch + 1,
                p.step + 1,
                p.steps_per_epoch,
                p.loss,
                running,
                p.lr,
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    let train_seconds = start.elapsed().as_secs_f64();
    let accuracy = trained
        .classifier
        .embed(&test_images, 500, &device)?
        .accuracy(&test_labels)?;
    let (subset, subset_labels) = ddpm_data::embedded_mnist_with_labels();
    let subset_accuracy = trained
        .classifier
        .embed(&subset, 500, &device)?
        .accuracy(&subset_labels)?;
    trained.save(&args.out)?;
    let bytes = std::fs::read(&args.out)
        .with_context(|| format!("cannot read back {}", args.out.display()))?;
    println!(
        "test accuracy {:.2}% ({} digits), embedded-subset accuracy {:.2}%, trained in {train_seconds:.0} s; wrote {}",
        100.0 * accuracy,
        test_images.len(),
        100.0 * subset_accuracy,
        args.out.display()
    );
    let provenance = serde_json::json!({
        "what": "MNIST CNN of ddpm-eval (conv 1->16, conv 16->32, fc 1568->64, fc 64->10; f32)",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "data": args.data,
        "options": { "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr,
                     "seed": opts.seed, "optimizer": "Adam (0.9, 0.999, 1e-8), half-cosine lr to 0" },
        "test_accuracy": accuracy,
        "test_count": test_images.len(),
        "embedded_subset_accuracy": subset_accuracy,
        "train_seconds": train_seconds,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "weights_sha256": format!("{:x}", Sha256::digest(&bytes)),
        "weights_bytes": bytes.len(),
    });
    let note = args.out.with_file_name("PROVENANCE.json");
    write_json(&note, &provenance)?;
    println!("wrote {}", note.display());
    Ok(())
}
