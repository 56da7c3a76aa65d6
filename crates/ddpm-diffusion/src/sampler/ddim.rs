use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Sampler, add_scaled_noise, as_times, check_evaluation, combine, data_prediction};
use crate::error::invalid;
use crate::{NoiseSource, Prediction, Result, Schedule};

/// DDIM (Song et al. 2021) over a subset of the timesteps.
///
/// σ_t = η·sqrt((1-ᾱ_prev)/(1-ᾱ_t))·sqrt(1-ᾱ_t/ᾱ_prev): η = 0 is deterministic and η = 1
/// over every timestep is DDPM with the posterior variance. With η > 0 every step but the last
/// draws noise (σ = 0 at the last, unless the chain ends at ᾱ_0: `set_alpha_to_one` false).
#[derive(Debug, Clone)]
pub struct Ddim<'s> {
    schedule: &'s Schedule,
    prediction: Prediction,
    eta: f64,
    clip_x0: bool,
    timesteps: Vec<usize>,
    /// The timestep each step goes to (`None`: the end of the chain).
    prev: Vec<Option<usize>>,
    /// ᾱ at the end of the chain: 1 (x0), or ᾱ_0 (diffusers' `set_alpha_to_one = false`).
    final_alpha_bar: f64,
    times: Vec<f64>,
}

/// Where the DDIM timesteps sit among the schedule's T (Lin et al. 2023, table 2, and
/// diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spacing {
    /// Ours: round(i·(T-1)/(steps-1)), both ends included, each step going to the next.
    #[default]
    Even,
    /// diffusers' "leading": i·(T div steps) (T-1 is never visited).
    Leading,
    /// diffusers' "trailing": round(T - i·T/steps) - 1, from T-1 down.
    Trailing,
    /// diffusers' "linspace": round(linspace(0, T-1, steps)), decreasing.
    Linspace,
}

impl Spacing {
    /// True for [`Spacing::Even`] (the default, left out of saved configurations).
    pub fn is_even(&self) -> bool {
        *self == Spacing::Even
    }
}

impl std::str::FromStr for Spacing {
    type Err = crate::DiffusionError;

    /// `even`, `leading`, `trailing` or `linspace`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "even" => Ok(Spacing::Even),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => invalid(
                "spacing",
                format!("`{s}`: use even, leading, trailing or linspace"),
            ),
        }
    }
}

/// The `steps` timesteps of `spacing`, decreasing and distinct, after checking `steps` in
/// 1..=T and η in [0, 1].
pub(super) fn timesteps(
    n_steps: usize,
    steps: usize,
    eta: f64,
    spacing: Spacing,
) -> Result<Vec<usize>> {
    if steps == 0 || steps > n_steps {
        return invalid(
            "steps",
            format!("DDIM needs 1..={n_steps} steps, got {steps}"),
        );
    }
    if !(0.0..=1.0).contains(&eta) {
        return invalid("eta", format!("η must be in [0, 1], got {eta}"));
    }
    let last = (n_steps - 1) as f64;
    let mut ts: Vec<usize> = match spacing {
        Spacing::Even if steps == 1 => vec![n_steps - 1],
        Spacing::Even => (0..steps)
            .map(|i| (i as f64 * last / (steps - 1) as f64).round() as usize)
            .collect(),
        // numpy rounds halves to even.
        Spacing::Linspace => (0..steps)
            .map(|i| {
                let spread = if steps > 1 { (steps - 1) as f64 } else { 1.0 };
                (i as f64 * last / spread).round_ties_even() as usize
            })
            .collect(),
        Spacing::Leading => (0..steps).map(|i| i * (n_steps / steps)).collect(),
        Spacing::Trailing => {
            let ratio = n_steps as f64 / steps as f64;
            (0..steps)
                .map(|i| (n_steps as f64 - i as f64 * ratio).round_ties_even() as usize - 1)
                .rev()
                .collect()
        }
    };
    ts.dedup();
    ts.reverse();
    Ok(ts)
}

impl<'s> Ddim<'s> {
    /// A DDIM sampler of `steps` network evaluations (1..=T) at timesteps placed by
    /// `spacing` and noise level η (in [0, 1]). With [`Spacing::Even`] each step goes to the
    /// next timestep; with diffusers' spacings it goes `T div steps` down, as diffusers' DDIM
    /// does. The chain ends at x0 when `set_alpha_to_one`, else at ᾱ_0.
    pub fn new(
        schedule: &'s Schedule,
        prediction: Prediction,
        steps: usize,
        eta: f64,
        clip_x0: bool,
        spacing: Spacing,
        set_alpha_to_one: bool,
    ) -> Result<Self> {
        let n_steps = schedule.n_steps();
        let timesteps = timesteps(n_steps, steps, eta, spacing)?;
        let prev = timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| match spacing {
                Spacing::Even => timesteps.get(i + 1).copied(),
                _ => t.checked_sub(n_steps / steps),
            })
            .collect();
        Ok(Self {
            schedule,
            prediction,
            eta,
            clip_x0,
            prev,
            final_alpha_bar: if set_alpha_to_one {
                1.0
            } else {
                schedule.alpha_bars_f64()[0]
            },
            times: as_times(&timesteps),
            timesteps,
        })
    }
}

impl Sampler for Ddim<'_> {
    fn timesteps(&self) -> &[f64] {
        &self.times
    }

    /// x_t → x_{t_prev}, t_prev being the timestep after `t` in [`Sampler::timesteps`] (x0
    /// after the last).
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let s = self.schedule;
        check_evaluation(i, self.timesteps.len(), "DDIM")?;
        let t = self.timesteps[i];
        let ab = s.alpha_bars_f64()[t];
        let ab_prev = self.prev[i].map_or(self.final_alpha_bar, |p| s.alpha_bars_f64()[p]);
        let ratio = ab / ab_prev;
        let sigma = self.eta
            * ((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ratio))
                .max(0.0)
                .sqrt();
        let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        // x_prev = sqrt(ᾱ_prev)·x̂0 + dir·ε̂ with x̂0 = (x_t - sqrt(1-ᾱ_t)·ε̂)/sqrt(ᾱ_t), folded
        // into f64 coefficients of x_t and ε̂ (or of x_t and the clipped x̂0), so that no f32
        // tensor is divided by a small sqrt(ᾱ_t) or sqrt(1-ᾱ_t). At ᾱ_t = 0 (zero terminal
        // SNR) the ε̂ form divides by zero, and the x̂0 form is used, clipped or not.
        let x_prev = if self.clip_x0 || ab == 0.0 {
            let x0 = data_prediction(self.prediction, ab, x, model_output, self.clip_x0)?;
            let c_xt = dir / (1.0 - ab).sqrt();
            let c_x0 = ab_prev.sqrt() - c_xt * ab.sqrt();
            combine(&x0, c_x0, x, c_xt)?
        } else {
            let eps = self.prediction.eps(s, x, t, model_output)?;
            let c_xt = 1.0 / ratio.sqrt();
            let c_eps = dir - ((1.0 - ab) / ratio).sqrt();
            combine(x, c_xt, &eps, c_eps)?
        };
        // σ > 0 exactly when η > 0 and ᾱ_prev > ᾱ_t (every step but a last one to x0), so
        // the draws are those of every earlier release.
        if sigma > 0.0 {
            return add_scaled_noise(x_prev, sigma, noise);
        }
        Ok(x_prev)
    }
}
