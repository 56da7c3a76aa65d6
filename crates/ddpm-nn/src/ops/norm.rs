//! candle custom ops wiring the fused normalisation kernels of [`crate::cpu::layer_norm`] and
//! [`crate::cpu::group_norm`] into autograd, with backward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::group_norm::{GnGeom, group_norm_backward, group_norm_forward};
use crate::cpu::layer_norm::{layer_norm_backward, layer_norm_forward};

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
        let y = float_kernel!(self.name(), |x = (s1, l1), w = (s2, l2), b = (s3, l3)| {
            layer_norm_forward(x, w, b, self.eps)
        })?;
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
        let out = float_kernel!(self.name(), |x = (s1, l1), w = (s2, l2), dy = (s3, l3)| {
            layer_norm_backward(x, w, dy, self.eps)
        })?;
        let len = l1.shape().elem_count() + 2 * l2.shape().elem_count();
        Ok((out, Shape::from(len)))
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
        let g = self.geom(l1)?;
        let y = float_kernel!(self.name(), |x = (s1, l1), params = (s2, l2)| {
            group_norm_forward(&g, x, params)
        })?;
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
        let g = self.fwd.geom(l1)?;
        let out = float_kernel!(self.name(), |x = (s1, l1), params = (s2, l2), dy = (s3, l3)| {
            group_norm_backward(&g, x, params, dy)
        })?;
        let len = l1.shape().elem_count() + l2.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}
