//! Run directories, for training and inference alike (no optimiser, no command line, no
//! data-parallel code): what a trained run is on disk and how to get a network back from it.
//!
//! ```text
//! runs/<run>/
//!   config.json                  the training configuration (written by ddpm-train)
//!   checkpoints/latest           names the newest complete checkpoint
//!   checkpoints/step_<N>/
//!     manifest.json              RunManifest: network, schedule, sampling defaults
//!     model.safetensors          weights (PyTorch state-dict names)
//!     ema.safetensors            EMA weights, when EMA is on
//!     ...                        whatever else the trainer saves (optimizer, state.json)
//! ```
//!
//! - [`RunManifest`]: everything needed to rebuild the network, its schedule and how its
//!   grids are sampled by default.
//! - [`checkpoint`]: atomic writes ([`checkpoint::save`]), `latest`, reading a run back
//!   ([`checkpoint::resolve`], [`checkpoint::load_model`]).
//! - [`select_device`]: the compute device from a command-line value.

pub mod checkpoint;
mod device;
mod error;
mod manifest;

pub use device::select_device;
pub use error::{Result, RunError, io_err};
pub use manifest::{ClassChoice, NO_GUIDANCE, RunManifest, SampleSettings};
