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
    /// β rescaled to zero terminal SNR ([`Schedule::with_zero_terminal_snr`]); left out of the
    /// JSON when false, as runs from before this field are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_terminal_snr: bool,
    /// What the network predicts (runs from before this field predict ε).
    #[serde(default)]
    pub prediction: Prediction,
    /// Preview/final grid sampling, and the sampler's defaults.
    pub sample: SampleSettings,
}

impl RunManifest {
    /// The run's noise schedule on `device` (rescaled to zero terminal SNR when the run was).
    pub fn schedule(&self, device: &Device) -> Result<Schedule> {
        let schedule = Schedule::new(self.schedule, self.n_steps, device)?;
        Ok(if self.zero_terminal_snr {
            schedule.with_zero_terminal_snr()?
        } else {
            schedule
        })
    }

    /// A freshly initialised network of the run's configuration (load weights into it).
    pub fn build_model(&self, device: &Device) -> Result<Model> {
        Ok(Model::new(&self.model, device, 0)?)
    }
}
