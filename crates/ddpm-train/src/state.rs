//! What a training checkpoint holds beyond the run's manifest and weights (those are
//! `ddpm-run`'s): Adam's moments and where training stood.

use std::path::Path;

use ddpm_diffusion::NoiseRngState;
use serde::{Deserialize, Serialize};

use crate::{AdamState, Result};

/// Adam's moments (safetensors).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// [`TrainingState`] as JSON.
pub const STATE_FILE: &str = "state.json";

/// Where training stood when a checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch the next batch belongs to.
    pub epoch: u64,
    /// The index of the next batch within that epoch.
    pub batch_in_epoch: usize,
    /// The number of training images (a resumed run must find the same data).
    pub images: usize,
    /// The training-noise generator (t and ε draws).
    pub noise: NoiseRngState,
    /// Adam's counters.
    pub adam: AdamState,
    /// [`crate::TrainingSpec::digest`] of the run.
    pub config_digest: String,
    /// The loss of the last step.
    pub loss: Option<f32>,
}

impl TrainingState {
    /// Reads a checkpoint's `state.json`.
    pub fn read(checkpoint_dir: &Path) -> Result<Self> {
        Ok(ddpm_run::checkpoint::read_json(
            &checkpoint_dir.join(STATE_FILE),
        )?)
    }
}
