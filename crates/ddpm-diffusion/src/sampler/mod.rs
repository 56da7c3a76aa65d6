//! Samplers: the reverse process one step at a time, as types in the spirit of diffusers'
//! schedulers.
//!
//! A [`Sampler`] lists the timesteps it visits ([`Sampler::timesteps`]) and turns the network
//! output at each of them into the next sample ([`Sampler::step`]). It reads that output
//! through its [`Prediction`](crate::Prediction), so an ε-, v- or x0-network runs with any
//! sampler, and it keeps whatever it needs across steps in `&mut self` (a multistep solver
//! keeps its previous model outputs there): a sampler serves one run, and
//! [`SamplerConfig::build`] makes a fresh one. [`sample`](crate::sample) is the one loop that
//! drives any sampler with any [`Denoiser`](crate::Denoiser).
//!
//! The samplers:
//! - [`Ddpm`]: ancestral DDPM over all T steps (Ho et al. 2020);
//! - [`Ddim`]: DDIM over a subset of the timesteps, η from deterministic to DDPM-like
//!   (Song et al. 2021);
//! - [`DpmSolver`]: DPM-Solver++ multistep of order 1 to 3, optionally on Karras noise levels
//!   (Lu et al. 2022);
//! - [`UniPc`]: the UniPC multistep predictor-corrector, diffusers' default (Zhao et al. 2023);
//! - [`Euler`]: Euler's method on the probability-flow ODE in σ-space (Karras et al. 2022);
//! - [`Heun`]: Heun's second-order method in σ-space, two evaluations a step (Karras et al. 2022).
//!
//! **To add a sampler**: one new file in `src/sampler/` with a type implementing [`Sampler`],
//! plus one [`SamplerConfig`] variant with its match arms in [`SamplerConfig::build`] and
//! [`SamplerConfig::timesteps`]. The schedule's public accessors (f32 and f64 ᾱ, β, variances)
//! and [`Prediction`](crate::Prediction)'s conversions are all the step math needs.
//!
//! Between steps the sample is always in the DDPM parametrisation
//! x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε, the one the network sees and the loop reports; a sampler
//! that works in another space (σ-space for Euler or Heun) converts inside its step.

mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod euler;
mod heun;
pub mod sigmas;
mod unipc;

use candle_core::Tensor;

pub use config::{SAMPLER_NAMES, SamplerChoices, SamplerConfig};
pub use ddim::{Ddim, Spacing};
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolver;
pub use euler::Euler;
pub use heun::Heun;
pub use unipc::UniPc;

use crate::{NoiseSource, Prediction, Result};

/// One run of the reverse process, step by step.
pub trait Sampler {
    /// The network's time input at each of its evaluations, in the order of the calls to
    /// [`Sampler::step`]: one entry per evaluation (a second-order step that evaluates twice
    /// lists its time twice). Integers for samplers on the schedule's own timesteps; Euler
    /// and Heun may ask for times between them.
    fn timesteps(&self) -> &[f64];

    /// Given the network output `model_output` of evaluation `i` (at time
    /// `timesteps()[i]` and the sample `x`), returns the sample for evaluation `i + 1`, or x0
    /// after the last one. Draws from `noise` only when the step adds noise.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    fn timesteps(&self) -> &[f64] {
        (**self).timesteps()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        (**self).step(model_output, i, x, noise)
    }
}

/// Fails unless `i` is one of the `evaluations` of the sampler called `name`.
fn check_evaluation(i: usize, evaluations: usize, name: &str) -> Result<()> {
    if i >= evaluations {
        return crate::error::invalid(
            "i",
            format!("evaluation {i} is past the {evaluations} evaluations of this {name} sampler"),
        );
    }
    Ok(())
}

/// Fails unless a multistep sampler called `name`, whose next evaluation is `next`, is given
/// that one (or 0, which starts a run afresh).
fn check_in_order(i: usize, next: usize, name: &str) -> Result<()> {
    if i != 0 && i != next {
        return crate::error::invalid(
            "i",
            format!(
                "{name} is multistep and takes its evaluations in order: expected {next}, got {i}"
            ),
        );
    }
    Ok(())
}

/// The data prediction x̂0 of a network output at noise level ᾱ, clipped to [-1, 1] when
/// `clip_x0`: what the multistep solvers build their updates from.
fn data_prediction(
    prediction: Prediction,
    alpha_bar: f64,
    x: &Tensor,
    output: &Tensor,
    clip_x0: bool,
) -> Result<Tensor> {
    let x0 = prediction.x0_at(alpha_bar, x, output)?;
    Ok(if clip_x0 { x0.clamp(-1f32, 1f32)? } else { x0 })
}

/// Integer timesteps as the network's time inputs.
fn as_times(timesteps: &[usize]) -> Vec<f64> {
    timesteps.iter().map(|&t| t as f64).collect()
}

/// `a·ca + b·cb` with f64 coefficients.
fn combine(a: &Tensor, ca: f64, b: &Tensor, cb: f64) -> Result<Tensor> {
    Ok((a.affine(ca, 0.0)? + b.affine(cb, 0.0)?)?)
}

/// `x + σ·z` with z ~ N(0, I) of x's shape drawn from `noise`.
fn add_scaled_noise(x: Tensor, sigma: f64, noise: &mut dyn NoiseSource) -> Result<Tensor> {
    let z = noise.randn(x.shape(), x.device())?;
    Ok((x + z.affine(sigma, 0.0)?)?)
}
