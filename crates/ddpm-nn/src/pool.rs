//! Floor-mode max-pooling whose gradient reaches exactly one element per window.

use candle_core::{Result, Tensor};

use crate::error::{bad_config, bad_shape};

/// `torch.nn.functional.max_pool2d(x, kernel)` (stride = kernel, floor mode) on (B,C,H,W).
///
/// The gradient of each output goes to the FIRST maximum of its window in row-major order, as
/// in PyTorch (this matters for ties, e.g. a constant background); trailing rows/columns that
/// do not fill a window get zero gradient.
pub fn max_pool2d(x: &Tensor, kernel: usize) -> Result<Tensor> {
    let (b, c, h, w) = x
        .dims4()
        .map_err(|_| bad_shape("max_pool2d", "input", x.shape(), "(B, C, H, W)"))?;
    if kernel == 0 {
        return Err(bad_config("max_pool2d", "kernel must be at least 1"));
    }
    let (ho, wo) = (h / kernel, w / kernel);
    if ho == 0 || wo == 0 {
        return Err(bad_shape(
            "max_pool2d",
            "input",
            x.shape(),
            format!("H and W of at least the kernel {kernel}"),
        ));
    }
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
