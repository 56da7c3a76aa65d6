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
        exp_f32(self)
    }
}

/// `e^x` in f32 with plain arithmetic (no libm call, so loops of it vectorise, in the browser
/// too): x = n·ln 2 + r with |r| ≤ ln 2 / 2 (Cody–Waite), e^r by Cephes' `expf` polynomial,
/// 2^n from the exponent bits. Within 2 ulp of the exact value (`tests::exp_is_within_2_ulp`);
/// arguments are clamped to [-87, 88], where f32 stays normal and finite.
#[inline]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer, which the low mantissa bits then hold.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_n = ((shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23;
    e_r * f32::from_bits(two_n)
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

#[cfg(test)]
mod tests {
    use super::exp_f32;

    /// Distance in units in the last place between two positive finite f32.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_is_within_2_ulp() {
        let mut worst = (0, 0f32);
        let steps = 400_000;
        for i in 0..=steps {
            let x = -87.0 + 175.0 * i as f32 / steps as f32;
            let exact = (f64::from(x)).exp() as f32;
            let d = ulps(exp_f32(x), exact);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_instead_of_overflowing_and_keeps_nan() {
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 2e-38);
        assert_eq!(exp_f32(-1e4), exp_f32(-87.0));
        assert!(
            exp_f32(f32::NAN).is_nan(),
            "a NaN must reach the divergence check"
        );
    }
}
