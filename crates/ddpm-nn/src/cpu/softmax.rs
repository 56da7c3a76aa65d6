//! CPU kernels (f32/f64) of `softmax(scale * x)` over the last dim and its backward, one pass
//! each, parallel over rows.

use rayon::prelude::*;

use super::real::Real;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 256;

/// Softmax forward over rows of `n`: `softmax(scale * x)`, the row maximum subtracted first.
pub(crate) fn softmax_forward<T: Real>(x: &[T], n: usize, scale: f64) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    let scale = T::from_f64(scale);
    y.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(x.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
                let max = x
                    .iter()
                    .map(|&v| v * scale)
                    .fold(x[0] * scale, |a, b| if b > a { b } else { a });
                let mut total = 0f64;
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = (x * scale - max).exp();
                    total += y.to_f64();
                }
                let inv = T::from_f64(1.0 / total);
                for y in y.iter_mut() {
                    *y = *y * inv;
                }
            }
        });
    y
}

/// Softmax backward: `dx = scale * y * (dy - sum(y * dy))` per row.
pub(crate) fn softmax_backward<T: Real>(y: &[T], dy: &[T], n: usize, scale: f64) -> Vec<T> {
    let mut dx = vec![T::default(); y.len()];
    dx.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(
            y.par_chunks(n * ROWS_PER_TASK)
                .zip(dy.par_chunks(n * ROWS_PER_TASK)),
        )
        .for_each(|(dx, (y, dy))| {
            for ((dx, y), dy) in dx.chunks_mut(n).zip(y.chunks(n)).zip(dy.chunks(n)) {
                let dot: f64 = y.iter().zip(dy).map(|(&a, &b)| (a * b).to_f64()).sum();
                let (dot, scale) = (T::from_f64(dot), T::from_f64(scale));
                for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                    *dx = scale * y * (dy - dot);
                }
            }
        });
    dx
}
