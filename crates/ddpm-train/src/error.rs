use std::path::PathBuf;

/// Errors of the training library.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The network could not be built or loaded (boxed: it is large).
    #[error(transparent)]
    Unet(Box<ddpm_unet::UnetError>),
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] ddpm_data::DataError),
    /// The schedule or sampler rejected its input.
    #[error(transparent)]
    Diffusion(#[from] ddpm_diffusion::DiffusionError),
    /// A run directory or checkpoint could not be read or written.
    #[error(transparent)]
    Run(#[from] ddpm_run::RunError),
    /// A collective operation of data-parallel training failed (a peer died, timed out, ...).
    #[error(transparent)]
    Dist(#[from] ddpm_dist::DistError),
    /// Writing a sample grid failed.
    #[error(transparent)]
    Image(#[from] ddpm_image::ImageError),
    /// The checkpoint to resume from is missing or damaged (`hint`: which one is intact).
    #[error("{cause}; {hint}")]
    DamagedCheckpoint {
        /// What is wrong with it (boxed: it is large).
        cause: Box<ddpm_run::RunError>,
        /// The newest intact earlier checkpoint and how to resume from it, or that none is.
        hint: String,
    },
    /// Options that do not fit together.
    #[error("{0}")]
    Config(String),
    /// The loss stopped being a finite number.
    #[error(
        "the loss became {loss} at step {step}: training stopped; the last good checkpoint \
         (if any) is untouched. Try a lower --lr or --grad-clip"
    )]
    NonFiniteLoss {
        /// The optimizer step at which it happened (1-based).
        step: u64,
        /// The value.
        loss: f32,
    },
}

impl TrainError {
    /// True when the error lies in what the run was given (options, configuration, data, the
    /// checkpoint to resume) rather than in running it (I/O, devices, peers, divergence).
    pub fn is_bad_input(&self) -> bool {
        match self {
            TrainError::Config(_)
            | TrainError::Data(_)
            | TrainError::Diffusion(_)
            | TrainError::Unet(_)
            | TrainError::DamagedCheckpoint { .. } => true,
            TrainError::Run(e) => e.is_bad_input(),
            TrainError::Candle(_)
            | TrainError::Dist(_)
            | TrainError::Image(_)
            | TrainError::NonFiniteLoss { .. } => false,
        }
    }
}

impl From<ddpm_unet::UnetError> for TrainError {
    fn from(e: ddpm_unet::UnetError) -> Self {
        TrainError::Unet(Box::new(e))
    }
}

/// Result alias of the training library.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Maps an I/O error while doing `what` to a [`TrainError::Run`] naming `path`.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TrainError {
    let inner = ddpm_run::io_err(what, path);
    move |source| TrainError::Run(inner(source))
}
