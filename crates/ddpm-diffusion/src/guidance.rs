//! Classifier-free guidance (Ho & Salimans 2022): one network trained both with and without
//! its class label, sampled at ε̃ = ε_u + w·(ε_c − ε_u).

use candle_core::Tensor;

use crate::error::invalid;
use crate::{Denoiser, Result};

/// What to draw from a class-conditional network: each image's class and the guidance scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Guidance {
    /// The class of each image, below the network's number of classes.
    pub classes: Vec<u32>,
    /// The guidance scale w: 0 = the unconditional output, 1 = the plain conditional one,
    /// above 1 = pushed further towards the class (3-8 is typical).
    pub scale: f64,
}

/// `classes` in rows: each class `per_class` times in a row, in the order given (a grid with
/// one row per class when `per_class` is the grid's width).
pub fn class_rows(classes: &[u32], per_class: usize) -> Vec<u32> {
    classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, per_class))
        .collect()
}

/// A class-conditional network guided towards one class per sample: a [`Denoiser`] that the
/// sampling loop drives like any other.
///
/// Its output is o_u + w·(o_c − o_u), with o_c the network output for the sample's class and
/// o_u its unconditional output. Both come from one network call on a doubled batch (the
/// conditional half, then the unconditional half), except at w = 0 and w = 1, which need only
/// one of them. The network's output is combined as it is (ε̂, v̂ or x̂0): the conversions
/// between them are affine in the output at a fixed (x_t, t), so guiding any of them is the
/// same as guiding ε̂.
pub struct Guided<'a, D: Denoiser + ?Sized> {
    model: &'a D,
    classes: Tensor,
    unconditional: Tensor,
    scale: f64,
}

impl<'a, D: Denoiser + ?Sized> Guided<'a, D> {
    /// Guides `model` towards `classes` (one label per sample of the batches it will see) at
    /// `scale`. Refused for an unconditional network, a label out of range, or a scale that is
    /// negative or not finite.
    pub fn new(model: &'a D, classes: &[u32], scale: f64) -> Result<Self> {
        let n = model.num_classes();
        if n == 0 {
            return invalid(
                "class",
                "the network is not class-conditional: it was trained without labels",
            );
        }
        if let Some(bad) = classes.iter().find(|&&c| c as usize >= n) {
            return invalid(
                "class",
                format!(
                    "class {bad} is out of range: the network knows {n} classes, 0..{}",
                    n - 1
                ),
            );
        }
        if !(scale >= 0.0 && scale.is_finite()) {
            return invalid(
                "guidance",
                format!("the guidance scale must be a number >= 0, got {scale}"),
            );
        }
        let device = candle_core::Device::Cpu;
        Ok(Guided {
            model,
            classes: Tensor::new(classes, &device)?,
            unconditional: Tensor::full(n as u32, classes.len(), &device)?,
            scale,
        })
    }
}

impl<D: Denoiser + ?Sized> Denoiser for Guided<'_, D> {
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let batch = x_t.dim(0)?;
        if batch != self.classes.dim(0)? {
            candle_core::bail!(
                "guided towards {} classes but given a batch of {batch}",
                self.classes.dim(0)?
            );
        }
        let device = x_t.device();
        let classes = self.classes.to_device(device)?;
        let unconditional = self.unconditional.to_device(device)?;
        if self.scale == 1.0 {
            return self.model.predict_classes(x_t, t, &classes);
        }
        if self.scale == 0.0 {
            return self.model.predict_classes(x_t, t, &unconditional);
        }
        let both = self.model.predict_classes(
            &Tensor::cat(&[x_t, x_t], 0)?,
            &Tensor::cat(&[t, t], 0)?,
            &Tensor::cat(&[&classes, &unconditional], 0)?,
        )?;
        let (cond, uncond) = (both.narrow(0, 0, batch)?, both.narrow(0, batch, batch)?);
        &uncond + (cond - &uncond)?.affine(self.scale, 0.0)?
    }

    fn num_classes(&self) -> usize {
        0
    }
}
