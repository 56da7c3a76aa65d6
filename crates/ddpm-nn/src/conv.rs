//! 2-D convolution and transposed convolution (PyTorch semantics, NCHW, square kernels).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::error::{bad_config, bad_shape};
use crate::init::InitSpec;
use crate::ops::conv::{ConvBwdInput, ConvFwd};
use crate::ops::fast_cpu;

/// Checks `x` (B,C,H,W) against `weight` and returns `(c_in of x, kernel size)`.
fn check_conv_args(
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    in_dim: usize,
    stride: usize,
) -> Result<usize> {
    let (_, c, _, _) = x
        .dims4()
        .map_err(|_| bad_shape(op, "input", x.shape(), "(B, C, H, W)"))?;
    let (w0, w1, kh, kw) = weight
        .dims4()
        .map_err(|_| bad_shape(op, "weight", weight.shape(), "a 4-D kernel"))?;
    let w_in = if in_dim == 0 { w0 } else { w1 };
    if w_in != c || kh != kw {
        return Err(bad_shape(
            op,
            "weight",
            weight.shape(),
            format!(
                "square kernel with {c} input channels (input {:?})",
                x.shape()
            ),
        ));
    }
    if stride == 0 {
        return Err(bad_config(op, "stride must be at least 1"));
    }
    Ok(kh)
}

/// Adds a per-channel bias of shape (C) to `y` (B,C,H,W).
fn add_bias(op: &'static str, y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) => {
            let c = y.dim(1)?;
            if b.dims() != [c] {
                return Err(bad_shape(op, "bias", b.shape(), format!("({c})")));
            }
            y.broadcast_add(&b.reshape((1, c, 1, 1))?)
        }
    }
}

/// Convolution of `x` (B,C_in,H,W) with `weight` (C_out,C_in,k,k), like `torch.nn.functional.conv2d`.
///
/// On the CPU (f32/f64) forward and both gradients run im2col + GEMM kernels; elsewhere it is
/// [`conv2d_portable`].
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, fast_cpu(&[x, weight]))
}

/// [`conv2d`] written with candle's own ops on any device (candle's backward).
pub fn conv2d_portable(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, false)
}

fn conv2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    fast: bool,
) -> Result<Tensor> {
    let k = check_conv_args("conv2d", x, weight, 1, stride)?;
    let (_, _, h, w) = x.dims4()?;
    if h + 2 * padding < k || w + 2 * padding < k {
        return Err(bad_shape(
            "conv2d",
            "input",
            x.shape(),
            format!("spatial size + 2*padding >= kernel {k}"),
        ));
    }
    if fast {
        let bias = fused_bias("conv2d", bias, weight.dim(0)?, weight)?;
        let op = ConvFwd {
            stride,
            pad: padding,
        };
        x.contiguous()?.apply_op3(&weight.contiguous()?, &bias, op)
    } else {
        add_bias("conv2d", x.conv2d(weight, padding, stride, 1, 1)?, bias)
    }
}

/// The bias input of the fused CPU ops: `bias` checked to be (`channels`), or zeros.
fn fused_bias(
    op: &'static str,
    bias: Option<&Tensor>,
    channels: usize,
    like: &Tensor,
) -> Result<Tensor> {
    match bias {
        Some(b) if b.dims() == [channels] => b.contiguous(),
        Some(b) => Err(bad_shape(op, "bias", b.shape(), format!("({channels})"))),
        None => Tensor::zeros(channels, like.dtype(), like.device()),
    }
}

/// Places the H and W entries of `x` `stride` apart (zeros between), prepends `before` zeros
/// and pads or crops at the end to `len_h` x `len_w`.
fn dilate_pad(
    x: &Tensor,
    stride: usize,
    before: usize,
    len_h: usize,
    len_w: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let x = if stride > 1 {
        x.reshape((b, c, h, 1, w, 1))?
            .pad_with_zeros(3, 0, stride - 1)?
            .pad_with_zeros(5, 0, stride - 1)?
            .reshape((b, c, h * stride, w * stride))?
    } else {
        x.clone()
    };
    let fit = |x: Tensor, dim: usize, len: usize| -> Result<Tensor> {
        let x = x.pad_with_zeros(dim, before, 0)?;
        let cur = x.dim(dim)?;
        if cur < len {
            x.pad_with_zeros(dim, 0, len - cur)
        } else {
            x.narrow(dim, 0, len)
        }
    };
    let x = fit(x, 2, len_h)?;
    fit(x, 3, len_w)
}

