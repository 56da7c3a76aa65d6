//! The diffusion math of DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) over candle tensors.
//!
//! - **Schedules**: [`Schedule`] holds β, α and ᾱ (f32, and ᾱ in f64) for a [`BetaKind`] (the
//!   reference's linear schedule bit for bit, a T-rescaled linear one, and the cosine
//!   schedule), and the reverse-step variances ([`Variance`]).
//! - **Noising**: [`Schedule::add_noise`] gives x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with one
//!   timestep per sample; [`NoiseRng`] is the seeded, resumable source of every Gaussian draw
//!   (any [`NoiseSource`] will do, e.g. recorded draws of another implementation).
//! - **Prediction targets**: [`Prediction`] is the one place that turns a network output into
//!   ε̂ and x̂0 and that gives the training target, so any network works with any sampler.
//! - **Samplers**: the [`Sampler`] trait (the timesteps visited, one reverse step at a time,
//!   per-run state in `&mut self`) and its implementations in [`sampler`]: [`sampler::Ddpm`]
//!   and [`sampler::Ddim`]. [`SamplerConfig`] is their serialisable description and builds
//!   them ([`SamplerConfig::build`]).
//! - **The loop**: [`sample`] drives any sampler with any [`Denoiser`] (the network, or a
//!   closure); [`generate`] runs it over batches of images.
//!
//! To add a sampler: one file in `src/sampler/` implementing [`Sampler`], plus one
//! [`SamplerConfig`] variant (with its arms in [`SamplerConfig::build`] and
//! [`SamplerConfig::timesteps`]).
//!
//! Everything here runs on whatever device the tensors live on (CPU or CUDA).

mod error;
mod generate;
mod guidance;
mod noise;
mod prediction;
pub mod sampler;
mod sampling;
mod schedule;

pub use error::{DiffusionError, Result};
pub use generate::{GenerateOptions, generate};
pub use guidance::{Guidance, GuidanceInterval, Guided, class_rows};
pub use noise::{BatchRows, NoiseRng, NoiseRngState, NoiseSource};
pub use prediction::Prediction;
pub use sampler::{SAMPLER_NAMES, Sampler, SamplerChoices, SamplerConfig};
pub use sampling::{Denoiser, StepInfo, sample};
pub use schedule::{BetaKind, Schedule, Variance};
