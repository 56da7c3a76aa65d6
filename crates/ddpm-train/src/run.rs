//! The training loop.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ddpm_data::{Batches, batch_tensor};
use ddpm_dist::{Backend, Collective, WorldInfo};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_diffusion::{GenerateOptions, NoiseRng, NoiseRngState, Schedule, generate};
use ddpm_unet::{Model, PE_TABLE_NAME};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, CheckpointState, Snapshot};
use crate::error::io_err;
use crate::metrics::{self, MetricsLine};
use crate::{
    Adam, Ema, Result, TrainConfig, TrainError, diffusion_loss_given, draw_t_eps, learning_rate,
    load_dataset, optimizer_step,
};

/// How and where to run (what is not part of the run's configuration).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory.
    pub out_dir: PathBuf,
    /// Continue the run in `out_dir` from its latest checkpoint.
    pub resume: bool,
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

/// Seed offset of the preview-sampling noise, kept apart from the training noise so that
/// sampling never shifts the training stream (exact resume).
const PREVIEW_SEED_OFFSET: u64 = 0x5A4D_504C;

/// The training-noise seed of a rank: rank 0 uses the run's seed, so a data-parallel run's
/// rank 0 draws what a single-process run draws.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    seed.wrapping_add((rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

struct Trainer<'a> {
    config: &'a TrainConfig,
    options: &'a RunOptions,
    schedule: Schedule,
    model: Model,
    params: Vec<(String, candle_core::Var)>,
    adam: Adam,
    ema: Option<Ema>,
    noise: NoiseRng,
    /// Peers of a data-parallel run (`None` in a world of one).
    collective: Option<Box<dyn Collective>>,
    /// Names of the non-trainable network state (BatchNorm statistics) kept equal to rank 0's.
    buffers: Vec<String>,
}

impl Trainer<'_> {
    /// One optimizer step; returns the loss (the mean over ranks), or the first non-finite one
    /// without updating anything.
    fn step(&mut self, x0: &Tensor, lr: f64) -> Result<f32> {
        let (t, eps) = draw_t_eps(&mut self.noise, x0, self.config.n_steps)?;
        let loss = diffusion_loss_given(&self.model, &self.schedule, x0, &t, &eps)?;
        let mut value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if let Some(c) = self.collective.as_deref_mut() {
            value = c.mean_scalar(value)?;
        }
        if !value.is_finite() {
            return Ok(value);
        }
        let grads = loss.backward()?;
        let collective = self.collective.as_deref_mut();
        optimizer_step(
            &self.params,
            grads,
            collective,
            self.config.optim.grad_clip,
            &mut self.adam,
            lr,
        )?;
        self.sync_buffers()?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params, self.adam.state().step)?;
        }
        Ok(value)
    }

    /// Copies rank 0's trainable weights (at the start) to every rank.
    fn broadcast_weights(&mut self) -> Result<()> {
        if let Some(c) = self.collective.as_deref_mut() {
            let tensors: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, v)| v.as_tensor().clone())
                .collect();
            for ((_, var), value) in self.params.iter().zip(c.broadcast_tensors(&tensors, 0)?) {
                var.set(&value)?;
            }
        }
        Ok(())
    }

    /// Gives every rank rank 0's BatchNorm running statistics, as PyTorch's DDP does.
    fn sync_buffers(&mut self) -> Result<()> {
        let Some(c) = self.collective.as_deref_mut() else {
            return Ok(());
        };
        if self.buffers.is_empty() {
            return Ok(());
        }
        let mut dict = self.model.state_dict()?;
        let local: Vec<Tensor> = self
            .buffers
            .iter()
            .map(|n| dict[n].to_dtype(DType::F32))
            .collect::<candle_core::Result<_>>()?;
        for (name, value) in self.buffers.iter().zip(c.broadcast_tensors(&local, 0)?) {
            let dtype = dict[name].dtype();
            dict.insert(name.clone(), value.to_dtype(dtype)?);
        }
        self.model.load_state_dict(&dict.into_iter().collect())?;
        Ok(())
    }

    /// True when any rank asked to stop (so that all stop after the same step).
    fn stop_requested(&mut self) -> Result<bool> {
        let local = self.options.stop.load(Ordering::SeqCst);
        match self.collective.as_deref_mut() {
            Some(c) => Ok(c.mean_scalar(f32::from(u8::from(local)))? > 0.0),
            None => Ok(local),
        }
    }

    fn save(&self, state: &CheckpointState) -> Result<PathBuf> {
        let snapshot = Snapshot {
            config: self.config,
            state,
            model: self.model.state_dict()?,
            ema: self
                .ema
                .as_ref()
                .map(|e| e.state_dict(&self.model))
                .transpose()?,
            optimizer: self.adam.moments(),
        };
        checkpoint::save(&self.options.out_dir, &snapshot, self.config.keep_last)
    }

    /// Samples the configured grid (from the EMA weights when EMA is on) to `path`.
    fn sample_grid(&self, path: &Path) -> Result<()> {
        let ema_model;
        let model = match &self.ema {
            Some(ema) => {
                ema_model = Model::new(&self.config.model, &self.options.device, self.config.seed)?;
                ema_model.load_state_dict(&ema.state_dict(&self.model)?.into_iter().collect())?;
                &ema_model
            }
            None => &self.model,
        };
        let settings = self.config.sample;
        let options = GenerateOptions {
            n: settings.n,
            image: self.config.model.image().dims(),
            batch_size: settings.n,
            sampler: settings.sampler,
            prediction: ddpm_diffusion::Prediction::Epsilon,
        };
        let mut noise = NoiseRng::new(self.config.seed.wrapping_add(PREVIEW_SEED_OFFSET));
        let x0 = generate(
            model,
            &self.schedule,
            &options,
            None,
            &mut noise,
            &self.options.device,
            |_, _| {},
        )?;
        save_image(&grid(&to_u8(&x0)?, settings.nrow, 0)?, path)?;
        Ok(())
    }
}

