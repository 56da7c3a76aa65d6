//! `torch.nn.Linear` with PyTorch names and init.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::error::{bad_config, bad_shape};
use crate::init::InitSpec;
use crate::matmul::matmul;

/// Fully connected layer: `weight` (out,in) and `bias` (out), both `U(±1/sqrt(in))` like torch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Requests `weight` (out,in) and `bias` (out) from `vb`.
    pub fn new(vb: VarBuilder, in_features: usize, out_features: usize) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(bad_config(
                "Linear",
                format!("in {in_features}, out {out_features}: both must be >= 1"),
            ));
        }
        let init = InitSpec::torch_default(in_features).to_init();
        Ok(Linear {
            weight: vb.get_with_hints((out_features, in_features), "weight", init)?,
            bias: vb.get_with_hints(out_features, "bias", init)?,
        })
    }

    /// The weight (out,in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    /// `x` (..., in) -> (..., out).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out_f, in_f) = self.weight.dims2()?;
        let dims = x.dims();
        if dims.last() != Some(&in_f) {
            return Err(bad_shape(
                "Linear",
                "input",
                x.shape(),
                format!("(..., {in_f})"),
            ));
        }
        let rows = x.elem_count() / in_f;
        let y = matmul(&x.reshape((rows, in_f))?, &self.weight, false, true)?
            .broadcast_add(&self.bias)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("non-empty dims") = out_f;
        y.reshape(out_dims)
    }
}
