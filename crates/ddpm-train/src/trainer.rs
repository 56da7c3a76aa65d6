//! [`Trainer`]: a run's state (data, network, optimiser, EMA, noise, counters) with its
//! setup or resume, one optimizer step, and the periodic hooks (log, save, sample).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::{DType, Tensor};
use ddpm_data::{Batches, EpochPlan, ImageSet, batch_tensor};
use ddpm_diffusion::{
    GenerateOptions, Guidance, NoiseRng, NoiseRngState, Schedule, class_rows, generate,
};
use ddpm_dist::{Backend, Collective};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_run::checkpoint::{self, CONFIG_FILE, EMA_FILE, MODEL_FILE, Snapshot};
use ddpm_unet::{Model, PE_TABLE_NAME};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::io_err;
use crate::metrics::{self, MetricsLine};
use crate::state::{OPTIMIZER_FILE, STATE_FILE, TrainingState};
use crate::{
    Adam, Ema, Result, RunOptions, RunSummary, TrainConfig, TrainError, diffusion_loss_given,
    draw_t_eps, learning_rate, optimizer_step,
};

/// Seed offset of the preview-sampling noise, kept apart from the training noise so that
/// sampling never shifts the training stream (exact resume).
const PREVIEW_SEED_OFFSET: u64 = 0x5A4D_504C;

/// The training-noise seed of a rank: rank 0 uses the run's seed, so a data-parallel run's
/// rank 0 draws what a single-process run draws.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    seed.wrapping_add((rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Resolution of the label-dropout draw: a label is dropped when its uniform draw in
/// 0..2^24 falls below `cond_drop · 2^24`.
const DROP_RESOLUTION: u32 = 1 << 24;

/// One batch of training data: clean images and, in a conditional run, their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Clean images x0, (B, C, H, W) in [-1, 1].
    pub images: Tensor,
    /// The class label of each image in a conditional run.
    pub classes: Option<Vec<u32>>,
}

/// The loss and throughput since the last log line.
struct LogWindow {
    loss_sum: f64,
    steps: u64,
    start: Instant,
}

impl LogWindow {
    fn new() -> Self {
        LogWindow {
            loss_sum: 0.0,
            steps: 0,
            start: Instant::now(),
        }
    }
}

/// A training run in progress. [`crate::train`] drives it: `next_batch`, `step`, `after_step`
/// until the data or the step budget runs out, then `finish`.
pub struct Trainer<'a> {
    config: &'a TrainConfig,
    options: &'a RunOptions,
    images: ImageSet,
    /// Each image's class label, in a conditional run.
    labels: Option<Vec<u32>>,
    batches: Batches,
    plan: EpochPlan,
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
    state: TrainingState,
    /// Steps of the planned epochs: the LR schedule's horizon.
    planned: u64,
    /// Where this run stops (`max_steps` or the planned steps).
    total: u64,
    /// The learning rate of the last step.
    lr: f64,
    /// `Some(epoch)` when the last step finished that epoch.
    epoch_end: Option<u64>,
    losses: Vec<f32>,
    last_saved: Option<PathBuf>,
    history: Vec<MetricsLine>,
    window: LogWindow,
    started: Instant,
    bar: ProgressBar,
}

