//! Fused CPU kernels (f32/f64) of floor-mode max-pooling with stride = kernel, and its
//! backward (the gradient goes to the first maximum of each window). One pass each, parallel
//! over planes.

use rayon::prelude::*;

use super::real::Real;

/// Geometry of a floor-mode max-pool with stride = kernel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeom {
    /// Batch * channels.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl PoolGeom {
    /// Output height and width.
    pub fn out(&self) -> (usize, usize) {
        (self.h / self.k, self.w / self.k)
    }

    /// Flat index (within the plane) of the first maximum of window (i, j), row-major.
    #[inline]
    fn first_argmax<T: Real>(&self, plane: &[T], i: usize, j: usize) -> usize {
        let mut best = (i * self.k) * self.w + j * self.k;
        for p in 0..self.k {
            for q in 0..self.k {
                let idx = (i * self.k + p) * self.w + j * self.k + q;
                // Strictly greater: ties keep the earlier element; NaN propagates like torch.
                if plane[idx] > plane[best]
                    || (plane[idx].to_f64().is_nan() && !plane[best].to_f64().is_nan())
                {
                    best = idx;
                }
            }
        }
        best
    }
}

/// Max-pool forward: (planes, h, w) -> (planes, h/k, w/k).
pub(crate) fn max_pool_forward<T: Real>(g: &PoolGeom, x: &[T]) -> Vec<T> {
    let (ho, wo) = g.out();
    let mut y = vec![T::default(); g.planes * ho * wo];
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|(y, plane)| {
            for i in 0..ho {
                for j in 0..wo {
                    y[i * wo + j] = plane[g.first_argmax(plane, i, j)];
                }
            }
        });
    y
}

/// Max-pool backward: each output gradient goes to the first maximum of its window.
pub(crate) fn max_pool_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T]) -> Vec<T> {
    let (ho, wo) = g.out();
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(g.h * g.w)
        .zip(x.par_chunks(g.h * g.w).zip(dy.par_chunks(ho * wo)))
        .for_each(|(dx, (plane, dy))| {
            for i in 0..ho {
                for j in 0..wo {
                    dx[g.first_argmax(plane, i, j)] += dy[i * wo + j];
                }
            }
        });
    dx
}
