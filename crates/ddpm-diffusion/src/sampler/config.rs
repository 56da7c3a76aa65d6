use serde::{Deserialize, Serialize};

use super::{Ddim, Ddpm, DpmSolver, Sampler, Spacing, ddim, ddpm, dpm_solver};
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
    /// DPM-Solver++ multistep ([`DpmSolver`], Lu et al. 2022), deterministic, e.g.
    /// `{"kind":"dpm++","steps":20,"order":2,"karras":false,"lower_order_final":true}` (2M).
    #[serde(rename = "dpm++")]
    DpmSolver {
        /// Number of network evaluations, 1..=T: diffusers' "linspace" timesteps, or the
        /// Karras noise levels.
        steps: usize,
        /// The solver's order, 1..=3 (2 is the usual choice).
        order: usize,
        /// Karras et al.'s noise levels (diffusers' `use_karras_sigmas`). The timesteps
        /// [`SamplerConfig::timesteps`] lists for them are the linear β schedule's.
        karras: bool,
        /// With fewer than 15 steps, order 3 drops to 2 at the second-to-last step (true, the
        /// default, as diffusers); the last step is first order in any case.
        #[serde(default = "yes")]
        lower_order_final: bool,
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
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras,
                ..
            } => dpm_solver::timesteps(n_steps, steps, order, karras)?,
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
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras,
                lower_order_final,
            } => Box::new(DpmSolver::new(
                schedule,
                prediction,
                steps,
                order,
                karras,
                lower_order_final,
            )?),
        })
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}
