use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::invalid;

/// Which β schedule to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BetaKind {
    /// The reference's schedule: `torch.linspace(1e-4, 0.02, T)` in f32, whatever T is.
    Linear,
    /// Linear with both ends scaled by 1000/T (improved-diffusion), so short chains still reach
    /// pure noise.
    LinearScaled,
    /// Nichol & Dhariwal's cosine schedule (s = 0.008, β clipped at 0.999).
    Cosine,
}

impl std::str::FromStr for BetaKind {
    type Err = crate::DiffusionError;

    /// `linear`, `linear-scaled` or `cosine`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(BetaKind::Linear),
            "linear-scaled" => Ok(BetaKind::LinearScaled),
            "cosine" => Ok(BetaKind::Cosine),
            _ => invalid(
                "schedule",
                format!("`{s}`: use linear, linear-scaled or cosine"),
            ),
        }
    }
}

/// The variance of a DDPM reverse step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variance {
    /// σ² = β_t (the reference's default, `simple_var=True`).
    Beta,
    /// σ² = (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t, the true posterior variance.
    Posterior,
}

/// A noise schedule of T steps: β, α = 1-β and ᾱ (running f32 product), on host and device.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: BetaKind,
    /// β rescaled to zero terminal SNR ([`Schedule::with_zero_terminal_snr`]).
    zero_terminal_snr: bool,
    betas: Vec<f32>,
    alphas: Vec<f32>,
    alpha_bars: Vec<f32>,
    /// ᾱ accumulated in f64 from the same α: the consistent values behind x̂0 clipping and DDIM,
    /// which have no reference output to reproduce.
    alpha_bars_f64: Vec<f64>,
    sqrt_alpha_bars: Tensor,
    sqrt_one_minus_alpha_bars: Tensor,
}

const LINEAR_START: f32 = 1e-4;
const LINEAR_END: f32 = 0.02;
const COSINE_OFFSET: f64 = 0.008;
const COSINE_MAX_BETA: f64 = 0.999;

/// `torch.linspace(start, end, n)` in f32, bit for bit (PyTorch fills the first half forward from
/// `start` and the second half backward from `end`, each with one fused multiply-add).
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

fn betas_for(kind: BetaKind, n_steps: usize) -> Vec<f32> {
    match kind {
        BetaKind::Linear => torch_linspace_f32(LINEAR_START, LINEAR_END, n_steps),
        BetaKind::LinearScaled => {
            let scale = 1000.0 / n_steps as f64;
            let (start, end) = (scale * LINEAR_START as f64, scale * LINEAR_END as f64);
            let denom = (n_steps.max(2) - 1) as f64;
            (0..n_steps)
                .map(|i| (start + (end - start) * i as f64 / denom) as f32)
                .collect()
        }
        BetaKind::Cosine => {
            let f = |t: f64| {
                let x = (t / n_steps as f64 + COSINE_OFFSET) / (1.0 + COSINE_OFFSET);
                (x * std::f64::consts::FRAC_PI_2).cos().powi(2)
            };
            (0..n_steps)
                .map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(COSINE_MAX_BETA) as f32)
                .collect()
        }
    }
}

