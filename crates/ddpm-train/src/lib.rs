//! Training a DDPM: from a [`TrainConfig`] (a named preset plus explicit overrides) to a run
//! directory with checkpoints, metrics, a loss curve and sample grids.
//!
//! Data flow of one step ([`run::train`]): the dataset's next batch (shuffled per epoch from
//! the seed) → t ~ U[0, T) and ε ~ N(0, I) from the run's [`ddpm_diffusion::NoiseRng`] → x_t by
//! forward noising → ε̂ = UNet(x_t, t) → MSE(ε̂, ε) → backward → optional gradient clipping →
//! [`Adam`] (PyTorch semantics) at the scheduled learning rate → [`Ema`] of the weights.
//! [`checkpoint`] writes everything a bit-exact resume needs, atomically.

pub mod checkpoint;
mod config;
mod data;
mod device;
mod ema;
mod error;
mod loss;
mod metrics;
mod optim;
mod run;

pub use config::{
    DatasetSpec, DefaultData, Every, LrSchedule, Overrides, PRESETS, Recipe, SampleSettings,
    TrainConfig,
};
pub use data::load_dataset;
/// The data-parallel world of a process (re-exported for callers of [`train`]).
pub use ddpm_dist::WorldInfo;
/// The network families (re-exported for command lines).
pub use ddpm_unet::ModelKind;
pub use device::{configure_cpu_threads, select_device, set_candle_threads, tune_allocator};
pub use ema::Ema;
pub use error::{Result, TrainError};
pub use loss::{diffusion_loss, diffusion_loss_given, draw_t_eps};
pub use metrics::{MetricsLine, plot_loss};
pub use optim::{Adam, AdamState, clip_grad_norm, learning_rate, optimizer_step};
pub use run::{RunOptions, RunSummary, train};
