//! The DDPM training objective.

use candle_core::Tensor;
use ddpm_schedule::{NoiseRng, NoiseSource, Schedule};
use ddpm_unet::Model;

use crate::Result;

/// The simple DDPM loss of one batch (Ho et al., eq. 14): draws t ~ U[0, T) per image and
/// ε ~ N(0, I) from `noise` (in that order), noises `x0` to x_t and returns the mean squared
/// error between ε and the network's ε̂(x_t, t) over all elements, in training mode.
pub fn diffusion_loss(
    model: &Model,
    schedule: &Schedule,
    x0: &Tensor,
    noise: &mut NoiseRng,
) -> Result<Tensor> {
    let batch = x0.dim(0)?;
    let device = x0.device();
    let t = Tensor::from_vec(
        noise.uniform_indices(batch, schedule.n_steps() as u32),
        batch,
        device,
    )?;
    let eps = noise.randn(x0.shape(), device)?;
    let x_t = schedule.add_noise(x0, &t, &eps)?;
    let eps_hat = model.forward(&x_t, &t, true)?;
    Ok((eps_hat - &eps)?.sqr()?.mean_all()?)
}
