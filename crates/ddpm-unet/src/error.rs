//! The error type of the networks crate.

use std::path::PathBuf;

/// Everything that can go wrong when building, running, saving or loading a network.
#[derive(Debug, thiserror::Error)]
pub enum UnetError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is out of its valid range or inconsistent with another one.
    #[error("invalid {model} config: {why}")]
    Config {
        /// Which network the configuration is for.
        model: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A state dict lacks a tensor the network needs.
    #[error("state dict is missing tensor `{name}` (expected shape {expected:?})")]
    Missing {
        /// PyTorch name of the tensor.
        name: String,
        /// The shape the network expects.
        expected: Vec<usize>,
    },
    /// A state dict holds a tensor the network does not have.
    #[error("state dict has unexpected tensor `{name}` (shape {shape:?})")]
    Unexpected {
        /// PyTorch name of the tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A state-dict tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?} but the network expects {expected:?}")]
    ShapeMismatch {
        /// PyTorch name of the tensor.
        name: String,
        /// The shape the network expects.
        expected: Vec<usize>,
        /// The shape found in the state dict.
        found: Vec<usize>,
    },
    /// A frozen tensor (the positional-encoding table) differs from the one the network builds.
    #[error(
        "tensor `{name}` differs from the network's fixed table (max abs diff {max_abs_diff:e})"
    )]
    FrozenMismatch {
        /// PyTorch name of the tensor.
        name: String,
        /// Largest absolute elementwise difference.
        max_abs_diff: f64,
    },
    /// A safetensors file could not be read or written.
    #[error("{action} {path}: {source}")]
    File {
        /// "cannot read" or "cannot write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: candle_core::Error,
    },
}

/// Result alias of the networks crate.
pub type Result<T> = std::result::Result<T, UnetError>;

/// Shorthand for a [`UnetError::Config`] error.
pub(crate) fn config_error<T>(model: &'static str, why: impl Into<String>) -> Result<T> {
    Err(UnetError::Config {
        model,
        why: why.into(),
    })
}
