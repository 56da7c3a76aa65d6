//! The error type of the dataset crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, preprocessing, caching or planning data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An IDX file (MNIST format) is malformed.
    #[error("{path}: invalid IDX file: {problem}")]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An images file and a labels file disagree on the number of items.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Number of images it holds.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Number of labels it holds.
        n_labels: usize,
    },
    /// No MNIST file of the wanted kind was found in a folder.
    #[error("no MNIST {what} file in {dir} (looked for {tried})")]
    MnistMissing {
        /// The folder searched.
        dir: PathBuf,
        /// Which file: e.g. "train images".
        what: String,
        /// The names that were tried, comma separated.
        tried: String,
    },
    /// A file that claims to be an image could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// An image folder holds no decodable image.
    #[error(
        "no image found in {dir} ({non_images} non-image files, {corrupt} corrupt images skipped)"
    )]
    NoImages {
        /// The folder searched (recursively).
        dir: PathBuf,
        /// Files skipped because their extension is not an image's.
        non_images: usize,
        /// Images skipped because they failed to decode.
        corrupt: usize,
    },
    /// A preprocessed cache file could not be written or has an unexpected content.
    #[error("cache {path}: {problem}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// Pixel data does not fit the declared shape.
    #[error("image set: {0}")]
    Shape(String),
    /// Options that cannot work together (e.g. 2 channels, rank >= world).
    #[error("invalid options: {0}")]
    Options(String),
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
