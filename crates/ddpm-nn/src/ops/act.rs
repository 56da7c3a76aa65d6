//! candle custom op wiring the LeakyReLU kernels of [`crate::cpu::act`] into autograd.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::act::{leaky_relu_backward, leaky_relu_forward};

/// LeakyReLU: x -> y.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeakyReluOp {
    pub slope: f64,
}

impl CustomOp1 for LeakyReluOp {
    fn name(&self) -> &'static str {
        "ddpm-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = float_kernel!(self.name(), |x = (s, l)| leaky_relu_forward(x, self.slope))?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = x.apply_op2_no_bwd(&grad.contiguous()?, &LeakyReluBwd { slope: self.slope })?;
        Ok(Some(dx))
    }
}

/// Backward of [`LeakyReluOp`]: (x, dy) -> dx.
#[derive(Debug, Clone, Copy)]
struct LeakyReluBwd {
    slope: f64,
}

impl CustomOp2 for LeakyReluBwd {
    fn name(&self) -> &'static str {
        "ddpm-leaky-relu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dx = float_kernel!(self.name(), |x = (s1, l1), dy = (s2, l2)| {
            leaky_relu_backward(x, dy, self.slope)
        })?;
        Ok((dx, l1.shape().clone()))
    }
}
