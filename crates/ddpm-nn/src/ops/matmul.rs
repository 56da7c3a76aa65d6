//! candle custom op wiring the batched GEMM kernel of [`crate::cpu::matmul`] into autograd.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::dispatch::float_kernel;
use crate::cpu::matmul::{batched_matmul, matmul_dims};

/// `op(a) · op(b)` on contiguous operands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatMulOp {
    pub trans_a: bool,
    pub trans_b: bool,
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
        let Some(d) = matmul_dims(a_dims, b_dims, self.trans_a, self.trans_b) else {
            candle_core::bail!("{op}: operands {a_dims:?} and {b_dims:?} do not multiply");
        };
        let (batch, m, _, n) = d;
        let shape = if a_dims.len() == 2 {
            Shape::from((m, n))
        } else {
            Shape::from((batch, m, n))
        };
        let trans = (self.trans_a, self.trans_b);
        let out = float_kernel!(op, |a = (s1, l1), b = (s2, l2)| batched_matmul(trans, d, a, b))?;
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
