//! The diffusion math of DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) over candle tensors.
//!
//! - [`Schedule`]: β, α and ᾱ for a [`BetaKind`] (the reference's linear schedule bit for bit, a
//!   T-rescaled linear one, and the cosine schedule), plus forward noising ([`Schedule::add_noise`]).
//! - [`Schedule::ddpm_step`] and [`Schedule::ddim_step`]: one reverse step each.
//! - [`sample`]: the reverse-process loop, driven by any ε-predictor ([`Denoiser`]) and any
//!   [`NoiseSource`] (a seeded [`NoiseRng`] for reproducible sampling).
//!
//! Everything here runs on whatever device the tensors live on (CPU or CUDA).

mod error;
mod generate;
mod noise;
mod sampling;
mod schedule;

pub use error::{DiffusionError, Result};
pub use generate::{GenerateOptions, generate};
pub use noise::{NoiseRng, NoiseRngState, NoiseSource};
pub use sampling::{Denoiser, SamplerConfig, StepInfo, sample};
pub use schedule::{BetaKind, DdimOptions, Schedule, Variance};
