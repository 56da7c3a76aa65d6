//! Exponential moving average of the trainable weights.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var};
use ddpm_unet::Model;

use crate::{Result, TrainError};

/// Shadow weights `ema = decay·ema + (1-decay)·θ`, updated after every optimizer step.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    /// Folds the current weights into the average.
    pub fn update(&mut self, params: &[(String, Var)]) -> Result<()> {
        for ((_, shadow), (_, var)) in self.shadow.iter_mut().zip(params) {
            *shadow =
                ((&*shadow * self.decay)? + (var.as_tensor() * (1.0 - self.decay))?)?.detach();
        }
        Ok(())
    }

    /// The model's state dict with the trainable weights replaced by their averages (buffers
    /// such as BatchNorm statistics come from the model).
    pub fn state_dict(&self, model: &Model) -> Result<BTreeMap<String, Tensor>> {
        let mut dict = model.state_dict()?;
        for (name, shadow) in &self.shadow {
            dict.insert(name.clone(), shadow.clone());
        }
        Ok(dict)
    }

    /// Restores the averages from a saved state dict.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, shadow) in &mut self.shadow {
            let saved = tensors
                .get(name)
                .ok_or_else(|| TrainError::Config(format!("EMA weights lack `{name}`")))?;
            if saved.dims() != shadow.dims() {
                return Err(TrainError::Config(format!(
                    "EMA weight `{name}` has shape {:?}, the model has {:?}",
                    saved.dims(),
                    shadow.dims()
                )));
            }
            *shadow = saved.to_device(shadow.device())?;
        }
        Ok(())
    }
}
