use candle_core::Tensor;

use super::{Sampler, add_scaled_noise, as_times, check_evaluation, combine, data_prediction};
use crate::{NoiseSource, Prediction, Result, Schedule, Variance};

/// Ancestral DDPM (Ho et al. 2020): every timestep from T-1 down to 0, adding noise of
/// variance σ²_t ([`Variance`]) at every step but the last.
///
/// Without clipping the mean is the reference's `(x_t - (1-α_t)/sqrt(1-ᾱ_t)·ε̂)/sqrt(α_t)`;
/// with clipping it is the posterior mean of the clipped x̂0, and so it is (unclipped) at a
/// step with α_t = 0 (the last of a zero-terminal-SNR schedule).
#[derive(Debug, Clone)]
pub struct Ddpm<'s> {
    schedule: &'s Schedule,
    prediction: Prediction,
    variance: Variance,
    clip_x0: bool,
    timesteps: Vec<usize>,
    times: Vec<f64>,
}

/// T-1, …, 1, 0.
pub(super) fn timesteps(n_steps: usize) -> Vec<usize> {
    (0..n_steps).rev().collect()
}

impl<'s> Ddpm<'s> {
    /// A DDPM sampler over all steps of `schedule`.
    pub fn new(
        schedule: &'s Schedule,
        prediction: Prediction,
        variance: Variance,
        clip_x0: bool,
    ) -> Self {
        Self {
            schedule,
            prediction,
            variance,
            clip_x0,
            times: as_times(&timesteps(schedule.n_steps())),
            timesteps: timesteps(schedule.n_steps()),
        }
    }
}

impl Sampler for Ddpm<'_> {
    fn timesteps(&self) -> &[f64] {
        &self.times
    }

    /// x_t → x_{t-1}; draws noise for every t > 0.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let s = self.schedule;
        check_evaluation(i, self.timesteps.len(), "DDPM")?;
        let t = self.timesteps[i];
        let (alpha, ab) = (s.alphas()[t], s.alpha_bars()[t]);
        // The reference's mean divides by sqrt(α_t), which is 0 at the last step of a
        // zero-terminal-SNR schedule (β = 1): there the posterior mean is used, clipped or not.
        let mean = if self.clip_x0 || alpha == 0.0 {
            let (ab, ab_prev) = (s.alpha_bars_f64()[t], s.alpha_bar_prev_f64(t));
            let x0 = data_prediction(self.prediction, ab, x, model_output, self.clip_x0)?;
            // Posterior mean c_x0·x̂0 + c_xt·x_t, from the f64 ᾱ (with the rounded f32 ᾱ,
            // c_x0 = sqrt(ᾱ_prev)·β_t/(1-ᾱ_t) is off by up to 6e-4 near t = 0).
            let c_xt = (alpha as f64).sqrt() * (1.0 - ab_prev) / (1.0 - ab);
            let c_x0 = ab_prev.sqrt() * (1.0 - alpha as f64) / (1.0 - ab);
            combine(&x0, c_x0, x, c_xt)?
        } else {
            let eps = self.prediction.eps(s, x, t, model_output)?;
            let c_eps = (1.0 - alpha) / (1.0 - ab).sqrt();
            ((x - eps.affine(c_eps as f64, 0.0)?)? / (alpha.sqrt() as f64))?
        };
        if t == 0 {
            return Ok(mean);
        }
        let sigma = s.variance(t, self.variance).sqrt();
        add_scaled_noise(mean, sigma as f64, noise)
    }
}
