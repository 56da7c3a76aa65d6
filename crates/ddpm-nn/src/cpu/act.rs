//! Fused CPU kernels (f32/f64) of LeakyReLU and its backward: one vectorised pass each,
//! parallel over chunks, instead of candle's chain of element-wise ops.

use rayon::prelude::*;

use super::real::Real;

/// Rows of at least this many elements per rayon task for element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 16;

/// LeakyReLU forward.
pub(crate) fn leaky_relu_forward<T: Real>(x: &[T], slope: f64) -> Vec<T> {
    let slope = T::from_f64(slope);
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                // Both sides computed first: a select the loop vectorises, not a branch that
                // mispredicts on every other element (measured: 6% of a sampling forward).
                let scaled = slope * x;
                *y = if x > T::default() { x } else { scaled };
            }
        });
    y
}

/// LeakyReLU backward: `dy` where `x > 0`, `slope * dy` elsewhere.
pub(crate) fn leaky_relu_backward<T: Real>(x: &[T], dy: &[T], slope: f64) -> Vec<T> {
    let slope = T::from_f64(slope);
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(
            x.par_chunks(ELEMENTWISE_CHUNK)
                .zip(dy.par_chunks(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(dx, (x, dy))| {
            for ((dx, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
                let scaled = slope * d;
                *dx = if x > T::default() { d } else { scaled };
            }
        });
    dx
}
