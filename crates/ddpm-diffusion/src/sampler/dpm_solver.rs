//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", arXiv 2211.01095): a deterministic solver of the
//! probability-flow ODE written in the data prediction x̂0 and the half log-SNR
//! λ = ln(sqrt(ᾱ)/sqrt(1-ᾱ)) = -ln σ, as diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`.
//!
//! Each step from noise level s to t (h = λ_t - λ_s) integrates the ODE exactly for x̂0
//! held constant (order 1, which is DDIM) or extrapolated from the x̂0 of the one (order 2,
//! diffusers' "midpoint" form, the usual "2M") or two (order 3) previous steps, so every step
//! costs one network evaluation. The options:
//! - `steps`: network evaluations, 1..=T (at T, "linspace" repeats one timestep: the step
//!   over that empty interval is the identity, and the next ones lower their order past it);
//! - `order`: 1, 2 or 3; the first steps use lower orders until enough history exists, and the
//!   last step is always first order, because it goes to σ = 0 (diffusers'
//!   `final_sigmas_type = "zero"`: the result is the last x̂0);
//! - `karras`: the noise levels of Karras et al. (2022, ρ = 7) between the schedule's σ_min and
//!   σ_max, the network seeing the nearest timestep round(t(σ)) (diffusers'
//!   `use_karras_sigmas`); otherwise diffusers' "linspace" timesteps
//!   round(linspace(0, T-1, steps+1)) from T-1 down, dropping 0;
//! - `lower_order_final`: with fewer than 15 steps, at most second order at the last-but-one
//!   step (diffusers' `lower_order_final`, a stabiliser for short runs; it only changes
//!   order 3).
//!
//! The sample between steps is in the VP parametrisation x = sqrt(ᾱ)·x0 + sqrt(1-ᾱ)·ε with
//! ᾱ = 1/(σ²+1), exactly diffusers' sample, so no conversion is needed.

use candle_core::{Device, Tensor};

use super::Sampler;
use super::sigmas::{alpha_bar_of, karras_sigmas, sigma_to_t, vp_sigmas};
use crate::error::invalid;
use crate::{BetaKind, NoiseSource, Prediction, Result, Schedule};

/// Below this many steps, `lower_order_final` caps the last-but-one step at second order
/// (diffusers' threshold).
const LOWER_ORDER_FINAL_BELOW: usize = 15;

/// DPM-Solver++ multistep (Lu et al. 2022) of order 1, 2 or 3, diffusers'
/// `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`, `solver_type =
/// "midpoint"` and `final_sigmas_type = "zero"`.
///
/// A deterministic solver of the probability-flow ODE in the data prediction x̂0 (read
/// through the [`Prediction`]) and λ = -ln σ: one network evaluation per step, extrapolating
/// x̂0 from the previous one or two steps at orders 2 and 3. The first steps lower the order
/// until that history exists, the last step (to σ = 0) is first order and returns its x̂0, and
/// `lower_order_final` caps the last-but-one step at second order below 15 steps. The noise
/// levels are those of diffusers' "linspace" timesteps, or Karras et al.'s (`karras`), the
/// network then seeing the nearest timestep.
///
/// It keeps the x̂0 predictions of its previous steps, so it serves one run, its evaluations
/// taken in order from 0.
#[derive(Debug, Clone)]
pub struct DpmSolver {
    prediction: Prediction,
    /// Clip each x̂0 to [-1, 1] before it enters the update.
    clip_x0: bool,
    order: usize,
    lower_order_final: bool,
    /// The network's time input at each evaluation (integers).
    times: Vec<f64>,
    /// The noise level σ of each evaluation, then 0 (the end of the chain): steps + 1 values,
    /// rounded to f32 as diffusers stores them.
    sigmas: Vec<f64>,
    /// The x̂0 predictions of the last `order` evaluations, oldest first.
    history: Vec<Tensor>,
    /// The evaluation the next [`Sampler::step`] must be.
    next: usize,
}

/// An error unless `steps` is in 1..=T and `order` in 1..=3.
pub(super) fn check(n_steps: usize, steps: usize, order: usize) -> Result<()> {
    if steps == 0 || steps > n_steps {
        return invalid(
            "steps",
            format!("DPM-Solver++ needs 1..={n_steps} steps, got {steps}"),
        );
    }
    if !(1..=3).contains(&order) {
        return invalid(
            "order",
            format!("DPM-Solver++ has orders 1, 2 and 3, got {order}"),
        );
    }
    Ok(())
}

/// diffusers' "linspace" timesteps: numpy's linspace(0, T-1, steps+1) (i·((T-1)/steps), the
/// end set exactly), halves rounded to even, decreasing, without the 0.
fn linspace_timesteps(n_steps: usize, steps: usize) -> Vec<usize> {
    let last = n_steps - 1;
    let delta = last as f64 / steps as f64;
    (1..=steps)
        .rev()
        .map(|i| {
            if i == steps {
                last
            } else {
                (i as f64 * delta).round_ties_even() as usize
            }
        })
        .collect()
}

