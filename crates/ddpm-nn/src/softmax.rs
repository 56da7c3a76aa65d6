//! Softmax over the last dim with a fused input scale, and its backward, in one pass each.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv_op::{fast_cpu, slice};
use crate::cpu_fused::Real;
use crate::error::bad_shape;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 256;

/// `softmax(scale * x)` over the last dim of `x` (any rank >= 1), e.g. attention scores
/// with `scale = 1/sqrt(d)`. One pass forward and one backward on the CPU (f32/f64; the
/// row maximum is subtracted first), [`scaled_softmax_portable`] elsewhere.
pub fn scaled_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(bad_shape("scaled_softmax", "input", x.shape(), "rank >= 1"));
    }
    if fast_cpu(&[x]) {
        x.contiguous()?.apply_op1(SoftmaxOp { scale })
    } else {
        scaled_softmax_portable(x, scale)
    }
}

/// [`scaled_softmax`] from candle ops, on any device.
pub fn scaled_softmax_portable(x: &Tensor, scale: f64) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(bad_shape("scaled_softmax", "input", x.shape(), "rank >= 1"));
    }
    candle_nn::ops::softmax(&(x * scale)?, D::Minus1)
}

/// Forward kernel over rows of `n`.
fn forward<T: Real>(x: &[T], n: usize, scale: f64) -> Vec<T> {
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

/// Backward kernel: `dx = scale * y * (dy - sum(y * dy))` per row.
fn backward<T: Real>(y: &[T], dy: &[T], n: usize, scale: f64) -> Vec<T> {
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

/// Runs a kernel on the f32 or f64 slice(s), wrapping the result.
macro_rules! by_dtype {
    ($op:expr, $s:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    };
}

use candle_core::backend::BackendStorage;

/// `softmax(scale * x)` over the last dim: x -> y.
#[derive(Debug, Clone, Copy)]
struct SoftmaxOp {
    scale: f64,
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "ddpm-scaled-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let n = *l.shape().dims().last().unwrap_or(&1);
        let y = by_dtype!(op, s, |T| forward::<T>(
            slice(op, s, l)?,
            n.max(1),
            self.scale
        ));
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = y.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd { scale: self.scale })?;
        Ok(Some(dx))
    }
}

/// Backward of [`SoftmaxOp`]: (y, dy) -> dx.
#[derive(Debug, Clone, Copy)]
struct SoftmaxBwd {
    scale: f64,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "ddpm-scaled-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let n = *l1.shape().dims().last().unwrap_or(&1);
        let dx = by_dtype!(op, s1, |T| backward::<T>(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
            n.max(1),
            self.scale
        ));
        Ok((dx, l1.shape().clone()))
    }
}
