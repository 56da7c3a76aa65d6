//! The DDPM training objective.

use candle_core::Tensor;
use ddpm_diffusion::{NoiseRng, NoiseSource, Prediction, Schedule};
use ddpm_unet::Model;

use crate::Result;

/// Draws the per-image timesteps t ~ U[0, T) and the noise ε ~ N(0, I) for a batch shaped
/// like `x0`, in that order, from `noise`.
pub fn draw_t_eps(noise: &mut NoiseRng, x0: &Tensor, n_steps: usize) -> Result<(Tensor, Tensor)> {
    let batch = x0.dim(0)?;
    let t = Tensor::from_vec(
        noise.uniform_indices(batch, n_steps as u32),
        batch,
        x0.device(),
    )?;
    let eps = noise.randn(x0.shape(), x0.device())?;
    Ok((t, eps))
}

/// The simple DDPM loss (Ho et al., eq. 14) for given t and ε: noises `x0` to x_t and returns
/// the mean squared error between the network's output at (x_t, t) and what it predicts
/// (`prediction`'s target: ε for ε-prediction) over all elements, in training mode. A
/// class-conditional network gets each image's label in `classes` (the "no class" label for
/// dropped ones).
pub fn diffusion_loss_given(
    model: &Model,
    schedule: &Schedule,
    prediction: Prediction,
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
    let target = prediction.target(schedule, x0, eps, t)?;
    Ok((output - target)?.sqr()?.mean_all()?)
}

/// [`diffusion_loss_given`] for ε-prediction with t and ε drawn by [`draw_t_eps`].
pub fn diffusion_loss(
    model: &Model,
    schedule: &Schedule,
    x0: &Tensor,
    noise: &mut NoiseRng,
) -> Result<Tensor> {
    let (t, eps) = draw_t_eps(noise, x0, schedule.n_steps())?;
    diffusion_loss_given(model, schedule, Prediction::Epsilon, x0, &t, &eps, None)
}