/// The integer timesteps of the `steps` evaluations and their noise levels σ (not yet
/// followed by the final 0), given σ_t for every timestep of the schedule (increasing).
fn placement(schedule_sigmas: &[f64], steps: usize, karras: bool) -> (Vec<usize>, Vec<f64>) {
    if karras {
        let log_sigmas: Vec<f64> = schedule_sigmas.iter().map(|s| s.ln()).collect();
        let (lo, hi) = (
            schedule_sigmas[0],
            schedule_sigmas[schedule_sigmas.len() - 1],
        );
        let sigmas = karras_sigmas(lo, hi, steps);
        let ts = sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even() as usize)
            .collect();
        (ts, sigmas)
    } else {
        let ts = linspace_timesteps(schedule_sigmas.len(), steps);
        let sigmas = ts.iter().map(|&t| schedule_sigmas[t]).collect();
        (ts, sigmas)
    }
}

/// The timesteps a DPM-Solver++ of `steps` steps visits on a schedule of `n_steps` steps,
/// after checking the settings. The Karras timesteps depend on the β schedule: these are the
/// linear schedule's (the sampler built on another schedule lists its own).
pub(super) fn timesteps(
    n_steps: usize,
    steps: usize,
    order: usize,
    karras: bool,
) -> Result<Vec<usize>> {
    check(n_steps, steps, order)?;
    if karras {
        let linear = Schedule::new(BetaKind::Linear, n_steps, &Device::Cpu)?;
        Ok(placement(&vp_sigmas(&linear), steps, true).0)
    } else {
        Ok(linspace_timesteps(n_steps, steps))
    }
}

