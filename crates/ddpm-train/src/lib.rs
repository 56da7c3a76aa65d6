//! Training a DDPM: from a [`TrainConfig`] (a named [`Preset`] plus explicit overrides) to a
//! run directory with checkpoints, metrics, a loss curve and sample grids.
//!
//! Data flow of one step ([`Trainer::step`]): the dataset's next batch (shuffled per epoch
//! from the seed) → t ~ U[0, T) and ε ~ N(0, I) (plus optional offset noise) from the run's
//! [`ddpm_diffusion::NoiseRng`] → x_t by forward noising → the UNet's output at (x_t, t) →
//! its MSE against the target (ε, v or x0; optionally Min-SNR weighted: [`Objective`]) →
//! backward → optional gradient clipping → [`Adam`] (PyTorch semantics) at the scheduled learning rate → [`Ema`] of the
//! weights. Checkpoints (atomic, with everything a bit-exact resume needs) are written through
//! `ddpm-run`'s format.
//!
//! - [`config`]: the training spec (frozen, hashed) and the run control (free on resume).
//! - [`Preset`]: the named starting points.
//! - [`Trainer`] and [`train`]: setup/resume, the step, the periodic hooks, the loop.

pub mod config;
mod ema;
mod error;
mod loss;
mod metrics;
mod optim;
mod presets;
mod run;
mod state;
mod trainer;

pub use config::{
    ChannelList, ControlOverrides, Every, GradClip, LrSchedule, Overrides, Recipe, RecipeOverrides,
    RunControl, TrainConfig, TrainingSpec,
};
/// The data-parallel world of a process (re-exported for callers of [`train`]).
pub use ddpm_dist::WorldInfo;
pub use ema::Ema;
pub use error::{Result, TrainError};
pub use loss::{
    DEFAULT_SNR_GAMMA, LossWeight, Objective, diffusion_loss, diffusion_loss_given, draw_t_eps,
};
pub use metrics::{MetricsLine, plot_loss};
pub use optim::{Adam, AdamState, clip_grad_norm, learning_rate, optimizer_step};
pub use presets::{DefaultData, PRESETS, Preset};
pub use run::{RunOptions, RunSummary, train};
pub use state::{OPTIMIZER_FILE, STATE_FILE, TrainingState};
pub use trainer::{Batch, Trainer};
