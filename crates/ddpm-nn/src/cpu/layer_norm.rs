//! Fused CPU kernels (f32/f64) of LayerNorm over all but the first dim (the (C,H,W) of each
//! sample) and its backward. candle runs this layer as a chain of single-threaded element-wise
//! ops whose broadcast reductions dominate a CPU training step; one pass each, parallel over
//! samples, replaces them.

use rayon::prelude::*;

use super::real::Real;
use super::reduce::{pair_sum, plane_sum};

/// Mean and `1/sqrt(biased var + eps)` of one sample.
fn stats<T: Real>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = plane_sum(x, |v| v) / n;
    let centre = T::from_f64(mean);
    let var = plane_sum(x, |v| (v - centre) * (v - centre)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm forward: `x` (B, N) rows, `w`, `b` (N) -> `y` (B, N). Statistics accumulated in
/// f64 across short runs ([`pair_sum`]), the normalisation itself in `T`.
pub(crate) fn layer_norm_forward<T: Real>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    let n = w.len();
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
        let (mean, rstd) = stats(x, eps);
        let (mean, rstd) = (T::from_f64(mean), T::from_f64(rstd));
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - mean) * rstd * w + b;
        }
    });
    y
}

/// LayerNorm backward: returns `[dx (B*N), dw (N), db (N)]` packed in one vector.
pub(crate) fn layer_norm_backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let n = w.len();
    let batch = x.len() / n;
    let mut out = vec![T::default(); x.len() + 2 * n];
    let (dx, _) = out.split_at_mut(x.len());
    let threads = rayon::current_num_threads().max(1);
    let per = batch.div_ceil(threads).max(1);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(per * n)
        .enumerate()
        .map(|(chunk, dx)| {
            let mut dw = vec![0f64; n];
            let mut db = vec![0f64; n];
            let mut xhat = vec![T::default(); n];
            let mut g = vec![T::default(); n];
            for (s, dx) in dx.chunks_mut(n).enumerate() {
                let row = (chunk * per + s) * n;
                let (x, dy) = (&x[row..row + n], &dy[row..row + n]);
                let (mean, rstd) = stats(x, eps);
                let (mean, rstd_t) = (T::from_f64(mean), T::from_f64(rstd));
                for (xh, &x) in xhat.iter_mut().zip(x) {
                    *xh = (x - mean) * rstd_t;
                }
                for ((g, &d), &w) in g.iter_mut().zip(dy).zip(w) {
                    *g = d * w;
                }
                let sum_g = plane_sum(&g, |g| g);
                let sum_gx = pair_sum(&g, &xhat, |g, xh| g * xh);
                for (((dw, db), &d), &xh) in dw.iter_mut().zip(db.iter_mut()).zip(dy).zip(&xhat) {
                    *dw += (d * xh).to_f64();
                    *db += d.to_f64();
                }
                let (a, c) = (
                    T::from_f64(sum_g / n as f64),
                    T::from_f64(sum_gx / n as f64),
                );
                for ((dx, &g), &xh) in dx.iter_mut().zip(&g).zip(&xhat) {
                    *dx = rstd_t * (g - a - xh * c);
                }
            }
            (dw, db)
        })
        .collect();
    let (_, params) = out.split_at_mut(x.len());
    let (dw_out, db_out) = params.split_at_mut(n);
    for (dw, db) in partials {
        for i in 0..n {
            dw_out[i] += T::from_f64(dw[i]);
            db_out[i] += T::from_f64(db[i]);
        }
    }
    out
}
