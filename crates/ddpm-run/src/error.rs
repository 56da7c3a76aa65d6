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
    /// Writing a checkpoint failed; nothing already saved was changed.
    #[error(
        "cannot save checkpoint {checkpoint} in {}: {cause} (the partial files were removed; \
         `latest` and the earlier checkpoints are untouched)",
        root.display()
    )]
    Save {
        /// The checkpoint being written (`step_<N>`).
        checkpoint: String,
        /// The checkpoints folder.
        root: PathBuf,
        /// What failed, naming the file.
        cause: Box<RunError>,
    },
    /// A device could not be opened.
    #[error("{0}")]
    Device(String),
    /// A class named on the command line that the run does not have.
    #[error("{0}")]
    UnknownClass(String),
}

impl RunError {
    /// True when the error lies in what was given (a checkpoint that is missing, damaged or
    /// does not fit, a malformed file, an unknown class or device) rather than in I/O.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RunError::Checkpoint { .. }
            | RunError::Json { .. }
            | RunError::Unet(_)
            | RunError::Diffusion(_)
            | RunError::Device(_)
            | RunError::UnknownClass(_) => true,
            RunError::Candle(_) | RunError::Io { .. } | RunError::Save { .. } => false,
        }
    }
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
