/// Errors of the diffusion crate.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A parameter is out of its valid range.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The parameter's name.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// Result alias of the diffusion crate.
pub type Result<T> = std::result::Result<T, DiffusionError>;

pub(crate) fn invalid<T>(what: &'static str, why: impl Into<String>) -> Result<T> {
    Err(DiffusionError::Invalid {
        what,
        why: why.into(),
    })
}