/// `Σ cᵢ·tᵢ` with f64 coefficients.
fn weighted_sum(terms: &[(&Tensor, f64)]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(t, c) in terms {
        let term = t.affine(c, 0.0)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match acc {
        Some(acc) => Ok(acc),
        None => invalid("terms", "an empty weighted sum"),
    }
}

/// The VP coefficients (sqrt(ᾱ), sqrt(1-ᾱ)) and λ = -ln σ of noise level σ.
fn vp(sigma: f64) -> (f64, f64, f64) {
    let alpha = alpha_bar_of(sigma).sqrt();
    (alpha, sigma * alpha, -sigma.ln())
}

impl DpmSolver {
    /// Clips every x̂0 to [-1, 1] before it enters the update (diffusers' `clip_sample`-style
    /// thresholding at a fixed bound): keeps data-range models from drifting out of range.
    pub fn with_clip_x0(mut self, clip_x0: bool) -> Self {
        self.clip_x0 = clip_x0;
        self
    }

    /// A DPM-Solver++ of `steps` network evaluations (1..=T) and `order` 1..=3 (2 is the
    /// usual "2M"), reading the network output as `prediction`. `karras` places the noise
    /// levels as Karras et al. (diffusers' `use_karras_sigmas`), otherwise at diffusers'
    /// "linspace" timesteps; `lower_order_final` is diffusers' option of that name (true by
    /// default there).
    pub fn new(
        schedule: &Schedule,
        prediction: Prediction,
        steps: usize,
        order: usize,
        karras: bool,
        lower_order_final: bool,
    ) -> Result<Self> {
        check(schedule.n_steps(), steps, order)?;
        let (ts, mut sigmas) = placement(&vp_sigmas(schedule), steps, karras);
        sigmas.push(0.0);
        Ok(Self {
            prediction,
            clip_x0: false,
            order,
            lower_order_final,
            times: super::as_times(&ts),
            sigmas: sigmas.iter().map(|&s| f64::from(s as f32)).collect(),
            history: Vec::with_capacity(order),
            next: 0,
        })
    }

    /// The order of the step after evaluation `i` (diffusers' rule, lowered where an interval
    /// involved is empty).
    fn order_at(&self, i: usize) -> usize {
        let steps = self.times.len();
        let warmup = i + 1; // Steps whose x̂0 are known, this one included.
        let capped = if i + 1 == steps {
            1
        } else if i + 2 == steps && self.lower_order_final && steps < LOWER_ORDER_FINAL_BELOW {
            2
        } else {
            3
        };
        let mut order = self.order.min(warmup).min(capped);
        // A repeated noise level (only "linspace" with steps = T repeats a timestep) makes an
        // interval of zero length: a step over it is the identity (first order), and no step
        // extrapolates through it.
        if self.sigmas[i] == self.sigmas[i + 1] {
            return 1;
        }
        while order > 1 && (1..order).any(|k| self.sigmas[i - k] == self.sigmas[i - k + 1]) {
            order -= 1;
        }
        order
    }
}

impl Sampler for DpmSolver {
    fn timesteps(&self) -> &[f64] {
        &self.times
    }

    /// The sample at the next noise level (x0 after the last evaluation), from this and the
    /// previous evaluations' x̂0. Never draws noise.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let steps = self.times.len();
        super::check_evaluation(i, steps, "DPM-Solver++")?;
        super::check_in_order(i, self.next, "DPM-Solver++")?;
        if i == 0 {
            self.history.clear();
        }
        let x0 = super::data_prediction(
            self.prediction,
            alpha_bar_of(self.sigmas[i]),
            x,
            model_output,
            self.clip_x0,
        )?;
        if self.history.len() == self.order {
            self.history.remove(0);
        }
        self.history.push(x0);
        self.next = i + 1;

        let (alpha_t, sigma_t, lambda_t) = vp(self.sigmas[i + 1]);
        let (_, sigma_s0, lambda_s0) = vp(self.sigmas[i]);
        // h = λ_t - λ_s0 (infinite at the final σ = 0, where e^{-h} = 0).
        let h = lambda_t - lambda_s0;
        // α_t·(1 - e^{-h}): the weight of x̂0 in the first-order (DDIM) step.
        let c0 = -alpha_t * (-h).exp_m1();
        let c_x = sigma_t / sigma_s0;
        let n = self.history.len();
        let m = |k: usize| &self.history[n - 1 - k]; // m(0): this step's x̂0.
        match self.order_at(i) {
            1 => weighted_sum(&[(x, c_x), (m(0), c0)]),
            2 => {
                // Midpoint: x_t = c_x·x + c0·D0 + c0/2·D1, D0 = m0, D1 = (m0 - m1)/r0.
                let (_, _, lambda_s1) = vp(self.sigmas[i - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let c1 = 0.5 * c0 / r0;
                weighted_sum(&[(x, c_x), (m(0), c0 + c1), (m(1), -c1)])
            }
            _ => {
                // x_t = c_x·x + c0·D0 + c1·D1 + c2·D2 with
                // D1 = D1_0 + r0/(r0+r1)·(D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1),
                // D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1, folded into weights of m0, m1, m2.
                let (_, _, lambda_s1) = vp(self.sigmas[i - 1]);
                let (_, _, lambda_s2) = vp(self.sigmas[i - 2]);
                let (r0, r1) = ((lambda_s0 - lambda_s1) / h, (lambda_s1 - lambda_s2) / h);
                let em1 = (-h).exp_m1(); // e^{-h} - 1
                let c1 = alpha_t * (em1 / h + 1.0);
                let c2 = -alpha_t * ((em1 + h) / (h * h) - 0.5);
                let (a, b) = (1.0 / r0, 1.0 / r1);
                // Weight of (D1_0 - D1_1) = a·m0 - (a+b)·m1 + b·m2.
                let e = c1 * r0 / (r0 + r1) + c2 / (r0 + r1);
                weighted_sum(&[
                    (x, c_x),
                    (m(0), c0 + (c1 + e) * a),
                    (m(1), -(c1 + e) * a - e * b),
                    (m(2), e * b),
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule::new(BetaKind::Linear, 1000, &Device::Cpu).unwrap()
    }

    #[test]
    fn settings_are_checked() {
        let s = schedule();
        let new = |steps, order| DpmSolver::new(&s, Prediction::Epsilon, steps, order, false, true);
        for (steps, order, what) in [(0, 2, "steps"), (1001, 2, "steps"), (10, 0, "order")] {
            let err = new(steps, order).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        assert!(new(10, 4).unwrap_err().to_string().contains("got 4"));
        assert!(new(1, 3).is_ok() && new(1000, 2).is_ok());
    }

    #[test]
    fn orders_follow_diffusers_rule() {
        let s = schedule();
        let orders = |steps, order, lof| {
            let d = DpmSolver::new(&s, Prediction::Epsilon, steps, order, false, lof).unwrap();
            (0..steps).map(|i| d.order_at(i)).collect::<Vec<_>>()
        };
        assert_eq!(orders(5, 2, true), [1, 2, 2, 2, 1]);
        assert_eq!(orders(5, 3, true), [1, 2, 3, 2, 1]);
        assert_eq!(orders(5, 3, false), [1, 2, 3, 3, 1]);
        assert_eq!(orders(15, 3, true)[12..], [3, 3, 1]);
        assert_eq!(orders(3, 1, true), [1, 1, 1]);
        assert_eq!(orders(1, 3, true), [1]);
    }

    #[test]
    fn linspace_timesteps_are_diffusers() {
        let s = schedule();
        let ts = |steps| timesteps(1000, steps, 2, false).unwrap();
        // np.linspace(0, 999, 11).round()[::-1][:-1]: 99.9·i, 499.5 to even (as the fixture).
        assert_eq!(ts(10), [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
        assert_eq!(ts(1), [999]);
        let t1000 = ts(1000);
        assert_eq!(t1000.len(), 1000);
        // At steps = T one timestep repeats; the solver steps over and past it at lower orders
        // and stays finite.
        let mut d = DpmSolver::new(&s, Prediction::Epsilon, 1000, 3, false, true).unwrap();
        let r = (1..1000).find(|&i| d.sigmas[i] == d.sigmas[i - 1]).unwrap();
        let orders: Vec<usize> = (r - 1..r + 3).map(|i| d.order_at(i)).collect();
        assert_eq!(orders, [1, 1, 2, 3], "around the repeat at {r}");
        let mut x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        for i in 0..1000 {
            let out = x.affine(0.5, 0.1).unwrap();
            x = d.step(&out, i, &x, &mut crate::NoiseRng::new(0)).unwrap();
        }
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|v| v.is_finite()), "{v:?}");
    }
}
