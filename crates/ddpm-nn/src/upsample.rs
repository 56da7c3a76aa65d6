//! Nearest-neighbour up-sampling by an integer factor, with a one-pass backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv_op::{fast_cpu, slice};
use crate::cpu_conv::Elem;
use crate::error::{bad_config, bad_shape};

/// `torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")` for `x` (B,C,H,W)
/// and an integer `scale`: (B,C,H*scale,W*scale). The gradient of each input pixel is the sum
/// over its `scale x scale` copies. One pass each way on the CPU (f32/f64; candle's backward
/// runs one grouped convolution per channel), [`upsample_nearest2d_portable`] elsewhere.
pub fn upsample_nearest2d(x: &Tensor, scale: usize) -> Result<Tensor> {
    check(x, scale)?;
    if fast_cpu(&[x]) {
        x.contiguous()?.apply_op1(Upsample { scale })
    } else {
        upsample_nearest2d_portable(x, scale)
    }
}

/// [`upsample_nearest2d`] with candle's `upsample_nearest2d`, on any device.
pub fn upsample_nearest2d_portable(x: &Tensor, scale: usize) -> Result<Tensor> {
    check(x, scale)?;
    let (_, _, h, w) = x.dims4()?;
    x.upsample_nearest2d(h * scale, w * scale)
}

/// Validates the input: (B,C,H,W) and a scale of at least 1.
fn check(x: &Tensor, scale: usize) -> Result<()> {
    x.dims4()
        .map_err(|_| bad_shape("upsample_nearest2d", "input", x.shape(), "(B, C, H, W)"))?;
    if scale == 0 {
        return Err(bad_config("upsample_nearest2d", "scale must be at least 1"));
    }
    Ok(())
}

/// Forward kernel over `(h, w)` planes.
fn forward<T: Elem>(x: &[T], (h, w): (usize, usize), s: usize) -> Vec<T> {
    let (ho, wo) = (h * s, w * s);
    let mut y = vec![T::default(); x.len() * s * s];
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(y, x)| {
            for (i, src) in x.chunks(w).enumerate() {
                let first = &mut y[i * s * wo..(i * s + 1) * wo];
                for (d, &v) in first.chunks_mut(s).zip(src) {
                    d.fill(v);
                }
                for r in 1..s {
                    y.copy_within(i * s * wo..(i * s + 1) * wo, (i * s + r) * wo);
                }
            }
        });
    y
}

/// Backward kernel: each input pixel's gradient is the sum of its `s x s` block of `dy`.
fn backward<T: Elem>(dy: &[T], (h, w): (usize, usize), s: usize) -> Vec<T> {
    let (ho, wo) = (h * s, w * s);
    let mut dx = vec![T::default(); dy.len() / (s * s)];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(ho * wo))
        .for_each(|(dx, dy)| {
            for (oi, row) in dy.chunks(wo).enumerate() {
                let dst = &mut dx[(oi / s) * w..(oi / s + 1) * w];
                for (d, block) in dst.iter_mut().zip(row.chunks(s)) {
                    for &v in block {
                        *d += v;
                    }
                }
            }
        });
    dx
}

/// Runs a kernel on the f32 or f64 slice, wrapping the result.
fn by_dtype(
    op: &'static str,
    s: &CpuStorage,
    l: &Layout,
    f32_kernel: impl FnOnce(&[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    match s {
        CpuStorage::F32(_) => Ok(CpuStorage::F32(f32_kernel(slice(op, s, l)?))),
        CpuStorage::F64(_) => Ok(CpuStorage::F64(f64_kernel(slice(op, s, l)?))),
        other => candle_core::bail!("{op}: unsupported dtype {:?}", other.dtype()),
    }
}

/// Nearest up-sampling: x -> y.
#[derive(Debug, Clone, Copy)]
struct Upsample {
    scale: usize,
}

impl CustomOp1 for Upsample {
    fn name(&self) -> &'static str {
        "ddpm-upsample-nearest2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let k = self.scale;
        let y = by_dtype(
            self.name(),
            s,
            l,
            |x| forward(x, (h, w), k),
            |x| forward(x, (h, w), k),
        )?;
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
        let dx = by_dtype(
            self.name(),
            s1,
            l1,
            |dy| backward(dy, geom, k),
            |dy| backward(dy, geom, k),
        )?;
        Ok((dx, l2.shape().clone()))
    }
}
