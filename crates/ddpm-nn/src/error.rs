//! Errors of this crate, converted into [`candle_core::Error`] at the API boundary.

use candle_core::Shape;

/// What went wrong in a building block; every variant names the offending tensor or setting.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// An input tensor has the wrong rank or shape for the operation.
    #[error("{op}: {what} has shape {shape:?}, expected {expected}")]
    BadShape {
        /// The operation that rejected the tensor.
        op: &'static str,
        /// Which argument (e.g. "input", "weight").
        what: &'static str,
        /// The shape that was passed.
        shape: Shape,
        /// A description of the accepted shapes.
        expected: String,
    },
    /// A hyper-parameter is out of range (zero kernel, groups not dividing channels, ...).
    #[error("{op}: invalid configuration: {reason}")]
    BadConfig {
        /// The operation or module.
        op: &'static str,
        /// Why the configuration is invalid.
        reason: String,
    },
    /// A variable was requested with an initialiser that the seeded initialisation cannot draw.
    #[error("seeded init: variable `{name}` uses an unsupported initialiser ({init})")]
    UnsupportedInit {
        /// Full variable name.
        name: String,
        /// The initialiser, debug-printed.
        init: String,
    },
    /// A spec names a variable that is not in the VarMap.
    #[error("seeded init: variable `{name}` is not in the VarMap")]
    MissingVar {
        /// Full variable name.
        name: String,
    },
    /// A buffer (running statistic) failed to load.
    #[error("{module}: buffer `{name}`: {reason}")]
    Buffer {
        /// The module that owns the buffer.
        module: String,
        /// Buffer name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<NnError> for candle_core::Error {
    fn from(e: NnError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Builds a [`NnError::BadShape`] as a candle error.
pub(crate) fn bad_shape(
    op: &'static str,
    what: &'static str,
    shape: &Shape,
    expected: impl Into<String>,
) -> candle_core::Error {
    NnError::BadShape {
        op,
        what,
        shape: shape.clone(),
        expected: expected.into(),
    }
    .into()
}

/// Builds a [`NnError::BadConfig`] as a candle error.
pub(crate) fn bad_config(op: &'static str, reason: impl Into<String>) -> candle_core::Error {
    NnError::BadConfig {
        op,
        reason: reason.into(),
    }
    .into()
}
