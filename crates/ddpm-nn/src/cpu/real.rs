//! The element types of the CPU kernels (f32, f64) and the arithmetic they need.

/// An element type the kernels handle (f32, f64), with the arithmetic they need (statistics
/// are kept in f64).
pub(crate) trait Real:
    Copy
    + Default
    + Send
    + Sync
    + std::ops::AddAssign
    + 'static
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// The multiplicative identity.
    const ONE: Self;
    /// Conversion from f64.
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// `e^self`.
    fn exp(self) -> Self;
}

impl Real for f32 {
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
}
