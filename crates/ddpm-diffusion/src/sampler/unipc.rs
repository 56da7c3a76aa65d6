//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
//! of Diffusion Models", arXiv 2302.04867): a multistep exponential-integrator predictor (UniP)
//! followed, once the next network output is known, by a corrector (UniC) that raises the
//! order of the step just taken at no extra network evaluation.
//!
//! The configuration is diffusers' default (`UniPCMultistepScheduler`): data prediction
//! (`predict_x0`: the solver integrates x̂0, read through the sampler's
//! [`Prediction`]), the B(h) = e^h − 1 variant (`solver_type = "bh2"`), solver order 2 with a
//! first-order first step and a first-order last step (`lower_order_final`), the corrector
//! on every step but the first (`disable_corrector = []`), timesteps at diffusers' "linspace"
//! spacing, and a last step all the way to σ = 0 (`final_sigmas_type = "zero"`), whose result
//! is the data prediction x̂0 itself.
//!
//! The solver works on α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t) and λ_t = ln α_t − ln σ_t, all
//! in f64; the samples stay in the DDPM/VP parametrisation x_t = α_t·x0 + σ_t·ε.

use candle_core::Tensor;

use super::{Sampler, as_times};
use crate::error::invalid;
use crate::{NoiseSource, Prediction, Result, Schedule};

/// The solver order (diffusers' `solver_order = 2`, its default for unconditional sampling).
const ORDER: usize = 2;

/// UniPC multistep sampling (UniP-2 predictor with UniC corrector, B(h) = e^h − 1) over
/// `steps` timesteps at diffusers' "linspace" spacing, ending at σ = 0.
///
/// Deterministic: it never draws noise. One evaluation per step; each [`Sampler::step`] first
/// corrects the sample it is given with the new network output (from the second step on) and
/// then predicts the next sample from the corrected one. The sample returned is the
/// predictor's, which is what the network sees next (as in diffusers).
#[derive(Debug, Clone)]
pub struct UniPc {
    prediction: Prediction,
    /// Clip each x̂0 to [-1, 1] before it enters the predictor and corrector.
    clip_x0: bool,
    /// The network's time input at each evaluation (decreasing integers).
    times: Vec<f64>,
    /// ᾱ at each evaluation, then 1 (σ = 0) for the end of the chain: one more than `times`.
    alpha_bars: Vec<f64>,
    /// λ = ½·ln(ᾱ/(1 − ᾱ)) for each entry of `alpha_bars` (+∞ at the end).
    lambdas: Vec<f64>,
    /// The data predictions x̂0 of the last (up to [`ORDER`]) evaluations, oldest first.
    outputs: Vec<Tensor>,
    /// The (corrected) sample the last predictor step started from.
    last_sample: Option<Tensor>,
    /// The order of the last predictor step (the corrector repeats it).
    last_order: usize,
    /// The evaluation expected next.
    next: usize,
}

/// diffusers' "linspace" timesteps for UniPC: `round(linspace(0, T-1, steps+1))` reversed,
/// its last entry (0) dropped, after checking `steps` in 1..=T. numpy rounds halves to even.
/// At `steps = T` two of them round together; they are merged (one evaluation fewer), where
/// diffusers would divide by a zero step.
pub(super) fn timesteps(n_steps: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > n_steps {
        return invalid(
            "steps",
            format!("UniPC needs 1..={n_steps} steps, got {steps}"),
        );
    }
    let last = (n_steps - 1) as f64;
    let mut ts: Vec<usize> = (1..=steps)
        .rev()
        .map(|i| (i as f64 * last / steps as f64).round_ties_even() as usize)
        .collect();
    ts.dedup();
    Ok(ts)
}

