//! Run configuration, in two parts saved together as `config.json`:
//!
//! - [`TrainingSpec`]: what is trained (data, network, schedule, optimisation, the LR
//!   horizon, seed, how grids are sampled). Fixed when the run starts, hashed whole through
//!   serde ([`TrainingSpec::digest`]) and frozen on resume.
//! - [`RunControl`]: how the run is driven (when to stop, log, save and sample, how many
//!   checkpoints to keep, where the data is). Free to change on resume.
//!
//! Both are declared with the [`settings!`] macro, which also declares their command-line
//! overrides ([`RecipeOverrides`], [`ControlOverrides`]) from the same field list, so no field
//! is listed by hand twice.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ddpm_data::DatasetSpec;
use ddpm_diffusion::{BetaKind, Prediction};
use ddpm_run::{RunManifest, SampleSettings};
use ddpm_unet::{ModelConfig, ModelKind, ModelSpec, ResidualFrom};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_SNR_GAMMA, LossWeight, Objective, Result, TrainError};

/// Declares a settings struct and its command-line overrides from one list of fields.
///
/// Each field `name: Type` (optionally `=> OverrideType`, which must convert `Into<Type>`)
/// becomes `pub name: Type` of the settings struct and `--name <OverrideType>` of the
/// overrides struct (a `clap::Args`), with the same doc comment as help text. A field's
/// `#[serde(...)]` goes to the settings struct and its `#[arg(...)]` to the override. The
/// overrides get `apply` (sets every given field) and `given` (the flags that are set).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident / $overrides:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])?
                $(#[arg($($arg:tt)*)])?
                $field:ident : $ty:ty $(=> $oty:ty)?,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[doc = $doc])* $(#[serde($($serde)*)])? pub $field: $ty, )*
        }

        #[doc = concat!("Command-line choices that change a [`", stringify!($name),
                        "`]; `None` keeps its value.")]
        #[derive(Debug, Clone, Default, PartialEq, clap::Args)]
        pub struct $overrides {
            $( $(#[doc = $doc])* #[arg(long $(, $($arg)*)?)]
               pub $field: Option<settings!(@override $ty $(, $oty)?)>, )*
        }

        impl $overrides {
            #[doc = concat!("Sets every given field of `target`.")]
            pub fn apply(&self, target: &mut $name) {
                $( if let Some(value) = &self.$field {
                    target.$field = value.clone().into();
                } )*
            }

            /// The command-line flags that are set, e.g. `["--lr"]`.
            pub fn given(&self) -> Vec<String> {
                let mut flags = Vec::new();
                $( if self.$field.is_some() {
                    flags.push(format!("--{}", stringify!($field).replace('_', "-")));
                } )*
                flags
            }
        }
    };
    (@override $ty:ty) => { $ty };
    (@override $ty:ty, $oty:ty) => { $oty };
}

settings! {
    /// The knobs of what is trained, as a preset sets them and the command line overrides
    /// them (before the dataset fixes the image shape and the network is assembled).
    pub struct Recipe / RecipeOverrides {
        /// ref | ref-bn | res | modern
        model: ModelKind,
        /// Channel widths per level, e.g. 32,64,128,256 (modern: multiples of the first).
        channels: Vec<usize> => ChannelList,
        /// Width of the sinusoidal time encoding (ref, res).
        pe_dim: usize,
        /// Diffusion steps T.
        n_steps: usize,
        /// linear (the reference's, unscaled) | linear-scaled | cosine
        schedule: BetaKind,
        /// What the network learns to predict: eps (the noise ε, as the reference) | v (the
        /// velocity sqrt(ᾱ)·ε - sqrt(1-ᾱ)·x0) | x0 (the clean image)
        #[arg(visible_alias = "objective")]
        prediction: Prediction,
        /// Loss weighting over timesteps: none (plain MSE, as the reference) | min-snr
        /// (Min-SNR-γ: each image's error times min(SNR, γ)/SNR in ε terms)
        #[serde(default, skip_serializing_if = "LossWeight::is_none")]
        loss_weight: LossWeight,
        /// γ of --loss-weight min-snr, > 0 (5 in every preset)
        #[serde(default = "default_snr_gamma", skip_serializing_if = "is_default_snr_gamma")]
        snr_gamma: f64,
        /// Offset noise S >= 0: ε = n + S·m, m one N(0, 1) value per image and channel (0 = off)
        #[serde(default, skip_serializing_if = "is_zero")]
        offset_noise: f64,
        /// Rescale β to zero terminal SNR (ᾱ_T = 0; needs --objective v or x0)
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        zero_terminal_snr: bool,
        /// Images per optimizer step (per process).
        batch_size: usize,
        /// Peak learning rate (Adam).
        lr: f64,
        /// L2 weight decay added to the gradient (0 = plain Adam, the reference).
        weight_decay: f64,
        /// Passes over the data: the run's length and the horizon of the LR schedule.
        epochs: u64,
        /// EMA decay of the weights (0 = off).
        ema: f64,
        /// Linear LR warmup steps.
        warmup_steps: u64,
        /// constant | cosine (decay to 0 at the last planned step)
        lr_schedule: LrSchedule,
        /// Clip the global gradient norm (0 = off).
        grad_clip: Option<f64> => GradClip,
        /// Random horizontal flips (true/false).
        hflip: bool,
        /// Condition the network on the dataset's classes (true/false): MNIST's digits, an
        /// image folder's class subfolders. Sample with --class and --guidance.
        #[serde(default, skip_serializing_if = "is_false")]
        conditional: bool,
        /// Conditional runs: the fraction of labels replaced by "no class" in training, so
        /// that one network also learns the unconditional output guidance needs.
        #[serde(default, skip_serializing_if = "is_zero")]
        cond_drop: f64,
        /// Seed of initialisation, data order and noise.
        seed: u64,
    }
}

