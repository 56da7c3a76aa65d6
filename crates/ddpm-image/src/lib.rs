//! From sample tensors to pictures (the sampling itself is `ddpm-diffusion`'s).
//!
//! - [`to_u8`] / [`grid`] / [`save_image`]: `(x + 1) / 2 · 255`, clamped and rounded, tiled
//!   into a grid, written as RGB (3 channels) or L (1 channel) — RGB is written as RGB, never
//!   through a BGR API (the reference's red/blue swap).
//! - [`Trajectory`]: x_t at chosen timesteps for a few images, as a strip PNG or animated GIF.

mod error;
mod picture;
mod trajectory;

pub use error::{ImageError, Result};
pub use picture::{Images, grid, save_image, to_u8};
pub use trajectory::Trajectory;