impl Schedule {
    /// Builds the schedule of `n_steps` steps of the given kind, with its per-step coefficient
    /// tensors on `device`.
    pub fn new(kind: BetaKind, n_steps: usize, device: &Device) -> Result<Self> {
        if n_steps < 2 {
            return invalid("n_steps", format!("need at least 2 steps, got {n_steps}"));
        }
        let betas = betas_for(kind, n_steps);
        if let Some(bad) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
            return invalid(
                "n_steps",
                format!("{kind:?} with T = {n_steps} gives β = {bad}, outside (0, 1)"),
            );
        }
        Self::from_betas(kind, betas, false, device)
    }

    /// This schedule with its β rescaled to zero terminal SNR (Lin et al. 2023, "Common
    /// Diffusion Noise Schedules and Sample Steps are Flawed", algorithm 1; diffusers'
    /// `rescale_betas_zero_snr`).
    ///
    /// With s_t = sqrt(ᾱ_t) (the f64 ᾱ), s_1 the first and s_T the last, the rescaled
    /// s'_t = (s_t - s_T)·s_1/(s_1 - s_T) keeps s'_1 = s_1 and makes s'_T = 0; then
    /// ᾱ'_t = s'_t², α'_t = ᾱ'_t/ᾱ'_{t-1} (α'_1 = ᾱ'_1) and β'_t = 1 - α'_t, rounded to f32,
    /// from which α, ᾱ (f32 and f64) and the coefficient tensors are rebuilt as in
    /// [`Schedule::new`]. So β'_T = 1 and ᾱ'_T = 0 exactly: the last step is pure noise and
    /// its SNR ᾱ/(1-ᾱ) is zero, which an ε-prediction cannot invert to x0 (use v or x0). The
    /// σ- and λ-based samplers take that last ᾱ as 2^-24 ([`crate::sampler::sigmas`]).
    pub fn with_zero_terminal_snr(self) -> Result<Self> {
        let roots: Vec<f64> = self.alpha_bars_f64.iter().map(|ab| ab.sqrt()).collect();
        let (first, last) = (roots[0], roots[roots.len() - 1]);
        let scale = first / (first - last);
        let rescaled: Vec<f64> = roots
            .iter()
            .map(|root| ((root - last) * scale).powi(2))
            .collect();
        let betas = rescaled
            .iter()
            .enumerate()
            .map(|(t, ab)| {
                let prev = if t == 0 { 1.0 } else { rescaled[t - 1] };
                (1.0 - ab / prev) as f32
            })
            .collect();
        let device = self.device().clone();
        Self::from_betas(self.kind, betas, true, &device)
    }

    /// The schedule of the given (checked) β: α, ᾱ in f32 and f64, and the tensors.
    fn from_betas(
        kind: BetaKind,
        betas: Vec<f32>,
        zero_terminal_snr: bool,
        device: &Device,
    ) -> Result<Self> {
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alpha_bars: Vec<f32> = alphas
            .iter()
            .scan(1.0f32, |product, a| {
                *product *= a;
                Some(*product)
            })
            .collect();
        let alpha_bars_f64: Vec<f64> = alphas
            .iter()
            .scan(1.0f64, |product, a| {
                *product *= *a as f64;
                Some(*product)
            })
            .collect();
        let sqrt_ab: Vec<f32> = alpha_bars.iter().map(|ab| ab.sqrt()).collect();
        let sqrt_1mab: Vec<f32> = alpha_bars.iter().map(|ab| (1.0 - ab).sqrt()).collect();
        Ok(Self {
            kind,
            zero_terminal_snr,
            sqrt_alpha_bars: Tensor::new(sqrt_ab, device)?,
            sqrt_one_minus_alpha_bars: Tensor::new(sqrt_1mab, device)?,
            betas,
            alphas,
            alpha_bars,
            alpha_bars_f64,
        })
    }

    /// The kind of β schedule.
    pub fn kind(&self) -> BetaKind {
        self.kind
    }

    /// True when β was rescaled to zero terminal SNR ([`Schedule::with_zero_terminal_snr`]).
    pub fn zero_terminal_snr(&self) -> bool {
        self.zero_terminal_snr
    }

    /// T, the number of diffusion steps.
    pub fn n_steps(&self) -> usize {
        self.betas.len()
    }

    /// The device the coefficient tensors live on.
    pub fn device(&self) -> &Device {
        self.sqrt_alpha_bars.device()
    }

    /// β_t for t in 0..T.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// α_t = 1 - β_t.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// ᾱ_t = α_0·…·α_t, accumulated sequentially in f32 as the reference does.
    pub fn alpha_bars(&self) -> &[f32] {
        &self.alpha_bars
    }

    /// ᾱ before step t: ᾱ_{t-1}, and 1 for t = 0.
    pub fn alpha_bar_prev(&self, t: usize) -> f32 {
        if t == 0 { 1.0 } else { self.alpha_bars[t - 1] }
    }

    /// ᾱ_t accumulated in f64 from the same f32 α: the consistent values behind x̂0, clipping
    /// and DDIM, which have no reference output to reproduce in f32.
    pub fn alpha_bars_f64(&self) -> &[f64] {
        &self.alpha_bars_f64
    }

    /// [`Schedule::alpha_bars_f64`] before step t: ᾱ_{t-1}, and 1 for t = 0.
    pub fn alpha_bar_prev_f64(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alpha_bars_f64[t - 1]
        }
    }

    /// The posterior variance (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t (0 at t = 0).
    pub fn posterior_variance(&self, t: usize) -> f32 {
        if t == 0 {
            return 0.0;
        }
        (1.0 - self.alpha_bars[t - 1]) / (1.0 - self.alpha_bars[t]) * self.betas[t]
    }

    /// The reverse-step variance σ²_t of the chosen kind (never used at t = 0).
    pub fn variance(&self, t: usize, variance: Variance) -> f32 {
        match variance {
            Variance::Beta => self.betas[t],
            Variance::Posterior => self.posterior_variance(t),
        }
    }

    /// An error unless `t` is in 0..T.
    pub(crate) fn check_t(&self, t: usize) -> Result<()> {
        if t >= self.n_steps() {
            return invalid(
                "t",
                format!("timestep {t} is outside 0..{}", self.n_steps()),
            );
        }
        Ok(())
    }

    /// Forward noising `x_t = sqrt(1-ᾱ_t)·ε + sqrt(ᾱ_t)·x0` with one timestep per sample.
    ///
    /// `x0` and `eps` are (B, ...); `t` holds B integer timesteps (any integer dtype, shape (B) or
    /// (B, 1)).
    pub fn add_noise(&self, x0: &Tensor, t: &Tensor, eps: &Tensor) -> Result<Tensor> {
        let (a, b) = self.sqrt_alpha_bars_per_sample(t, x0)?;
        Ok((eps.broadcast_mul(&b)? + x0.broadcast_mul(&a)?)?)
    }

    /// (sqrt(ᾱ_t), sqrt(1-ᾱ_t)) in f32 for each of the B timesteps in `t` (as in
    /// [`Schedule::add_noise`]), shaped (B, 1, ...) to broadcast against `like`, a (B, ...)
    /// tensor: the per-sample coefficients of forward noising and of training targets.
    pub(crate) fn sqrt_alpha_bars_per_sample(
        &self,
        t: &Tensor,
        like: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let batch = like.dim(0)?;
        let t = t.flatten_all()?.to_dtype(DType::U32)?;
        if t.dim(0)? != batch {
            return invalid(
                "t",
                format!("{} timesteps for a batch of {batch}", t.dim(0)?),
            );
        }
        let max_t = t.max(0)?.to_scalar::<u32>()? as usize;
        self.check_t(max_t)?;
        let mut coef_shape = vec![batch];
        coef_shape.resize(like.rank(), 1);
        let gather = |coefs: &Tensor| -> Result<Tensor> {
            Ok(coefs.index_select(&t, 0)?.reshape(coef_shape.as_slice())?)
        };
        Ok((
            gather(&self.sqrt_alpha_bars)?,
            gather(&self.sqrt_one_minus_alpha_bars)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_torch_endpoints() {
        let b = torch_linspace_f32(1e-4, 0.02, 1000);
        assert_eq!(b[0], 1e-4);
        assert_eq!(b[999], 0.02);
    }

    #[test]
    fn zero_terminal_snr_rescales_as_lin_et_al_algorithm_1() {
        for (kind, n) in [
            (BetaKind::Linear, 1000),
            (BetaKind::Linear, 2),
            (BetaKind::LinearScaled, 100),
            (BetaKind::Cosine, 200),
        ] {
            let base = Schedule::new(kind, n, &Device::Cpu).unwrap();
            let z = base.clone().with_zero_terminal_snr().unwrap();
            assert!(z.zero_terminal_snr() && !base.zero_terminal_snr());
            assert_eq!((z.kind(), z.n_steps()), (kind, n));
            // s'_t = (s_t - s_T)·s_1/(s_1 - s_T), ᾱ'_t = s'_t², from the f64 ᾱ.
            let roots: Vec<f64> = base.alpha_bars_f64().iter().map(|ab| ab.sqrt()).collect();
            let (first, last) = (roots[0], roots[n - 1]);
            for (t, root) in roots.iter().enumerate() {
                let want = ((root - last) * first / (first - last)).powi(2);
                let got = z.alpha_bars_f64()[t];
                // f32 rounding of each β', accumulated over the running product.
                assert!(
                    (got - want).abs() <= 1e-5 * want,
                    "{kind:?} T={n} t={t}: {got} vs {want}"
                );
                assert!((f64::from(z.alpha_bars()[t]) - want).abs() <= 1e-5 * want);
                // β' = 1 - ᾱ'_t/ᾱ'_{t-1}: in (0, 1) before the last step.
                if t + 1 < n {
                    assert!(z.betas()[t] > 0.0 && z.betas()[t] < 1.0, "t={t}");
                }
            }
            // The last step is pure noise; the first keeps its ᾱ (β'_1 = 1 - ᾱ_1 recovers β_1
            // only to the f32 rounding of α_1 = 1 - β_1, 2^-24).
            assert_eq!(z.betas()[n - 1], 1.0);
            assert_eq!(z.alphas()[n - 1], 0.0);
            assert_eq!(
                (z.alpha_bars()[n - 1], z.alpha_bars_f64()[n - 1]),
                (0.0, 0.0)
            );
            assert_eq!(z.alpha_bars()[0], base.alpha_bars()[0]);
            let (b0, b0_base) = (z.betas()[0], base.betas()[0]);
            assert!((b0 - b0_base).abs() <= 2f32.powi(-24), "{b0} vs {b0_base}");
            // The per-step coefficient tensors follow: x_T is the noise alone.
            let x0 = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
            let eps = Tensor::full(0.25f32, (1, 1, 2, 2), &Device::Cpu).unwrap();
            let t_last = Tensor::new(&[(n - 1) as u32], &Device::Cpu).unwrap();
            let x_t = z.add_noise(&x0, &t_last, &eps).unwrap();
            let values = x_t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(values, [0.25; 4]);
        }
    }

    #[test]
    fn too_few_steps_is_an_error() {
        assert!(Schedule::new(BetaKind::Linear, 1, &Device::Cpu).is_err());
    }
}
