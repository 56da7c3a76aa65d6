//! Heun's second-order method on the probability-flow ODE in σ-space (Karras et al. 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", EDM, algorithm 1
//! without churn), as diffusers' `HeunDiscreteScheduler` runs it on a VP schedule.
//!
//! Each step from σ_k to σ_{k+1} first takes an Euler step with d_k = (x_σ - x̂0)/σ_k, then
//! evaluates the network again at the Euler estimate (at σ_{k+1}) and restarts from x_σ with the
//! mean of the two derivatives (the trapezoidal rule). The last step, to σ = 0, stays a plain
//! Euler step (d is undefined at σ = 0). `steps` noise levels thus cost 2·steps - 1 network
//! evaluations, listed in [`Sampler::timesteps`] as diffusers lists them: every level's time
//! twice, except the first's.
//!
//! Options:
//! - `steps`: the number of noise levels (1..=T);
//! - `karras`: `false` places the levels at the fractional timesteps linspace(0, T-1, steps),
//!   decreasing, σ interpolated linearly between the schedule's (diffusers'
//!   `timestep_spacing = "linspace"`); `true` spaces them uniformly in σ^(1/7) between the
//!   schedule's σ_max and σ_min (EDM eq. 5, diffusers' `use_karras_sigmas`), the network
//!   seeing the fractional timestep of each level.
//!
//! Deterministic (no churn): no noise is drawn.

use candle_core::Tensor;

use super::euler::{Levels, config_times, derivative, euler_to};
use super::sigmas::alpha_bar_of;
use super::{Sampler, combine};
use crate::error::invalid;
use crate::{NoiseSource, Prediction, Result, Schedule};

/// Heun sampling in σ-space (EDM, Karras et al. 2022), diffusers' `HeunDiscreteScheduler`.
///
/// The network sees the VP sample x_t = x_σ/sqrt(σ²+1) at the fractional timestep of σ; every
/// evaluation's step returns the VP sample at the next level (the Euler estimate after a
/// first-order evaluation, the corrected sample after the second).
#[derive(Debug, Clone)]
pub struct Heun {
    prediction: Prediction,
    levels: Levels,
    times: Vec<f64>,
    /// What the correction needs from the first-order evaluation just made.
    pending: Option<FirstOrder>,
}

/// The state a first-order evaluation leaves for its correction.
#[derive(Debug, Clone)]
struct FirstOrder {
    /// The evaluation that made it.
    i: usize,
    /// The VP sample the step started from.
    x: Tensor,
    /// Its σ-space derivative d_k.
    d: Tensor,
}

impl Heun {
    /// A Heun sampler over `steps` noise levels (1..=T, 2·steps - 1 network evaluations) of
    /// `schedule`, Karras-spaced when `karras`, reading the network output as `prediction`.
    pub fn new(
        schedule: &Schedule,
        prediction: Prediction,
        steps: usize,
        karras: bool,
    ) -> Result<Self> {
        let levels = Levels::new(schedule, steps, karras, "Heun")?;
        let times = evaluation_times(&levels.times);
        Ok(Self {
            prediction,
            levels,
            times,
            pending: None,
        })
    }

    /// The σ of the sample that evaluation `i`'s step returns (0 after the last).
    pub fn sigma_after(&self, i: usize) -> f64 {
        self.levels.sigmas[i / 2 + 1]
    }

    /// The noise levels visited, decreasing, followed by the final 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.levels.sigmas
    }
}

/// The level times with every one after the first repeated (diffusers' Heun timesteps).
fn evaluation_times(level_times: &[f64]) -> Vec<f64> {
    let mut times = Vec::with_capacity(2 * level_times.len());
    for (k, &t) in level_times.iter().enumerate() {
        if k > 0 {
            times.push(t);
        }
        times.push(t);
    }
    times
}

/// The network's time inputs of a Heun config (see [`config_times`]).
pub(super) fn heun_config_times(n_steps: usize, steps: usize, karras: bool) -> Result<Vec<f64>> {
    Ok(evaluation_times(&config_times(
        n_steps, steps, karras, "Heun",
    )?))
}

impl Sampler for Heun {
    fn timesteps(&self) -> &[f64] {
        &self.times
    }

    /// Even `i`: the Euler step from level i/2 to the next (kept for the correction); odd `i`:
    /// the corrected step over the same interval, from the network output at the Euler
    /// estimate.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        super::check_evaluation(i, self.times.len(), "Heun")?;
        let (sigma, next) = self.levels.pair(i / 2, "Heun")?;
        if i.is_multiple_of(2) {
            let x0 = self
                .prediction
                .x0_at(alpha_bar_of(sigma), x, model_output)?;
            // No correction after the last level (to σ = 0): no state to keep.
            self.pending = if next > 0.0 {
                Some(FirstOrder {
                    i,
                    x: x.clone(),
                    d: derivative(x, &x0, sigma)?,
                })
            } else {
                None
            };
            return euler_to(x, &x0, sigma, next);
        }
        let Some(first) = self.pending.take().filter(|p| p.i + 1 == i) else {
            return invalid(
                "i",
                format!(
                    "Heun's correction {i} must follow its first-order evaluation {}",
                    i - 1
                ),
            );
        };
        let x0 = self.prediction.x0_at(alpha_bar_of(next), x, model_output)?;
        let d_next = derivative(x, &x0, next)?;
        // x_σ' = x_σ + (σ' - σ)·(d + d')/2 from the first evaluation's x_σ = x·sqrt(σ²+1),
        // returned as x_σ'/sqrt(σ'²+1).
        let out = (next * next + 1.0).sqrt();
        let half_dt = (next - sigma) / (2.0 * out);
        let slopes = (first.d + d_next)?;
        combine(
            &first.x,
            (sigma * sigma + 1.0).sqrt() / out,
            &slopes,
            half_dt,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_after_the_first_is_evaluated_twice() {
        assert_eq!(
            evaluation_times(&[9.0, 6.0, 3.0, 0.0]),
            [9.0, 6.0, 6.0, 3.0, 3.0, 0.0, 0.0]
        );
        assert_eq!(evaluation_times(&[9.0]), [9.0]);
    }
}
