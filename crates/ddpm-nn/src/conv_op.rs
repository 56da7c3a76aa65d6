//! candle custom ops wiring the CPU kernels of [`crate::cpu_conv`] into autograd.
//!
//! [`ConvFwd`] is the ordinary convolution, [`ConvBwdInput`] its input gradient (which is also
//! the transposed convolution's forward) and [`ConvBwdWeight`] its weight gradient. The backward
//! of each differentiable op is expressed with the other two, so every pass runs the fast
//! kernels. Inputs must be contiguous (the callers make them so).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::cpu_conv::{Geom, conv_backward_input, conv_backward_weight, conv_forward};

/// Whether the CPU kernels apply: every tensor on the CPU, one float dtype (f32 or f64).
pub(crate) fn fast_cpu(tensors: &[&Tensor]) -> bool {
    let dtype = tensors[0].dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// The contiguous slice of `s` described by `l`.
pub(crate) fn slice<'a, T: candle_core::WithDType>(
    op: &'static str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!(
            "{op}: expects contiguous inputs, got strides {:?}",
            l.stride()
        ),
    }
}

/// Runs `f32`/`f64` flavours of a kernel on two storages of the same dtype.
fn dispatch(
    op: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32_kernel: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    match (s1.dtype(), s2.dtype()) {
        (DType::F32, DType::F32) => Ok(CpuStorage::F32(f32_kernel(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
        ))),
        (DType::F64, DType::F64) => Ok(CpuStorage::F64(f64_kernel(
            slice(op, s1, l1)?,
            slice(op, s2, l2)?,
        ))),
        (a, b) => candle_core::bail!("{op}: unsupported dtypes {a:?} and {b:?} (f32 or f64 only)"),
    }
}

/// Output size of an ordinary convolution along one axis.
fn out_size(n: usize, k: usize, stride: usize, pad: usize) -> usize {
    (n + 2 * pad - k) / stride + 1
}

/// Ordinary convolution (x, w) -> y with a backward built from the fast kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvFwd {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "ddpm-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
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
        let y = dispatch(
            self.name(),
            (s1, l1),
            (s2, l2),
            |x, w| conv_forward(&g, x, w),
            |x, w| conv_forward(&g, x, w),
        )?;
        Ok((y, Shape::from((batch, c_out, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let k = w.dim(2)?;
        let dx = grad.apply_op2_no_bwd(
            w,
            &ConvBwdInput {
                stride: self.stride,
                pad: self.pad,
                h,
                w: wd,
            },
        )?;
        let dw = x.apply_op2_no_bwd(
            &grad,
            &ConvBwdWeight {
                stride: self.stride,
                pad: self.pad,
                k,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Input gradient of a convolution, (dy, w) -> dx of spatial size `h x w`; as a forward op it
/// is the transposed convolution, with its own backward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvBwdInput {
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
}

impl CustomOp2 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "ddpm-conv2d-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
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
        let dx = dispatch(
            self.name(),
            (s1, l1),
            (s2, l2),
            |dy, w| conv_backward_input(&g, dy, w),
            |dy, w| conv_backward_input(&g, dy, w),
        )?;
        Ok((dx, Shape::from((batch, c_in, self.h, self.w))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let k = w.dim(2)?;
        let d_dy = grad.apply_op2_no_bwd(
            w,
            &ConvFwd {
                stride: self.stride,
                pad: self.pad,
            },
        )?;
        let d_w = grad.apply_op2_no_bwd(
            dy,
            &ConvBwdWeight {
                stride: self.stride,
                pad: self.pad,
                k,
            },
        )?;
        Ok((Some(d_dy), Some(d_w)))
    }
}

/// Weight gradient of a convolution, (x, dy) -> dw (c_out, c_in, k, k). Not differentiable.
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
        let dw = dispatch(
            self.name(),
            (s1, l1),
            (s2, l2),
            |x, dy| conv_backward_weight(&g, x, dy),
            |x, dy| conv_backward_weight(&g, x, dy),
        )?;
        Ok((dw, Shape::from((c_out, c_in, self.k, self.k))))
    }
}
