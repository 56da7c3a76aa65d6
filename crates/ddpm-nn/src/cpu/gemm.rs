//! The GEMM every product kernel runs on (convolutions, batched matmul): the `gemm` crate on
//! row-major operands, optionally read transposed.

use super::real::Real;

/// A row-major matrix operand, optionally read transposed.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    /// Stored as `cols`-wide rows; when `trans`, the operand is the transpose of the stored one.
    pub stored_cols: usize,
    pub trans: bool,
}

impl<T> Mat<'_, T> {
    /// (column stride, row stride) of the operand as used.
    fn strides(&self) -> (isize, isize) {
        let s = self.stored_cols as isize;
        if self.trans { (s, 1) } else { (1, s) }
    }
}

/// `dst (m x n, row-major) (+)= a (m x k) · b (k x n)`.
pub(crate) fn gemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    acc: bool,
) {
    debug_assert!(dst.len() >= m * n);
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    // SAFETY: the slices hold at least the m*k, k*n and m*n elements addressed by the
    // strides above (checked by the callers' shape arithmetic); dst does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
