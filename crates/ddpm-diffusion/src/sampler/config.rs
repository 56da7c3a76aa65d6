use serde::{Deserialize, Serialize};

use super::{Ddim, Ddpm, Euler, Heun, Sampler, Spacing, UniPc, ddim, ddpm, euler, heun, unipc};
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
    /// DDIM over `steps` timesteps ([`Ddim`]): by default evenly spread over 0..T, both ends
    /// included.
    Ddim {
        /// Number of network evaluations, 1..=T.
        steps: usize,
        /// 0 = deterministic, 1 = DDPM-like noise.
        eta: f64,
        /// Clip x̂0 to [-1, 1].
        clip_x0: bool,
        /// Where the timesteps sit ([`Spacing`]; left out of the JSON when `even`).
        #[serde(default, skip_serializing_if = "Spacing::is_even")]
        spacing: Spacing,
        /// End the chain at x0 (true, the default) or at ᾱ_0 (diffusers'
        /// `set_alpha_to_one = false`, as Stable Diffusion's configuration).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        set_alpha_to_one: bool,
    },
    /// UniPC multistep predictor-corrector over `steps` timesteps ([`UniPc`]): diffusers'
    /// default configuration ("linspace" spacing, ending at x0).
    #[serde(rename = "unipc")]
    UniPc {
        /// Number of network evaluations, 1..=T.
        steps: usize,
    },
    /// Euler in σ-space over `steps` noise levels ([`Euler`], Karras et al. 2022).
    #[serde(rename = "euler")]
    Euler {
        /// Number of noise levels = network evaluations, 1..=T.
        steps: usize,
        /// Karras-spaced levels (else at linspace(0, T-1, steps)).
        karras: bool,
    },
    /// Heun in σ-space over `steps` noise levels, 2·steps - 1 evaluations ([`Heun`], Karras
    /// et al. 2022).
    #[serde(rename = "heun")]
    Heun {
        /// Number of noise levels, 1..=T.
        steps: usize,
        /// Karras-spaced levels (else at linspace(0, T-1, steps)).
        karras: bool,
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
    /// DDIM over `steps` evenly spread timesteps ending at x0 (our spacing).
    pub fn ddim(steps: usize, eta: f64, clip_x0: bool) -> Self {
        SamplerConfig::Ddim {
            steps,
            eta,
            clip_x0,
            spacing: Spacing::Even,
            set_alpha_to_one: true,
        }
    }

    /// The timesteps the sampler visits for a schedule of `n_steps` steps, in order (what
    /// [`Sampler::timesteps`] of the built sampler returns); an error if the settings are
    /// invalid.
    pub fn timesteps(&self, n_steps: usize) -> Result<Vec<f64>> {
        let steps = match *self {
            SamplerConfig::Ddpm { .. } => ddpm::timesteps(n_steps),
            SamplerConfig::Ddim {
                steps,
                eta,
                spacing,
                ..
            } => ddim::timesteps(n_steps, steps, eta, spacing)?,
            SamplerConfig::UniPc { steps } => unipc::timesteps(n_steps, steps)?,
            SamplerConfig::Euler { steps, karras } => {
                return euler::config_times(n_steps, steps, karras, "Euler");
            }
            SamplerConfig::Heun { steps, karras } => {
                return heun::heun_config_times(n_steps, steps, karras);
            }
        };
        Ok(super::as_times(&steps))
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
                spacing,
                set_alpha_to_one,
            } => Box::new(Ddim::new(
                schedule,
                prediction,
                steps,
                eta,
                clip_x0,
                spacing,
                set_alpha_to_one,
            )?),
            SamplerConfig::UniPc { steps } => Box::new(UniPc::new(schedule, prediction, steps)?),
            SamplerConfig::Euler { steps, karras } => {
                Box::new(Euler::new(schedule, prediction, steps, karras)?)
            }
            SamplerConfig::Heun { steps, karras } => {
                Box::new(Heun::new(schedule, prediction, steps, karras)?)
            }
        })
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}
