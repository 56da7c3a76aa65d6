use std::path::Path;

use candle_core::Tensor;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame};

use crate::{ImageError, Result, grid, save_image, to_u8};

/// Snapshots of the reverse process for the first few images: x_t at about `frames` evenly
/// spaced points of the chain (the last is the final sample).
#[derive(Debug)]
pub struct Trajectory {
    images: usize,
    every: usize,
    snapshots: Vec<(f64, Tensor)>,
}

impl Trajectory {
    /// Records `images` images at about `frames` points of a chain of `total_steps` steps.
    pub fn new(images: usize, frames: usize, total_steps: usize) -> Self {
        Self {
            images,
            every: total_steps.div_ceil(frames.max(1)).max(1),
            snapshots: Vec::new(),
        }
    }

    /// Feeds one step of the chain (`done` steps of `total` done, at timestep `t`).
    pub fn observe(&mut self, done: usize, total: usize, t: f64, x: &Tensor) -> Result<()> {
        if done.is_multiple_of(self.every) || done == total {
            let n = self.images.min(x.dim(0)?);
            self.snapshots.push((t, x.narrow(0, 0, n)?.copy()?));
        }
        Ok(())
    }

    /// The timesteps recorded, in order.
    pub fn timesteps(&self) -> Vec<f64> {
        self.snapshots.iter().map(|(t, _)| *t).collect()
    }

    /// Writes a strip (one row per image, one column per snapshot; `.png`) or an animated GIF
    /// (one frame per snapshot, images side by side; `.gif`).
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.snapshots.is_empty() {
            return Err(ImageError::Invalid(
                "the trajectory recorded nothing".into(),
            ));
        }
        let is_gif = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gif"));
        if is_gif {
            return self.save_gif(path);
        }
        // Rows = images, columns = time: interleave the snapshots image by image.
        let per_image: Vec<Tensor> = (0..self.snapshots[0].1.dim(0)?)
            .flat_map(|i| self.snapshots.iter().map(move |(_, x)| x.narrow(0, i, 1)))
            .collect::<candle_core::Result<_>>()?;
        let all = Tensor::cat(&per_image, 0)?;
        save_image(&grid(&to_u8(&all)?, self.snapshots.len(), 2)?, path)
    }

    fn save_gif(&self, path: &Path) -> Result<()> {
        let io = |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let write = |source| ImageError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension("partial");
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut encoder = GifEncoder::new_with_speed(file, 10);
        encoder.set_repeat(Repeat::Infinite).map_err(write)?;
        for (_, x) in &self.snapshots {
            let images = to_u8(&x.clamp(-1f32, 1f32)?)?;
            let frame = grid(&images, images.len(), 2)?.to_rgba8();
            encoder
                .encode_frame(Frame::from_parts(
                    frame,
                    0,
                    0,
                    Delay::from_numer_denom_ms(300, 1),
                ))
                .map_err(write)?;
        }
        drop(encoder);
        std::fs::rename(&tmp, path).map_err(io)
    }
}
