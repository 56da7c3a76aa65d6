//! Timestep handling: validating `t`, the reference's frozen sinusoidal table, and the
//! modern UNet's computed sinusoidal embedding.

use candle_core::{DType, Device, Tensor};

/// Name of the frozen table in the PyTorch state dict.
pub const PE_TABLE_NAME: &str = "pe.embedding.weight";

/// The reference `PositionalEncoding` table of shape `(n_steps, d)`: `[pos, 2i] =
/// sin(pos / 10000^(2i/d))`, `[pos, 2i+1] = cos(…)`, sin and cos interleaved.
///
/// The argument `pos / 10000^(2i/d)` is formed in `f32` as PyTorch does, then `sin`/`cos`
/// are taken in `f64` and rounded, so the table matches PyTorch's to about one ulp.
pub fn sinusoidal_table(n_steps: usize, d: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut data = Vec::with_capacity(n_steps * d);
    for pos in 0..n_steps {
        for two_i in (0..d).step_by(2) {
            let denom = 10000f32.powf(two_i as f32 / d as f32);
            let arg = f64::from(pos as f32 / denom);
            data.push(arg.sin() as f32);
            data.push(arg.cos() as f32);
        }
    }
    Tensor::from_vec(data, (n_steps, d), device)
}

/// Flattens `t` of shape `(B)` or `(B, 1)` (any integer dtype, or float holding integers)
/// into a `(B)` `u32` tensor, checking that `B == batch` and every value is in `0..n_steps`.
pub fn timestep_indices(t: &Tensor, batch: usize, n_steps: usize) -> candle_core::Result<Tensor> {
    let values = timestep_values(t, batch)?;
    if let Some(bad) = values
        .iter()
        .find(|&&v| v < 0.0 || v >= n_steps as f64 || v.fract() != 0.0)
    {
        candle_core::bail!("timestep {bad} is not an integer in 0..{n_steps}");
    }
    let idx: Vec<u32> = values.iter().map(|&v| v as u32).collect();
    Tensor::from_vec(idx, batch, t.device())
}

/// Reads `t` of shape `(B)` or `(B, 1)` into host values, checking `B == batch`.
fn timestep_values(t: &Tensor, batch: usize) -> candle_core::Result<Vec<f64>> {
    let flat = match t.dims() {
        [b] | [b, 1] if *b == batch => t.flatten_all()?,
        dims => candle_core::bail!(
            "t must have shape ({batch}) or ({batch}, 1) to match the batch, got {dims:?}"
        ),
    };
    flat.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// The DDPM sinusoidal embedding of `t` (shape `(B)` or `(B, 1)`), width `dim` (even):
/// `[sin(t·f_0) … sin(t·f_{h-1}), cos(t·f_0) … cos(t·f_{h-1})]` with `h = dim/2` and
/// `f_i = 10000^(-i/h)`. Returns `(B, dim)` in `f32`.
pub fn sinusoidal_embedding(t: &Tensor, batch: usize, dim: usize) -> candle_core::Result<Tensor> {
    let half = dim / 2;
    let values = timestep_values(t, batch)?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite() || **v < 0.0) {
        candle_core::bail!("timestep {bad} is not a finite non-negative number");
    }
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let device = t.device();
    let t = Tensor::from_vec(
        values.iter().map(|&v| v as f32).collect(),
        (batch, 1),
        device,
    )?;
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let args = t.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.sin()?, args.cos()?], 1)
}

/// The frozen `(T, d)` positional-encoding table of the reference and residual UNets
/// (`pe.embedding.weight`): not trainable, but part of the state dict.
#[derive(Debug)]
pub(crate) struct PeTable {
    table: candle_core::Var,
}

impl PeTable {
    /// The reference table for `n_steps` timesteps and width `d`.
    pub(crate) fn new(n_steps: usize, d: usize, device: &Device) -> candle_core::Result<Self> {
        Ok(PeTable {
            table: candle_core::Var::from_tensor(&sinusoidal_table(n_steps, d, device)?)?,
        })
    }

    /// Number of rows (T).
    pub(crate) fn n_steps(&self) -> usize {
        self.table.dims()[0]
    }

    /// The table, detached (no gradient flows into it).
    pub(crate) fn tensor(&self) -> Tensor {
        self.table.as_detached_tensor()
    }

    /// Embeds `t` ((B) or (B,1), integers in 0..T) as `(B, d)`.
    pub(crate) fn embed(&self, t: &Tensor, batch: usize) -> candle_core::Result<Tensor> {
        let idx = timestep_indices(t, batch, self.n_steps())?;
        self.tensor().index_select(&idx, 0)
    }

    /// Replaces the table by a loaded one of the same shape (as PyTorch's `load_state_dict`).
    pub(crate) fn set(&self, loaded: &Tensor) -> candle_core::Result<()> {
        self.table.set(
            &loaded
                .to_dtype(DType::F32)?
                .to_device(self.table.device())?,
        )
    }
}
