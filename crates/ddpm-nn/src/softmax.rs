//! Softmax over the last dim with a fused input scale, and its backward, in one pass each.

use candle_core::{D, Result, Tensor};

use crate::error::bad_shape;
use crate::ops::fast_cpu;
use crate::ops::softmax::SoftmaxOp;

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
