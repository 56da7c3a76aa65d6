use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::{DdimOptions, NoiseSource, Result, Schedule, Variance};

/// Anything that predicts the noise ε̂ in x_t: the denoising network in practice, a closure in
/// tests. `t` is a (B,) u32 tensor of timesteps on the same device as `x_t`.
pub trait Denoiser {
    /// Returns ε̂(x_t, t), of the same shape as `x_t`.
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor>;
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
{
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self(x_t, t)
    }
}

/// How to run the reverse process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SamplerConfig {
    /// Ancestral DDPM over all T steps.
    Ddpm {
        /// The step variance.
        variance: Variance,
        /// Clip x̂0 to [-1, 1] (posterior-mean form).
        clip_x0: bool,
    },
    /// DDIM over `steps` timesteps evenly spread over 0..T (both ends included).
    Ddim {
        /// Number of network evaluations, 1..=T.
        steps: usize,
        /// 0 = deterministic, 1 = DDPM-like noise.
        eta: f64,
        /// Clip x̂0 to [-1, 1].
        clip_x0: bool,
    },
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::Ddpm {
            variance: Variance::Beta,
            clip_x0: false,
        }
    }
}

/// What the sampling loop reports after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    /// How many steps are done, 1..=`total`.
    pub done: usize,
    /// The number of steps of the whole run.
    pub total: usize,
    /// The timestep just denoised.
    pub t: usize,
    /// The sample after this step.
    pub x: &'a Tensor,
}

impl SamplerConfig {
    /// The timesteps visited, in decreasing order.
    pub fn timesteps(&self, n_steps: usize) -> Result<Vec<usize>> {
        match *self {
            SamplerConfig::Ddpm { .. } => Ok((0..n_steps).rev().collect()),
            SamplerConfig::Ddim { steps, eta, .. } => {
                if steps == 0 || steps > n_steps {
                    return invalid(
                        "steps",
                        format!("DDIM needs 1..={n_steps} steps, got {steps}"),
                    );
                }
                if !(0.0..=1.0).contains(&eta) {
                    return invalid("eta", format!("η must be in [0, 1], got {eta}"));
                }
                if steps == 1 {
                    return Ok(vec![n_steps - 1]);
                }
                let last = (n_steps - 1) as f64;
                let mut ts: Vec<usize> = (0..steps)
                    .map(|i| (i as f64 * last / (steps - 1) as f64).round() as usize)
                    .collect();
                ts.dedup();
                ts.reverse();
                Ok(ts)
            }
        }
    }
}

/// Runs the reverse process from `x_t` (normally pure noise x_T) down to x0.
///
/// `noise` supplies every Gaussian draw (none is drawn for deterministic steps), and `on_step`
/// sees each intermediate sample (for progress bars and trajectories).
pub fn sample(
    schedule: &Schedule,
    sampler: &SamplerConfig,
    model: &impl Denoiser,
    x_t: Tensor,
    noise: &mut impl NoiseSource,
    mut on_step: impl FnMut(StepInfo<'_>),
) -> Result<Tensor> {
    let timesteps = sampler.timesteps(schedule.n_steps())?;
    let batch = x_t.dim(0)?;
    let total = timesteps.len();
    let mut x = x_t;
    for (i, &t) in timesteps.iter().enumerate() {
        let t_tensor = Tensor::full(t as u32, batch, x.device())?.to_dtype(DType::U32)?;
        let eps = model.predict(&x, &t_tensor)?;
        x = match *sampler {
            SamplerConfig::Ddpm { variance, clip_x0 } => {
                let z = if t > 0 {
                    Some(noise.randn(x.shape(), x.device())?)
                } else {
                    None
                };
                schedule.ddpm_step(&x, t, &eps, z.as_ref(), variance, clip_x0)?
            }
            SamplerConfig::Ddim { eta, clip_x0, .. } => {
                let t_prev = timesteps.get(i + 1).copied();
                let z = if eta > 0.0 && t_prev.is_some() {
                    Some(noise.randn(x.shape(), x.device())?)
                } else {
                    None
                };
                schedule.ddim_step(
                    &x,
                    t,
                    t_prev,
                    &eps,
                    z.as_ref(),
                    DdimOptions { eta, clip_x0 },
                )?
            }
        };
        // Cut the autograd history: the network's weights are trainable variables, so without
        // this every step would keep all activations of every earlier step alive.
        x = x.detach();
        on_step(StepInfo {
            done: i + 1,
            total,
            t,
            x: &x,
        });
    }
    Ok(x)
}
