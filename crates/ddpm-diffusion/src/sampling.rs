//! The sampling loop: any [`Sampler`] driven with any [`Denoiser`].

use candle_core::Tensor;

use crate::{NoiseSource, Result, Sampler};

/// Anything that maps a noisy sample x_t and its timesteps to the network output (ε̂, v̂ or x̂0,
/// as its [`Prediction`](crate::Prediction) says): the denoising network in practice, a
/// closure in tests. `t` is a (B,) f32 tensor of the network's time input on the same device
/// as `x_t`: integer timesteps for most samplers, times between them for Euler and Heun.
///
/// A class-conditional network also reports its [`Denoiser::num_classes`] and answers
/// [`Denoiser::predict_classes`]; [`Guided`](crate::Guided) turns one into the
/// classifier-free-guided denoiser that the samplers drive.
pub trait Denoiser {
    /// Returns the network output at (x_t, t), of the same shape as `x_t` (a
    /// class-conditional network's unconditional output).
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor>;

    /// The number of classes the network is conditioned on (0: unconditional, the default).
    fn num_classes(&self) -> usize {
        0
    }

    /// The output at (x_t, t) for the class labels `classes` (u32, shape (B)); label
    /// [`Denoiser::num_classes`] asks for the unconditional output. Unconditional networks
    /// (the default) refuse.
    fn predict_classes(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        classes: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let _ = (x_t, t, classes);
        candle_core::bail!("this network is not class-conditional: it takes no labels")
    }
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
{
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self(x_t, t)
    }
}

/// What the sampling loop reports after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    /// How many steps are done, 1..=`total`.
    pub done: usize,
    /// The number of steps of the whole run.
    pub total: usize,
    /// The network's time input of the evaluation just made.
    pub t: f64,
    /// The sample after this step.
    pub x: &'a Tensor,
}

/// Runs the reverse process from `x_t` (normally pure noise x_T) down to x0: at each of
/// `sampler`'s timesteps, evaluates `model` and hands its output to [`Sampler::step`].
///
/// `sampler` is consumed, since it holds the state of this one run (build it with
/// [`SamplerConfig::build`](crate::SamplerConfig::build)). `noise` supplies every Gaussian
/// draw (none is drawn for deterministic steps), and `on_step` sees each intermediate sample
/// (for progress bars and trajectories).
pub fn sample(
    mut sampler: impl Sampler,
    model: &impl Denoiser,
    x_t: Tensor,
    noise: &mut dyn NoiseSource,
    mut on_step: impl FnMut(StepInfo<'_>),
) -> Result<Tensor> {
    let timesteps = sampler.timesteps().to_vec();
    let batch = x_t.dim(0)?;
    let total = timesteps.len();
    let mut x = x_t;
    for (i, &t) in timesteps.iter().enumerate() {
        let t_tensor = Tensor::full(t as f32, batch, x.device())?;
        // Cut the autograd history at the network's output and at the sample: the weights are
        // trainable variables, so a multistep sampler keeping earlier outputs (or samples made
        // from them) would otherwise keep every earlier step's activations alive (UniPC at 50
        // steps on 250 images grew past 24 GB before this).
        let output = model.predict(&x, &t_tensor)?.detach();
        x = sampler.step(&output, i, &x, noise)?.detach();
        on_step(StepInfo {
            done: i + 1,
            total,
            t,
            x: &x,
        });
    }
    Ok(x)
}
