//! Run configuration: named presets ([`Recipe`]), explicit overrides and the resolved
//! [`TrainConfig`] saved as `config.json` in every run directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ddpm_diffusion::{BetaKind, SamplerConfig, Variance};
use ddpm_unet::{ImageShape, ModelConfig, ModelKind, ModelSpec, ResidualFrom};
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DatasetSpec {
    /// MNIST IDX files (raw or .gz) in `dir` (the training split), 1x28x28.
    Mnist {
        /// Folder holding the four IDX files.
        dir: PathBuf,
    },
    /// The anime-faces folder (any image folder, RGB), resized and centre-cropped.
    Anime {
        /// Folder searched recursively for images.
        dir: PathBuf,
        /// Side of the square images.
        size: usize,
    },
    /// Any image folder, searched recursively.
    Folder {
        /// Folder searched recursively for images.
        dir: PathBuf,
        /// Side of the square images.
        size: usize,
        /// 1 (gray) or 3 (RGB).
        channels: usize,
    },
    /// The 2,000 real MNIST digits compiled into the program.
    Embedded,
}

impl DatasetSpec {
    /// The shape of one image of this dataset.
    pub fn image(&self) -> ImageShape {
        match self {
            DatasetSpec::Mnist { .. } | DatasetSpec::Embedded => ImageShape::MNIST,
            DatasetSpec::Anime { size, .. } => ImageShape::new(3, *size, *size),
            DatasetSpec::Folder { size, channels, .. } => ImageShape::new(*channels, *size, *size),
        }
    }

    /// A short name for run directories.
    pub fn short_name(&self) -> &'static str {
        match self {
            DatasetSpec::Mnist { .. } => "mnist",
            DatasetSpec::Anime { .. } => "anime",
            DatasetSpec::Folder { .. } => "folder",
            DatasetSpec::Embedded => "embedded",
        }
    }

    /// Parses `mnist`, `anime`, `embedded` or `folder:PATH`; `data_dir` overrides the
    /// default folder (`data/mnist`, `data/anime-faces`).
    pub fn parse(s: &str, data_dir: Option<&Path>, size: usize, channels: usize) -> Result<Self> {
        let dir =
            |default: &str| data_dir.map_or_else(|| PathBuf::from(default), Path::to_path_buf);
        Ok(match s {
            "mnist" => DatasetSpec::Mnist {
                dir: dir("data/mnist"),
            },
            "anime" => DatasetSpec::Anime {
                dir: dir("data/anime-faces"),
                size,
            },
            "embedded" => DatasetSpec::Embedded,
            _ => match s.strip_prefix("folder:") {
                Some(path) if !path.is_empty() => DatasetSpec::Folder {
                    dir: PathBuf::from(path),
                    size,
                    channels,
                },
                _ => {
                    return Err(TrainError::Config(format!(
                        "unknown dataset `{s}`: use mnist, anime, embedded or folder:PATH"
                    )));
                }
            },
        })
    }

    /// The default for MNIST-shaped presets: `data/mnist` when it holds MNIST, else the
    /// embedded subset.
    pub fn default_mnist(data_dir: Option<&Path>) -> Self {
        let dir = data_dir.map_or_else(|| PathBuf::from("data/mnist"), Path::to_path_buf);
        if crate::data::mnist_present(&dir) {
            DatasetSpec::Mnist { dir }
        } else {
            DatasetSpec::Embedded
        }
    }
}

/// A period measured in epochs or in optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Every {
    /// Every N epochs.
    Epochs(u64),
    /// Every N optimizer steps.
    Steps(u64),
}

impl FromStr for Every {
    type Err = TrainError;

    /// `50` or `50e` = every 50 epochs; `500s` = every 500 steps.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TrainError::Config(format!(
                "`{s}` is not a period: write N or Ne (epochs) or Ns (steps), N >= 1"
            ))
        };
        let (digits, steps) = match s.strip_suffix('s') {
            Some(d) => (d, true),
            None => (s.strip_suffix('e').unwrap_or(s), false),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(if steps {
            Every::Steps(n)
        } else {
            Every::Epochs(n)
        })
    }
}

