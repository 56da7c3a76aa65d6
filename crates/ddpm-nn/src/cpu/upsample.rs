//! CPU kernels (f32/f64) of nearest-neighbour up-sampling by an integer factor and its
//! backward, one pass each, parallel over planes.

use rayon::prelude::*;

use super::real::Real;

/// Up-sampling forward over `(h, w)` planes: each pixel becomes an `s x s` block.
pub(crate) fn upsample_forward<T: Real>(x: &[T], (h, w): (usize, usize), s: usize) -> Vec<T> {
    let (ho, wo) = (h * s, w * s);
    let mut y = vec![T::default(); x.len() * s * s];
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(y, x)| {
            for (i, src) in x.chunks(w).enumerate() {
                let first = &mut y[i * s * wo..(i * s + 1) * wo];
                for (d, &v) in first.chunks_mut(s).zip(src) {
                    d.fill(v);
                }
                for r in 1..s {
                    y.copy_within(i * s * wo..(i * s + 1) * wo, (i * s + r) * wo);
                }
            }
        });
    y
}

/// Up-sampling backward: each input pixel's gradient is the sum of its `s x s` block of `dy`.
pub(crate) fn upsample_backward<T: Real>(dy: &[T], (h, w): (usize, usize), s: usize) -> Vec<T> {
    let (ho, wo) = (h * s, w * s);
    let mut dx = vec![T::default(); dy.len() / (s * s)];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(ho * wo))
        .for_each(|(dx, dy)| {
            for (oi, row) in dy.chunks(wo).enumerate() {
                let dst = &mut dx[(oi / s) * w..(oi / s + 1) * w];
                for (d, block) in dst.iter_mut().zip(row.chunks(s)) {
                    for &v in block {
                        *d += v;
                    }
                }
            }
        });
    dx
}
