//! Euler's method on the probability-flow ODE in σ-space (Karras et al. 2022, "Elucidating the
//! Design Space of Diffusion-Based Generative Models", EDM, algorithm 1 without churn), as
//! diffusers' `EulerDiscreteScheduler` runs it on a VP schedule.
//!
//! In σ-space the sample is x_σ = x0 + σ·ε = x_t/sqrt(ᾱ_t) with σ = sqrt((1-ᾱ)/ᾱ), and the ODE
//! is dx_σ/dσ = (x_σ - x̂0)/σ. One step goes from σ_i to σ_{i+1} along that derivative, one
//! network evaluation per step; the last goes to σ = 0, x0 itself.
//!
//! Options:
//! - `steps`: the number of noise levels, hence of network evaluations (1..=T);
//! - `karras`: `false` places the levels at the fractional timesteps linspace(0, T-1, steps),
//!   decreasing, with σ interpolated linearly between the schedule's (diffusers'
//!   `timestep_spacing = "linspace"`, `interpolation_type = "linear"`); `true` spaces them
//!   uniformly in σ^(1/7) between the schedule's σ_max and σ_min (EDM eq. 5, diffusers'
//!   `use_karras_sigmas`), the network seeing the fractional timestep of each level.
//!
//! Deterministic (no churn, s_churn = 0): no noise is drawn.

use candle_core::Tensor;

use super::sigmas::{alpha_bar_of, karras_sigmas, sigma_at, sigma_to_t, vp_sigmas};
use super::{Sampler, combine};
use crate::error::invalid;
use crate::{NoiseSource, Prediction, Result, Schedule};

/// Euler sampling in σ-space (EDM, Karras et al. 2022), diffusers' `EulerDiscreteScheduler`
/// with `final_sigmas_type = "zero"` and no churn.
///
/// The network sees the VP sample x_t = x_σ/sqrt(σ²+1) (what diffusers' `scale_model_input`
/// gives) at the fractional timestep of σ, and each step returns the VP sample at the next
/// level.
#[derive(Debug, Clone)]
pub struct Euler {
    prediction: Prediction,
    levels: Levels,
}

impl Euler {
    /// An Euler sampler over `steps` noise levels (1..=T) of `schedule`, Karras-spaced when
    /// `karras`, reading the network output as `prediction`.
    pub fn new(
        schedule: &Schedule,
        prediction: Prediction,
        steps: usize,
        karras: bool,
    ) -> Result<Self> {
        Ok(Self {
            prediction,
            levels: Levels::new(schedule, steps, karras, "Euler")?,
        })
    }

    /// The σ of the sample that evaluation `i`'s step returns (0 after the last).
    pub fn sigma_after(&self, i: usize) -> f64 {
        self.levels.sigmas[i + 1]
    }

    /// The noise levels visited, decreasing, followed by the final 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.levels.sigmas
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.levels.times
    }

    /// x at σ_i → x at σ_{i+1} (x0 after the last level).
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let (sigma, next) = self.levels.pair(i, "Euler")?;
        let x0 = self
            .prediction
            .x0_at(alpha_bar_of(sigma), x, model_output)?;
        euler_to(x, &x0, sigma, next)
    }
}

/// The noise levels of an Euler or Heun run and the network's time input at each.
#[derive(Debug, Clone)]
pub(super) struct Levels {
    /// σ_0 > σ_1 > … > σ_{steps-1}, then 0.
    pub(super) sigmas: Vec<f64>,
    /// The fractional timestep of each σ but the final 0.
    pub(super) times: Vec<f64>,
}

impl Levels {
    /// The `steps` levels (checked in 1..=T) of `schedule`, linspace- or Karras-spaced;
    /// `who` names the sampler in errors.
    pub(super) fn new(schedule: &Schedule, steps: usize, karras: bool, who: &str) -> Result<Self> {
        let n_steps = schedule.n_steps();
        check_steps(n_steps, steps, who)?;
        let table = vp_sigmas(schedule);
        let (mut sigmas, times) = if karras {
            let log_sigmas: Vec<f64> = table.iter().map(|s| s.ln()).collect();
            let sigmas = karras_sigmas(table[0], table[n_steps - 1], steps);
            let times = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
            (sigmas, times)
        } else {
            let times = linspace_times(n_steps, steps);
            (times.iter().map(|&t| sigma_at(t, &table)).collect(), times)
        };
        sigmas.push(0.0);
        Ok(Self { sigmas, times })
    }

