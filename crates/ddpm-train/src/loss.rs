//! The DDPM training objective: the noise draw, the prediction target and the loss weighting.

use std::str::FromStr;

use candle_core::{DType, Tensor};
use ddpm_diffusion::{DiffusionError, NoiseRng, NoiseSource, Prediction, Schedule};
use ddpm_unet::Model;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// γ of Min-SNR weighting unless a recipe sets it: the paper's choice (Hang et al. 2023).
pub const DEFAULT_SNR_GAMMA: f64 = 5.0;

/// How the per-sample errors of a batch are weighted before they are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossWeight {
    /// Every element alike: the plain mean squared error (Ho et al., eq. 14).
    #[default]
    None,
    /// Min-SNR-γ (Hang et al. 2023): each sample's mean squared error times the weight
    /// [`Prediction::min_snr_weight`] of its timestep.
    MinSnr,
}

impl LossWeight {
    /// True for [`LossWeight::None`] (the default, left out of saved configurations).
    pub fn is_none(&self) -> bool {
        *self == LossWeight::None
    }
}

impl FromStr for LossWeight {
    type Err = TrainError;

    /// `none` or `min-snr`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(LossWeight::None),
            "min-snr" => Ok(LossWeight::MinSnr),
            _ => Err(TrainError::Config(format!(
                "unknown loss weighting `{s}`: use none or min-snr"
            ))),
        }
    }
}

/// What the training loss compares and how it weighs the timesteps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// What the network predicts ([`Prediction::target`] is what its output is compared with).
    pub prediction: Prediction,
    /// How the per-sample errors are weighted.
    pub loss_weight: LossWeight,
    /// γ of [`LossWeight::MinSnr`] (> 0).
    pub snr_gamma: f64,
}

impl Objective {
    /// The plain mean squared error against `prediction`'s target.
    pub fn unweighted(prediction: Prediction) -> Self {
        Objective {
            prediction,
            loss_weight: LossWeight::None,
            snr_gamma: DEFAULT_SNR_GAMMA,
        }
    }

    /// The loss of the network `output` at x_t noised from `x0` with `eps` at the B
    /// per-sample timesteps `t`: the squared error against the target, averaged over all
    /// elements ([`LossWeight::None`]: exactly the mean of every element), or per sample over
    /// C, H, W, multiplied by the sample's weight w(t) and averaged over the batch
    /// ([`LossWeight::MinSnr`]; w in f64 from [`Schedule::alpha_bars_f64`]).
    pub fn loss(
        &self,
        schedule: &Schedule,
        x0: &Tensor,
        t: &Tensor,
        eps: &Tensor,
        output: &Tensor,
    ) -> Result<Tensor> {
        let target = self.prediction.target(schedule, x0, eps, t)?;
        let squared = (output - target)?.sqr()?;
        match self.loss_weight {
            LossWeight::None => Ok(squared.mean_all()?),
            LossWeight::MinSnr => {
                let per_sample = squared.flatten_from(1)?.mean(1)?;
                let weights = self.min_snr_weights(schedule, t)?;
                Ok((per_sample * weights.to_dtype(squared.dtype())?)?.mean_all()?)
            }
        }
    }

