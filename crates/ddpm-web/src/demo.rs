//! The demo's engine, the same on every platform: a checkpoint read from bytes, a grid of
//! samples drawn step by step, the forward process on a real digit.

use std::cell::OnceCell;
use std::ops::Range;

use candle_core::{Device, Tensor};
use ddpm_data::{ImageSet, batch_tensor, embedded_mnist_with_labels};
use ddpm_diffusion::{
    BatchRows, GenerateOptions, Guidance, NoiseRng, NoiseSource, SAMPLER_NAMES, SamplerChoices,
    SamplerConfig, Schedule, StepInfo, generate,
};
use ddpm_run::{RunManifest, checkpoint};
use ddpm_unet::Model;
use serde::{Deserialize, Serialize};

use crate::{Result, WebError};

/// Images per side of the demo's square grid.
pub const GRID_SIDE: usize = 4;

/// What the page asks to draw: one grid of [`GRID_SIDE`]² samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridRequest {
    /// The digit (class label) of every sample; `None`: any digit (the network's
    /// unconditional output, no guidance).
    pub class: Option<u32>,
    /// The sampler, by its `--sampler` name (one of [`SAMPLER_NAMES`]).
    pub sampler: String,
    /// Network evaluations (noise levels for Euler and Heun); `None`: the sampler's default
    /// (DDPM always visits all T steps and takes none).
    pub steps: Option<usize>,
    /// The classifier-free guidance scale w (with a class).
    pub guidance: f64,
    /// Seed of x_T and of every step's noise ([`NoiseRng`]).
    pub seed: u64,
}

impl GridRequest {
    /// The generation options for `manifest`'s run: its own sampler settings changed to this
    /// request's sampler and steps (as the sampler's `--sampler` and `--steps` do), guided in
    /// the run's guidance interval, one batch of the whole grid.
    pub fn options(&self, manifest: &RunManifest) -> Result<GenerateOptions> {
        let n = GRID_SIDE * GRID_SIDE;
        let sampler = manifest.sample.sampler.with(&SamplerChoices {
            kind: Some(self.sampler.clone()),
            steps: self.steps,
            ..SamplerChoices::default()
        })?;
        let guidance = match self.class {
            None => None,
            Some(class) => {
                if manifest.model.num_classes() == 0 {
                    return Err(WebError::Invalid(
                        "this model is unconditional: it draws any digit, choose \"any\"".into(),
                    ));
                }
                Some(Guidance {
                    classes: vec![class; n],
                    scale: self.guidance,
                    interval: manifest.sample.guidance_interval,
                })
            }
        };
        Ok(GenerateOptions {
            n,
            image: manifest.model.image().dims(),
            batch_size: n,
            sampler,
            prediction: manifest.prediction,
            guidance,
        })
    }
}

/// One of `count` parts of the grid, each a band of whole rows, so that several Web Workers
/// draw one grid together: part `index` of `count` gets rows
/// `index·R/count .. (index+1)·R/count` of the R = [`GRID_SIDE`] rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPart {
    /// Which part, `0..count`.
    pub index: usize,
    /// How many parts the grid is split into, `1..=GRID_SIDE`.
    pub count: usize,
}

impl GridPart {
    /// The whole grid in one part.
    pub const WHOLE: GridPart = GridPart { index: 0, count: 1 };

    /// The grid rows of this part.
    pub fn rows(&self) -> Result<Range<usize>> {
        if self.count == 0 || self.count > GRID_SIDE || self.index >= self.count {
            return Err(WebError::Invalid(format!(
                "grid part {} of {}: the grid splits into 1 to {GRID_SIDE} parts, numbered from 0",
                self.index, self.count
            )));
        }
        Ok(self.index * GRID_SIDE / self.count..(self.index + 1) * GRID_SIDE / self.count)
    }
}

/// What the page shows about the loaded model and offers as defaults.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The class names (empty for an unconditional model).
    pub classes: Vec<String>,
    /// (C, H, W) of one sample.
    pub image: [usize; 3],
    /// Diffusion steps T.
    pub n_steps: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// The run's own sampler settings (the page's defaults).
    pub sampler: SamplerConfig,
    /// The run's guidance scale.
    pub guidance: f64,
    /// Every sampler the page may ask for.
    pub samplers: Vec<&'static str>,
}

/// One step of the noise schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScheduleRow {
    /// The timestep, 0..T.
    pub t: usize,
    /// β_t.
    pub beta: f32,
    /// α_t = 1 − β_t.
    pub alpha: f32,
    /// ᾱ_t = ∏ α.
    pub alpha_bar: f32,
    /// σ_t = √(1 − ᾱ_t), the noise level of x_t.
    pub sigma: f32,
}

/// An RGBA picture, row-major, ready for a canvas' `ImageData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 4 bytes per pixel.
    pub rgba: Vec<u8>,
}

/// Samples in [-1, 1] (N, C, H, W), N a multiple of [`GRID_SIDE`], tiled into a grid
/// [`GRID_SIDE`] wide exactly as the sampler writes its PNGs (`ddpm_image::to_u8`, `grid`).
pub fn grid_picture(x: &Tensor) -> Result<Picture> {
    let picture = ddpm_image::grid(&ddpm_image::to_u8(x)?, GRID_SIDE, 0)?.to_rgba8();
    Ok(Picture {
        width: picture.width(),
        height: picture.height(),
        rgba: picture.into_raw(),
    })
}

