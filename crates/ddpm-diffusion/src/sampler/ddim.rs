use candle_core::Tensor;

use super::{Sampler, add_scaled_noise, combine};
use crate::error::invalid;
use crate::{NoiseSource, Prediction, Result, Schedule};

/// DDIM (Song et al. 2021) over a subset of the timesteps.
///
/// σ_t = η·sqrt((1-ᾱ_prev)/(1-ᾱ_t))·sqrt(1-ᾱ_t/ᾱ_prev): η = 0 is deterministic and η = 1
/// over every timestep is DDPM with the posterior variance. With η > 0 every step but the last
/// draws noise (σ = 0 at the last).
#[derive(Debug, Clone)]
pub struct Ddim<'s> {
    schedule: &'s Schedule,
    prediction: Prediction,
    eta: f64,
    clip_x0: bool,
    timesteps: Vec<usize>,
}

/// `steps` timesteps round(i·(T-1)/(steps-1)) for i in 0..steps, deduplicated, decreasing
/// (T-1 alone for one step), after checking `steps` in 1..=T and η in [0, 1].
pub(super) fn timesteps(n_steps: usize, steps: usize, eta: f64) -> Result<Vec<usize>> {
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

impl<'s> Ddim<'s> {
    /// A DDIM sampler of `steps` network evaluations (1..=T) and noise level η (in [0, 1]).
    pub fn new(
        schedule: &'s Schedule,
        prediction: Prediction,
        steps: usize,
        eta: f64,
        clip_x0: bool,
    ) -> Result<Self> {
        Ok(Self {
            schedule,
            prediction,
            eta,
            clip_x0,
            timesteps: timesteps(schedule.n_steps(), steps, eta)?,
        })
    }
}

impl Sampler for Ddim<'_> {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// x_t → x_{t_prev}, t_prev being the timestep after `t` in [`Sampler::timesteps`] (x0
    /// after the last).
    fn step(
        &mut self,
        model_output: &Tensor,
        t: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let s = self.schedule;
        let Some(i) = self.timesteps.iter().position(|&ti| ti == t) else {
            return invalid(
                "t",
                format!("timestep {t} is not one of this DDIM sampler's timesteps"),
            );
        };
        let t_prev = self.timesteps.get(i + 1).copied();
        let ab = s.alpha_bars_f64()[t];
        let ab_prev = t_prev.map_or(1.0, |p| s.alpha_bars_f64()[p]);
        let ratio = ab / ab_prev;
        let sigma = self.eta
            * ((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ratio))
                .max(0.0)
                .sqrt();
        let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        // x_prev = sqrt(ᾱ_prev)·x̂0 + dir·ε̂ with x̂0 = (x_t - sqrt(1-ᾱ_t)·ε̂)/sqrt(ᾱ_t), folded
        // into f64 coefficients of x_t and ε̂ (or of x_t and the clipped x̂0), so that no f32
        // tensor is divided by a small sqrt(ᾱ_t) or sqrt(1-ᾱ_t).
        let x_prev = if self.clip_x0 {
            let x0 = self
                .prediction
                .x0(s, x, t, model_output)?
                .clamp(-1f32, 1f32)?;
            let c_xt = dir / (1.0 - ab).sqrt();
            let c_x0 = ab_prev.sqrt() - c_xt * ab.sqrt();
            combine(&x0, c_x0, x, c_xt)?
        } else {
            let eps = self.prediction.eps(s, x, t, model_output)?;
            let c_xt = 1.0 / ratio.sqrt();
            let c_eps = dir - ((1.0 - ab) / ratio).sqrt();
            combine(x, c_xt, &eps, c_eps)?
        };
        // σ > 0 exactly when η > 0 and this is not the last step (ᾱ_prev > ᾱ_t then), so the
        // draws are those of every earlier release.
        if sigma > 0.0 {
            return add_scaled_noise(x_prev, sigma, noise);
        }
        Ok(x_prev)
    }
}
