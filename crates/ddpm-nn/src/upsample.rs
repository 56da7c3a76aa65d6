//! Nearest-neighbour up-sampling by an integer factor, with a one-pass backward.

use candle_core::{Result, Tensor};

use crate::error::{bad_config, bad_shape};
use crate::ops::fast_cpu;
use crate::ops::upsample::Upsample;

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