impl fmt::Display for Every {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Every::Epochs(n) => write!(f, "{n} epochs"),
            Every::Steps(n) => write!(f, "{n} steps"),
        }
    }
}

impl Every {
    /// True when a step that ends at (`step`, epoch boundary `epoch_end`) is on the period.
    pub fn due(&self, step: u64, epoch_end: Option<u64>) -> bool {
        match *self {
            Every::Steps(n) => step.is_multiple_of(n),
            Every::Epochs(n) => epoch_end.is_some_and(|e| e.is_multiple_of(n)),
        }
    }
}

/// The learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Constant learning rate.
    Constant,
    /// Cosine decay to zero at the last step.
    Cosine,
}

impl FromStr for LrSchedule {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            _ => Err(TrainError::Config(format!(
                "unknown LR schedule `{s}`: use constant or cosine"
            ))),
        }
    }
}

/// How preview and final grids are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleSettings {
    /// Images per grid.
    pub n: usize,
    /// Images per grid row.
    pub nrow: usize,
    /// The reverse process.
    pub sampler: SamplerConfig,
}

/// How the weights are optimised: shared by a [`Recipe`] and the resolved [`TrainConfig`]
/// (where it is flattened into `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Optimisation {
    /// Images per optimizer step (per process).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Adam's L2 weight decay (0 = plain Adam).
    pub weight_decay: f64,
    /// Passes over the data.
    pub epochs: u64,
    /// Stop after this many optimizer steps in total, across resumes (a stopping point only:
    /// the LR schedule always spans `epochs`).
    pub max_steps: Option<u64>,
    /// EMA decay (0 = off).
    pub ema: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// LR curve after warmup (cosine spans all `epochs`).
    pub lr_schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Random horizontal flips.
    pub hflip: bool,
}

/// The user-facing knobs of a run, as a preset sets them (before the dataset fixes the image
/// shape and the network's configuration is assembled).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Network family.
    pub model: ModelKind,
    /// Channel widths per level (for `modern`: level widths, multiples of the first).
    pub channels: Vec<usize>,
    /// Time-encoding width (reference and residual UNets).
    pub pe_dim: usize,
    /// Diffusion steps T.
    pub n_steps: usize,
    /// β schedule.
    pub schedule: BetaKind,
    /// Optimiser, EMA, run length and augmentation.
    pub optim: Optimisation,
    /// Checkpoint period.
    pub save_every: Option<Every>,
    /// Preview-grid period.
    pub sample_every: Option<Every>,
    /// Log period in steps.
    pub log_every: u64,
    /// Preview/final grid sampling.
    pub sample: SampleSettings,
    /// The data a preset trains on when no `--dataset` is given.
    pub default_data: DefaultData,
}

/// Where a preset's training images come from by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultData {
    /// The embedded 2,000 digits (the `quick` preset: a fixed, small job anywhere).
    Embedded,
    /// `data/mnist` when it holds MNIST, else the embedded digits.
    MnistIfPresent,
    /// `data/anime-faces`.
    Anime,
}

/// The names of the presets, in the order `--help` lists them.
pub const PRESETS: [&str; 6] = [
    "quick",
    "ref-mnist",
    "ref-mnist-res",
    "ref-anime",
    "ref-anime-small",
    "anime",
];

const REFERENCE_GRID: SampleSettings = SampleSettings {
    n: 81,
    nrow: 9,
    sampler: SamplerConfig::Ddpm {
        variance: Variance::Beta,
        clip_x0: false,
    },
};

