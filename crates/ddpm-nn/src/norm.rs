//! Normalisation layers built from differentiable candle ops: LayerNorm over (C,H,W),
//! GroupNorm and BatchNorm2d (PyTorch semantics and parameter names).

use std::sync::Mutex;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::error::{NnError, bad_config, bad_shape};
use crate::init::InitSpec;
use crate::ops::fast_cpu;
use crate::ops::norm::{GroupNormOp, LayerNormOp};

/// Normalises `x` (B, N) over dim 1: `(x - mean) / sqrt(biased var + eps)`.
fn standardise_rows(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)
}

/// LayerNorm over the whole (C,H,W) of each sample of `x` (B,C,H,W), with an elementwise affine
/// `weight`, `bias` of shape (C,H,W) — `torch.nn.LayerNorm((C,H,W))`. Biased variance, like torch.
/// One fused pass (and one for the backward) on the CPU (f32/f64), [`layer_norm_chw_portable`]
/// elsewhere.
pub fn layer_norm_chw(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    check_layer_norm(x, weight, bias)?;
    if fast_cpu(&[x, weight, bias]) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNormOp { eps },
        )
    } else {
        layer_norm_chw_portable(x, weight, bias, eps)
    }
}

/// Validates LayerNorm arguments: `x` (B,C,H,W), `weight` and `bias` (C,H,W).
fn check_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<()> {
    let op = "layer_norm_chw";
    let (_, c, h, w) = x
        .dims4()
        .map_err(|_| bad_shape(op, "input", x.shape(), "(B, C, H, W)"))?;
    for (what, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [c, h, w] {
            return Err(bad_shape(op, what, t.shape(), format!("({c}, {h}, {w})")));
        }
    }
    Ok(())
}

/// [`layer_norm_chw`] from differentiable candle ops, on any device.
pub fn layer_norm_chw_portable(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    check_layer_norm(x, weight, bias)?;
    let (b, c, h, w) = x.dims4()?;
    let xhat = standardise_rows(&x.reshape((b, c * h * w))?, eps)?.reshape((b, c, h, w))?;
    xhat.broadcast_mul(&weight.unsqueeze(0)?)?
        .broadcast_add(&bias.unsqueeze(0)?)
}

/// The activation that follows a fused normalisation ([`group_norm_fused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormAct {
    /// No activation.
    #[default]
    Identity,
    /// SiLU, `z * sigmoid(z)`.
    Silu,
}

/// `torch.nn.functional.group_norm`: `x` (B,C,H,W) normalised over each group of `C/groups`
/// channels and all pixels, then a per-channel affine `weight`, `bias` (C). One fused pass
/// (and one for the backward) on the CPU (f32/f64), [`group_norm_portable`] elsewhere.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    group_norm_fused(x, None, groups, weight, bias, eps, NormAct::Identity)
}

/// [`group_norm`] from differentiable candle ops, on any device.
pub fn group_norm_portable(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    group_norm_fused_portable(x, None, groups, weight, bias, eps, NormAct::Identity)
}

/// `act(group_norm(x + shift, ...))`: a GroupNorm whose input first gets a per-sample,
/// per-channel `shift` (B,C) added (e.g. a time embedding), followed by `act`. One fused pass
/// (and one for the backward, with gradients for `x`, `shift`, `weight` and `bias`) on the CPU
/// (f32/f64), [`group_norm_fused_portable`] elsewhere.
pub fn group_norm_fused(
    x: &Tensor,
    shift: Option<&Tensor>,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: NormAct,
) -> Result<Tensor> {
    check_group_norm(x, shift, groups, weight, bias)?;
    let mut tensors = vec![x, weight, bias];
    tensors.extend(shift);
    if !fast_cpu(&tensors) {
        return group_norm_fused_portable(x, shift, groups, weight, bias, eps, act);
    }
    let mut parts = vec![weight.clone(), bias.clone()];
    if let Some(s) = shift {
        parts.push(s.flatten_all()?);
    }
    let params = Tensor::cat(&parts, 0)?.contiguous()?;
    let op = GroupNormOp {
        groups,
        eps,
        shift: shift.is_some(),
        silu: act == NormAct::Silu,
    };
    x.contiguous()?.apply_op2(&params, op)
}

