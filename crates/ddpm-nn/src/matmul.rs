//! Batched matrix products with optionally transposed operands, on our own GEMM kernel.
//!
//! candle's CPU matmul re-reads the core count (`/proc/cpuinfo`) on every call unless
//! `RAYON_NUM_THREADS` is set, which cost about a tenth of a small network's training step;
//! reading an operand transposed also saves the `transpose().contiguous()` copies that
//! attention needs around its products.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv_op::{fast_cpu, slice};
use crate::cpu_conv::{Elem, Mat, gemm};
use crate::error::bad_shape;

/// `op(a) · op(b)` for (M,K)-by-(K,N) operands or (B,·,·) batches of them, where `op` transposes
/// the last two dims when `trans_a` / `trans_b` is set (so `a` is stored (B,K,M) when
/// `trans_a`). Differentiable w.r.t. both operands; on the CPU (f32/f64) every pass runs one
/// GEMM per batch entry, parallel over the batch, [`matmul_portable`] elsewhere.
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    check(a, b, trans_a, trans_b)?;
    if fast_cpu(&[a, b]) {
        let op = MatMulOp { trans_a, trans_b };
        a.contiguous()?.apply_op2(&b.contiguous()?, op)
    } else {
        matmul_portable(a, b, trans_a, trans_b)
    }
}

/// [`matmul`] from candle ops (transposes and `Tensor::matmul`), on any device.
pub fn matmul_portable(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    check(a, b, trans_a, trans_b)?;
    let t = |x: &Tensor, trans: bool| -> Result<Tensor> {
        if trans {
            x.transpose(x.rank() - 2, x.rank() - 1)?.contiguous()
        } else {
            Ok(x.clone())
        }
    };
    t(a, trans_a)?.matmul(&t(b, trans_b)?)
}

/// The (batch, m, k, n) of a product, checking ranks and the inner dimension.
fn dims(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Option<(usize, usize, usize, usize)> {
    let split = |d: &[usize], trans: bool| -> Option<(usize, usize, usize)> {
        let (batch, r, c) = match *d {
            [r, c] => (1, r, c),
            [batch, r, c] => (batch, r, c),
            _ => return None,
        };
        Some(if trans { (batch, c, r) } else { (batch, r, c) })
    };
    let (ba, m, k) = split(a, trans_a)?;
    let (bb, k2, n) = split(b, trans_b)?;
    (a.len() == b.len() && ba == bb && k == k2).then_some((ba, m, k, n))
}

/// Validates the operands of [`matmul`].
fn check(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<()> {
    if dims(a.dims(), b.dims(), trans_a, trans_b).is_none() {
        return Err(bad_shape(
            "matmul",
            "rhs",
            b.shape(),
            format!(
                "the same rank (2 or 3) and batch as lhs {:?} and a matching inner dim \
                 (trans_a {trans_a}, trans_b {trans_b})",
                a.dims()
            ),
        ));
    }
    Ok(())
}

/// `op(a) · op(b)` on contiguous operands.
#[derive(Debug, Clone, Copy)]
struct MatMulOp {
    trans_a: bool,
    trans_b: bool,
}

/// The batched product kernel: `a`, `b` stored row-major, (batch, m, k, n) as in [`dims`].
fn kernel<T: Elem>(
    op: MatMulOp,
    (batch, m, k, n): (usize, usize, usize, usize),
    a: &[T],
    b: &[T],
) -> Vec<T> {
    let mut out = vec![T::default(); batch * m * n];
    if m * n == 0 {
        return out;
    }
    let a_cols = if op.trans_a { m } else { k };
    let b_cols = if op.trans_b { k } else { n };
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| {
        let am = Mat {
            data: &a[i * m * k..(i + 1) * m * k],
            stored_cols: a_cols,
            trans: op.trans_a,
        };
        let bm = Mat {
            data: &b[i * k * n..(i + 1) * k * n],
            stored_cols: b_cols,
            trans: op.trans_b,
        };
        gemm(m, n, k, dst, am, bm, false);
    });
    out
}

impl CustomOp2 for MatMulOp {
    fn name(&self) -> &'static str {
        "ddpm-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (a_dims, b_dims) = (l1.shape().dims(), l2.shape().dims());
        let Some(d) = dims(a_dims, b_dims, self.trans_a, self.trans_b) else {
            candle_core::bail!("{op}: operands {a_dims:?} and {b_dims:?} do not multiply");
        };
        let (batch, m, _, n) = d;
        let shape = if a_dims.len() == 2 {
            Shape::from((m, n))
        } else {
            Shape::from((batch, m, n))
        };
        let out = match (s1.dtype(), s2.dtype()) {
            (DType::F32, DType::F32) => {
                CpuStorage::F32(kernel(*self, d, slice(op, s1, l1)?, slice(op, s2, l2)?))
            }
            (DType::F64, DType::F64) => {
                CpuStorage::F64(kernel(*self, d, slice(op, s1, l1)?, slice(op, s2, l2)?))
            }
            (x, y) => candle_core::bail!("{op}: unsupported dtypes {x:?} and {y:?}"),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let mm = |x: &Tensor, y: &Tensor, trans_a: bool, trans_b: bool| {
            x.apply_op2_no_bwd(y, &MatMulOp { trans_a, trans_b })
        };
        // C = op(A) op(B): d op(A) = dC op(B)ᵀ, d op(B) = op(A)ᵀ dC, transposed back where the
        // operand is stored transposed.
        let da = if self.trans_a {
            mm(b, &g, self.trans_b, true)?
        } else {
            mm(&g, b, false, !self.trans_b)?
        };
        let db = if self.trans_b {
            mm(&g, a, true, self.trans_a)?
        } else {
            mm(a, &g, !self.trans_a, false)?
        };
        Ok((Some(da), Some(db)))
    }
}
