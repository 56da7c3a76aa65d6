//! What the network predicts, and the one place that converts its output.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::{Result, Schedule};

/// The target a denoising network is trained to predict.
///
/// Every sampler reads the network output through [`Prediction::eps`] and [`Prediction::x0`]
/// (or [`Prediction::eps_at`] and [`Prediction::x0_at`] at a noise level between timesteps),
/// and the training loss compares it with [`Prediction::target`], so a network trained for any
/// target runs with any sampler; [`Prediction::min_snr_weight`] gives its Min-SNR loss weight. A
/// new target is one variant here plus one match arm in each of those functions: they receive
/// x_t and ᾱ_t (per sample in [`Prediction::target`]), all that the ε-, v- and
/// x0-parametrisations need.
///
/// With a = sqrt(ᾱ_t) and b = sqrt(1-ᾱ_t), so that x_t = a·x0 + b·ε, the three targets are
/// ε, v = a·ε - b·x0 and x0 itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prediction {
    /// The noise ε in x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε (Ho et al. 2020).
    #[default]
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·x0 (Salimans & Ho 2022), diffusers'
    /// `v_prediction`.
    #[serde(rename = "v")]
    V,
    /// The clean sample x0 itself, diffusers' `sample`.
    #[serde(rename = "x0")]
    X0,
}

impl std::str::FromStr for Prediction {
    type Err = crate::DiffusionError;

    /// `eps` or `epsilon`; `v` or `v-prediction`; `x0` or `sample`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "eps" | "epsilon" => Ok(Prediction::Epsilon),
            "v" | "v-prediction" => Ok(Prediction::V),
            "x0" | "sample" => Ok(Prediction::X0),
            _ => invalid(
                "prediction",
                format!("`{s}`: use eps (or epsilon), v (or v-prediction) or x0 (or sample)"),
            ),
        }
    }
}

impl Prediction {
    /// The predicted noise ε̂ given the network `output` at x_t and timestep t.
    pub fn eps(
        self,
        schedule: &Schedule,
        x_t: &Tensor,
        t: usize,
        output: &Tensor,
    ) -> Result<Tensor> {
        schedule.check_t(t)?;
        self.eps_at(schedule.alpha_bars_f64()[t], x_t, output)
    }

    /// The predicted clean sample x̂0 given the network `output` at x_t and timestep t, unclipped.
    ///
    /// For ε-prediction x̂0 = (x_t - sqrt(1-ᾱ_t)·ε̂)/sqrt(ᾱ_t), with the f64 ᾱ
    /// ([`Schedule::alpha_bars_f64`]); the other targets as in the table of [`Prediction`].
    pub fn x0(
        self,
        schedule: &Schedule,
        x_t: &Tensor,
        t: usize,
        output: &Tensor,
    ) -> Result<Tensor> {
        schedule.check_t(t)?;
        self.x0_at(schedule.alpha_bars_f64()[t], x_t, output)
    }

    /// [`Prediction::eps`] at a noise level given by its ᾱ (in (0, 1]) rather than a timestep:
    /// for samplers that evaluate the network between the schedule's timesteps (Euler, Heun).
    ///
    /// With a = sqrt(ᾱ) and b = sqrt(1-ᾱ): ε̂ = output for ε-prediction, b·x_t + a·v̂ for
    /// v-prediction and (x_t - a·x̂0)/b for x0-prediction (an error at ᾱ = 1, where the noise
    /// is not determined).
    pub fn eps_at(self, alpha_bar: f64, x_t: &Tensor, output: &Tensor) -> Result<Tensor> {
        let (a, b) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        match self {
            Prediction::Epsilon => Ok(output.clone()),
            Prediction::V => Ok((x_t.affine(b, 0.0)? + output.affine(a, 0.0)?)?),
            Prediction::X0 => {
                if b <= 0.0 {
                    return invalid(
                        "alpha_bar",
                        format!("ε̂ of an x0-prediction needs ᾱ < 1, got {alpha_bar}"),
                    );
                }
                Ok((x_t - output.affine(a, 0.0)?)?.affine(1.0 / b, 0.0)?)
            }
        }
    }

    /// [`Prediction::x0`] at a noise level given by its ᾱ (in [0, 1]).
    ///
    /// With a = sqrt(ᾱ) and b = sqrt(1-ᾱ): x̂0 = (x_t - b·ε̂)/a for ε-prediction (an error at
    /// ᾱ = 0, the last step of a zero-terminal-SNR schedule, where x_t holds no trace of x0),
    /// a·x_t - b·v̂ for v-prediction and the output itself for x0-prediction.
    pub fn x0_at(self, alpha_bar: f64, x_t: &Tensor, output: &Tensor) -> Result<Tensor> {
        let (a, b) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        match self {
            Prediction::Epsilon => {
                if a <= 0.0 {
                    return invalid(
                        "alpha_bar",
                        format!(
                            "x̂0 of an ε-prediction needs ᾱ > 0, got {alpha_bar} (a zero-terminal-SNR \
                             schedule's last step): use a v- or x0-prediction network"
                        ),
                    );
                }
                Ok(((x_t - output.affine(b, 0.0)?)? / a)?)
            }
            Prediction::V => Ok((x_t.affine(a, 0.0)? - output.affine(b, 0.0)?)?),
            Prediction::X0 => Ok(output.clone()),
        }
    }

