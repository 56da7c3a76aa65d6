//! candle custom ops wiring the convolution kernels of [`crate::cpu::conv`] into autograd.
//!
//! [`ConvFwd`] is the ordinary convolution, [`ConvBwdInput`] its input gradient (which is also
//! the transposed convolution's forward) and [`ConvBwdWeight`] its weight gradient. The backward
//! of each differentiable op is expressed with the other two, so every pass runs the fast
//! kernels. Inputs must be contiguous (the callers make them so).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::conv::{Geom, conv_backward_input, conv_backward_weight, conv_forward};

/// Output size of an ordinary convolution along one axis.
fn out_size(n: usize, k: usize, stride: usize, pad: usize) -> usize {
    (n + 2 * pad - k) / stride + 1
}

/// Splits the packed `[dw, db]` output of [`ConvBwdWeight`] into `dw` (shaped like `w`) and `db`.
fn unpack_weight_grads(packed: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = w.elem_count();
    let dw = packed.narrow(0, 0, n)?.reshape(w.shape())?;
    let db = packed.narrow(0, n, packed.dim(0)? - n)?;
    Ok((dw, db))
}

/// Ordinary convolution with bias, (x, w, b) -> y, with a backward built from the fast kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvFwd {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp3 for ConvFwd {
    fn name(&self) -> &'static str {
        "ddpm-conv2d"
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
        let (batch, c_in, h, w) = l1.shape().dims4()?;
        let (c_out, _, k, _) = l2.shape().dims4()?;
        let g = Geom {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            stride: self.stride,
            pad: self.pad,
            ho: out_size(h, k, self.stride, self.pad),
            wo: out_size(w, k, self.stride, self.pad),
        };
        let y = float_kernel!(self.name(), |x = (s1, l1), w = (s2, l2), b = (s3, l3)| {
            conv_forward(&g, x, w, b)
        })?;
        Ok((y, Shape::from((batch, c_out, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, c_in, h, wd) = x.dims4()?;
        let k = w.dim(2)?;
        let no_bias = Tensor::zeros(c_in, x.dtype(), x.device())?;
        let input_grad = ConvBwdInput {
            stride: self.stride,
            pad: self.pad,
            h,
            w: wd,
        };
        let dx = grad.apply_op3_no_bwd(w, &no_bias, &input_grad)?;
        let weight_grad = ConvBwdWeight {
            stride: self.stride,
            pad: self.pad,
            k,
        };
        let (dw, db) = unpack_weight_grads(&x.apply_op2_no_bwd(&grad, &weight_grad)?, w)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Input gradient of a convolution plus a per-channel bias, (dy, w, b) -> dx of spatial size
/// `h x w`; as a forward op it is the transposed convolution, with its own backward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvBwdInput {
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
}

impl CustomOp3 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "ddpm-conv2d-bwd-input"
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
        let (batch, c_out, ho, wo) = l1.shape().dims4()?;
        let (_, c_in, k, _) = l2.shape().dims4()?;
        let g = Geom {
            batch,
            c_in,
            h: self.h,
            w: self.w,
            c_out,
            k,
            stride: self.stride,
            pad: self.pad,
            ho,
            wo,
        };
        if out_size(self.h, k, self.stride, self.pad) != ho
            || out_size(self.w, k, self.stride, self.pad) != wo
        {
            candle_core::bail!(
                "{}: gradient {:?} does not match an input of {}x{} (k {k}, stride {}, pad {})",
                self.name(),
                l1.shape(),
                self.h,
                self.w,
                self.stride,
                self.pad
            );
        }
        let dx = float_kernel!(self.name(), |dy = (s1, l1), w = (s2, l2), b = (s3, l3)| {
            conv_backward_input(&g, dy, w, b)
        })?;
        Ok((dx, Shape::from((batch, c_in, self.h, self.w))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (c_out, _, k, _) = w.dims4()?;
        let no_bias = Tensor::zeros(c_out, dy.dtype(), dy.device())?;
        let conv = ConvFwd {
            stride: self.stride,
            pad: self.pad,
        };
        let d_dy = grad.apply_op3_no_bwd(w, &no_bias, &conv)?;
        let weight_grad = ConvBwdWeight {
            stride: self.stride,
            pad: self.pad,
            k,
        };
        let (d_w, _) = unpack_weight_grads(&grad.apply_op2_no_bwd(dy, &weight_grad)?, w)?;
        let d_b = grad.sum_keepdim(3)?.sum_keepdim(2)?.sum(0)?.flatten_all()?;
        Ok((Some(d_dy), Some(d_w), Some(d_b)))
    }
}

/// Weight and bias gradients of a convolution, (x, dy) -> `[dw (c_out, c_in, k, k), db (c_out)]`
/// flattened into one vector. Not differentiable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvBwdWeight {
    pub stride: usize,
    pub pad: usize,
    pub k: usize,
}

impl CustomOp2 for ConvBwdWeight {
    fn name(&self) -> &'static str {
        "ddpm-conv2d-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, h, w) = l1.shape().dims4()?;
        let (_, c_out, ho, wo) = l2.shape().dims4()?;
        let g = Geom {
            batch,
            c_in,
            h,
            w,
            c_out,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            ho,
            wo,
        };
        let grads = float_kernel!(self.name(), |x = (s1, l1), dy = (s2, l2)| {
            conv_backward_weight(&g, x, dy)
        })?;
        Ok((grads, Shape::from(c_out * c_in * self.k * self.k + c_out)))
    }
}