/// The B(h)-weighted coefficients of one UniP or UniC update from noise level `s` to `t`
/// (data prediction, bh2), all in f64.
struct Coefficients {
    /// σ_t/σ_s: the weight of the sample.
    sample: f64,
    /// α_t·(e^{−h} − 1) with h = λ_t − λ_s: minus it weighs the last data prediction.
    alpha_phi1: f64,
    /// α_t·B(h) with B(h) = e^{−h} − 1 (bh2, hence equal to `alpha_phi1`; bh1 would take
    /// B(h) = −h): minus it weighs the higher-order differences.
    alpha_b: f64,
    /// −h.
    hh: f64,
    /// B(h).
    b_h: f64,
}

impl Coefficients {
    /// The update from evaluation level `s` to level `t` of `alpha_bars`/`lambdas`.
    fn new(alpha_bars: &[f64], lambdas: &[f64], s: usize, t: usize) -> Self {
        let (ab_s, ab_t) = (alpha_bars[s], alpha_bars[t]);
        let alpha_t = ab_t.sqrt();
        // -h = λ_s - λ_t: -∞ for a step to σ = 0, where e^{-h} - 1 = -1 exactly.
        let hh = lambdas[s] - lambdas[t];
        let phi1 = hh.exp_m1();
        Self {
            sample: ((1.0 - ab_t) / (1.0 - ab_s)).sqrt(),
            alpha_phi1: alpha_t * phi1,
            alpha_b: alpha_t * phi1,
            hh,
            b_h: phi1,
        }
    }

    /// The corrector's weights (ρ_1, ρ_2) of order 2 for the ratio `rk` = (λ_{s1} − λ_s)/h:
    /// the solution of the 2×2 system R·ρ = b with R = [[1, 1], [rk, 1]] and
    /// b_k = k!·φ_{k+1}(−h)/B(h) (in the paper's notation, h·φ_k scaled), by Cramer's rule.
    fn corrector_rhos(&self, rk: f64) -> (f64, f64) {
        let hh = self.hh;
        // h·φ_1 = e^{-h} - 1, then φ_{k+1} = φ_k/(-h) - 1/k! as diffusers' recurrence.
        let phi2 = self.b_h / hh - 1.0;
        let phi3 = phi2 / hh - 0.5;
        let b1 = phi2 / self.b_h;
        let b2 = 2.0 * phi3 / self.b_h;
        let rho1 = (b1 - b2) / (1.0 - rk);
        (rho1, b1 - rho1)
    }
}

/// Σ cᵢ·tᵢ with f64 coefficients.
fn lincomb(terms: &[(&Tensor, f64)]) -> Result<Tensor> {
    let mut terms = terms.iter();
    let Some(&(first, c)) = terms.next() else {
        return invalid("terms", "an empty linear combination");
    };
    let mut sum = first.affine(c, 0.0)?;
    for &(t, c) in terms {
        sum = (sum + t.affine(c, 0.0)?)?;
    }
    Ok(sum)
}

impl UniPc {
    /// Clips every x̂0 to [-1, 1] before it enters the predictor and corrector.
    pub fn with_clip_x0(mut self, clip_x0: bool) -> Self {
        self.clip_x0 = clip_x0;
        self
    }

    /// A UniPC sampler of `steps` network evaluations (1..=T) reading the network output as
    /// `prediction`.
    pub fn new(schedule: &Schedule, prediction: Prediction, steps: usize) -> Result<Self> {
        let ts = timesteps(schedule.n_steps(), steps)?;
        // diffusers' σ come from its f32 ᾱ (a sequential f32 product, as ours), 2^-24 for a
        // zero terminal SNR.
        let solver_alpha_bars = super::sigmas::solver_alpha_bars(schedule);
        let mut alpha_bars: Vec<f64> = ts.iter().map(|&t| solver_alpha_bars[t]).collect();
        alpha_bars.push(1.0);
        let lambdas = alpha_bars
            .iter()
            .map(|&ab| 0.5 * (ab.ln() - (1.0 - ab).ln()))
            .collect();
        Ok(Self {
            prediction,
            clip_x0: false,
            times: as_times(&ts),
            alpha_bars,
            lambdas,
            outputs: Vec::with_capacity(ORDER),
            last_sample: None,
            last_order: 0,
            next: 0,
        })
    }