impl Recipe {
    /// The recipe of a named preset.
    pub fn preset(name: &str) -> Result<Self> {
        let faithful = Recipe {
            model: ModelKind::Ref,
            channels: vec![32, 64, 128, 256],
            pe_dim: 20,
            n_steps: 1000,
            schedule: BetaKind::Linear,
            optim: Optimisation {
                batch_size: 1024,
                lr: 1e-3,
                weight_decay: 0.0,
                epochs: 1000,
                max_steps: None,
                ema: 0.0,
                warmup_steps: 0,
                lr_schedule: LrSchedule::Constant,
                grad_clip: None,
                hflip: false,
            },
            save_every: Some(Every::Epochs(50)),
            sample_every: Some(Every::Epochs(50)),
            log_every: 50,
            sample: REFERENCE_GRID,
            default_data: DefaultData::MnistIfPresent,
        };
        Ok(match name {
            "quick" => Recipe {
                model: ModelKind::Modern,
                channels: vec![16, 32, 32],
                // T = 100 with the linear schedule scaled to keep ᾱ_T near zero: sampling the
                // final grid takes seconds instead of minutes, and that time goes to training.
                n_steps: 100,
                schedule: BetaKind::LinearScaled,
                optim: Optimisation {
                    batch_size: 64,
                    lr: 2e-3,
                    // 32 batches per epoch of the 2,000 embedded digits: 1,280 steps.
                    epochs: 40,
                    ema: 0.99,
                    warmup_steps: 50,
                    lr_schedule: LrSchedule::Cosine,
                    grad_clip: Some(1.0),
                    ..faithful.optim
                },
                save_every: Some(Every::Steps(200)),
                sample_every: None,
                log_every: 25,
                sample: SampleSettings {
                    // Measured on this preset's model at 800 steps (docs/training.md): DDPM
                    // with x̂0 clipping scored best (Fréchet 136), DDPM unclipped 154, DDIM-50 189.
                    sampler: SamplerConfig::Ddpm {
                        variance: Variance::Posterior,
                        clip_x0: true,
                    },
                    ..REFERENCE_GRID
                },
                default_data: DefaultData::Embedded,
                ..faithful
            },
            "ref-mnist" => faithful,
            "ref-mnist-res" => Recipe {
                model: ModelKind::Res,
                channels: vec![10, 20, 40, 80],
                pe_dim: 128,
                optim: Optimisation {
                    batch_size: 512,
                    epochs: 100,
                    ..faithful.optim
                },
                save_every: Some(Every::Epochs(10)),
                sample_every: Some(Every::Epochs(10)),
                ..faithful
            },
            "ref-anime" => Recipe {
                optim: Optimisation {
                    batch_size: 512,
                    lr: 3e-4,
                    epochs: 3000,
                    ..faithful.optim
                },
                save_every: Some(Every::Epochs(100)),
                sample_every: Some(Every::Epochs(100)),
                default_data: DefaultData::Anime,
                ..faithful
            },
            "ref-anime-small" => Recipe {
                model: ModelKind::RefBn,
                channels: vec![16, 32, 64, 128],
                pe_dim: 32,
                n_steps: 800,
                optim: Optimisation {
                    batch_size: 512,
                    lr: 2e-3,
                    epochs: 1500,
                    ..faithful.optim
                },
                save_every: Some(Every::Epochs(100)),
                sample_every: Some(Every::Epochs(100)),
                default_data: DefaultData::Anime,
                ..faithful
            },
            "anime" => Recipe {
                model: ModelKind::Modern,
                channels: vec![64, 128, 128, 256],
                optim: Optimisation {
                    batch_size: 128,
                    lr: 2e-4,
                    epochs: 500,
                    ema: 0.9999,
                    warmup_steps: 1000,
                    lr_schedule: LrSchedule::Cosine,
                    grad_clip: Some(1.0),
                    hflip: true,
                    ..faithful.optim
                },
                save_every: Some(Every::Epochs(10)),
                sample_every: Some(Every::Epochs(10)),
                sample: SampleSettings {
                    sampler: SamplerConfig::Ddim {
                        steps: 100,
                        eta: 0.0,
                        clip_x0: true,
                    },
                    ..REFERENCE_GRID
                },
                default_data: DefaultData::Anime,
                ..faithful
            },
            _ => {
                return Err(TrainError::Config(format!(
                    "unknown preset `{name}`: choose one of {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }

    /// Assembles the network configuration for images of `image` shape.
    pub fn model_config(&self, image: ImageShape) -> Result<ModelConfig> {
        let spec = ModelSpec {
            kind: self.model,
            image,
            channels: self.channels.clone(),
            pe_dim: self.pe_dim,
            n_steps: self.n_steps,
            residual_from: ResidualFrom::Normalized,
            attn_resolutions: None,
        };
        Ok(spec.to_config()?)
    }
}

/// Explicit command-line choices (the trainer's options); `None` keeps the preset's value.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// ref | ref-bn | res | modern
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// Channel widths per level, e.g. 32,64,128,256.
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<usize>>,
    /// Width of the sinusoidal time encoding (ref, res).
    #[arg(long)]
    pub pe_dim: Option<usize>,
    /// Diffusion steps T.
    #[arg(long)]
    pub n_steps: Option<usize>,
    /// linear (the reference's, unscaled) | linear-scaled | cosine
    #[arg(long)]
    pub schedule: Option<BetaKind>,
    /// Images per optimizer step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (Adam).
    #[arg(long)]
    pub lr: Option<f64>,
    /// L2 weight decay added to the gradient (0 = plain Adam, the reference).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Stop once the run has made N optimizer steps in total (counted across --resume).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Log (metrics.jsonl, loss.png, progress) every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// EMA decay of the weights (0 = off).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Linear LR warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// constant | cosine (decay to 0 at the last step)
    #[arg(long)]
    pub lr_schedule: Option<LrSchedule>,
    /// Clip the global gradient norm (0 = off).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Random horizontal flips (true/false).
    #[arg(long)]
    pub hflip: Option<bool>,
    /// Seed of initialisation, data order and noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint period: N or Ne = every N epochs, Ns = every N steps.
    #[arg(long)]
    pub save_every: Option<Every>,
    /// Sample-grid period (samples/step_<N>.png): N or Ne = epochs, Ns = steps.
    #[arg(long)]
    pub sample_every: Option<Every>,
    /// Keep only the newest K checkpoints.
    #[arg(long)]
    pub keep_last: Option<usize>,
}

impl Overrides {
    /// Names of the options that are set and would change what is trained (not allowed with
    /// `--resume`, which continues the saved run).
    pub fn training_changes(&self) -> Vec<&'static str> {
        let set = [
            ("--model", self.model.is_some()),
            ("--channels", self.channels.is_some()),
            ("--pe-dim", self.pe_dim.is_some()),
            ("--n-steps", self.n_steps.is_some()),
            ("--schedule", self.schedule.is_some()),
            ("--batch-size", self.batch_size.is_some()),
            ("--lr", self.lr.is_some()),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--ema", self.ema.is_some()),
            ("--warmup-steps", self.warmup_steps.is_some()),
            ("--lr-schedule", self.lr_schedule.is_some()),
            ("--grad-clip", self.grad_clip.is_some()),
            ("--hflip", self.hflip.is_some()),
            ("--seed", self.seed.is_some()),
        ];
        set.into_iter()
            .filter(|(_, s)| *s)
            .map(|(n, _)| n)
            .collect()
    }

    fn apply(&self, r: &mut Recipe) {
        macro_rules! take {
            ($target:expr; $($field:ident),*) => {
                $( if let Some(v) = &self.$field { $target.$field = v.clone(); } )*
            };
        }
        take!(r; model, channels, pe_dim, n_steps, schedule, log_every);
        take!(r.optim; batch_size, lr, weight_decay, epochs, ema, warmup_steps, lr_schedule, hflip);
        if self.max_steps.is_some() {
            r.optim.max_steps = self.max_steps;
        }
        if let Some(clip) = self.grad_clip {
            r.optim.grad_clip = (clip > 0.0).then_some(clip);
        }
        if self.save_every.is_some() {
            r.save_every = self.save_every;
        }
        if self.sample_every.is_some() {
            r.sample_every = self.sample_every;
        }
    }

    /// Applies the run-control options that `--resume` accepts to a saved configuration.
    pub fn apply_run_control(&self, config: &mut TrainConfig) {
        if let Some(e) = self.epochs {
            config.optim.epochs = e;
        }
        if self.max_steps.is_some() {
            config.optim.max_steps = self.max_steps;
        }
        if let Some(l) = self.log_every {
            config.log_every = l;
        }
        if self.save_every.is_some() {
            config.save_every = self.save_every;
        }
        if self.sample_every.is_some() {
            config.sample_every = self.sample_every;
        }
        if self.keep_last.is_some() {
            config.keep_last = self.keep_last;
        }
    }
}

/// Everything that defines a run, saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The preset the run started from.
    pub preset: String,
    /// The training images.
    pub dataset: DatasetSpec,
    /// The network.
    pub model: ModelConfig,
    /// β schedule.
    pub schedule: BetaKind,
    /// Diffusion steps T.
    pub n_steps: usize,
    /// Optimiser, EMA, run length and augmentation.
    #[serde(flatten)]
    pub optim: Optimisation,
    /// Seed of initialisation, data order and noise.
    pub seed: u64,
    /// Checkpoint period.
    pub save_every: Option<Every>,
    /// Preview-grid period.
    pub sample_every: Option<Every>,
    /// Log period in steps.
    pub log_every: u64,
    /// Keep only the newest K checkpoints.
    pub keep_last: Option<usize>,
    /// Preview and final grid sampling.
    pub sample: SampleSettings,
}

impl TrainConfig {
    /// Resolves a preset, a dataset and explicit overrides into a full configuration.
    pub fn resolve(preset: &str, dataset: DatasetSpec, overrides: &Overrides) -> Result<Self> {
        let mut recipe = Recipe::preset(preset)?;
        overrides.apply(&mut recipe);
        if recipe.optim.batch_size == 0 || recipe.log_every == 0 {
            return Err(TrainError::Config(
                "--batch-size and --log-every must be at least 1".into(),
            ));
        }
        let optim = recipe.optim;
        if !(optim.lr > 0.0 && optim.lr.is_finite()) {
            return Err(TrainError::Config(format!(
                "--lr must be positive, got {}",
                optim.lr
            )));
        }
        if !(0.0..1.0).contains(&optim.ema) {
            return Err(TrainError::Config(format!(
                "--ema must be in [0, 1), got {}",
                optim.ema
            )));
        }
        let model = recipe.model_config(dataset.image())?;
        let mut sample = recipe.sample;
        if let SamplerConfig::Ddim { steps, .. } = &mut sample.sampler {
            // A preset's DDIM preview uses every step of a chain shorter than its step count.
            *steps = (*steps).min(recipe.n_steps);
        }
        sample.sampler.timesteps(recipe.n_steps)?;
        Ok(TrainConfig {
            preset: preset.to_string(),
            dataset,
            model,
            schedule: recipe.schedule,
            n_steps: recipe.n_steps,
            optim,
            seed: overrides.seed.unwrap_or(0),
            save_every: recipe.save_every,
            sample_every: recipe.sample_every,
            log_every: recipe.log_every,
            keep_last: overrides.keep_last,
            sample,
        })
    }

    /// A digest of what determines the trained weights (model, schedule, optimisation, data,
    /// seed): a checkpoint only resumes a run whose digest matches.
    pub fn training_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let o = &self.optim;
        let key = serde_json::json!({
            "dataset": self.dataset, "model": self.model, "schedule": self.schedule,
            "n_steps": self.n_steps, "batch_size": o.batch_size, "lr": o.lr,
            "weight_decay": o.weight_decay, "ema": o.ema, "warmup": o.warmup_steps,
            "lr_schedule": o.lr_schedule, "grad_clip": o.grad_clip, "hflip": o.hflip,
            "seed": self.seed,
        });
        let digest = Sha256::digest(key.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Reads `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
        serde_json::from_str(&text).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_units() {
        assert_eq!("50".parse::<Every>().unwrap(), Every::Epochs(50));
        assert_eq!("5e".parse::<Every>().unwrap(), Every::Epochs(5));
        assert_eq!("500s".parse::<Every>().unwrap(), Every::Steps(500));
        assert!("0".parse::<Every>().is_err());
        assert!("x".parse::<Every>().is_err());
    }
}
