//! Vectorising sums shared by the normalisation kernels ([`super::layer_norm`],
//! [`super::group_norm`]).

use super::real::Real;

/// Independent accumulators of [`pair_sum`]: breaking the chain of dependent additions lets
/// the loops vectorise (one running sum was a latency-bound scalar loop).
const LANES: usize = 8;

/// Sum of `f(v)` over `plane` (see [`pair_sum`]).
#[inline]
pub(crate) fn plane_sum<T: Real>(plane: &[T], f: impl Fn(T) -> T) -> f64 {
    pair_sum(plane, plane, |v, _| f(v))
}

/// Sum of `f(a_i, b_i)`: in `T` on [`LANES`] independent accumulators per short run (so the
/// loop vectorises), in f64 across runs.
#[inline]
pub(crate) fn pair_sum<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    const RUN: usize = 16 * LANES;
    let mut total = 0f64;
    for (a, b) in a.chunks(RUN).zip(b.chunks(RUN)) {
        let mut acc = [T::default(); LANES];
        let (mut a_lanes, mut b_lanes) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (a, b) in (&mut a_lanes).zip(&mut b_lanes) {
            for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
                *acc += f(a, b);
            }
        }
        let mut sum = T::default();
        for (&a, &b) in a_lanes.remainder().iter().zip(b_lanes.remainder()) {
            sum += f(a, b);
        }
        for v in acc {
            sum += v;
        }
        total += sum.to_f64();
    }
    total
}