/// [`group_norm_fused`] from differentiable candle ops, on any device.
pub fn group_norm_fused_portable(
    x: &Tensor,
    shift: Option<&Tensor>,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: NormAct,
) -> Result<Tensor> {
    check_group_norm(x, shift, groups, weight, bias)?;
    let (b, c, h, w) = x.dims4()?;
    let x = match shift {
        Some(s) => x.broadcast_add(&s.reshape((b, c, 1, 1))?)?,
        None => x.clone(),
    };
    let xhat = standardise_rows(&x.reshape((b * groups, (c / groups) * h * w))?, eps)?
        .reshape((b, c, h, w))?;
    let y = xhat
        .broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    match act {
        NormAct::Identity => Ok(y),
        NormAct::Silu => y.silu(),
    }
}

/// Validates GroupNorm arguments: `x` (B,C,H,W), `groups` dividing C, `weight`, `bias` (C),
/// `shift` (B,C).
fn check_group_norm(
    x: &Tensor,
    shift: Option<&Tensor>,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<()> {
    let op = "group_norm";
    let (b, c, _, _) = x
        .dims4()
        .map_err(|_| bad_shape(op, "input", x.shape(), "(B, C, H, W)"))?;
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(bad_config(
            op,
            format!("{groups} groups do not divide {c} channels"),
        ));
    }
    for (what, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [c] {
            return Err(bad_shape(op, what, t.shape(), format!("({c})")));
        }
    }
    match shift {
        Some(s) if s.dims() != [b, c] => {
            Err(bad_shape(op, "shift", s.shape(), format!("({b}, {c})")))
        }
        _ => Ok(()),
    }
}

/// `torch.nn.LayerNorm((C,H,W))` for (B,C,H,W) input: parameters `weight` (ones) and `bias`
/// (zeros) of shape (C,H,W).
#[derive(Debug, Clone)]
pub struct LayerNormChw {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNormChw {
    /// Requests `weight` and `bias` of `shape` = (C,H,W) from `vb`.
    pub fn new(vb: VarBuilder, shape: (usize, usize, usize), eps: f64) -> Result<Self> {
        Ok(LayerNormChw {
            weight: vb.get_with_hints(shape, "weight", InitSpec::Const(1.0).to_init())?,
            bias: vb.get_with_hints(shape, "bias", InitSpec::Const(0.0).to_init())?,
            eps,
        })
    }
}

impl Module for LayerNormChw {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm_chw(x, &self.weight, &self.bias, self.eps)
    }
}

/// `torch.nn.GroupNorm(groups, channels, eps)`: `weight` (ones) and `bias` (zeros) of shape (C).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Requests `weight` and `bias` (channels) from `vb`; `groups` must divide `channels`.
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(bad_config(
                "GroupNorm",
                format!("{groups} groups do not divide {channels} channels"),
            ));
        }
        Ok(GroupNorm {
            weight: vb.get_with_hints(channels, "weight", InitSpec::Const(1.0).to_init())?,
            bias: vb.get_with_hints(channels, "bias", InitSpec::Const(0.0).to_init())?,
            groups,
            eps,
        })
    }
}

impl GroupNorm {
    /// The scale (C).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The offset (C).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// `act(GroupNorm(x + shift))` in one fused op (see [`group_norm_fused`]); `shift` is (B,C).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        shift: Option<&Tensor>,
        act: NormAct,
    ) -> Result<Tensor> {
        group_norm_fused(
            x,
            shift,
            self.groups,
            &self.weight,
            &self.bias,
            self.eps,
            act,
        )
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, self.groups, &self.weight, &self.bias, self.eps)
    }
}

/// Running statistics of a [`BatchNorm2d`] (PyTorch buffers).
#[derive(Debug, Clone)]
struct RunningStats {
    mean: Tensor,
    var: Tensor,
    batches: i64,
}

/// `torch.nn.BatchNorm2d(channels)` (momentum 0.1, eps 1e-5). `weight`/`bias` are trainable
/// variables from the `VarBuilder`; `running_mean`, `running_var` and `num_batches_tracked` are
/// non-trainable buffers held by the module (see [`BatchNorm2d::buffers`] /
/// [`BatchNorm2d::load_buffers`]), updated in training mode with the unbiased batch variance.
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    prefix: String,
    stats: Mutex<RunningStats>,
}

/// Momentum of the running statistics (PyTorch default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// Epsilon of [`BatchNorm2d`] (PyTorch default).
pub const BATCH_NORM_EPS: f64 = 1e-5;

