//! Adam with PyTorch's semantics, global-norm gradient clipping and the learning-rate curve.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ddpm_dist::Collective;
use serde::{Deserialize, Serialize};

use crate::{LrSchedule, Result, TrainError};

/// Step counter and moments of [`Adam`], for checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdamState {
    /// Number of updates made.
    pub step: u64,
}

/// Adam exactly as `torch.optim.Adam` (β = (0.9, 0.999), eps = 1e-8, L2 weight decay added
/// to the gradient when non-zero; not AdamW). Parameters without a gradient are skipped.
#[derive(Debug)]
pub struct Adam {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    weight_decay: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adam {
    /// An optimizer over `params` (name, variable), with zeroed moments.
    pub fn new(params: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        let zeros = |(_, v): &(String, Var)| v.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<_>>()?;
        let v = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            params,
            m,
            v,
            step: 0,
            weight_decay,
        })
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let bias1 = 1.0 - BETA1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - BETA2.powi(self.step as i32)).sqrt();
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = if self.weight_decay > 0.0 {
                (grad + var.as_tensor().affine(self.weight_decay, 0.0)?)?
            } else {
                grad.clone()
            };
            let m = ((&self.m[i] * BETA1)? + (&grad * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (grad.sqr()? * (1.0 - BETA2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + EPS)?;
            let update = (m.div(&denom)? * (lr / bias1))?;
            var.set(&var.as_tensor().sub(&update)?)?;
            // Detached: otherwise each step's moments would keep the previous steps' graphs.
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }

    /// The step counter.
    pub fn state(&self) -> AdamState {
        AdamState { step: self.step }
    }

    /// The moments as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`).
    pub fn moments(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("{name}.exp_avg"), self.m[i].clone());
            out.insert(format!("{name}.exp_avg_sq"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by [`Adam::moments`] and the step counter; every parameter's
    /// moments must be present with its shape.
    pub fn restore(&mut self, state: AdamState, moments: &HashMap<String, Tensor>) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (slot, suffix) in [(&mut self.m[i], "exp_avg"), (&mut self.v[i], "exp_avg_sq")] {
                let key = format!("{name}.{suffix}");
                let saved = moments
                    .get(&key)
                    .ok_or_else(|| TrainError::Config(format!("optimizer state lacks `{key}`")))?;
                if saved.dims() != var.dims() {
                    return Err(TrainError::Config(format!(
                        "optimizer state `{key}` has shape {:?}, the parameter has {:?}",
                        saved.dims(),
                        var.dims()
                    )));
                }
                *slot = saved.to_device(var.device())?;
            }
        }
        self.step = state.step;
        Ok(())
    }
}

/// Applies one optimizer step from the gradients of a local loss: averages them over the
/// data-parallel ranks first (one flat all-reduce; a parameter without a gradient counts as
/// zero), then clips the global norm to `grad_clip` and updates with Adam at `lr`. Every rank
/// ends with bit-identical weights.
pub fn optimizer_step(
    params: &[(String, Var)],
    mut grads: GradStore,
    collective: Option<&mut (dyn Collective + '_)>,
    grad_clip: Option<f64>,
    adam: &mut Adam,
    lr: f64,
) -> Result<()> {
    if let Some(collective) = collective.filter(|c| c.world_size() > 1) {
        let local = params
            .iter()
            .map(|(_, v)| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => Ok(v.as_tensor().zeros_like()?),
            })
            .collect::<Result<Vec<_>>>()?;
        let mean = collective.all_reduce_mean(&local)?;
        for ((_, var), g) in params.iter().zip(mean) {
            grads.insert(var.as_tensor(), g);
        }
    }
    if let Some(max_norm) = grad_clip {
        clip_grad_norm(&mut grads, params, max_norm)?;
    }
    adam.step(&grads, lr)
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (like
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64> {
    let mut sum = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sum.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for (_, var) in params {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// The learning rate at optimizer step `step` (0-based): linear warmup from 0 over
/// `warmup` steps, then constant or cosine decay to 0 at `total` steps.
pub fn learning_rate(peak: f64, step: u64, warmup: u64, total: u64, schedule: LrSchedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    match schedule {
        LrSchedule::Constant => peak,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).min(1.0);
            peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Two Adam steps on f(x) = sum(x²), against values computed by `torch.optim.Adam`
    /// semantics by hand: m1 = 0.1g, v1 = 0.001g², update = lr·m̂/(sqrt(v̂)+eps) = lr·sign(g).
    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        let x =
            Var::from_tensor(&Tensor::new(&[1.5f32, -2.0, 0.25], &Device::Cpu).unwrap()).unwrap();
        let mut adam = Adam::new(vec![("x".into(), x.clone())], 0.0).unwrap();
        let grads = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        adam.step(&grads, 0.1).unwrap();
        let got = x.as_tensor().to_vec1::<f32>().unwrap();
        for (g, want) in got.iter().zip([1.4f32, -1.9, 0.15]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(adam.state().step, 1);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let x = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let params = vec![("x".to_string(), x.clone())];
        // d/dx of 0.5·|x|² is x: norm 5.
        let mut grads = (x.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap();
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-5);
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| learning_rate(1.0, s, 10, 110, LrSchedule::Cosine);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.5).abs() < 1e-12);
        assert!(lr(110).abs() < 1e-12);
        assert_eq!(learning_rate(0.3, 500, 0, 10, LrSchedule::Constant), 0.3);
    }
}
