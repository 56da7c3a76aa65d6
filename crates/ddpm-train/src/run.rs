//! The training loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use ddpm_dist::WorldInfo;

use crate::{Result, TrainConfig, Trainer};

/// How and where to run (what is not part of the run's configuration).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory.
    pub out_dir: PathBuf,
    /// Continue the run in `out_dir` from its latest checkpoint.
    pub resume: bool,
    /// With `resume`: continue from this checkpoint (`step_<N>`) instead of the latest (when
    /// the latest is damaged; later checkpoints are replaced as the run reaches them).
    pub resume_from: Option<String>,
    /// Where tensors live.
    pub device: Device,
    /// Where decoded image folders are cached.
    pub cache_dir: PathBuf,
    /// Set (e.g. by Ctrl-C) to stop after the current step, saving a checkpoint and the grid.
    pub stop: Arc<AtomicBool>,
    /// This process's place in a data-parallel run (a world of one by default).
    pub world: WorldInfo,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Optimizer steps done in total (across resumes).
    pub steps: u64,
    /// The loss of every step this process made, in order.
    pub losses: Vec<f32>,
    /// The final checkpoint.
    pub checkpoint: PathBuf,
    /// `samples/final.png`.
    pub final_grid: PathBuf,
    /// True when stopped by the stop flag before the planned end.
    pub interrupted: bool,
}

/// Trains `config` into `options.out_dir`: see the crate docs for the data flow and the run
/// directory layout. Ends (epochs done, `max_steps` reached or the stop flag) with a final
/// checkpoint and `samples/final.png`.
///
/// In a data-parallel run (`options.world` of several ranks) every rank calls this with the
/// same configuration: each trains on its own shard, gradients are averaged, and only rank 0
/// writes files.
pub fn train(config: &TrainConfig, options: &RunOptions) -> Result<RunSummary> {
    let mut trainer = Trainer::new(config, options)?;
    while let Some(batch) = trainer.next_batch()? {
        if trainer.stop_requested()? {
            return trainer.finish(true);
        }
        trainer.step(&batch)?;
        trainer.after_step()?;
    }
    trainer.finish(false)
}