settings! {
    /// How a run is driven: free to change when it resumes.
    pub struct RunControl / ControlOverrides {
        /// Stop once the run has made N optimizer steps in total (counted across --resume).
        max_steps: Option<u64> => u64,
        /// Log (metrics.jsonl, loss.png, progress) every N steps.
        log_every: u64,
        /// Checkpoint period: N or Ne = every N epochs, Ns = every N steps.
        save_every: Option<Every> => Every,
        /// Sample-grid period (samples/step_<N>.png): N or Ne = epochs, Ns = steps.
        sample_every: Option<Every> => Every,
        /// Keep only the newest K checkpoints.
        keep_last: Option<usize> => usize,
        /// Folder of the dataset [default: data/mnist, data/anime-faces, or folder:PATH's].
        data_dir: Option<PathBuf> => PathBuf,
    }
}

/// Serde's test for leaving an off switch out of the JSON (older runs read the same).
fn is_false(b: &bool) -> bool {
    !*b
}

impl Recipe {
    /// What the loss compares and how it weighs the timesteps.
    pub fn objective(&self) -> Objective {
        Objective {
            prediction: self.prediction,
            loss_weight: self.loss_weight,
            snr_gamma: self.snr_gamma,
        }
    }

    /// Checks the objective's knobs: γ > 0, offset noise ≥ 0 (both finite), and no zero
    /// terminal SNR with ε-prediction (which cannot give x̂0 where ᾱ = 0).
    fn check_objective(&self) -> Result<()> {
        if !(self.snr_gamma > 0.0 && self.snr_gamma.is_finite()) {
            return Err(TrainError::Config(format!(
                "--snr-gamma must be a positive number, got {}",
                self.snr_gamma
            )));
        }
        if !(self.offset_noise >= 0.0 && self.offset_noise.is_finite()) {
            return Err(TrainError::Config(format!(
                "--offset-noise must be a number >= 0 (0 = off), got {}",
                self.offset_noise
            )));
        }
        if self.zero_terminal_snr && self.prediction == Prediction::Epsilon {
            return Err(TrainError::Config(
                "--zero-terminal-snr makes the last step pure noise (ᾱ_T = 0), where an \
                 ε-prediction cannot recover the image: use --objective v (or x0)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// serde's default of [`Recipe::snr_gamma`] (runs saved before the field read as this).
fn default_snr_gamma() -> f64 {
    DEFAULT_SNR_GAMMA
}

/// True for the default γ, left out of saved configurations (so that older ones hash alike).
fn is_default_snr_gamma(gamma: &f64) -> bool {
    *gamma == DEFAULT_SNR_GAMMA
}

/// Serde's test for leaving a zero knob out of the JSON (older runs read the same).
fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// `--channels`: comma-separated widths, e.g. `32,64,128,256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelList(pub Vec<usize>);

impl FromStr for ChannelList {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        s.split(',')
            .map(|w| match w.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(TrainError::Config(format!(
                    "`{s}` is not a list of channel widths: write e.g. 32,64,128"
                ))),
            })
            .collect::<Result<_>>()
            .map(ChannelList)
    }
}

impl From<ChannelList> for Vec<usize> {
    fn from(list: ChannelList) -> Self {
        list.0
    }
}

/// `--grad-clip`: a positive norm, or 0 for no clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradClip(pub f64);

impl FromStr for GradClip {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<f64>() {
            Ok(v) if v >= 0.0 && v.is_finite() => Ok(GradClip(v)),
            _ => Err(TrainError::Config(format!(
                "`{s}` is not a gradient-norm bound: write a number >= 0 (0 = off)"
            ))),
        }
    }
}

impl From<GradClip> for Option<f64> {
    fn from(clip: GradClip) -> Self {
        (clip.0 > 0.0).then_some(clip.0)
    }
}

/// Everything the command line can change: the recipe's knobs and the run control's.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// What is trained.
    #[command(flatten)]
    pub recipe: RecipeOverrides,
    /// How the run is driven.
    #[command(flatten)]
    pub control: ControlOverrides,
}

/// What is trained: fixed when a run starts, hashed whole, frozen on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSpec {
    /// The preset the run started from.
    pub preset: String,
    /// The training images.
    pub dataset: DatasetSpec,
    /// The knobs.
    #[serde(flatten)]
    pub recipe: Recipe,
    /// The network assembled from the recipe and the dataset's image shape.
    pub network: ModelConfig,
    /// Preview and final grid sampling (and the sampler's defaults for the run).
    pub sample: SampleSettings,
    /// The class names a conditional run is trained on (absent for unconditional runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// A run's configuration, saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// What is trained.
    pub spec: TrainingSpec,
    /// How the run is driven.
    pub control: RunControl,
}

