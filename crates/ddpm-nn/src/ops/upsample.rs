//! candle custom op wiring the up-sampling kernels of [`crate::cpu::upsample`] into autograd.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::upsample::{upsample_backward, upsample_forward};

/// Nearest up-sampling: x -> y.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upsample {
    pub scale: usize,
}

impl CustomOp1 for Upsample {
    fn name(&self) -> &'static str {
        "ddpm-upsample-nearest2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let k = self.scale;
        let y = float_kernel!(self.name(), |x = (s, l)| upsample_forward(x, (h, w), k))?;
        Ok((y, Shape::from((b, c, h * k, w * k))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        let op = UpsampleBwd {
            scale: self.scale,
            h,
            w,
        };
        // The input only carries the geometry; the gradient is the data.
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(x, &op)?))
    }
}

/// Backward of [`Upsample`]: (dy, x) -> dx (x only gives the shape).
#[derive(Debug, Clone, Copy)]
struct UpsampleBwd {
    scale: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for UpsampleBwd {
    fn name(&self) -> &'static str {
        "ddpm-upsample-nearest2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geom = (self.h, self.w);
        let k = self.scale;
        let dx = float_kernel!(self.name(), |dy = (s1, l1)| upsample_backward(dy, geom, k))?;
        Ok((dx, l2.shape().clone()))
    }
}
