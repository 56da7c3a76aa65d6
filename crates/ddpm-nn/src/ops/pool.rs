//! candle custom op wiring the max-pool kernels of [`crate::cpu::pool`] into autograd.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::pool::{PoolGeom, max_pool_backward, max_pool_forward};

/// Floor-mode max-pool with stride = kernel on (B,C,H,W).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPoolOp {
    pub kernel: usize,
}

impl MaxPoolOp {
    /// Geometry and output shape for an input layout.
    fn geom(&self, l: &Layout) -> Result<(PoolGeom, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let g = PoolGeom {
            planes: b * c,
            h,
            w,
            k: self.kernel,
        };
        let (ho, wo) = g.out();
        Ok((g, Shape::from((b, c, ho, wo))))
    }
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "ddpm-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, shape) = self.geom(l)?;
        let y = float_kernel!(self.name(), |x = (s, l)| max_pool_forward(&g, x))?;
        Ok((y, shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolBwd { fwd: *self })?;
        Ok(Some(dx))
    }
}

/// Backward of [`MaxPoolOp`]: (x, dy) -> dx.
#[derive(Debug, Clone, Copy)]
struct MaxPoolBwd {
    fwd: MaxPoolOp,
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "ddpm-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, _) = self.fwd.geom(l1)?;
        let dx =
            float_kernel!(self.name(), |x = (s1, l1), dy = (s2, l2)| max_pool_backward(&g, x, dy))?;
        Ok((dx, l1.shape().clone()))
    }
}