impl<'a> Trainer<'a> {
    /// Sets up a run in `options.out_dir`: a new one (refused if the folder already holds a
    /// run), or, with `options.resume`, the run there from its latest checkpoint.
    pub fn new(config: &'a TrainConfig, options: &'a RunOptions) -> Result<Self> {
        let (spec, control) = (&config.spec, &config.control);
        let (out, device, world) = (&options.out_dir, &options.device, &options.world);
        let collective = if world.is_distributed() {
            Some(ddpm_dist::connect(world, Backend::for_device(device))?)
        } else {
            None
        };
        let resume_from = if options.resume {
            Some(resume_point(out, options.resume_from.as_deref())?)
        } else {
            if out.join(checkpoint::CHECKPOINTS_DIR).exists() {
                return Err(TrainError::Config(format!(
                    "{} already holds a run: continue it with --resume {0}, or choose another --out",
                    out.display()
                )));
            }
            None
        };
        if world.is_main() {
            std::fs::create_dir_all(out.join("samples")).map_err(io_err("creating", out))?;
            if resume_from.is_none() {
                config.save(&out.join(CONFIG_FILE))?;
            }
        }

        let dataset = spec
            .dataset
            .load(control.data_dir.as_deref(), &options.cache_dir)?;
        let labels = match (&spec.classes, dataset.classes) {
            (None, _) => None,
            (Some(want), Some(found)) if found.names == *want => Some(found.labels),
            (Some(want), found) => {
                return Err(TrainError::Config(format!(
                    "the run is conditioned on the classes {want:?}, but the data found now \
                     has {}: point --data-dir at the run's data",
                    found.map_or("none".to_string(), |c| format!("{:?}", c.names))
                )));
            }
        };
        let images = dataset.images;
        let want = spec.network.image();
        if [images.channels(), images.height(), images.width()] != want.dims() {
            return Err(TrainError::Config(format!(
                "the dataset's images are {}x{}x{} but the network expects {want}",
                images.channels(),
                images.height(),
                images.width()
            )));
        }
        let recipe = &spec.recipe;
        let batches = Batches::new(
            images.len(),
            recipe.batch_size,
            recipe.seed,
            world.rank,
            world.world_size,
        )?
        .with_flip(recipe.hflip);
        let planned = recipe.epochs * batches.batches_per_epoch() as u64;
        let total = control.max_steps.map_or(planned, |m| m.min(planned));

        let model = Model::new(&spec.network, device, recipe.seed)?;
        let params = model.trainable();
        let buffers = model
            .state_dict()?
            .into_keys()
            .filter(|name| name != PE_TABLE_NAME && !params.iter().any(|(p, _)| p == name))
            .collect();
        let adam = Adam::new(params.clone(), recipe.weight_decay)?;
        let noise = NoiseRng::new(rank_seed(recipe.seed, world.rank));
        let state = TrainingState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            images: images.len(),
            noise: noise.state(),
            adam: adam.state(),
            config_digest: spec.digest(),
            loss: None,
        };
        let history = metrics::read(&out.join("metrics.jsonl"));
        let mut trainer = Trainer {
            config,
            options,
            plan: batches.epoch(0),
            images,
            labels,
            batches,
            schedule: spec.schedule(device)?,
            ema: (recipe.ema > 0.0)
                .then(|| Ema::new(&params, recipe.ema))
                .transpose()?,
            adam,
            params,
            model,
            noise,
            collective,
            buffers,
            state,
            planned,
            total,
            lr: 0.0,
            epoch_end: None,
            losses: Vec::new(),
            last_saved: resume_from.clone(),
            history,
            window: LogWindow::new(),
            started: Instant::now(),
            bar: ProgressBar::hidden(),
        };
        if let Some(dir) = &resume_from {
            trainer.restore(dir)?;
            if world.is_main() {
                // Only once the checkpoint is known to fit: a refused resume leaves the run's
                // configuration as it was.
                config.save(&out.join(CONFIG_FILE))?;
            }
        }
        trainer.broadcast_weights()?;
        if world.is_main() {
            trainer.bar = progress_bar(total, trainer.state.step);
        }
        Ok(trainer)
    }

    /// Loads a checkpoint's weights, moments, EMA and counters, after checking that it
    /// belongs to this run and that the data is the same size.
    fn restore(&mut self, dir: &Path) -> Result<()> {
        checkpoint::require_files(dir, &[MODEL_FILE, OPTIMIZER_FILE, STATE_FILE])?;
        let saved = TrainingState::read(dir)?;
        let mismatch = |why: String| {
            TrainError::Run(ddpm_run::RunError::Checkpoint {
                path: dir.to_path_buf(),
                why,
            })
        };
        if saved.config_digest != self.state.config_digest {
            return Err(mismatch(format!(
                "it was trained with another configuration (digest {} vs {})",
                saved.config_digest, self.state.config_digest
            )));
        }
        if saved.images != self.state.images {
            return Err(mismatch(format!(
                "it was trained on {} images, but the data found now holds {}: point \
                 --data-dir at the run's data",
                saved.images, self.state.images
            )));
        }
        let device = &self.options.device;
        let load = |file: &str| checkpoint::read_tensors(&dir.join(file), device);
        self.model.load_state_dict(&load(MODEL_FILE)?)?;
        self.adam.restore(saved.adam, &load(OPTIMIZER_FILE)?)?;
        if let Some(ema) = &mut self.ema {
            ema.restore(&load(EMA_FILE)?)?;
        }
        // Every rank draws as many words per step, so rank r resumes its own stream at
        // rank 0's saved position.
        self.noise = NoiseRng::from_state(NoiseRngState {
            seed: rank_seed(self.config.spec.recipe.seed, self.options.world.rank),
            word_pos: saved.noise.word_pos,
        });
        self.plan = self.batches.epoch(saved.epoch);
        self.state = saved;
        Ok(())
    }

    /// The next batch of clean images (with their labels in a conditional run), or `None`
    /// once the run is over (its epochs done or its step budget spent).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let recipe = &self.config.spec.recipe;
        if self.state.step >= self.total || self.state.epoch >= recipe.epochs {
            return Ok(None);
        }
        let device = &self.options.device;
        let (indices, flips) = self.plan.batch(self.state.batch_in_epoch);
        let classes = self
            .labels
            .as_ref()
            .map(|labels| indices.iter().map(|&i| labels[i]).collect());
        Ok(Some(Batch {
            images: batch_tensor(&self.images, indices, flips, device)?,
            classes,
        }))
    }

    /// A conditional batch's labels with each replaced by "no class" with probability
    /// `cond_drop`, drawn from the training noise after t and ε (nothing is drawn when
    /// `cond_drop` is 0, so that the stream is that of a run without label dropout).
    fn drop_labels(&mut self, classes: &[u32]) -> Vec<u32> {
        let p = self.config.spec.recipe.cond_drop;
        if p == 0.0 {
            return classes.to_vec();
        }
        let none = self.model.num_classes() as u32;
        let threshold = (p * f64::from(DROP_RESOLUTION)) as u32;
        let draws = self.noise.uniform_indices(classes.len(), DROP_RESOLUTION);
        classes
            .iter()
            .zip(draws)
            .map(|(&label, u)| if u < threshold { none } else { label })
            .collect()
    }

    /// One optimizer step on `batch` at the scheduled learning rate; returns the loss (the mean
    /// over ranks). A non-finite loss stops the run before anything is updated.
    pub fn step(&mut self, batch: &Batch) -> Result<f32> {
        let x0 = &batch.images;
        let recipe = &self.config.spec.recipe;
        // The LR curve spans the planned epochs, not --max-steps, so that stopping early and
        // resuming follows exactly the curve of an uninterrupted run.
        self.lr = learning_rate(
            recipe.lr,
            self.state.step,
            recipe.warmup_steps,
            self.planned,
            recipe.lr_schedule,
        );
        let (t, eps) = draw_t_eps(&mut self.noise, x0, recipe.n_steps, recipe.offset_noise)?;
        let classes = match &batch.classes {
            Some(labels) => {
                let kept = self.drop_labels(labels);
                Some(Tensor::new(kept.as_slice(), x0.device())?)
            }
            None => None,
        };
        let objective = self.config.spec.recipe.objective();
        let loss = diffusion_loss_given(
            &self.model,
            &self.schedule,
            &objective,
            x0,
            &t,
            &eps,
            classes.as_ref(),
        )?;
        let mut value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if let Some(c) = self.collective.as_deref_mut() {
            value = c.mean_scalar(value)?;
        }
        if !value.is_finite() {
            self.bar.abandon();
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step + 1,
                loss: value,
            });
        }
        let grads = loss.backward()?;
        optimizer_step(
            &self.params,
            grads,
            self.collective.as_deref_mut(),
            recipe.grad_clip,
            &mut self.adam,
            self.lr,
        )?;
        self.sync_buffers()?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params, self.adam.state().step)?;
        }
        self.advance(value);
        Ok(value)
    }

    /// Moves the counters past the step just made.
    fn advance(&mut self, loss: f32) {
        let state = &mut self.state;
        state.step += 1;
        state.batch_in_epoch += 1;
        self.epoch_end = (state.batch_in_epoch == self.plan.len()).then_some(state.epoch + 1);
        if self.epoch_end.is_some() {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            self.plan = self.batches.epoch(state.epoch);
        }
        state.noise = NoiseRngState {
            seed: self.config.spec.recipe.seed,
            word_pos: self.noise.state().word_pos,
        };
        state.adam = self.adam.state();
        state.loss = Some(loss);
        self.losses.push(loss);
        self.window.loss_sum += f64::from(loss);
        self.window.steps += 1;
        self.bar.set_position(state.step);
    }

    /// The periodic hooks after a step: the log line, the checkpoint and the preview grid,
    /// each when due (only rank 0 writes files).
    pub fn after_step(&mut self) -> Result<()> {
        if !self.options.world.is_main() {
            return Ok(());
        }
        let control = &self.config.control;
        let (step, epoch_end) = (self.state.step, self.epoch_end);
        if step.is_multiple_of(control.log_every) || step == self.total {
            self.log()?;
        }
        if control.save_every.is_some_and(|e| e.due(step, epoch_end)) {
            self.last_saved = Some(self.save()?);
        }
        if control.sample_every.is_some_and(|e| e.due(step, epoch_end)) {
            let path = self.samples_dir().join(format!("step_{step}.png"));
            self.sample_grid(&path)?;
        }
        Ok(())
    }

    /// True when any rank asked to stop (so that all stop after the same step).
    pub fn stop_requested(&mut self) -> Result<bool> {
        let local = self.options.stop.load(Ordering::SeqCst);
        match self.collective.as_deref_mut() {
            Some(c) => Ok(c.mean_scalar(f32::from(u8::from(local)))? > 0.0),
            None => Ok(local),
        }
    }

    /// Ends the run: a final checkpoint (unless this step was just saved) and
    /// `samples/final.png`.
    pub fn finish(mut self, interrupted: bool) -> Result<RunSummary> {
        self.bar.finish_and_clear();
        let main = self.options.world.is_main();
        let step = self.state.step;
        let saved_now = self
            .last_saved
            .as_ref()
            .is_some_and(|p| p.ends_with(format!("step_{step}")));
        let checkpoint = match self.last_saved.take() {
            Some(path) if saved_now => path,
            _ if main => self.save()?,
            _ => self
                .options
                .out_dir
                .join(checkpoint::CHECKPOINTS_DIR)
                .join(format!("step_{step}")),
        };
        let final_grid = self.samples_dir().join("final.png");
        if main {
            self.sample_grid(&final_grid)?;
        }
        Ok(RunSummary {
            steps: step,
            losses: self.losses,
            checkpoint,
            final_grid,
            interrupted,
        })
    }

    fn samples_dir(&self) -> PathBuf {
        self.options.out_dir.join("samples")
    }

    /// Appends the log window to `metrics.jsonl`, redraws `loss.png`, reports progress.
    fn log(&mut self) -> Result<()> {
        let w = &self.window;
        let line = MetricsLine {
            step: self.state.step,
            epoch: self.state.epoch - u64::from(self.epoch_end.is_some()),
            loss: w.loss_sum / w.steps as f64,
            lr: self.lr,
            images_per_s: (w.steps as usize
                * self.config.spec.recipe.batch_size
                * self.options.world.world_size) as f64
                / w.start.elapsed().as_secs_f64(),
            wall_s: self.started.elapsed().as_secs_f64(),
        };
        let message = format!(
            "epoch {} loss {:.4} lr {:.2e} {:.0} img/s",
            line.epoch, line.loss, line.lr, line.images_per_s
        );
        if self.bar.is_hidden() {
            eprintln!("step {}/{} {message}", self.state.step, self.total);
        } else {
            self.bar.set_message(message);
        }
        let out = &self.options.out_dir;
        metrics::append(&out.join("metrics.jsonl"), &line)?;
        self.history.push(line);
        metrics::plot_loss(&self.history, &out.join("loss.png"))?;
        self.window = LogWindow::new();
        Ok(())
    }

    /// Writes a checkpoint of the current state.
    fn save(&self) -> Result<PathBuf> {
        let to_map = |dict: std::collections::BTreeMap<String, Tensor>| dict.into_iter().collect();
        let mut tensors = vec![
            (MODEL_FILE, to_map(self.model.state_dict()?)),
            (OPTIMIZER_FILE, self.adam.moments()),
        ];
        if let Some(ema) = &self.ema {
            tensors.push((EMA_FILE, to_map(ema.state_dict(&self.model)?)));
        }
        let snapshot = Snapshot {
            step: self.state.step,
            manifest: &self.config.spec.manifest(),
            json: vec![
                checkpoint::to_json(CONFIG_FILE, self.config)?,
                checkpoint::to_json(STATE_FILE, &self.state)?,
            ],
            tensors,
        };
        Ok(checkpoint::save(
            &self.options.out_dir,
            &snapshot,
            self.config.control.keep_last,
        )?)
    }

    /// Samples the configured grid (from the EMA weights when EMA is on) to `path`.
    fn sample_grid(&self, path: &Path) -> Result<()> {
        let spec = &self.config.spec;
        let device = &self.options.device;
        let ema_model;
        let model = match &self.ema {
            Some(ema) => {
                ema_model = Model::new(&spec.network, device, spec.recipe.seed)?;
                ema_model.load_state_dict(&ema.state_dict(&self.model)?.into_iter().collect())?;
                &ema_model
            }
            None => &self.model,
        };
        let settings = spec.sample;
        // A conditional run's grid has one row per class.
        let guidance = spec.classes.as_ref().map(|names| Guidance {
            classes: class_rows(&(0..names.len() as u32).collect::<Vec<_>>(), settings.nrow),
            scale: settings.guidance,
            interval: settings.guidance_interval,
        });
        let options = GenerateOptions {
            n: settings.n,
            image: spec.network.image().dims(),
            batch_size: settings.n,
            sampler: settings.sampler,
            prediction: spec.recipe.prediction,
            guidance,
        };
        let mut noise = NoiseRng::new(spec.recipe.seed.wrapping_add(PREVIEW_SEED_OFFSET));
        let x0 = generate(
            model,
            &self.schedule,
            &options,
            None,
            &mut noise,
            device,
            |_, _| {},
        )?;
        save_image(&grid(&to_u8(&x0)?, settings.nrow, 0)?, path)?;
        Ok(())
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
}