/// Output size of a transposed convolution along one axis.
fn conv_transpose_out(
    n: usize,
    k: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Option<usize> {
    ((n - 1) * stride + k + output_padding).checked_sub(2 * padding)
}

/// Transposed convolution of `x` (B,C_in,H,W) with `weight` (C_in,C_out,k,k) (PyTorch layout),
/// like `torch.nn.functional.conv_transpose2d`: output size `(H-1)*stride - 2*padding + k + output_padding`.
///
/// On the CPU (f32/f64) it runs the convolution kernels of [`conv2d`] (its forward is the
/// input-gradient kernel); elsewhere it is [`conv_transpose2d_portable`].
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let fast = fast_cpu(&[x, weight]);
    conv_transpose2d_impl(x, weight, bias, (stride, padding, output_padding), fast)
}

/// [`conv_transpose2d`] as a stride-1 candle conv2d of the zero-dilated, padded input with the
/// flipped kernel, on any device.
pub fn conv_transpose2d_portable(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    conv_transpose2d_impl(x, weight, bias, (stride, padding, output_padding), false)
}

fn conv_transpose2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (stride, padding, output_padding): (usize, usize, usize),
    fast: bool,
) -> Result<Tensor> {
    let op = "conv_transpose2d";
    let k = check_conv_args(op, x, weight, 0, stride)?;
    if output_padding >= stride && output_padding > 0 {
        return Err(bad_config(
            op,
            format!("output_padding {output_padding} must be smaller than stride {stride}"),
        ));
    }
    if padding >= k {
        return Err(bad_config(
            op,
            format!("padding {padding} must be smaller than the kernel {k}"),
        ));
    }
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = match (
        conv_transpose_out(h, k, stride, padding, output_padding),
        conv_transpose_out(w, k, stride, padding, output_padding),
    ) {
        (Some(ho), Some(wo)) if ho > 0 && wo > 0 => (ho, wo),
        _ => return Err(bad_shape(op, "input", x.shape(), "a non-empty output")),
    };
    if fast {
        // The input gradient of the convolution this one transposes.
        let bias = fused_bias(op, bias, weight.dim(1)?, weight)?;
        let geometry = ConvBwdInput {
            stride,
            pad: padding,
            h: ho,
            w: wo,
        };
        return x
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias, geometry);
    }
    // Equivalent stride-1 convolution of the zero-dilated, padded input with the flipped,
    // in/out-transposed kernel.
    let xd = dilate_pad(x, stride, k - 1 - padding, ho + k - 1, wo + k - 1)?;
    let wf = weight.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
    add_bias(op, xd.conv2d(&wf, 0, 1, 1, 1)?, bias)
}

/// `torch.nn.Conv2d` with square kernel, bias, PyTorch parameter names (`weight`, `bias`) and
/// PyTorch's default init `U(±1/sqrt(in*k*k))` for both.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

/// Rejects a convolution with a zero size, naming the module and every size.
fn check_sizes(
    module: &'static str,
    in_c: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
) -> Result<()> {
    if kernel == 0 || stride == 0 || in_c == 0 || out_c == 0 {
        return Err(bad_config(
            module,
            format!("in {in_c}, out {out_c}, kernel {kernel}, stride {stride}: all must be >= 1"),
        ));
    }
    Ok(())
}

impl Conv2d {
    /// Requests `weight` (out,in,k,k) and `bias` (out) from `vb`.
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        check_sizes("Conv2d", in_c, out_c, kernel, stride)?;
        let init = InitSpec::torch_default(in_c * kernel * kernel).to_init();
        Ok(Conv2d {
            weight: vb.get_with_hints((out_c, in_c, kernel, kernel), "weight", init)?,
            bias: vb.get_with_hints(out_c, "bias", init)?,
            stride,
            padding,
        })
    }

    /// The kernel (out,in,k,k).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, Some(&self.bias), self.stride, self.padding)
    }
}

/// `torch.nn.ConvTranspose2d` with square kernel, bias, weight (in,out,k,k), PyTorch names and
/// init (fan_in = `weight.size(1)*k*k` = out*k*k, as torch computes it).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
}

impl ConvTranspose2d {
    /// Requests `weight` (in,out,k,k) and `bias` (out) from `vb`.
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
    ) -> Result<Self> {
        check_sizes("ConvTranspose2d", in_c, out_c, kernel, stride)?;
        let init = InitSpec::torch_default(out_c * kernel * kernel).to_init();
        Ok(ConvTranspose2d {
            weight: vb.get_with_hints((in_c, out_c, kernel, kernel), "weight", init)?,
            bias: vb.get_with_hints(out_c, "bias", init)?,
            stride,
            padding,
            output_padding,
        })
    }

    /// The kernel (in,out,k,k).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_transpose2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.stride,
            self.padding,
            self.output_padding,
        )
    }
}
