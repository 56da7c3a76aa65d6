//! Floor-mode max-pooling whose gradient reaches exactly one element per window.

use candle_core::{Result, Tensor};

use crate::error::{bad_config, bad_shape};
use crate::ops::fast_cpu;
use crate::ops::pool::MaxPoolOp;

/// `torch.nn.functional.max_pool2d(x, kernel)` (stride = kernel, floor mode) on (B,C,H,W).
///
/// The gradient of each output goes to the FIRST maximum of its window in row-major order, as
/// in PyTorch (this matters for ties, e.g. a constant background); trailing rows/columns that
/// do not fill a window get zero gradient. One pass on the CPU (f32/f64),
/// [`max_pool2d_portable`] elsewhere.
pub fn max_pool2d(x: &Tensor, kernel: usize) -> Result<Tensor> {
    check(x, kernel)?;
    if fast_cpu(&[x]) {
        x.contiguous()?.apply_op1(MaxPoolOp { kernel })
    } else {
        max_pool2d_portable(x, kernel)
    }
}

/// Validates the input of a max-pool: (B,C,H,W) with H, W >= kernel >= 1.
fn check(x: &Tensor, kernel: usize) -> Result<()> {
    let (_, _, h, w) = x
        .dims4()
        .map_err(|_| bad_shape("max_pool2d", "input", x.shape(), "(B, C, H, W)"))?;
    if kernel == 0 {
        return Err(bad_config("max_pool2d", "kernel must be at least 1"));
    }
    if h / kernel == 0 || w / kernel == 0 {
        return Err(bad_shape(
            "max_pool2d",
            "input",
            x.shape(),
            format!("H and W of at least the kernel {kernel}"),
        ));
    }
    Ok(())
}

/// [`max_pool2d`] from candle ops, on any device: windows gathered by reshapes, the gradient
/// routed through a one-hot first-argmax mask computed on detached values.
pub fn max_pool2d_portable(x: &Tensor, kernel: usize) -> Result<Tensor> {
    check(x, kernel)?;
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / kernel, w / kernel);
    let kk = kernel * kernel;
    let windows = x
        .narrow(2, 0, ho * kernel)?
        .narrow(3, 0, wo * kernel)?
        .reshape((b, c, ho, kernel, wo, kernel))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((b, c, ho, wo, kk))?;
    let first_arg = windows.detach().argmax_keepdim(4)?;
    let idx = Tensor::arange(0u32, kk as u32, x.device())?.reshape((1, 1, 1, 1, kk))?;
    let mask = idx.broadcast_eq(&first_arg)?.to_dtype(x.dtype())?;
    windows.mul(&mask)?.sum(4)
}
