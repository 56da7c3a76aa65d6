use std::path::PathBuf;

/// Errors of reading and writing run directories.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The network could not be built (boxed: it is large).
    #[error(transparent)]
    Unet(Box<ddpm_unet::UnetError>),
    /// The schedule could not be built.
    #[error(transparent)]
    Diffusion(#[from] ddpm_diffusion::DiffusionError),
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("writing", "reading", ...), with the object.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A checkpoint is missing, incomplete or does not fit.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The checkpoint (or run) directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A device could not be opened.
    #[error("{0}")]
    Device(String),
    /// A class named on the command line that the run does not have.
    #[error("{0}")]
    UnknownClass(String),
}

impl From<ddpm_unet::UnetError> for RunError {
    fn from(e: ddpm_unet::UnetError) -> Self {
        RunError::Unet(Box::new(e))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, RunError>;

/// Maps an I/O error while doing `what` ("writing", "creating", ...) to [`RunError::Io`] for
/// `path`.
pub fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.into();
    move |source| RunError::Io { what, path, source }
}