    /// The Min-SNR-γ loss weight (Hang et al. 2023, "Efficient Diffusion Training via
    /// Min-SNR Weighting Strategy", arXiv 2303.09556) of this target at noise level ᾱ, with
    /// SNR = ᾱ/(1-ᾱ) and the cap γ > 0: min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1)
    /// for v-prediction and min(SNR, γ) for x0-prediction.
    ///
    /// All three weigh the error of the implied ε̂ alike, by min(SNR, γ)/SNR, since
    /// ‖v̂ - v‖² = (SNR + 1)/SNR·‖ε̂ - ε‖² and ‖x̂0 - x0‖² = ‖ε̂ - ε‖²/SNR. At ᾱ = 0 (a
    /// zero-terminal-SNR schedule's last step) the ε-weight is its limit 1, computed as
    /// min(1, γ/SNR); the v- and x0-weights are 0.
    pub fn min_snr_weight(self, alpha_bar: f64, gamma: f64) -> f64 {
        let snr = alpha_bar / (1.0 - alpha_bar);
        match self {
            Prediction::Epsilon => (gamma / snr).min(1.0),
            Prediction::V => snr.min(gamma) / (snr + 1.0),
            Prediction::X0 => snr.min(gamma),
        }
    }

    /// What the network should output for x_t noised from `x0` with noise `eps` at the B
    /// per-sample timesteps `t` (as in [`Schedule::add_noise`]): ε itself for ε-prediction,
    /// v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·x0 for v-prediction (with the f32 per-sample coefficients
    /// of [`Schedule::add_noise`]) and x0 for x0-prediction.
    pub fn target(
        self,
        schedule: &Schedule,
        x0: &Tensor,
        eps: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        match self {
            Prediction::Epsilon => Ok(eps.clone()),
            Prediction::V => {
                let (a, b) = schedule.sqrt_alpha_bars_per_sample(t, x0)?;
                Ok((eps.broadcast_mul(&a)? - x0.broadcast_mul(&b)?)?)
            }
            Prediction::X0 => Ok(x0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use ddpm_tests::max_abs_diff;

    use super::*;
    use crate::{BetaKind, NoiseRng};

    fn randn(seed: u64, shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        Tensor::from_vec(NoiseRng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn names_parse_and_serialise() {
        assert_eq!("eps".parse::<Prediction>().unwrap(), Prediction::Epsilon);
        assert_eq!(
            "epsilon".parse::<Prediction>().unwrap(),
            Prediction::Epsilon
        );
        for (name, want) in [
            ("v", Prediction::V),
            ("v-prediction", Prediction::V),
            ("x0", Prediction::X0),
            ("sample", Prediction::X0),
        ] {
            assert_eq!(name.parse::<Prediction>().unwrap(), want, "{name}");
        }
        let err = "noise".parse::<Prediction>().unwrap_err().to_string();
        assert!(
            err.contains("`noise`") && err.contains("v-prediction"),
            "{err}"
        );
        assert_eq!(Prediction::default(), Prediction::Epsilon);
        for (p, json) in [
            (Prediction::Epsilon, r#""epsilon""#),
            (Prediction::V, r#""v""#),
            (Prediction::X0, r#""x0""#),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), json);
            assert_eq!(serde_json::from_str::<Prediction>(json).unwrap(), p);
        }
    }

    /// `ca·a + cb·b` computed in f64 and rounded to f32 once: the independent reference.
    fn lin64(a: &Tensor, ca: f64, b: &Tensor, cb: f64) -> Tensor {
        let a = a.to_dtype(DType::F64).unwrap();
        let b = b.to_dtype(DType::F64).unwrap();
        ((a * ca).unwrap() + (b * cb).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    #[test]
    fn v_target_follows_the_formula_per_sample() {
        let s = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
        let (x0, eps) = (randn(5, (3, 1, 2, 2)), randn(6, (3, 1, 2, 2)));
        let ts = [0u32, 41, 99];
        let t = Tensor::new(&ts, &Device::Cpu).unwrap();
        let v = Prediction::V.target(&s, &x0, &eps, &t).unwrap();
        for (i, &ti) in ts.iter().enumerate() {
            let ab = f64::from(s.alpha_bars()[ti as usize]);
            let (x0_i, eps_i) = (x0.get(i).unwrap(), eps.get(i).unwrap());
            // v = sqrt(ᾱ)·ε - sqrt(1-ᾱ)·x0.
            let want = lin64(&eps_i, ab.sqrt(), &x0_i, -(1.0 - ab).sqrt());
            let diff = max_abs_diff(&v.get(i).unwrap(), &want);
            assert!(diff < 1e-6, "t={ti}: {diff:e}");
        }
        // x0-prediction's target is the clean sample.
        let target = Prediction::X0.target(&s, &x0, &eps, &t).unwrap();
        assert_eq!(max_abs_diff(&target, &x0), 0.0);
        // The per-sample timesteps are checked.
        let bad = Tensor::new(&[0u32, 100, 3], &Device::Cpu).unwrap();
        assert!(Prediction::V.target(&s, &x0, &eps, &bad).is_err());
        let short = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        assert!(Prediction::V.target(&s, &x0, &eps, &short).is_err());
    }

    #[test]
    fn v_and_x0_conversions_follow_the_formulas() {
        let (x_t, out) = (randn(7, (2, 1, 3, 3)), randn(8, (2, 1, 3, 3)));
        for ab in [0.999_9, 0.5, 0.02, 4e-5] {
            let (a, b) = (f64::sqrt(ab), f64::sqrt(1.0 - ab));
            let tol = 1e-6 / b.min(a);
            let cases = [
                // v: x̂0 = a·x_t - b·v̂, ε̂ = b·x_t + a·v̂.
                (
                    Prediction::V,
                    lin64(&x_t, a, &out, -b),
                    lin64(&x_t, b, &out, a),
                ),
                // x0: x̂0 = output, ε̂ = (x_t - a·x̂0)/b.
                (
                    Prediction::X0,
                    out.clone(),
                    lin64(&x_t, 1.0 / b, &out, -a / b),
                ),
            ];
            for (p, want_x0, want_eps) in cases {
                let x0 = p.x0_at(ab, &x_t, &out).unwrap();
                let eps = p.eps_at(ab, &x_t, &out).unwrap();
                let (dx, de) = (max_abs_diff(&x0, &want_x0), max_abs_diff(&eps, &want_eps));
                assert!(dx < tol && de < tol, "{p:?} ᾱ={ab}: {dx:e} {de:e}");
            }
        }
        // At ᾱ = 1 an x0-prediction does not determine the noise.
        let err = Prediction::X0.eps_at(1.0, &x_t, &out).unwrap_err();
        assert!(err.to_string().contains("ᾱ < 1"), "{err}");
        assert!(Prediction::V.eps_at(1.0, &x_t, &out).is_ok());
    }

    #[test]
    fn targets_round_trip_through_the_conversions() {
        let s = Schedule::new(BetaKind::Cosine, 200, &Device::Cpu).unwrap();
        let (x0, eps) = (randn(9, (1, 2, 4, 4)), randn(10, (1, 2, 4, 4)));
        for p in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
            for t in [0usize, 17, 150, 199] {
                let tt = Tensor::new(&[t as u32], &Device::Cpu).unwrap();
                let x_t = s.add_noise(&x0, &tt, &eps).unwrap();
                let out = p.target(&s, &x0, &eps, &tt).unwrap();
                let ab = s.alpha_bars_f64()[t];
                // f32 rounding of x_t and the target, amplified by 1/sqrt(ᾱ) (ε-prediction's
                // x̂0) or 1/sqrt(1-ᾱ) (x0-prediction's ε̂).
                let tol = 2e-6 / ab.sqrt().min((1.0 - ab).sqrt());
                let x0_hat = p.x0(&s, &x_t, t, &out).unwrap();
                let eps_hat = p.eps(&s, &x_t, t, &out).unwrap();
                let (dx, de) = (max_abs_diff(&x0_hat, &x0), max_abs_diff(&eps_hat, &eps));
                assert!(dx < tol && de < tol, "{p:?} t={t}: {dx:e} {de:e}");
            }
        }
    }

    #[test]
    fn min_snr_weights_follow_hang_et_al() {
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-12 * want.abs().max(1.0);
        for gamma in [1.0, 5.0] {
            for ab in [0.999_9, 0.9, 0.5, 0.1, 1e-4] {
                let snr = ab / (1.0 - ab);
                let w_eps = Prediction::Epsilon.min_snr_weight(ab, gamma);
                let w_v = Prediction::V.min_snr_weight(ab, gamma);
                let w_x0 = Prediction::X0.min_snr_weight(ab, gamma);
                let capped = snr.min(gamma);
                assert!(close(w_eps, capped / snr), "ε ᾱ={ab} γ={gamma}: {w_eps}");
                assert!(
                    close(w_v, capped / (snr + 1.0)),
                    "v ᾱ={ab} γ={gamma}: {w_v}"
                );
                assert!(close(w_x0, capped), "x0 ᾱ={ab} γ={gamma}: {w_x0}");
                // The three weigh the implied ε-error alike.
                assert!(close(w_v * (snr + 1.0) / snr, w_eps), "ᾱ={ab} γ={gamma}");
                assert!(close(w_x0 / snr, w_eps), "ᾱ={ab} γ={gamma}");
            }
        }
        // Below the cap the ε-weight is 1, above it γ/SNR (SNR = 9 at ᾱ = 0.9).
        assert_eq!(Prediction::Epsilon.min_snr_weight(0.5, 5.0), 1.0);
        assert!(close(
            Prediction::Epsilon.min_snr_weight(0.9, 5.0),
            5.0 / 9.0
        ));
        // At zero SNR (ᾱ = 0): the ε-weight's limit 1, and nothing for v and x0.
        assert_eq!(Prediction::Epsilon.min_snr_weight(0.0, 5.0), 1.0);
        assert_eq!(Prediction::V.min_snr_weight(0.0, 5.0), 0.0);
        assert_eq!(Prediction::X0.min_snr_weight(0.0, 5.0), 0.0);
    }

    #[test]
    fn an_epsilon_prediction_has_no_x0_at_zero_snr() {
        let (x_t, out) = (randn(11, (1, 1, 2, 2)), randn(12, (1, 1, 2, 2)));
        let err = Prediction::Epsilon.x0_at(0.0, &x_t, &out).unwrap_err();
        assert!(err.to_string().contains("ᾱ > 0"), "{err}");
        // v- and x0-predictions do: x̂0 = -v̂ and the output, and ε̂ = x_t.
        let x0 = Prediction::V.x0_at(0.0, &x_t, &out).unwrap();
        assert_eq!(max_abs_diff(&x0, &out.neg().unwrap()), 0.0);
        let eps = Prediction::V.eps_at(0.0, &x_t, &out).unwrap();
        assert_eq!(max_abs_diff(&eps, &x_t), 0.0);
        let eps = Prediction::X0.eps_at(0.0, &x_t, &out).unwrap();
        assert_eq!(max_abs_diff(&eps, &x_t), 0.0);
    }

    #[test]
    fn epsilon_target_is_the_noise() {
        let s = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
        let (x0, eps) = (randn(1, (2, 1, 3, 3)), randn(2, (2, 1, 3, 3)));
        let t = Tensor::new(&[3u32, 97], &Device::Cpu).unwrap();
        let target = Prediction::Epsilon.target(&s, &x0, &eps, &t).unwrap();
        assert_eq!(max_abs_diff(&target, &eps), 0.0);
    }

    #[test]
    fn epsilon_conversions_follow_the_formulas() {
        let s = Schedule::new(BetaKind::Cosine, 200, &Device::Cpu).unwrap();
        let (x0, eps) = (randn(3, (1, 2, 4, 4)), randn(4, (1, 2, 4, 4)));
        for t in [0usize, 17, 150, 199] {
            let tt = Tensor::new(&[t as u32], &Device::Cpu).unwrap();
            let x_t = s.add_noise(&x0, &tt, &eps).unwrap();
            let p = Prediction::Epsilon;
            let eps_hat = p.eps(&s, &x_t, t, &eps).unwrap();
            assert_eq!(max_abs_diff(&eps_hat, &eps), 0.0, "t={t}");
            // x̂0 = (x_t - sqrt(1-ᾱ)·ε̂)/sqrt(ᾱ), computed here in f64.
            let ab = s.alpha_bars_f64()[t];
            let want = ((x_t.to_dtype(DType::F64).unwrap()
                - (eps.to_dtype(DType::F64).unwrap() * (1.0 - ab).sqrt()).unwrap())
            .unwrap()
                / ab.sqrt())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
            let x0_hat = p.x0(&s, &x_t, t, &eps).unwrap();
            // f32 rounding of x_t - sqrt(1-ᾱ)·ε̂, amplified by 1/sqrt(ᾱ).
            let tol = 1e-6 / ab.sqrt();
            let diff = max_abs_diff(&x0_hat, &want);
            assert!(diff < tol, "t={t}: {diff:e}");
            // And the exact noise recovers the clean sample.
            assert!(max_abs_diff(&x0_hat, &x0) < tol, "t={t}");
        }
        assert!(Prediction::Epsilon.x0(&s, &x0, 200, &eps).is_err());
        assert!(Prediction::Epsilon.eps(&s, &x0, 200, &eps).is_err());
    }
}
