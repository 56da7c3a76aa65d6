//! Fused CPU kernels (f32/f64) of GroupNorm with an optional per-(sample, channel) input shift
//! and an optional SiLU: `y = act(GN(x + shift[n, c]) * w[c] + b[c])`, and their backward.
//!
//! candle runs a GroupNorm as a dozen element-wise ops whose backward reduces over the batch
//! and the pixels with strided (slow) reductions; one pass each, parallel over samples,
//! replaces them. Statistics and sums are kept in f64, per-element arithmetic in `T`.

use rayon::prelude::*;

use super::real::Real;
use super::reduce::{pair_sum, plane_sum};

/// Shape and options of a fused GroupNorm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GnGeom {
    /// Channels C.
    pub channels: usize,
    /// Pixels per channel (H*W).
    pub hw: usize,
    /// Groups (divides C).
    pub groups: usize,
    /// Variance epsilon.
    pub eps: f64,
    /// Whether a (B, C) shift is added to the input before normalising.
    pub shift: bool,
    /// Whether SiLU follows the affine.
    pub silu: bool,
}

impl GnGeom {
    /// Elements per sample.
    fn sample_len(&self) -> usize {
        self.channels * self.hw
    }

    /// Channels per group.
    fn per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// Length of the packed parameter vector `[w (C), b (C), shift (B*C) if any]`.
    pub fn params_len(&self, batch: usize) -> usize {
        2 * self.channels + if self.shift { batch * self.channels } else { 0 }
    }
}

/// `1 / (1 + e^-z)`.
#[inline]
fn sigmoid<T: Real>(z: T) -> T {
    T::ONE / (T::ONE + (-z).exp())
}

/// The parameters of sample `n`: weight, bias and that sample's shift (zeros when absent).
struct SampleParams<'a, T> {
    w: &'a [T],
    b: &'a [T],
    shift: Option<&'a [T]>,
}

impl<'a, T: Real> SampleParams<'a, T> {
    fn new(g: &GnGeom, params: &'a [T], n: usize) -> Self {
        let c = g.channels;
        SampleParams {
            w: &params[..c],
            b: &params[c..2 * c],
            shift: g.shift.then(|| &params[2 * c + n * c..2 * c + (n + 1) * c]),
        }
    }

    #[inline]
    fn shift(&self, c: usize) -> f64 {
        self.shift.map_or(0.0, |s| s[c].to_f64())
    }
}

/// Mean and `1/sqrt(biased var + eps)` of one group (`x` holds its channels back to back).
fn group_stats<T: Real>(g: &GnGeom, x: &[T], p: &SampleParams<T>, c0: usize) -> (f64, f64) {
    let m = (g.per_group() * g.hw) as f64;
    let mut sum = 0f64;
    for (i, plane) in x.chunks(g.hw).enumerate() {
        sum += plane_sum(plane, |v| v) + p.shift(c0 + i) * g.hw as f64;
    }
    let mean = sum / m;
    let mut var = 0f64;
    for (i, plane) in x.chunks(g.hw).enumerate() {
        let centre = T::from_f64(mean - p.shift(c0 + i));
        var += plane_sum(plane, |v| (v - centre) * (v - centre));
    }
    (mean, 1.0 / (var / m + g.eps).sqrt())
}

/// Forward: `x` (B, C, H*W), `params` = `[w, b, shift?]` -> `y` (B, C, H*W).
pub(crate) fn group_norm_forward<T: Real>(g: &GnGeom, x: &[T], params: &[T]) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    let (len, group_len) = (g.sample_len(), g.per_group() * g.hw);
    y.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(n, (y, x))| {
            let p = SampleParams::new(g, params, n);
            for (gi, (y, x)) in y.chunks_mut(group_len).zip(x.chunks(group_len)).enumerate() {
                let c0 = gi * g.per_group();
                let (mean, rstd) = group_stats(g, x, &p, c0);
                for (i, (y, x)) in y.chunks_mut(g.hw).zip(x.chunks(g.hw)).enumerate() {
                    let c = c0 + i;
                    // z = (x + s - mean) * rstd * w + b = x * a + o
                    let a = rstd * p.w[c].to_f64();
                    let o = T::from_f64(p.b[c].to_f64() + (p.shift(c) - mean) * a);
                    let a = T::from_f64(a);
                    if g.silu {
                        for (y, &x) in y.iter_mut().zip(x) {
                            let z = x * a + o;
                            *y = z * sigmoid(z);
                        }
                    } else {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = x * a + o;
                        }
                    }
                }
            }
        });
    y
}

