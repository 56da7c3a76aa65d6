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

/// A learned vector per class plus one for "no class" (the last row), added to a network's
/// time embedding: `nn.Embedding(classes + 1, dim)` under `<prefix>.weight`, drawn N(0, 1)
/// like PyTorch's. Label `classes` selects the "no class" row, which classifier-free guidance
/// trains (label dropout) and samples as the unconditional output.
#[derive(Debug, Clone)]
pub(crate) struct ClassEmbedding {
    table: Tensor,
    classes: usize,
}

impl ClassEmbedding {
    pub(crate) fn new(vb: VarBuilder, classes: usize, dim: usize) -> candle_core::Result<Self> {
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        Ok(ClassEmbedding {
            table: vb.get_with_hints((classes + 1, dim), "weight", init)?,
            classes,
        })
    }

    /// The (B, dim) rows of `labels` (u32, shape (B), each at most `classes`), or the
    /// "no class" row for every sample when `labels` is `None`.
    pub(crate) fn forward(
        &self,
        labels: Option<&Tensor>,
        batch: usize,
    ) -> candle_core::Result<Tensor> {
        let labels = match labels {
            Some(l) => l.clone(),
            None => Tensor::full(self.classes as u32, batch, self.table.device())?,
        };
        self.table.index_select(&labels, 0)
    }
}
