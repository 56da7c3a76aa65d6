//! CPU kernel (f32/f64) of batched matrix products with optionally transposed operands: one
//! [`gemm()`] per batch entry, parallel over the batch.

use rayon::prelude::*;

use super::gemm::{Mat, gemm};
use super::real::Real;

/// The (batch, m, k, n) of the product `op(a) · op(b)` of operands with dims `a` and `b`
/// (`op` transposes the last two dims when `trans_a` / `trans_b`), checking ranks (2 or 3, the
/// same for both), batch and the inner dimension.
pub(crate) fn matmul_dims(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Option<(usize, usize, usize, usize)> {
    let split = |d: &[usize], trans: bool| -> Option<(usize, usize, usize)> {
        let (batch, r, c) = match *d {
            [r, c] => (1, r, c),
            [batch, r, c] => (batch, r, c),
            _ => return None,
        };
        Some(if trans { (batch, c, r) } else { (batch, r, c) })
    };
    let (ba, m, k) = split(a, trans_a)?;
    let (bb, k2, n) = split(b, trans_b)?;
    (a.len() == b.len() && ba == bb && k == k2).then_some((ba, m, k, n))
}

/// The batched product kernel: `a`, `b` stored row-major (transposed where `trans_a` /
/// `trans_b`), (batch, m, k, n) as in [`matmul_dims`].
pub(crate) fn batched_matmul<T: Real>(
    (trans_a, trans_b): (bool, bool),
    (batch, m, k, n): (usize, usize, usize, usize),
    a: &[T],
    b: &[T],
) -> Vec<T> {
    let mut out = vec![T::default(); batch * m * n];
    if m * n == 0 {
        return out;
    }
    let a_cols = if trans_a { m } else { k };
    let b_cols = if trans_b { k } else { n };
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| {
        let am = Mat {
            data: &a[i * m * k..(i + 1) * m * k],
            stored_cols: a_cols,
            trans: trans_a,
        };
        let bm = Mat {
            data: &b[i * k * n..(i + 1) * k * n],
            stored_cols: b_cols,
            trans: trans_b,
        };
        gemm(m, n, k, dst, am, bm, false);
    });
    out
}
