use serde::{Deserialize, Serialize};

use super::{Ddim, Ddpm, Sampler, ddim, ddpm};
use crate::{Prediction, Result, Schedule, Variance};

/// How to run the reverse process: the serialisable choice of a [`Sampler`] and its settings
/// (saved runs store it, e.g. `{"kind":"ddim","steps":50,"eta":0.0,"clip_x0":true}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SamplerConfig {
    /// Ancestral DDPM over all T steps ([`Ddpm`]).
    Ddpm {
        /// The step variance.
        variance: Variance,
        /// Clip x̂0 to [-1, 1] (posterior-mean form).
        clip_x0: bool,
    },
    /// DDIM over `steps` timesteps evenly spread over 0..T, both ends included ([`Ddim`]).
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
    /// The reference's sampler: DDPM with σ² = β, no clipping.
    fn default() -> Self {
        SamplerConfig::Ddpm {
            variance: Variance::Beta,
            clip_x0: false,
        }
    }
}

impl SamplerConfig {
    /// The timesteps the sampler visits for a schedule of `n_steps` steps, in order (what
    /// [`Sampler::timesteps`] of the built sampler returns); an error if the settings are
    /// invalid.
    pub fn timesteps(&self, n_steps: usize) -> Result<Vec<usize>> {
        match *self {
            SamplerConfig::Ddpm { .. } => Ok(ddpm::timesteps(n_steps)),
            SamplerConfig::Ddim { steps, eta, .. } => ddim::timesteps(n_steps, steps, eta),
        }
    }

    /// Checks the settings against `schedule` and builds a fresh sampler (one per run) that
    /// reads the network output as `prediction`.
    pub fn build<'s>(
        &self,
        schedule: &'s Schedule,
        prediction: Prediction,
    ) -> Result<Box<dyn Sampler + 's>> {
        Ok(match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => {
                Box::new(Ddpm::new(schedule, prediction, variance, clip_x0))
            }
            SamplerConfig::Ddim {
                steps,
                eta,
                clip_x0,
            } => Box::new(Ddim::new(schedule, prediction, steps, eta, clip_x0)?),
        })
    }
}