fn progress_bar(total: u64, start: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(start);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}

/// Trains `config` into `options.out_dir`: see the crate docs for the data flow and the run
/// directory layout. Ends (epochs done, `max_steps` reached or the stop flag) with a final
/// checkpoint and `samples/final.png`.
///
/// In a data-parallel run (`options.world` of several ranks) every rank calls this with the
/// same configuration: each trains on its own shard, gradients are averaged, and only rank 0
/// writes files.
pub fn train(config: &TrainConfig, options: &RunOptions) -> Result<RunSummary> {
    let out = &options.out_dir;
    let device = &options.device;
    let world = &options.world;
    let main = world.is_main();
    let collective = if world.is_distributed() {
        Some(ddpm_dist::connect(world, Backend::for_device(device))?)
    } else {
        None
    };
    let resume_from = if options.resume {
        Some(checkpoint::latest(out)?)
    } else {
        if out.join("checkpoints").exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run: continue it with --resume {0}, or choose another --out",
                out.display()
            )));
        }
        None
    };
    if main {
        std::fs::create_dir_all(out.join("samples")).map_err(io_err(out))?;
        let config_path = out.join("config.json");
        let text = serde_json::to_string_pretty(config).expect("config serialises");
        std::fs::write(&config_path, text).map_err(io_err(&config_path))?;
    }

    let images = load_dataset(&config.dataset, &options.cache_dir)?;
    let want = config.model.image();
    if [images.channels(), images.height(), images.width()] != want.dims() {
        return Err(TrainError::Config(format!(
            "the dataset's images are {}x{}x{} but the network expects {want}",
            images.channels(),
            images.height(),
            images.width()
        )));
    }
    let batches = Batches::new(
        images.len(),
        config.optim.batch_size,
        config.seed,
        world.rank,
        world.world_size,
    )?
    .with_flip(config.optim.hflip);
    let per_epoch = batches.batches_per_epoch() as u64;
    let planned = config.optim.epochs * per_epoch;
    let total = config.optim.max_steps.map_or(planned, |m| m.min(planned));

    let model = Model::new(&config.model, device, config.seed)?;
    let params = model.trainable();
    let buffers = model
        .state_dict()?
        .into_keys()
        .filter(|name| name != PE_TABLE_NAME && !params.iter().any(|(p, _)| p == name))
        .collect();
    let mut trainer = Trainer {
        config,
        options,
        schedule: Schedule::new(config.schedule, config.n_steps, device)?,
        adam: Adam::new(params.clone(), config.optim.weight_decay)?,
        ema: (config.optim.ema > 0.0)
            .then(|| Ema::new(&params, config.optim.ema))
            .transpose()?,
        params,
        model,
        noise: NoiseRng::new(rank_seed(config.seed, world.rank)),
        collective,
        buffers,
    };
    let mut state = CheckpointState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        noise: trainer.noise.state(),
        adam: trainer.adam.state(),
        config_digest: config.training_digest(),
        loss: None,
    };
    if let Some(dir) = &resume_from {
        let (_, saved) = checkpoint::read_meta(dir)?;
        if saved.config_digest != state.config_digest {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                why: format!(
                    "it was trained with another configuration (digest {} vs {})",
                    saved.config_digest, state.config_digest
                ),
            });
        }
        let load = |file: &str| checkpoint::read_tensors(&dir.join(file), device);
        trainer
            .model
            .load_state_dict(&load(checkpoint::MODEL_FILE)?)?;
        trainer
            .adam
            .restore(saved.adam, &load(checkpoint::OPTIMIZER_FILE)?)?;
        if let Some(ema) = &mut trainer.ema {
            ema.restore(&load(checkpoint::EMA_FILE)?)?;
        }
        // Every rank draws as many words per step, so rank r resumes its own stream at
        // rank 0's saved position.
        trainer.noise = NoiseRng::from_state(NoiseRngState {
            seed: rank_seed(config.seed, world.rank),
            word_pos: saved.noise.word_pos,
        });
        state = saved;
    }
    trainer.broadcast_weights()?;

    let metrics_path = out.join("metrics.jsonl");
    let mut history = metrics::read(&metrics_path);
    let bar = if main {
        progress_bar(total, state.step)
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut losses = Vec::new();
    let (mut interval_loss, mut interval_steps, mut interval_start) = (0f64, 0u64, Instant::now());
    let mut last_saved = resume_from.clone();
    let mut interrupted = false;

    'epochs: while state.epoch < config.optim.epochs {
        let plan = batches.epoch(state.epoch);
        while state.batch_in_epoch < plan.len() {
            if state.step >= total {
                break 'epochs;
            }
            if trainer.stop_requested()? {
                interrupted = true;
                break 'epochs;
            }
            let (indices, flips) = plan.batch(state.batch_in_epoch);
            let x0 = batch_tensor(&images, indices, flips, device)?;
            // The LR curve spans the planned epochs, not --max-steps, so that stopping early
            // and resuming follows exactly the curve of an uninterrupted run.
            let lr = learning_rate(
                config.optim.lr,
                state.step,
                config.optim.warmup_steps,
                planned,
                config.optim.lr_schedule,
            );
            let loss = trainer.step(&x0, lr)?;
            if !loss.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFiniteLoss {
                    step: state.step + 1,
                    loss,
                });
            }
            losses.push(loss);
            state.step += 1;
            state.batch_in_epoch += 1;
            let epoch_end = (state.batch_in_epoch == plan.len()).then_some(state.epoch + 1);
            if epoch_end.is_some() {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            state.noise = NoiseRngState {
                seed: config.seed,
                word_pos: trainer.noise.state().word_pos,
            };
            state.adam = trainer.adam.state();
            state.loss = Some(loss);
            interval_loss += loss as f64;
            interval_steps += 1;
            bar.set_position(state.step);

            if main && (state.step.is_multiple_of(config.log_every) || state.step == total) {
                let line = MetricsLine {
                    step: state.step,
                    epoch: state.epoch - u64::from(epoch_end.is_some()),
                    loss: interval_loss / interval_steps as f64,
                    lr,
                    images_per_s: (interval_steps as usize
                        * config.optim.batch_size
                        * world.world_size) as f64
                        / interval_start.elapsed().as_secs_f64(),
                    wall_s: started.elapsed().as_secs_f64(),
                };
                let message = format!(
                    "epoch {} loss {:.4} lr {:.2e} {:.0} img/s",
                    line.epoch, line.loss, line.lr, line.images_per_s
                );
                if bar.is_hidden() {
                    eprintln!("step {}/{total} {message}", state.step);
                } else {
                    bar.set_message(message);
                }
                metrics::append(&metrics_path, &line)?;
                history.push(line);
                metrics::plot_loss(&history, &out.join("loss.png"))?;
                (interval_loss, interval_steps, interval_start) = (0.0, 0, Instant::now());
            }
            if main
                && config
                    .save_every
                    .is_some_and(|e| e.due(state.step, epoch_end))
            {
                last_saved = Some(trainer.save(&state)?);
            }
            if main
                && config
                    .sample_every
                    .is_some_and(|e| e.due(state.step, epoch_end))
            {
                trainer
                    .sample_grid(&out.join("samples").join(format!("step_{}.png", state.step)))?;
            }
        }
    }
    bar.finish_and_clear();
    let final_grid = out.join("samples").join("final.png");
    let saved_now = last_saved
        .as_ref()
        .is_some_and(|p| p.ends_with(format!("step_{}", state.step)));
    let checkpoint = match last_saved {
        Some(path) if saved_now => path,
        _ if main => trainer.save(&state)?,
        _ => out.join("checkpoints").join(format!("step_{}", state.step)),
    };
    if main {
        trainer.sample_grid(&final_grid)?;
    }
    Ok(RunSummary {
        steps: state.step,
        losses,
        checkpoint,
        final_grid,
        interrupted,
    })
}
