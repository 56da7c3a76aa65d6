use std::path::PathBuf;

/// Errors of image output.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The request does not make sense (grid shape, tensor shape, ...).
    #[error("{0}")]
    Invalid(String),
    /// Writing an image failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ImageError>;