/// Backward of one sample: writes `dx` and `dshift` (when shifted), accumulates `dw`, `db`.
fn sample_backward<T: Real>(
    g: &GnGeom,
    (x, dy, p): (&[T], &[T], &SampleParams<T>),
    dx: &mut [T],
    dshift: &mut [f64],
    (dw, db): (&mut [f64], &mut [f64]),
) {
    let group_len = g.per_group() * g.hw;
    let m = group_len as f64;
    for (gi, ((dx, x), dy)) in dx
        .chunks_mut(group_len)
        .zip(x.chunks(group_len))
        .zip(dy.chunks(group_len))
        .enumerate()
    {
        let c0 = gi * g.per_group();
        let (mean, rstd) = group_stats(g, x, p, c0);
        let (mut sum_g, mut sum_gx) = (0f64, 0f64);
        // First pass: g = dz * w (stored in dx), parameter gradients and the two sums.
        for (i, ((dx, x), dy)) in dx
            .chunks_mut(g.hw)
            .zip(x.chunks(g.hw))
            .zip(dy.chunks(g.hw))
            .enumerate()
        {
            let c = c0 + i;
            let (w, b) = (p.w[c], p.b[c]);
            // xhat = (x + s - mean) * rstd = x * r + o
            let (r, o) = (T::from_f64(rstd), T::from_f64((p.shift(c) - mean) * rstd));
            // dz (in dx), its two sums, then g = dz * w: separate passes that vectorise.
            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                *dx = if g.silu {
                    let z = (x * r + o) * w + b;
                    let sg = sigmoid(z);
                    dy * sg * (T::ONE + z * (T::ONE - sg))
                } else {
                    dy
                };
            }
            let db_c = plane_sum(dx, |dz| dz);
            let dw_c = pair_sum(dx, x, |dz, x| dz * (x * r + o));
            for dx in dx.iter_mut() {
                *dx = *dx * w;
            }
            dw[c] += dw_c;
            db[c] += db_c;
            sum_g += db_c * w.to_f64();
            sum_gx += dw_c * w.to_f64();
        }
        let (a, cx) = (sum_g / m, sum_gx / m);
        // Second pass: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
        for (i, (dx, x)) in dx.chunks_mut(g.hw).zip(x.chunks(g.hw)).enumerate() {
            let c = c0 + i;
            let (r, o) = (T::from_f64(rstd), T::from_f64((p.shift(c) - mean) * rstd));
            let (a, cx) = (T::from_f64(a), T::from_f64(cx));
            let mut total = 0f64;
            for (dx, &x) in dx.iter_mut().zip(x) {
                let xhat = x * r + o;
                let v = r * (*dx - a - xhat * cx);
                total += v.to_f64();
                *dx = v;
            }
            if g.shift {
                dshift[c] = total;
            }
        }
    }
}

/// Backward: `x`, `params` as in the forward, `dy` -> `[dx (B*C*HW), dw (C), db (C),
/// dshift (B*C) if shifted]` packed in one vector.
pub(crate) fn group_norm_backward<T: Real>(g: &GnGeom, x: &[T], params: &[T], dy: &[T]) -> Vec<T> {
    let (len, c) = (g.sample_len(), g.channels);
    let batch = x.len() / len;
    let mut out = vec![T::default(); x.len() + g.params_len(batch)];
    let (dx, rest) = out.split_at_mut(x.len());
    let threads = rayon::current_num_threads().max(1);
    let per = batch.div_ceil(threads).max(1);
    let partials: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(per * len)
        .enumerate()
        .map(|(chunk, dx)| {
            let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
            let mut dshift = vec![0f64; if g.shift { per * c } else { c }];
            for (s, dx) in dx.chunks_mut(len).enumerate() {
                let n = chunk * per + s;
                let p = SampleParams::new(g, params, n);
                let (x, dy) = (&x[n * len..(n + 1) * len], &dy[n * len..(n + 1) * len]);
                let ds = if g.shift {
                    &mut dshift[s * c..(s + 1) * c]
                } else {
                    &mut dshift[..]
                };
                sample_backward(g, (x, dy, &p), dx, ds, (&mut dw, &mut db));
            }
            (dw, db, dshift)
        })
        .collect();
    let (dw_out, rest) = rest.split_at_mut(c);
    let (db_out, dshift_out) = rest.split_at_mut(c);
    for (chunk, (dw, db, dshift)) in partials.into_iter().enumerate() {
        for i in 0..c {
            dw_out[i] += T::from_f64(dw[i]);
            db_out[i] += T::from_f64(db[i]);
        }
        if g.shift {
            let start = chunk * per * c;
            let end = (start + per * c).min(dshift_out.len());
            for (o, v) in dshift_out[start..end].iter_mut().zip(dshift) {
                *o = T::from_f64(v);
            }
        }
    }
    out
}
