//! Small pieces shared by the networks: time MLPs, per-channel time injection, tracing.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ddpm_nn::Linear;

/// Receives named intermediate tensors during a traced forward pass (see
/// [`crate::Model::forward_traced`]).
pub type Tracer<'a> = &'a mut dyn FnMut(&str, &Tensor);

/// The activation between the two linears of a [`TimeMlp`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum MlpAct {
    Relu,
    Silu,
}

/// `nn.Sequential(Linear(in, hidden), act, Linear(hidden, out))`: names `<prefix>.0`, `<prefix>.2`.
#[derive(Debug, Clone)]
pub(crate) struct TimeMlp {
    first: Linear,
    second: Linear,
    act: MlpAct,
}

impl TimeMlp {
    pub(crate) fn new(
        vb: VarBuilder,
        in_dim: usize,
        hidden: usize,
        out_dim: usize,
        act: MlpAct,
    ) -> candle_core::Result<Self> {
        Ok(TimeMlp {
            first: Linear::new(vb.pp("0"), in_dim, hidden)?,
            second: Linear::new(vb.pp("2"), hidden, out_dim)?,
            act,
        })
    }
}

impl Module for TimeMlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.first.forward(x)?;
        let h = match self.act {
            MlpAct::Relu => ddpm_nn::relu(&h)?,
            MlpAct::Silu => ddpm_nn::silu(&h)?,
        };
        self.second.forward(&h)
    }
}

/// `(B, C)` → `(B, C, 1, 1)`, ready to broadcast over a feature map.
pub(crate) fn per_channel(v: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c) = v.dims2()?;
    v.reshape((b, c, 1, 1))
}
