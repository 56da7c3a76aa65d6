//! Classifier-free guidance (Ho & Salimans 2022): one network trained both with and without
//! its class label, sampled at ε̃ = ε_u + w·(ε_c − ε_u).

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::{Denoiser, DiffusionError, Result};

/// What to draw from a class-conditional network: each image's class and the guidance scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Guidance {
    /// The class of each image, below the network's number of classes.
    pub classes: Vec<u32>,
    /// The guidance scale w: 0 = the unconditional output, 1 = the plain conditional one,
    /// above 1 = pushed further towards the class (3-8 is typical).
    pub scale: f64,
    /// The part of the reverse process that is guided; the other steps use the plain
    /// conditional output.
    pub interval: GuidanceInterval,
}

/// The noise levels at which guidance is applied (Kynkäänniemi et al. 2024, "Applying
/// guidance in a limited interval improves sample and distribution quality"): the steps whose
/// time t lies in `from·T ..= to·T`, for T diffusion steps. [`GuidanceInterval::ALL`] guides
/// every step. Written `FROM,TO` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuidanceInterval {
    /// The lowest guided time, as a fraction of T (0 = the clean end).
    pub from: f64,
    /// The highest guided time, as a fraction of T (1 = pure noise).
    pub to: f64,
}

impl GuidanceInterval {
    /// Every step guided.
    pub const ALL: GuidanceInterval = GuidanceInterval { from: 0.0, to: 1.0 };

    /// The interval `from..=to` (fractions of T); refused unless 0 ≤ from ≤ to ≤ 1.
    pub fn new(from: f64, to: f64) -> Result<Self> {
        if !(0.0 <= from && from <= to && to <= 1.0) {
            return invalid(
                "guidance interval",
                format!(
                    "the guided part of the schedule must be FROM,TO with 0 <= FROM <= TO <= 1 \
                     (fractions of the diffusion steps), got {from},{to}"
                ),
            );
        }
        Ok(GuidanceInterval { from, to })
    }

    /// Whether the step at network time `t` of a `n_steps`-step schedule is guided.
    pub fn contains(&self, t: f64, n_steps: usize) -> bool {
        let fraction = t / n_steps as f64;
        self.from <= fraction && fraction <= self.to
    }
}

impl Default for GuidanceInterval {
    /// [`GuidanceInterval::ALL`]: every step guided.
    fn default() -> Self {
        GuidanceInterval::ALL
    }
}

impl fmt::Display for GuidanceInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.from, self.to)
    }
}

impl FromStr for GuidanceInterval {
    type Err = DiffusionError;

    /// Parses `FROM,TO`, e.g. `0.1,0.6`.
    fn from_str(text: &str) -> Result<Self> {
        let parsed = text
            .split_once(',')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some((from, to)) => GuidanceInterval::new(from, to),
            None => invalid(
                "guidance interval",
                format!("expected FROM,TO (two numbers between 0 and 1), got `{text}`"),
            ),
        }
    }
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
/// one of them, and outside its [`GuidanceInterval`], where the conditional output is used
/// as it is. The network's output is combined as it is (ε̂, v̂ or x̂0): the conversions
/// between them are affine in the output at a fixed (x_t, t), so guiding any of them is the
/// same as guiding ε̂.
pub struct Guided<'a, D: Denoiser + ?Sized> {
    model: &'a D,
    classes: Tensor,
    unconditional: Tensor,
    scale: f64,
    /// The guided steps, and the schedule's number of steps they are fractions of.
    interval: GuidanceInterval,
    n_steps: usize,
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
            interval: GuidanceInterval::ALL,
            n_steps: 1,
        })
    }

    /// Guides only the steps in `interval` of a schedule of `n_steps` diffusion steps.
    pub fn within(self, interval: GuidanceInterval, n_steps: usize) -> Self {
        Guided {
            interval,
            n_steps,
            ..self
        }
    }

    /// The guidance scale at network time `t` (the batch's first: the samplers give every
    /// sample the same time).
    fn scale_at(&self, t: &Tensor) -> candle_core::Result<f64> {
        if self.interval == GuidanceInterval::ALL {
            return Ok(self.scale);
        }
        let t = f64::from(t.get(0)?.to_scalar::<f32>()?);
        Ok(if self.interval.contains(t, self.n_steps) {
            self.scale
        } else {
            1.0
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
        let scale = self.scale_at(t)?;
        if scale == 1.0 {
            return self.model.predict_classes(x_t, t, &classes);
        }
        if scale == 0.0 {
            return self.model.predict_classes(x_t, t, &unconditional);
        }
        let both = self.model.predict_classes(
            &Tensor::cat(&[x_t, x_t], 0)?,
            &Tensor::cat(&[t, t], 0)?,
            &Tensor::cat(&[&classes, &unconditional], 0)?,
        )?;
        let (cond, uncond) = (both.narrow(0, 0, batch)?, both.narrow(0, batch, batch)?);
        &uncond + (cond - &uncond)?.affine(scale, 0.0)?
    }

    fn num_classes(&self) -> usize {
        0
    }
}
