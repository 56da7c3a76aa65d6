use candle_core::{DType, Device, Shape, Tensor};

use crate::error::invalid;
use crate::{
    Denoiser, Guidance, Guided, NoiseSource, Prediction, Result, SamplerConfig, Schedule, StepInfo,
    sample,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// How many images.
    pub n: usize,
    /// (C, H, W) of one image.
    pub image: [usize; 3],
    /// The most images denoised at once (bounds memory for large `n`).
    pub batch_size: usize,
    /// The reverse process.
    pub sampler: SamplerConfig,
    /// What the model predicts.
    pub prediction: Prediction,
    /// The class of each image and the guidance scale, for a class-conditional model (`None`:
    /// its unconditional output, or an unconditional model).
    pub guidance: Option<Guidance>,
}

/// Generates `options.n` samples in batches; `x_init` (if given, shape (n, C, H, W)) replaces
/// the drawn x_T. `on_step(batch_index, info)` sees every step of every batch.
///
/// Every batch runs a fresh sampler built from `options.sampler`, guided towards its images'
/// classes when `options.guidance` is given ([`Guided`]). All randomness comes from
/// `noise`: x_T of every batch is drawn first, then the steps' noise, so a seed fixes the
/// output.
pub fn generate(
    model: &impl Denoiser,
    schedule: &Schedule,
    options: &GenerateOptions,
    x_init: Option<&Tensor>,
    noise: &mut impl NoiseSource,
    device: &Device,
    mut on_step: impl FnMut(usize, StepInfo<'_>),
) -> Result<Tensor> {
    let [c, h, w] = options.image;
    if options.n == 0 || options.batch_size == 0 {
        return invalid(
            "n",
            "the number of images and the batch size must be at least 1",
        );
    }
    if let Some(g) = &options.guidance
        && g.classes.len() != options.n
    {
        return invalid(
            "class",
            format!(
                "{} class labels given for {} images: one per image",
                g.classes.len(),
                options.n
            ),
        );
    }
    let full: Shape = (options.n, c, h, w).into();
    let x_t = match x_init {
        Some(x) if x.shape() != &full => {
            return invalid(
                "x_init",
                format!(
                    "the initial noise has shape {:?}, expected {:?}",
                    x.dims(),
                    full.dims()
                ),
            );
        }
        Some(x) => x.to_dtype(DType::F32)?.to_device(device)?,
        None => noise.randn(&full, device)?,
    };
    let mut outputs = Vec::new();
    let mut start = 0;
    while start < options.n {
        let len = options.batch_size.min(options.n - start);
        let batch = x_t.narrow(0, start, len)?;
        let index = start / options.batch_size;
        let sampler = options.sampler.build(schedule, options.prediction)?;
        let on_batch_step = |info: StepInfo<'_>| on_step(index, info);
        let x0 = match &options.guidance {
            Some(g) => {
                let guided = Guided::new(model, &g.classes[start..start + len], g.scale)?
                    .within(g.interval, schedule.n_steps());
                sample(sampler, &guided, batch, noise, on_batch_step)?
            }
            None => sample(sampler, model, batch, noise, on_batch_step)?,
        };
        outputs.push(x0);
        start += len;
    }
    Ok(Tensor::cat(&outputs, 0)?)
}