    /// The Min-SNR weights of the B timesteps in `t`, a (B) f32 tensor on `t`'s device.
    fn min_snr_weights(&self, schedule: &Schedule, t: &Tensor) -> Result<Tensor> {
        let alpha_bars = schedule.alpha_bars_f64();
        let weights = t
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|t| match alpha_bars.get(t as usize) {
                Some(&ab) => Ok(self.prediction.min_snr_weight(ab, self.snr_gamma) as f32),
                None => Err(TrainError::Diffusion(DiffusionError::Invalid {
                    what: "t",
                    why: format!("timestep {t} is outside 0..{}", alpha_bars.len()),
                })),
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(Tensor::new(weights, t.device())?)
    }
}

/// Draws the per-image timesteps t ~ U[0, T) and the noise ε for a batch shaped like `x0`
/// from `noise`, in this order: t (B values), then n ~ N(0, I) of x0's shape, then, only
/// when `offset_noise` S > 0, m ~ N(0, I) of shape (B, C, 1, 1). ε = n + S·m (offset noise,
/// Guttenberg 2023: m shifts each image's channels as a whole, so the network also learns to
/// change an image's mean); with S = 0 nothing is drawn past n and ε = n.
pub fn draw_t_eps(
    noise: &mut NoiseRng,
    x0: &Tensor,
    n_steps: usize,
    offset_noise: f64,
) -> Result<(Tensor, Tensor)> {
    let batch = x0.dim(0)?;
    let t = Tensor::from_vec(
        noise.uniform_indices(batch, n_steps as u32),
        batch,
        x0.device(),
    )?;
    let eps = noise.randn(x0.shape(), x0.device())?;
    if offset_noise == 0.0 {
        return Ok((t, eps));
    }
    let mut offset_shape = x0.dims()[..2].to_vec();
    offset_shape.resize(x0.rank(), 1);
    let offset = noise.randn(&offset_shape.into(), x0.device())?;
    Ok((t, eps.broadcast_add(&offset.affine(offset_noise, 0.0)?)?))
}

/// The training loss for given t and ε: noises `x0` to x_t, runs the network at (x_t, t) in
/// training mode and returns `objective`'s [`Objective::loss`] of its output. A class-conditional
/// network gets each image's label in `classes` (the "no class" label for dropped ones).
pub fn diffusion_loss_given(
    model: &Model,
    schedule: &Schedule,
    objective: &Objective,
    x0: &Tensor,
    t: &Tensor,
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    let x_t = schedule.add_noise(x0, t, eps)?;
    let output = match classes {
        Some(labels) => model.forward_classes(&x_t, t, labels, true)?,
        None => model.forward(&x_t, t, true)?,
    };
    objective.loss(schedule, x0, t, eps, &output)
}

/// The simple DDPM loss (Ho et al., eq. 14): [`diffusion_loss_given`] for unweighted
/// ε-prediction with t and ε drawn by [`draw_t_eps`] (no offset noise).
pub fn diffusion_loss(
    model: &Model,
    schedule: &Schedule,
    x0: &Tensor,
    noise: &mut NoiseRng,
) -> Result<Tensor> {
    let (t, eps) = draw_t_eps(noise, x0, schedule.n_steps(), 0.0)?;
    diffusion_loss_given(
        model,
        schedule,
        &Objective::unweighted(Prediction::Epsilon),
        x0,
        &t,
        &eps,
        None,
    )
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use ddpm_diffusion::BetaKind;
    use ddpm_tests::max_abs_diff;

    use super::*;

    fn randn(seed: u64, shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        Tensor::from_vec(NoiseRng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    fn objective(prediction: Prediction, loss_weight: LossWeight, snr_gamma: f64) -> Objective {
        Objective {
            prediction,
            loss_weight,
            snr_gamma,
        }
    }

    #[test]
    fn loss_weights_parse_and_serialise() {
        assert_eq!("none".parse::<LossWeight>().unwrap(), LossWeight::None);
        assert_eq!("min-snr".parse::<LossWeight>().unwrap(), LossWeight::MinSnr);
        let err = "snr".parse::<LossWeight>().unwrap_err().to_string();
        assert!(err.contains("`snr`") && err.contains("min-snr"), "{err}");
        for (w, json) in [
            (LossWeight::None, r#""none""#),
            (LossWeight::MinSnr, r#""min-snr""#),
        ] {
            assert_eq!(serde_json::to_string(&w).unwrap(), json);
            assert_eq!(serde_json::from_str::<LossWeight>(json).unwrap(), w);
        }
        assert!(LossWeight::default().is_none() && !LossWeight::MinSnr.is_none());
    }

    #[test]
    fn the_unweighted_loss_is_the_mean_over_every_element() {
        let s = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
        let (x0, eps, output) = (
            randn(1, (3, 2, 4, 4)),
            randn(2, (3, 2, 4, 4)),
            randn(3, (3, 2, 4, 4)),
        );
        let t = Tensor::new(&[3u32, 50, 99], &Device::Cpu).unwrap();
        for p in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
            let target = p.target(&s, &x0, &eps, &t).unwrap();
            let want = (&output - target)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            let got = Objective::unweighted(p)
                .loss(&s, &x0, &t, &eps, &output)
                .unwrap();
            assert_eq!(
                got.to_scalar::<f32>().unwrap(),
                want.to_scalar::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn min_snr_weighs_each_sample_by_its_timestep() {
        let s = Schedule::new(BetaKind::Cosine, 100, &Device::Cpu).unwrap();
        let (x0, eps, output) = (
            randn(4, (3, 1, 3, 3)),
            randn(5, (3, 1, 3, 3)),
            randn(6, (3, 1, 3, 3)),
        );
        let ts = [0u32, 40, 99];
        let t = Tensor::new(&ts, &Device::Cpu).unwrap();
        for gamma in [1.0, 5.0] {
            for p in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
                let target = p.target(&s, &x0, &eps, &t).unwrap();
                // Σ_i w(t_i)·mean_j (output - target)²_ij / B, the weights from the paper's
                // formulas in f64.
                let mut want = 0.0;
                for (i, &ti) in ts.iter().enumerate() {
                    let ab = s.alpha_bars_f64()[ti as usize];
                    let snr = ab / (1.0 - ab);
                    let w = match p {
                        Prediction::Epsilon => snr.min(gamma) / snr,
                        Prediction::V => snr.min(gamma) / (snr + 1.0),
                        Prediction::X0 => snr.min(gamma),
                    };
                    let diff = (output.get(i).unwrap() - target.get(i).unwrap()).unwrap();
                    want += w * scalar(&diff.sqr().unwrap().mean_all().unwrap());
                }
                want /= ts.len() as f64;
                let got = objective(p, LossWeight::MinSnr, gamma)
                    .loss(&s, &x0, &t, &eps, &output)
                    .unwrap();
                let got = scalar(&got);
                assert!(
                    (got - want).abs() <= 1e-5 * want,
                    "{p:?} γ={gamma}: {got} vs {want}"
                );
            }
        }
        let out_of_range = Tensor::new(&[0u32, 100, 3], &Device::Cpu).unwrap();
        let err = objective(Prediction::Epsilon, LossWeight::MinSnr, 5.0)
            .loss(&s, &x0, &out_of_range, &eps, &output)
            .unwrap_err();
        assert!(err.to_string().contains("timestep 100"), "{err}");
    }

    /// Min-SNR weighs the error of the implied ε̂ alike for every target: an ε̂ and the v̂ and
    /// x̂0 it implies at x_t have the same weighted loss.
    #[test]
    fn min_snr_losses_agree_across_targets_for_the_same_prediction() {
        let s = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
        let (x0, eps, eps_hat) = (
            randn(7, (3, 1, 4, 4)),
            randn(8, (3, 1, 4, 4)),
            randn(9, (3, 1, 4, 4)),
        );
        let ts = [5u32, 30, 70];
        let t = Tensor::new(&ts, &Device::Cpu).unwrap();
        let x_t = s.add_noise(&x0, &t, &eps).unwrap();
        let (mut x0_hat, mut v_hat) = (Vec::new(), Vec::new());
        for (i, &ti) in ts.iter().enumerate() {
            let ab = s.alpha_bars_f64()[ti as usize];
            let (x_i, e_i) = (x_t.get(i).unwrap(), eps_hat.get(i).unwrap());
            x0_hat.push(Prediction::Epsilon.x0_at(ab, &x_i, &e_i).unwrap());
            // v̂ = sqrt(ᾱ)·ε̂ - sqrt(1-ᾱ)·x̂0.
            let v = (e_i.affine(ab.sqrt(), 0.0).unwrap()
                - x0_hat[i].affine((1.0 - ab).sqrt(), 0.0).unwrap())
            .unwrap();
            v_hat.push(v);
        }
        let x0_hat = Tensor::stack(&x0_hat, 0).unwrap();
        let v_hat = Tensor::stack(&v_hat, 0).unwrap();
        let loss = |p: Prediction, output: &Tensor| {
            let o = objective(p, LossWeight::MinSnr, 5.0);
            scalar(&o.loss(&s, &x0, &t, &eps, output).unwrap())
        };
        let by_eps = loss(Prediction::Epsilon, &eps_hat);
        let by_v = loss(Prediction::V, &v_hat);
        let by_x0 = loss(Prediction::X0, &x0_hat);
        for other in [by_v, by_x0] {
            assert!(
                (other - by_eps).abs() <= 1e-4 * by_eps,
                "ε {by_eps} v {by_v} x0 {by_x0}"
            );
        }
    }

    #[test]
    fn offset_noise_adds_one_draw_per_image_and_channel_after_the_noise() {
        let x0 = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        // S = 0: exactly the plain draws, and the stream is where they leave it.
        let mut plain = NoiseRng::new(11);
        let (t0, eps0) = draw_t_eps(&mut plain, &x0, 50, 0.0).unwrap();
        let mut reference = NoiseRng::new(11);
        let want_t = reference.uniform_indices(2, 50);
        let n = reference.normal_vec(2 * 3 * 4 * 4);
        assert_eq!(t0.to_vec1::<u32>().unwrap(), want_t);
        assert_eq!(eps0.flatten_all().unwrap().to_vec1::<f32>().unwrap(), n);
        assert_eq!(plain.state(), reference.state());

        // S > 0: t, n, then m of shape (B, C, 1, 1); ε = n + S·m.
        let mut offset = NoiseRng::new(11);
        let (t1, eps1) = draw_t_eps(&mut offset, &x0, 50, 0.1).unwrap();
        assert_eq!(t1.to_vec1::<u32>().unwrap(), want_t);
        let m = reference.normal_vec(2 * 3);
        assert_eq!(offset.state(), reference.state());
        let got = eps1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (k, (&g, &n_k)) in got.iter().zip(&n).enumerate() {
            let want = f64::from(n_k) + 0.1 * f64::from(m[k / 16]);
            assert!(
                (f64::from(g) - want).abs() < 1e-6,
                "element {k}: {g} vs {want}"
            );
        }
        // The same image and channel is shifted by the same amount at every pixel.
        let shift = (&eps1 - &eps0).unwrap();
        let per_channel = shift.max_keepdim(3).unwrap().max_keepdim(2).unwrap();
        let spread = max_abs_diff(&shift, &per_channel.broadcast_as(shift.shape()).unwrap());
        assert!(spread < 1e-6, "{spread:e}");
    }
}
