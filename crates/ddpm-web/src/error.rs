/// Errors of the browser demo's engine, worded for the page that shows them.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The checkpoint (manifest or weights) could not be read or does not fit.
    #[error(transparent)]
    Run(#[from] ddpm_run::RunError),
    /// Sampling failed or its settings were refused.
    #[error(transparent)]
    Diffusion(#[from] ddpm_diffusion::DiffusionError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A picture could not be made from the samples.
    #[error(transparent)]
    Image(#[from] ddpm_image::ImageError),
    /// The page sent a request this crate cannot read.
    #[error("bad request: {0}")]
    Request(#[from] serde_json::Error),
    /// The request does not fit the loaded model.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, WebError>;