impl BatchNorm2d {
    /// Requests `weight` (ones) and `bias` (zeros) of shape (channels); buffers start at
    /// mean 0, var 1, 0 batches.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(bad_config("BatchNorm2d", "channels must be at least 1"));
        }
        let weight = vb.get_with_hints(channels, "weight", InitSpec::Const(1.0).to_init())?;
        let bias = vb.get_with_hints(channels, "bias", InitSpec::Const(0.0).to_init())?;
        let stats = RunningStats {
            mean: Tensor::zeros(channels, DType::F32, vb.device())?,
            var: Tensor::ones(channels, DType::F32, vb.device())?,
            batches: 0,
        };
        Ok(BatchNorm2d {
            weight,
            bias,
            prefix: vb.prefix(),
            stats: Mutex::new(stats),
        })
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The buffers under their full PyTorch names: `<prefix>.running_mean`, `.running_var` (f32,
    /// (C)) and `.num_batches_tracked` (i64 scalar).
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let stats = self.stats.lock().expect("batch-norm stats lock poisoned");
        Ok(vec![
            (self.full_name("running_mean"), stats.mean.clone()),
            (self.full_name("running_var"), stats.var.clone()),
            (
                self.full_name("num_batches_tracked"),
                Tensor::new(stats.batches, stats.mean.device())?,
            ),
        ])
    }

    /// Sets the buffers from `get(full_name)`; a missing `num_batches_tracked` is kept as is,
    /// missing or mis-shaped statistics are errors naming the buffer.
    pub fn load_buffers(&self, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        let mut stats = self.stats.lock().expect("batch-norm stats lock poisoned");
        let c = stats.mean.dim(0)?;
        let device = stats.mean.device().clone();
        let load = |name: &str| -> Result<Tensor> {
            let full = self.full_name(name);
            let t = get(&full).ok_or_else(|| NnError::Buffer {
                module: self.prefix.clone(),
                name: full.clone(),
                reason: "missing".into(),
            })?;
            if t.dims() != [c] {
                return Err(NnError::Buffer {
                    module: self.prefix.clone(),
                    name: full,
                    reason: format!("shape {:?}, expected ({c})", t.dims()),
                }
                .into());
            }
            t.to_dtype(DType::F32)?.to_device(&device)
        };
        let mean = load("running_mean")?;
        let var = load("running_var")?;
        stats.mean = mean;
        stats.var = var;
        if let Some(n) = get(&self.full_name("num_batches_tracked")) {
            stats.batches = n.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?[0];
        }
        Ok(())
    }

    /// Normalises `x` (B,C,H,W): batch statistics (and a running-stat update) when `train`,
    /// running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, h, w) = x
            .dims4()
            .map_err(|_| bad_shape("BatchNorm2d", "input", x.shape(), "(B, C, H, W)"))?;
        if c != self.weight.dim(0)? {
            return Err(bad_shape(
                "BatchNorm2d",
                "input",
                x.shape(),
                format!("{} channels", self.weight.dim(0)?),
            ));
        }
        let shape = (1, c, 1, 1);
        let (mean, var) = if train {
            let n = b * h * w;
            let mean = x.mean_keepdim((0, 2, 3))?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
            let mut stats = self.stats.lock().expect("batch-norm stats lock poisoned");
            let batch_mean = mean.detach().flatten_all()?.to_dtype(DType::F32)?;
            let unbiased = (var.detach().flatten_all()?.to_dtype(DType::F32)?
                * (n as f64 / (n.max(2) - 1) as f64))?;
            stats.mean = ((&stats.mean * (1.0 - BATCH_NORM_MOMENTUM))?
                + (batch_mean * BATCH_NORM_MOMENTUM)?)?;
            stats.var =
                ((&stats.var * (1.0 - BATCH_NORM_MOMENTUM))? + (unbiased * BATCH_NORM_MOMENTUM)?)?;
            stats.batches += 1;
            (mean, var)
        } else {
            let stats = self.stats.lock().expect("batch-norm stats lock poisoned");
            (
                stats.mean.to_dtype(x.dtype())?.reshape(shape)?,
                stats.var.to_dtype(x.dtype())?.reshape(shape)?,
            )
        };
        x.broadcast_sub(&mean)?
            .broadcast_div(&(var + BATCH_NORM_EPS)?.sqrt()?)?
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}
