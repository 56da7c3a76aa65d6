//! What the network predicts, and the one place that converts its output.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::{Result, Schedule};

/// The target a denoising network is trained to predict.
///
/// Every sampler reads the network output through [`Prediction::eps`] and [`Prediction::x0`],
/// and the training loss compares it with [`Prediction::target`], so a network trained for any
/// target runs with any sampler. A new target is one variant here plus one match arm in each of
/// those three methods: they receive x_t, t and the schedule (hence ᾱ_t, per sample in
/// [`Prediction::target`]), all that the v- and x0-parametrisations need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// The noise ε in x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε (Ho et al. 2020).
    #[default]
    Epsilon,
}

impl std::str::FromStr for Prediction {
    type Err = crate::DiffusionError;

    /// `eps` or `epsilon`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "eps" | "epsilon" => Ok(Prediction::Epsilon),
            _ => invalid("prediction", format!("`{s}`: use eps (or epsilon)")),
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
    /// ([`Schedule::alpha_bars_f64`]).
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
    pub fn eps_at(self, alpha_bar: f64, x_t: &Tensor, output: &Tensor) -> Result<Tensor> {
        let _ = (alpha_bar, x_t); // ε-prediction needs no conversion; v and x0 use them.
        match self {
            Prediction::Epsilon => Ok(output.clone()),
        }
    }

    /// [`Prediction::x0`] at a noise level given by its ᾱ (in (0, 1]).
    pub fn x0_at(self, alpha_bar: f64, x_t: &Tensor, output: &Tensor) -> Result<Tensor> {
        let ab = alpha_bar;
        match self {
            Prediction::Epsilon => {
                Ok(((x_t - output.affine((1.0 - ab).sqrt(), 0.0)?)? / ab.sqrt())?)
            }
        }
    }

    /// What the network should output for x_t noised from `x0` with noise `eps` at the B
    /// per-sample timesteps `t` (as in [`Schedule::add_noise`]): ε itself for ε-prediction.
    pub fn target(
        self,
        schedule: &Schedule,
        x0: &Tensor,
        eps: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        let _ = (schedule, x0, t); // Unused by ε-prediction; v- and x0-prediction need them.
        match self {
            Prediction::Epsilon => Ok(eps.clone()),
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
        let err = "noise".parse::<Prediction>().unwrap_err().to_string();
        assert!(err.contains("`noise`"), "{err}");
        assert_eq!(Prediction::default(), Prediction::Epsilon);
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
