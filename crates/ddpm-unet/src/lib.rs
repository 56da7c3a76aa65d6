//! The denoising networks ε̂(x_t, t) of the DDPM toolkit, on candle:
//!
//! - [`RefUNetConfig`]: the reference UNet `MyUNet_w_pe` (LayerNorm or BatchNorm blocks),
//!   bit-compatible with PyTorch state dicts;
//! - [`ResUNetConfig`]: the residual UNet of DL-Demos (`unet_res_cfg`);
//! - [`ModernUNetConfig`]: a DDPM / diffusers-style UNet (GroupNorm, SiLU, attention).
//!
//! [`Model`] builds any of them from a [`ModelConfig`] with a seeded initialisation, runs
//! them, lists the trainable variables, and saves / loads safetensors state dicts under the
//! PyTorch parameter names. `docs/networks.md` describes the networks and their sizes.

mod config;
mod error;
mod layers;
mod model;
mod modern;
mod reference;
mod residual;
mod spec;
mod time;

pub use config::{
    ImageShape, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig, ResidualFrom,
};
pub use ddpm_diffusion::Denoiser;
pub use error::{Result, UnetError};
pub use layers::Tracer;
pub use model::Model;
pub use spec::{ModelKind, ModelSpec};
pub use time::{PE_TABLE_NAME, sinusoidal_table};
