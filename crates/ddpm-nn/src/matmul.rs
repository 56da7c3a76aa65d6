//! Batched matrix products with optionally transposed operands, on our own GEMM kernel.
//!
//! candle's CPU matmul re-reads the core count (`/proc/cpuinfo`) on every call unless
//! `RAYON_NUM_THREADS` is set, which cost about a tenth of a small network's training step;
//! reading an operand transposed also saves the `transpose().contiguous()` copies that
//! attention needs around its products.

use candle_core::{Result, Tensor};

use crate::cpu::matmul::matmul_dims;
use crate::error::bad_shape;
use crate::ops::fast_cpu;
use crate::ops::matmul::MatMulOp;

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

/// Validates the operands of [`matmul`].
fn check(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<()> {
    if matmul_dims(a.dims(), b.dims(), trans_a, trans_b).is_none() {
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
