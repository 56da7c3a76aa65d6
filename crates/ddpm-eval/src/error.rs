//! The error type of the evaluation crate.

use std::path::PathBuf;

/// Everything that can go wrong while training, loading or running the evaluator.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading a dataset or image folder failed.
    #[error(transparent)]
    Data(#[from] ddpm_data::DataError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An image file could not be opened or decoded.
    #[error("cannot read image {path}: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// A classifier weights file is missing a tensor, has a wrong shape or does not parse.
    #[error("classifier weights {source_name}: {problem}")]
    Weights {
        /// Where the weights came from (a path, or "committed weights").
        source_name: String,
        /// What is wrong with them.
        problem: String,
    },
    /// A grid picture does not split into tiles of the requested geometry.
    #[error("grid {width}x{height} with tile {tile} and padding {padding}: {problem}")]
    Grid {
        /// Picture width in pixels.
        width: usize,
        /// Picture height in pixels.
        height: usize,
        /// Requested tile side.
        tile: usize,
        /// Requested padding between tiles.
        padding: usize,
        /// Why it does not fit.
        problem: String,
    },
    /// Inputs of the wrong shape, size or count (the message names them).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`EvalError`].
pub type Result<T> = std::result::Result<T, EvalError>;