impl TrainingSpec {
    /// Assembles the spec: checks the knobs and builds the network for the dataset's images
    /// and, for a conditional recipe, its `classes` ([`DatasetSpec::class_names`]).
    /// A conditional run's grids have one row per class.
    pub fn new(
        preset: &str,
        dataset: DatasetSpec,
        recipe: Recipe,
        mut sample: SampleSettings,
        classes: Option<Vec<String>>,
    ) -> Result<Self> {
        if recipe.batch_size == 0 {
            return Err(TrainError::Config("--batch-size must be at least 1".into()));
        }
        if !(recipe.lr > 0.0 && recipe.lr.is_finite()) {
            return Err(TrainError::Config(format!(
                "--lr must be positive, got {}",
                recipe.lr
            )));
        }
        if !(0.0..1.0).contains(&recipe.ema) {
            return Err(TrainError::Config(format!(
                "--ema must be in [0, 1), got {}",
                recipe.ema
            )));
        }
        if recipe.epochs == 0 {
            return Err(TrainError::Config("--epochs must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&recipe.cond_drop) {
            return Err(TrainError::Config(format!(
                "--cond-drop must be in [0, 1), got {}",
                recipe.cond_drop
            )));
        }
        if recipe.cond_drop > 0.0 && !recipe.conditional {
            return Err(TrainError::Config(
                "--cond-drop drops class labels, which only a --conditional true run has".into(),
            ));
        }
        match (recipe.conditional, &classes) {
            (true, None) => {
                return Err(TrainError::Config(format!(
                    "--conditional true needs labelled data, but the {} dataset has no classes: \
                     an image folder needs its images in at least two class subfolders",
                    dataset.short_name()
                )));
            }
            (false, Some(_)) => {
                return Err(TrainError::Config(
                    "class names were given for an unconditional recipe".into(),
                ));
            }
            _ => {}
        }
        let num_classes = classes.as_ref().map_or(0, Vec::len);
        if num_classes > 0 {
            sample.n = sample.nrow * num_classes;
        }
        recipe.check_objective()?;
        let [c, h, w] = dataset.image_dims();
        let network = ModelSpec {
            kind: recipe.model,
            image: ddpm_unet::ImageShape::new(c, h, w),
            channels: recipe.channels.clone(),
            pe_dim: recipe.pe_dim,
            n_steps: recipe.n_steps,
            residual_from: ResidualFrom::Normalized,
            attn_resolutions: None,
            num_classes,
        }
        .to_config()?;
        if let ddpm_diffusion::SamplerConfig::Ddim { steps, .. } = &mut sample.sampler {
            // A preset's DDIM preview uses every step of a chain shorter than its step count.
            *steps = (*steps).min(recipe.n_steps);
        }
        let spec = TrainingSpec {
            preset: preset.to_string(),
            dataset,
            recipe,
            network,
            sample,
            classes,
        };
        // The grid's sampler must build on this schedule (a CPU copy: only its values matter).
        let schedule = spec.schedule(&candle_core::Device::Cpu)?;
        spec.sample
            .sampler
            .build(&schedule, spec.recipe.prediction)?;
        Ok(spec)
    }

    /// What inference needs to rebuild and sample the trained network.
    pub fn manifest(&self) -> RunManifest {
        RunManifest {
            model: self.network.clone(),
            schedule: self.recipe.schedule,
            n_steps: self.recipe.n_steps,
            zero_terminal_snr: self.recipe.zero_terminal_snr,
            prediction: self.recipe.prediction,
            sample: self.sample,
            classes: self.classes.clone(),
        }
    }

    /// The noise schedule trained on, on `device`: built from [`TrainingSpec::manifest`], as
    /// the sampler rebuilds it.
    pub fn schedule(&self, device: &candle_core::Device) -> Result<ddpm_diffusion::Schedule> {
        Ok(self.manifest().schedule(device)?)
    }

    /// A digest of the whole spec: a checkpoint only resumes a run whose digest matches.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(self).expect("the spec serialises");
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl RunControl {
    /// Checks the values that must be positive.
    pub fn validate(&self) -> Result<()> {
        if self.log_every == 0 {
            return Err(TrainError::Config("--log-every must be at least 1".into()));
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Resolves a preset, a dataset and the command line's overrides into a configuration.
    pub fn resolve(preset: &str, dataset: DatasetSpec, overrides: &Overrides) -> Result<Self> {
        let preset_values = crate::Preset::named(preset)?;
        let mut recipe = preset_values.recipe;
        overrides.recipe.apply(&mut recipe);
        let mut control = preset_values.control;
        overrides.control.apply(&mut control);
        control.validate()?;
        let mut classes = None;
        if recipe.conditional {
            classes = dataset.class_names(control.data_dir.as_deref())?;
            if classes.is_none() && overrides.recipe.conditional.is_none() {
                // A preset's conditioning applies where there are classes: unlabelled data (an
                // image folder without class subfolders) trains the same recipe unconditionally.
                recipe.conditional = false;
                recipe.cond_drop = 0.0;
            }
        }
        Ok(TrainConfig {
            spec: TrainingSpec::new(preset, dataset, recipe, preset_values.sample, classes)?,
            control,
        })
    }

    /// Repeats a saved configuration (`--config FILE`) with the command line's overrides; the
    /// network is assembled again from the (possibly changed) recipe.
    pub fn repeat(saved: &TrainConfig, overrides: &Overrides) -> Result<Self> {
        let mut recipe = saved.spec.recipe.clone();
        overrides.recipe.apply(&mut recipe);
        let mut control = saved.control.clone();
        overrides.control.apply(&mut control);
        control.validate()?;
        let spec = &saved.spec;
        let classes = match recipe.conditional {
            true => spec.dataset.class_names(control.data_dir.as_deref())?,
            false => None,
        };
        Ok(TrainConfig {
            spec: TrainingSpec::new(
                &spec.preset,
                spec.dataset.clone(),
                recipe,
                spec.sample,
                classes,
            )?,
            control,
        })
    }

    /// The configuration of a run being resumed: the saved spec, frozen; the run control with
    /// the command line's changes. Options that would change what is trained are refused.
    pub fn resume(saved: TrainConfig, overrides: &Overrides) -> Result<Self> {
        if overrides.recipe.epochs.is_some() {
            return Err(TrainError::Config(
                "--epochs cannot change on --resume: it is the horizon of the LR schedule, fixed \
                 when the run started (the curve would change part-way). Stop earlier with \
                 --max-steps N, or start a new run"
                    .into(),
            ));
        }
        let changes = overrides.recipe.given();
        if !changes.is_empty() {
            return Err(TrainError::Config(format!(
                "--resume continues the saved run as configured: remove {}",
                changes.join(", ")
            )));
        }
        let mut config = saved;
        overrides.control.apply(&mut config.control);
        config.control.validate()?;
        Ok(config)
    }

    /// Reads `config.json`; a run written by an earlier version is named as such.
    pub fn load(path: &Path) -> Result<Self> {
        let value: serde_json::Value = ddpm_run::checkpoint::read_json(path)?;
        if value.get("spec").is_none() && value.get("model").is_some() {
            return Err(TrainError::Config(format!(
                "{} was written by an earlier version of the trainer (no spec/control): the run \
                 can still be sampled, but not resumed or repeated",
                path.display()
            )));
        }
        serde_json::from_value(value).map_err(|source| {
            TrainError::Run(ddpm_run::RunError::Json {
                path: path.to_path_buf(),
                source,
            })
        })
    }

    /// Writes `config.json` atomically (a kill leaves the old file or the new one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("the configuration serialises");
        Ok(ddpm_run::checkpoint::write_atomically(
            path,
            text.as_bytes(),
        )?)
    }
}

/// A period measured in epochs or in optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Every {
    /// Every N epochs.
    Epochs(u64),
    /// Every N optimizer steps.
    Steps(u64),
}

impl FromStr for Every {
    type Err = TrainError;

    /// `50` or `50e` = every 50 epochs; `500s` = every 500 steps.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TrainError::Config(format!(
                "`{s}` is not a period: write N or Ne (epochs) or Ns (steps), N >= 1"
            ))
        };
        let (digits, steps) = match s.strip_suffix('s') {
            Some(d) => (d, true),
            None => (s.strip_suffix('e').unwrap_or(s), false),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(if steps {
            Every::Steps(n)
        } else {
            Every::Epochs(n)
        })
    }
}

