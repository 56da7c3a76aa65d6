//! The one way the custom ops reach their CPU kernels: [`fast_cpu`] says whether they apply,
//! [`run_float_kernel`] (usually through [`float_kernel!`]) runs the f32 or f64 instance of a
//! kernel on contiguous `CpuStorage` and wraps its result.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};

/// Whether the CPU kernels apply: every tensor on the CPU, one float dtype (f32 or f64).
pub(crate) fn fast_cpu(tensors: &[&Tensor]) -> bool {
    let dtype = tensors[0].dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// The contiguous slice of `s` described by `l`, or an error naming `op`.
fn slice<'a, T: WithDType>(op: &'static str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!(
            "{op}: expects contiguous inputs, got strides {:?}",
            l.stride()
        ),
    }
}

/// The contiguous slices of all `inputs` (see [`slice()`]).
fn slices<'a, T: WithDType, const N: usize>(
    op: &'static str,
    inputs: [(&'a CpuStorage, &Layout); N],
) -> Result<[&'a [T]; N]> {
    let mut out: [&'a [T]; N] = [&[]; N];
    for (o, (s, l)) in out.iter_mut().zip(inputs) {
        *o = slice(op, s, l)?;
    }
    Ok(out)
}

/// Runs the `f32` or `f64` instance of a kernel on the contiguous slices of `inputs` (storages
/// of one dtype, each with its layout) and wraps the result in a `CpuStorage` of that dtype.
/// Another dtype, mixed dtypes or a non-contiguous input is an error naming `op`.
///
/// The two closures are the same kernel for each dtype; [`float_kernel!`] writes them from one
/// expression.
pub(crate) fn run_float_kernel<const N: usize>(
    op: &'static str,
    inputs: [(&CpuStorage, &Layout); N],
    f32_kernel: impl FnOnce([&[f32]; N]) -> Vec<f32>,
    f64_kernel: impl FnOnce([&[f64]; N]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let dtype = inputs[0].0.dtype();
    if let Some((other, _)) = inputs.iter().find(|(s, _)| s.dtype() != dtype) {
        candle_core::bail!(
            "{op}: inputs must share one dtype (f32 or f64), got {dtype:?} and {:?}",
            other.dtype()
        );
    }
    match dtype {
        DType::F32 => Ok(CpuStorage::F32(f32_kernel(slices(op, inputs)?))),
        DType::F64 => Ok(CpuStorage::F64(f64_kernel(slices(op, inputs)?))),
        other => candle_core::bail!("{op}: unsupported dtype {other:?} (f32 or f64 only)"),
    }
}

/// `float_kernel!(op, |x = (s1, l1), w = (s2, l2)| kernel(x, w))`: [`run_float_kernel`] with
/// each input's slice bound to a name and the kernel expression written once for both dtypes
/// (a generic kernel infers its element type from the slices). Evaluates to
/// `Result<CpuStorage>`.
macro_rules! float_kernel {
    ($op:expr, |$($x:ident = ($s:expr, $l:expr)),+ $(,)?| $kernel:expr) => {
        $crate::ops::dispatch::run_float_kernel(
            $op,
            [$(($s, $l)),+],
            |[$($x),+]| $kernel,
            |[$($x),+]| $kernel,
        )
    };
}

pub(crate) use float_kernel;
