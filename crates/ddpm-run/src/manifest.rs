//! The manifest of a checkpoint: what inference needs to rebuild the run.

use candle_core::Device;
use ddpm_diffusion::{BetaKind, Prediction, SamplerConfig, Schedule};
use ddpm_unet::{Model, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::Result;

/// How a run's grids are sampled: the trainer's preview and final grids, and the sampler's
/// defaults for the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleSettings {
    /// Images per grid.
    pub n: usize,
    /// Images per grid row.
    pub nrow: usize,
    /// The reverse process.
    pub sampler: SamplerConfig,
}

/// Everything needed to rebuild a run's network and schedule, and to sample it the way it was
/// meant to be sampled. Saved as `manifest.json` in every checkpoint; the training
/// configuration embeds it (same field names, so an older run's `config.json` reads as one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The network.
    pub model: ModelConfig,
    /// β schedule.
    pub schedule: BetaKind,
    /// Diffusion steps T.
    pub n_steps: usize,
    /// What the network predicts (runs from before this field predict ε).
    #[serde(default)]
    pub prediction: Prediction,
    /// Preview/final grid sampling, and the sampler's defaults.
    pub sample: SampleSettings,
}

impl RunManifest {
    /// The run's noise schedule on `device`.
    pub fn schedule(&self, device: &Device) -> Result<Schedule> {
        Ok(Schedule::new(self.schedule, self.n_steps, device)?)
    }

    /// A freshly initialised network of the run's configuration (load weights into it).
    pub fn build_model(&self, device: &Device) -> Result<Model> {
        Ok(Model::new(&self.model, device, 0)?)
    }
}