impl fmt::Display for Every {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Every::Epochs(n) => write!(f, "{n} epochs"),
            Every::Steps(n) => write!(f, "{n} steps"),
        }
    }
}

impl Every {
    /// True when a step that ends at (`step`, epoch boundary `epoch_end`) is on the period.
    pub fn due(&self, step: u64, epoch_end: Option<u64>) -> bool {
        match *self {
            Every::Steps(n) => step.is_multiple_of(n),
            Every::Epochs(n) => epoch_end.is_some_and(|e| e.is_multiple_of(n)),
        }
    }
}

/// The learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Constant learning rate.
    Constant,
    /// Cosine decay to zero at the last planned step.
    Cosine,
}

impl FromStr for LrSchedule {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            _ => Err(TrainError::Config(format!(
                "unknown LR schedule `{s}`: use constant or cosine"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_units() {
        assert_eq!("50".parse::<Every>().unwrap(), Every::Epochs(50));
        assert_eq!("5e".parse::<Every>().unwrap(), Every::Epochs(5));
        assert_eq!("500s".parse::<Every>().unwrap(), Every::Steps(500));
        assert!("0".parse::<Every>().is_err());
        assert!("x".parse::<Every>().is_err());
    }

    #[test]
    fn overrides_apply_and_name_what_they_set() {
        let mut recipe = crate::Preset::named("quick").unwrap().recipe;
        let overrides = RecipeOverrides {
            lr: Some(0.5),
            grad_clip: Some(GradClip(0.0)),
            ..RecipeOverrides::default()
        };
        overrides.apply(&mut recipe);
        assert_eq!((recipe.lr, recipe.grad_clip), (0.5, None));
        assert_eq!(overrides.given(), ["--lr", "--grad-clip"]);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        overrides: Overrides,
    }

    fn parse(args: &[&str]) -> std::result::Result<RecipeOverrides, clap::Error> {
        use clap::Parser;
        let argv = std::iter::once("trainer").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.overrides.recipe)
    }

    #[test]
    fn objective_options_parse_from_the_command_line() {
        let r = parse(&[
            "--objective",
            "v",
            "--loss-weight",
            "min-snr",
            "--snr-gamma",
            "3",
            "--offset-noise",
            "0.1",
            "--zero-terminal-snr",
        ])
        .unwrap();
        assert_eq!(
            (r.prediction, r.loss_weight, r.snr_gamma, r.offset_noise),
            (
                Some(Prediction::V),
                Some(LossWeight::MinSnr),
                Some(3.0),
                Some(0.1)
            )
        );
        assert_eq!(r.zero_terminal_snr, Some(true));
        assert_eq!(
            r.given(),
            [
                "--prediction",
                "--loss-weight",
                "--snr-gamma",
                "--offset-noise",
                "--zero-terminal-snr"
            ]
        );
        // The field's own name still works, and a flag can be switched off explicitly.
        let r = parse(&["--prediction", "x0", "--zero-terminal-snr", "false"]).unwrap();
        assert_eq!(
            (r.prediction, r.zero_terminal_snr),
            (Some(Prediction::X0), Some(false))
        );
        let r = parse(&[]).unwrap();
        assert_eq!((r.prediction, r.zero_terminal_snr), (None, None));
        let err = parse(&["--loss-weight", "snr"]).unwrap_err().to_string();
        assert!(err.contains("`snr`") && err.contains("min-snr"), "{err}");
        // The alias is listed, and the help names the three targets.
        let command = <Cli as clap::CommandFactory>::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "prediction")
            .unwrap();
        let aliases = arg.get_visible_aliases().unwrap_or_default();
        assert_eq!(aliases, ["objective"]);
        let help = arg.get_help().unwrap().to_string();
        assert!(
            help.contains("eps (") && help.contains("| v (") && help.contains("| x0 ("),
            "{help}"
        );
    }

    fn resolve(change: impl FnOnce(&mut RecipeOverrides)) -> Result<TrainConfig> {
        let mut overrides = Overrides::default();
        change(&mut overrides.recipe);
        TrainConfig::resolve("ref-mnist", DatasetSpec::Embedded, &overrides)
    }

    #[test]
    fn objective_settings_are_checked_when_a_config_resolves() {
        let message = |change: fn(&mut RecipeOverrides)| resolve(change).unwrap_err().to_string();
        for gamma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = resolve(|r| r.snr_gamma = Some(gamma))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--snr-gamma must be a positive number"),
                "{err}"
            );
        }
        for strength in [-0.1, f64::NAN, f64::INFINITY] {
            let err = resolve(|r| r.offset_noise = Some(strength))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--offset-noise must be a number >= 0"),
                "{err}"
            );
        }
        let err = message(|r| r.zero_terminal_snr = Some(true));
        assert!(
            err.contains("--zero-terminal-snr") && err.contains("use --objective v"),
            "{err}"
        );
        // With v- or x0-prediction it resolves, and the manifest and schedule follow.
        for prediction in [Prediction::V, Prediction::X0] {
            let config = resolve(|r| {
                r.zero_terminal_snr = Some(true);
                r.prediction = Some(prediction);
            })
            .unwrap();
            let manifest = config.spec.manifest();
            assert!(manifest.zero_terminal_snr);
            assert_eq!(manifest.prediction, prediction);
            let schedule = config.spec.schedule(&candle_core::Device::Cpu).unwrap();
            assert!(schedule.zero_terminal_snr());
            assert_eq!(schedule.alpha_bars()[schedule.n_steps() - 1], 0.0);
        }
        let config = resolve(|r| {
            r.loss_weight = Some(LossWeight::MinSnr);
            r.snr_gamma = Some(2.0);
            r.prediction = Some(Prediction::V);
        })
        .unwrap();
        let objective = config.spec.recipe.objective();
        assert_eq!(
            objective,
            Objective {
                prediction: Prediction::V,
                loss_weight: LossWeight::MinSnr,
                snr_gamma: 2.0
            }
        );
    }

    #[test]
    fn default_objective_settings_stay_out_of_saved_configs() {
        let new_keys = [
            "loss_weight",
            "snr_gamma",
            "offset_noise",
            "zero_terminal_snr",
        ];
        let plain = resolve(|_| {}).unwrap();
        let json = serde_json::to_value(&plain).unwrap();
        for key in new_keys {
            assert!(json["spec"].get(key).is_none(), "{key} saved: {json}");
        }
        // A configuration saved before these settings existed reads as their defaults.
        let recipe = serde_json::from_value::<TrainConfig>(json)
            .unwrap()
            .spec
            .recipe;
        assert_eq!(
            (
                recipe.loss_weight,
                recipe.snr_gamma,
                recipe.offset_noise,
                recipe.zero_terminal_snr
            ),
            (LossWeight::None, DEFAULT_SNR_GAMMA, 0.0, false)
        );
        // Set, they are saved and read back, and change the digest.
        let changed = resolve(|r| {
            r.prediction = Some(Prediction::V);
            r.loss_weight = Some(LossWeight::MinSnr);
            r.snr_gamma = Some(1.0);
            r.offset_noise = Some(0.05);
            r.zero_terminal_snr = Some(true);
        })
        .unwrap();
        let json = serde_json::to_value(&changed).unwrap();
        for key in new_keys {
            assert!(json["spec"].get(key).is_some(), "{key} not saved: {json}");
        }
        assert_eq!(
            serde_json::from_value::<TrainConfig>(json).unwrap(),
            changed
        );
        assert_ne!(changed.spec.digest(), plain.spec.digest());
    }
}