    /// UniC: corrects the sample at evaluation `i`, predicted from `last` at evaluation
    /// i − 1, with the new data prediction `m_t` at evaluation i.
    fn correct(&self, last: &Tensor, m_t: &Tensor, i: usize) -> Result<Tensor> {
        let c = Coefficients::new(&self.alpha_bars, &self.lambdas, i - 1, i);
        let m0 = &self.outputs[self.outputs.len() - 1];
        if self.last_order >= 2 {
            let m1 = &self.outputs[self.outputs.len() - 2];
            let h = self.lambdas[i] - self.lambdas[i - 1];
            let rk = (self.lambdas[i - 2] - self.lambdas[i - 1]) / h;
            let (rho1, rho_t) = c.corrector_rhos(rk);
            // x = (σ_t/σ_s)·x_s − α_t·hφ_1·m0 − α_t·B(h)·(ρ_1·(m1 − m0)/rk + ρ_t·(m_t − m0))
            let w1 = c.alpha_b * rho1 / rk;
            let wt = c.alpha_b * rho_t;
            lincomb(&[
                (last, c.sample),
                (m0, -c.alpha_phi1 + w1 + wt),
                (m1, -w1),
                (m_t, -wt),
            ])
        } else {
            // Order 1: ρ = ½.
            let wt = c.alpha_b * 0.5;
            lincomb(&[(last, c.sample), (m0, -c.alpha_phi1 + wt), (m_t, -wt)])
        }
    }

    /// UniP: the sample at evaluation i + 1 from the (corrected) sample `x` at evaluation i,
    /// of the given order, from the stored data predictions (the newest at evaluation i).
    fn predict(&self, x: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let c = Coefficients::new(&self.alpha_bars, &self.lambdas, i, i + 1);
        let m0 = &self.outputs[self.outputs.len() - 1];
        if order >= 2 {
            let m1 = &self.outputs[self.outputs.len() - 2];
            // rk·h = λ_{i-1} − λ_i, finite; h is −hh (+∞ only at a last step, of order 1).
            let rk = (self.lambdas[i - 1] - self.lambdas[i]) / -c.hh;
            // ρ = ½ (diffusers' simplification at order 2):
            // x = (σ_t/σ_s)·x − α_t·hφ_1·m0 − α_t·B(h)·½·(m1 − m0)/rk
            let w1 = c.alpha_b * 0.5 / rk;
            lincomb(&[(x, c.sample), (m0, -c.alpha_phi1 + w1), (m1, -w1)])
        } else {
            lincomb(&[(x, c.sample), (m0, -c.alpha_phi1)])
        }
    }
}

impl Sampler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.times
    }

    /// Corrects `x` with this output (from the second evaluation on), then predicts the sample
    /// of evaluation i + 1 (x̂0 after the last). Evaluations must come in order, from 0; a
    /// call with i = 0 starts the run afresh.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let n = self.times.len();
        super::check_evaluation(i, n, "UniPC")?;
        super::check_in_order(i, self.next, "UniPC")?;
        if i == 0 {
            self.outputs.clear();
            self.last_sample = None;
            self.last_order = 0;
        }
        let m_t = super::data_prediction(
            self.prediction,
            self.alpha_bars[i],
            x,
            model_output,
            self.clip_x0,
        )?;
        let x = match &self.last_sample {
            Some(last) => self.correct(last, &m_t, i)?,
            None => x.clone(),
        };
        if self.outputs.len() == ORDER {
            self.outputs.remove(0);
        }
        self.outputs.push(m_t);
        // Warm up from order 1, and end with order 1 (lower_order_final).
        let order = ORDER.min(n - i).min(i + 1);
        let x_next = self.predict(&x, i, order)?;
        self.last_sample = Some(x);
        self.last_order = order;
        self.next = i + 1;
        Ok(x_next)
    }
}