/// The verified checkpoint to resume `run_dir` from: `from` (`step_<N>`) or the latest. A
/// missing or damaged latest one is refused with the newest intact earlier checkpoint named.
fn resume_point(run_dir: &Path, from: Option<&str>) -> Result<PathBuf> {
    let verified = |dir: PathBuf| -> ddpm_run::Result<PathBuf> {
        if let Some(warning) = checkpoint::verify(&dir)?.warning(&dir) {
            eprintln!("{warning}");
        }
        Ok(dir)
    };
    if let Some(name) = from {
        return Ok(checkpoint::named(run_dir, name).and_then(verified)?);
    }
    let cause = match checkpoint::latest(run_dir).and_then(verified) {
        Ok(dir) => return Ok(dir),
        Err(cause) => cause,
    };
    let before = checkpoint::latest_step(run_dir).unwrap_or(u64::MAX);
    let hint = match checkpoint::newest_intact_before(run_dir, before) {
        Ok(Some(dir)) => {
            let name = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into());
            format!(
                "the newest intact checkpoint is {name}: continue from it with --resume {} \
                 --from {name} (later checkpoints are replaced as the run reaches them)",
                run_dir.display()
            )
        }
        // No checkpoints folder at all: the cause says enough.
        Err(_) => return Err(cause.into()),
        Ok(None) => "no earlier checkpoint is intact".into(),
    };
    Err(TrainError::DamagedCheckpoint {
        cause: Box::new(cause),
        hint,
    })
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
