//! candle custom op wiring the softmax kernels of [`crate::cpu::softmax`] into autograd.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::softmax::{softmax_backward, softmax_forward};

/// `softmax(scale * x)` over the last dim: x -> y.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftmaxOp {
    pub scale: f64,
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "ddpm-scaled-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = *l.shape().dims().last().unwrap_or(&1);
        let y = float_kernel!(self.name(), |x = (s, l)| softmax_forward(x, n.max(1), self.scale))?;
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
        let n = *l1.shape().dims().last().unwrap_or(&1);
        let dx = float_kernel!(self.name(), |y = (s1, l1), dy = (s2, l2)| {
            softmax_backward(y, dy, n.max(1), self.scale)
        })?;
        Ok((dx, l1.shape().clone()))
    }
}