/// A real digit and the same digit noised at one timestep.
#[derive(Debug, Clone)]
pub struct Noised {
    /// The digit x0.
    pub x0: Picture,
    /// x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε.
    pub x_t: Picture,
    /// The schedule at t.
    pub row: ScheduleRow,
}

/// A loaded model with its schedule: everything the page runs.
pub struct Demo {
    model: Model,
    manifest: RunManifest,
    schedule: Schedule,
    digits: OnceCell<(ImageSet, Vec<u8>)>,
}

impl Demo {
    /// Reads a checkpoint from its `manifest.json` and a safetensors weights file (f32 or f16;
    /// `weights_name` names it in errors).
    pub fn from_bytes(manifest_json: &[u8], weights: &[u8], weights_name: &str) -> Result<Self> {
        let manifest = checkpoint::manifest_from_bytes(manifest_json, checkpoint::MANIFEST_FILE)?;
        let device = Device::Cpu;
        let model = checkpoint::model_from_bytes(&manifest, weights, weights_name, &device)?;
        let schedule = manifest.schedule(&device)?;
        Ok(Demo {
            model,
            manifest,
            schedule,
            digits: OnceCell::new(),
        })
    }

    /// The model's description and the page's defaults.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            classes: self.manifest.classes.clone().unwrap_or_default(),
            image: self.manifest.model.image().dims(),
            n_steps: self.manifest.n_steps,
            parameters: self.model.trainable_count(),
            sampler: self.manifest.sample.sampler,
            guidance: self.manifest.sample.guidance,
            samplers: SAMPLER_NAMES.to_vec(),
        }
    }

    /// The noise schedule, one row per timestep.
    pub fn schedule_rows(&self) -> Vec<ScheduleRow> {
        (0..self.schedule.n_steps()).map(|t| self.row(t)).collect()
    }

    fn row(&self, t: usize) -> ScheduleRow {
        let alpha_bar = self.schedule.alpha_bars()[t];
        ScheduleRow {
            t,
            beta: self.schedule.betas()[t],
            alpha: self.schedule.alphas()[t],
            alpha_bar,
            sigma: (1.0 - alpha_bar).sqrt(),
        }
    }

    /// Draws `part` of the grid `request` asks for (its rows' samples exactly as drawing the
    /// whole grid gives them: the same x_T and step noise, [`BatchRows`]), handing every step
    /// to `on_step`, and returns the part's final samples (N, C, H, W) in [-1, 1].
    pub fn grid(
        &self,
        request: &GridRequest,
        part: GridPart,
        mut on_step: impl FnMut(StepInfo<'_>),
    ) -> Result<Tensor> {
        let rows = part.rows()?;
        let mut options = request.options(&self.manifest)?;
        let whole = options.n;
        let (start, len) = (rows.start * GRID_SIDE, rows.len() * GRID_SIDE);
        let [c, h, w] = options.image;
        let mut noise = NoiseRng::new(request.seed);
        let x_t = noise
            .randn(&(whole, c, h, w).into(), &Device::Cpu)?
            .narrow(0, start, len)?;
        options.n = len;
        options.batch_size = len;
        if let Some(guidance) = &mut options.guidance {
            guidance.classes = guidance.classes[start..start + len].to_vec();
        }
        Ok(generate(
            &self.model,
            &self.schedule,
            &options,
            Some(&x_t),
            &mut BatchRows::new(&mut noise, whole, start)?,
            &Device::Cpu,
            |_batch, info| on_step(info),
        )?)
    }

    /// The first embedded MNIST digit of `class` (any digit: the first one) noised at
    /// timestep `t` with noise drawn from `seed`.
    pub fn noised_digit(&self, class: Option<u32>, t: usize, seed: u64) -> Result<Noised> {
        if t >= self.schedule.n_steps() {
            return Err(WebError::Invalid(format!(
                "timestep {t} is outside 0..{}",
                self.schedule.n_steps()
            )));
        }
        let (digits, labels) = self.digits.get_or_init(embedded_mnist_with_labels);
        let index = match class {
            None => 0,
            Some(c) => labels
                .iter()
                .position(|&l| u32::from(l) == c)
                .ok_or_else(|| WebError::Invalid(format!("no embedded digit {c}")))?,
        };
        let device = Device::Cpu;
        let x0 = batch_tensor(digits, &[index], &[false], &device)?;
        let eps = NoiseRng::new(seed).normal_vec(x0.elem_count());
        let eps = Tensor::from_vec(eps, x0.shape(), &device)?;
        let x_t = self
            .schedule
            .add_noise(&x0, &Tensor::new(&[t as u32], &device)?, &eps)?;
        Ok(Noised {
            x0: single_picture(&x0)?,
            x_t: single_picture(&x_t)?,
            row: self.row(t),
        })
    }
}

/// One sample (1, C, H, W) as a picture.
fn single_picture(x: &Tensor) -> Result<Picture> {
    let picture = ddpm_image::to_u8(x)?.picture(0).to_rgba8();
    Ok(Picture {
        width: picture.width(),
        height: picture.height(),
        rgba: picture.into_raw(),
    })
}