    /// (σ_k, σ_{k+1}) of level `k`, or an error past the last.
    pub(super) fn pair(&self, k: usize, who: &str) -> Result<(f64, f64)> {
        match (self.sigmas.get(k), self.sigmas.get(k + 1)) {
            (Some(&sigma), Some(&next)) => Ok((sigma, next)),
            _ => invalid(
                "i",
                format!(
                    "step {k} is past this {who} sampler's {} levels",
                    self.sigmas.len() - 1
                ),
            ),
        }
    }
}

/// Checks `steps` in 1..=T.
pub(super) fn check_steps(n_steps: usize, steps: usize, who: &str) -> Result<()> {
    if steps == 0 || steps > n_steps {
        return invalid(
            "steps",
            format!("{who} needs 1..={n_steps} steps, got {steps}"),
        );
    }
    Ok(())
}

/// linspace(0, T-1, steps), decreasing, in f64 (diffusers' "linspace" spacing, kept
/// fractional). One step is the full noise level T-1 (numpy's one-point linspace would be 0,
/// a sample that starts almost clean).
pub(super) fn linspace_times(n_steps: usize, steps: usize) -> Vec<f64> {
    let last = (n_steps - 1) as f64;
    if steps == 1 {
        return vec![last];
    }
    (0..steps)
        .rev()
        .map(|i| i as f64 * last / (steps - 1) as f64)
        .collect()
}

/// The network's time inputs of a Euler config when they don't depend on the schedule (the
/// linspace levels); the Karras levels do, so they need the built sampler.
pub(super) fn config_times(
    n_steps: usize,
    steps: usize,
    karras: bool,
    who: &str,
) -> Result<Vec<f64>> {
    check_steps(n_steps, steps, who)?;
    if karras {
        return invalid(
            "karras",
            format!(
                "{who}'s Karras timesteps depend on the schedule's σ: build the sampler and read \
                 its timesteps()"
            ),
        );
    }
    Ok(linspace_times(n_steps, steps))
}

/// The VP sample at σ-level `next` after an Euler step from the VP sample `x` at `sigma`
/// whose x̂0 is `x0`.
///
/// x_σ' = x_σ + (σ' - σ)·(x_σ - x̂0)/σ = (σ'/σ)·x_σ + (1 - σ'/σ)·x̂0 with x_σ = x·sqrt(σ²+1),
/// then x' = x_σ'/sqrt(σ'²+1), folded into two f64 coefficients (x̂0 itself at σ' = 0).
pub(super) fn euler_to(x: &Tensor, x0: &Tensor, sigma: f64, next: f64) -> Result<Tensor> {
    let ratio = next / sigma;
    let out = (next * next + 1.0).sqrt();
    combine(
        x,
        ratio * (sigma * sigma + 1.0).sqrt() / out,
        x0,
        (1.0 - ratio) / out,
    )
}

/// The σ-space derivative d = (x_σ - x̂0)/σ at the VP sample `x` of level `sigma`.
pub(super) fn derivative(x: &Tensor, x0: &Tensor, sigma: f64) -> Result<Tensor> {
    combine(x, (sigma * sigma + 1.0).sqrt() / sigma, x0, -1.0 / sigma)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::BetaKind;

    #[test]
    fn linspace_times_are_decreasing_and_span_the_schedule() {
        assert_eq!(linspace_times(10, 4), [9.0, 6.0, 3.0, 0.0]);
        assert_eq!(linspace_times(10, 1), [9.0]);
        let s = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
        let levels = Levels::new(&s, 7, false, "Euler").unwrap();
        let table = vp_sigmas(&s);
        assert_eq!(levels.sigmas.len(), 8);
        assert_eq!(levels.sigmas[0], table[99]);
        assert_eq!(levels.sigmas[6], table[0]);
        assert_eq!(levels.sigmas[7], 0.0);
    }
}
