//! Activations with gradients (candle's own `relu` and `silu` are differentiable already).

use candle_core::{Result, Tensor};

use crate::ops::act::LeakyReluOp;
use crate::ops::fast_cpu;

/// `torch.nn.functional.leaky_relu(x, slope)`: `x` where `x > 0`, `slope * x` elsewhere
/// (gradient 1 resp. `slope`; at exactly 0 the gradient is `slope`, like torch). One fused
/// pass on the CPU (f32/f64), [`leaky_relu_portable`] elsewhere.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if fast_cpu(&[x]) {
        x.contiguous()?.apply_op1(LeakyReluOp { slope })
    } else {
        leaky_relu_portable(x, slope)
    }
}

/// [`leaky_relu`] from candle ops, on any device.
pub fn leaky_relu_portable(x: &Tensor, slope: f64) -> Result<Tensor> {
    let positive = x.gt(0.0)?.to_dtype(x.dtype())?;
    // x * (slope + (1 - slope) * [x > 0])
    let factor = ((positive * (1.0 - slope))? + slope)?;
    x.mul(&factor)
}

/// `torch.relu(x)`: [`leaky_relu`] with slope 0, so one fused pass each way on the CPU, and the
/// gradient at exactly 0 is 0 as in torch (candle's own `relu` passes it through).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    leaky_relu(x, 0.0)
}

/// SiLU (`x * sigmoid(x)`), re-exported for symmetry with [`leaky_relu`].
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}
