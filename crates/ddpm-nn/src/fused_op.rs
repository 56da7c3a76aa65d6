//! candle custom ops over the fused CPU kernels of [`crate::cpu_fused`], with backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::conv_op::slice;
use crate::cpu_fused::{
    PoolGeom, layer_norm_backward, layer_norm_forward, leaky_relu_backward, leaky_relu_forward,
    max_pool_backward, max_pool_forward,
};
use crate::cpu_group_norm::{GnGeom, group_norm_backward, group_norm_forward};

/// Runs `$kernel` on the f32 or f64 slices of the storages (same dtype), wrapping the result.
macro_rules! float_kernel {
    ($op:expr, $first:expr, |$t:ident| $body:expr) => {
        match $first {
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

/// LayerNorm over all but the first dim, with elementwise affine: (x, weight, bias) -> y.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNormOp {
    pub eps: f64,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "ddpm-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let y = float_kernel!(op, s1, |T| layer_norm_forward::<T>(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
            slice(op, s3, l3)?,
            self.eps
        ));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let (len, n) = (x.elem_count(), w.elem_count());
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dw = packed.narrow(0, len, n)?.reshape(w.shape())?;
        let db = packed.narrow(0, len + n, n)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward of [`LayerNormOp`]: (x, weight, dy) -> `[dx, dw, db]` flattened into one vector.
#[derive(Debug, Clone, Copy)]
struct LayerNormBwd {
    eps: f64,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "ddpm-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let out = float_kernel!(op, s1, |T| layer_norm_backward::<T>(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
            slice(op, s3, l3)?,
            self.eps
        ));
        let len = l1.shape().elem_count() + 2 * l2.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}

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
        let op = self.name();
        let y = float_kernel!(op, s, |T| leaky_relu_forward::<T>(
            slice(op, s, l)?,
            self.slope
        ));
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
        let op = self.name();
        let dx = float_kernel!(op, s1, |T| leaky_relu_backward::<T>(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
            self.slope
        ));
        Ok((dx, l1.shape().clone()))
    }
}

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
        let op = self.name();
        let (g, shape) = self.geom(l)?;
        let y = float_kernel!(op, s, |T| max_pool_forward::<T>(&g, slice(op, s, l)?));
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
        let op = self.name();
        let (g, _) = self.fwd.geom(l1)?;
        let dx = float_kernel!(op, s1, |T| max_pool_backward::<T>(
            &g,
            slice(op, s1, l1)?,
            slice(op, s2, l2)?
        ));
        Ok((dx, l1.shape().clone()))
    }
}

/// GroupNorm (optional shift and SiLU) on (B,C,H,W): (x, params) -> y, where `params` packs
/// `[w (C), b (C), shift (B*C) if shifted]` (see [`GnGeom`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupNormOp {
    pub groups: usize,
    pub eps: f64,
    pub shift: bool,
    pub silu: bool,
}

impl GroupNormOp {
    /// The kernel geometry for an input layout.
    fn geom(&self, l: &Layout) -> Result<GnGeom> {
        let (_, c, h, w) = l.shape().dims4()?;
        Ok(GnGeom {
            channels: c,
            hw: h * w,
            groups: self.groups,
            eps: self.eps,
            shift: self.shift,
            silu: self.silu,
        })
    }
}

impl CustomOp2 for GroupNormOp {
    fn name(&self) -> &'static str {
        "ddpm-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let g = self.geom(l1)?;
        let y = float_kernel!(op, s1, |T| group_norm_forward::<T>(
            &g,
            slice(op, s1, l1)?,
            slice(op, s2, l2)?
        ));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed =
            x.apply_op3_no_bwd(params, &grad.contiguous()?, &GroupNormBwd { fwd: *self })?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dparams = packed.narrow(0, len, params.elem_count())?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// Backward of [`GroupNormOp`]: (x, params, dy) -> `[dx, dw, db, dshift?]` in one vector.
#[derive(Debug, Clone, Copy)]
struct GroupNormBwd {
    fwd: GroupNormOp,
}

impl CustomOp3 for GroupNormBwd {
    fn name(&self) -> &'static str {
        "ddpm-group-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let g = self.fwd.geom(l1)?;
        let out = float_kernel!(op, s1, |T| group_norm_backward::<T>(
            &g,
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
            slice(op, s3, l3)?
        ));
        let len = l1.shape().elem_count() + l2.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}
