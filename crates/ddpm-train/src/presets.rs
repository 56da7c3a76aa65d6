//! The named presets: values of the recipe, the run control and the grid sampling.

use ddpm_diffusion::{BetaKind, GuidanceInterval, Prediction, SamplerConfig, Variance};
use ddpm_run::{NO_GUIDANCE, SampleSettings};
use ddpm_unet::ModelKind;

use crate::{
    DEFAULT_SNR_GAMMA, Every, LossWeight, LrSchedule, Recipe, Result, RunControl, TrainError,
};

/// The names of the presets, in the order `--help` lists them.
pub const PRESETS: [&str; 6] = [
    "quick",
    "ref-mnist",
    "ref-mnist-res",
    "ref-anime",
    "ref-anime-small",
    "anime",
];

/// Where a preset's training images come from when no `--dataset` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultData {
    /// The embedded 2,000 digits (the `quick` preset: a fixed, small job anywhere).
    Embedded,
    /// `data/mnist` when it holds MNIST, else the embedded digits.
    MnistIfPresent,
    /// `data/anime-faces`.
    Anime,
}

/// A named starting point: what to train, how to drive the run, how to sample its grids.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// The training knobs.
    pub recipe: Recipe,
    /// Run length, periods, checkpoints kept.
    pub control: RunControl,
    /// Preview and final grids.
    pub sample: SampleSettings,
    /// The data trained on when no `--dataset` is given.
    pub default_data: DefaultData,
}

/// The quick preset's guidance scale: the lowest measured at which every digit is drawn as asked
/// ≥ 97% of the time from two seeds (98% for the weakest both times; at w = 5 the 5s got 98% and
/// 92%; docs/experiments/guidance.md). Lower scales give more varied digits (the Fréchet
/// distance is lowest near 1.5) but more wrong ones; no guidance interval measured did better.
const QUICK_GUIDANCE: f64 = 8.0;

const REFERENCE_GRID: SampleSettings = SampleSettings {
    n: 81,
    nrow: 9,
    sampler: SamplerConfig::Ddpm {
        variance: Variance::Beta,
        clip_x0: false,
    },
    guidance: NO_GUIDANCE,
    guidance_interval: GuidanceInterval::ALL,
};

impl Preset {
    /// The preset called `name` (one of [`PRESETS`]).
    pub fn named(name: &str) -> Result<Self> {
        let faithful = Preset {
            recipe: Recipe {
                model: ModelKind::Ref,
                channels: vec![32, 64, 128, 256],
                pe_dim: 20,
                n_steps: 1000,
                schedule: BetaKind::Linear,
                prediction: Prediction::Epsilon,
                loss_weight: LossWeight::None,
                snr_gamma: DEFAULT_SNR_GAMMA,
                offset_noise: 0.0,
                zero_terminal_snr: false,
                batch_size: 1024,
                lr: 1e-3,
                weight_decay: 0.0,
                epochs: 1000,
                ema: 0.0,
                warmup_steps: 0,
                lr_schedule: LrSchedule::Constant,
                grad_clip: None,
                hflip: false,
                conditional: false,
                cond_drop: 0.0,
                seed: 0,
            },
            control: RunControl {
                max_steps: None,
                log_every: 50,
                save_every: Some(Every::Epochs(50)),
                sample_every: Some(Every::Epochs(50)),
                keep_last: None,
                data_dir: None,
            },
            sample: REFERENCE_GRID,
            default_data: DefaultData::MnistIfPresent,
        };
        let every = |n| RunControl {
            save_every: Some(Every::Epochs(n)),
            sample_every: Some(Every::Epochs(n)),
            ..faithful.control.clone()
        };
        Ok(match name {
            "quick" => Preset {
                recipe: Recipe {
                    model: ModelKind::Modern,
                    channels: vec![16, 32, 32],
                    // T = 100 with the linear schedule scaled to keep ᾱ_T near zero: sampling
                    // the final grid takes seconds instead of minutes, and that time goes to
                    // training.
                    n_steps: 100,
                    schedule: BetaKind::LinearScaled,
                    batch_size: 64,
                    lr: 2e-3,
                    // 32 batches per epoch of the 2,000 embedded digits: 704 steps. Conditioned
                    // on the digit (a tenth of the labels dropped, for guidance) and weighted
                    // by min-SNR-γ, it beats the earlier unconditional 1,280-step preset
                    // (docs/training.md, "The quick preset, measured").
                    epochs: 22,
                    ema: 0.99,
                    warmup_steps: 50,
                    lr_schedule: LrSchedule::Cosine,
                    grad_clip: Some(1.0),
                    loss_weight: LossWeight::MinSnr,
                    conditional: true,
                    cond_drop: 0.1,
                    ..faithful.recipe.clone()
                },
                control: RunControl {
                    log_every: 25,
                    save_every: Some(Every::Steps(200)),
                    sample_every: None,
                    ..faithful.control.clone()
                },
                sample: SampleSettings {
                    // DDIM η = 1 with x̂0 clipping at 50 evaluations: on the earlier preset's
                    // model the fastest sampler within 10% of DDPM-100, 1,000 samples per point
                    // (docs/experiments/samplers.md).
                    sampler: SamplerConfig::ddim(50, 1.0, true),
                    guidance: QUICK_GUIDANCE,
                    ..REFERENCE_GRID
                },
                default_data: DefaultData::Embedded,
            },
            "ref-mnist" => faithful,
            "ref-mnist-res" => Preset {
                recipe: Recipe {
                    model: ModelKind::Res,
                    channels: vec![10, 20, 40, 80],
                    pe_dim: 128,
                    batch_size: 512,
                    epochs: 100,
                    ..faithful.recipe
                },
                control: every(10),
                ..faithful
            },
            "ref-anime" => Preset {
                recipe: Recipe {
                    batch_size: 512,
                    lr: 3e-4,
                    epochs: 3000,
                    ..faithful.recipe
                },
                control: every(100),
                default_data: DefaultData::Anime,
                ..faithful
            },
            "ref-anime-small" => Preset {
                recipe: Recipe {
                    model: ModelKind::RefBn,
                    channels: vec![16, 32, 64, 128],
                    pe_dim: 32,
                    n_steps: 800,
                    batch_size: 512,
                    lr: 2e-3,
                    epochs: 1500,
                    ..faithful.recipe
                },
                control: every(100),
                default_data: DefaultData::Anime,
                ..faithful
            },
            "anime" => Preset {
                recipe: Recipe {
                    model: ModelKind::Modern,
                    channels: vec![64, 128, 128, 256],
                    batch_size: 128,
                    lr: 2e-4,
                    epochs: 500,
                    ema: 0.9999,
                    warmup_steps: 1000,
                    lr_schedule: LrSchedule::Cosine,
                    grad_clip: Some(1.0),
                    hflip: true,
                    ..faithful.recipe
                },
                control: every(10),
                sample: SampleSettings {
                    sampler: SamplerConfig::ddim(100, 0.0, true),
                    ..REFERENCE_GRID
                },
                default_data: DefaultData::Anime,
            },
            _ => {
                return Err(TrainError::Config(format!(
                    "unknown preset `{name}`: choose one of {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }
}
