//! The manifest of a checkpoint: what inference needs to rebuild the run.

use candle_core::Device;
use ddpm_diffusion::{BetaKind, GuidanceInterval, Prediction, SamplerConfig, Schedule};
use ddpm_unet::{Model, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::{Result, RunError};

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
    /// Classifier-free guidance scale of a class-conditional run's grids (1 = plain
    /// conditional; absent from unconditional runs' files, where it means nothing).
    #[serde(default = "no_guidance", skip_serializing_if = "is_no_guidance")]
    pub guidance: f64,
    /// The part of the schedule that is guided (absent when every step is).
    #[serde(default, skip_serializing_if = "is_every_step")]
    pub guidance_interval: GuidanceInterval,
}

/// The guidance scale that leaves a conditional network's output as it is.
pub const NO_GUIDANCE: f64 = 1.0;

fn no_guidance() -> f64 {
    NO_GUIDANCE
}

fn is_no_guidance(scale: &f64) -> bool {
    *scale == NO_GUIDANCE
}

fn is_every_step(interval: &GuidanceInterval) -> bool {
    *interval == GuidanceInterval::ALL
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
    /// The class names of a class-conditional network, indexed by label (absent for an
    /// unconditional one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// Which classes to draw from a class-conditional run, as a command line names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassChoice {
    /// One class for every image.
    One(u32),
    /// These classes, one grid row each.
    Rows(Vec<u32>),
}

impl ClassChoice {
    /// Parses `all`, a class, or a comma-separated list of classes, each given by its label
    /// (`7`) or its name (`cat`) among `names`.
    pub fn parse(text: &str, names: &[String]) -> Result<Self> {
        if text == "all" {
            return Ok(ClassChoice::Rows((0..names.len() as u32).collect()));
        }
        let label = |item: &str| -> Result<u32> {
            let item = item.trim();
            if let Some(i) = names.iter().position(|n| n == item) {
                return Ok(i as u32);
            }
            match item.parse::<u32>() {
                Ok(l) if (l as usize) < names.len() => Ok(l),
                _ => Err(RunError::UnknownClass(format!(
                    "unknown class `{item}`: the run's classes are {} (labels 0..{})",
                    names.join(", "),
                    names.len().saturating_sub(1)
                ))),
            }
        };
        let labels = text.split(',').map(label).collect::<Result<Vec<_>>>()?;
        Ok(match labels.as_slice() {
            [one] if !text.contains(',') => ClassChoice::One(*one),
            _ => ClassChoice::Rows(labels),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_by_label_name_list_or_all() {
        let names: Vec<String> = ["cat", "dog", "7"].iter().map(|s| s.to_string()).collect();
        let parse = |t: &str| ClassChoice::parse(t, &names);
        assert_eq!(parse("1").unwrap(), ClassChoice::One(1));
        assert_eq!(parse("dog").unwrap(), ClassChoice::One(1));
        // A name wins over a label: class "7" is label 2.
        assert_eq!(parse("7").unwrap(), ClassChoice::One(2));
        assert_eq!(parse("0, dog").unwrap(), ClassChoice::Rows(vec![0, 1]));
        assert_eq!(parse("all").unwrap(), ClassChoice::Rows(vec![0, 1, 2]));
        let err = parse("3").unwrap_err().to_string();
        assert!(
            err.contains("unknown class `3`") && err.contains("cat, dog, 7"),
            "{err}"
        );
        assert!(parse("cat,bird").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn unconditional_settings_serialise_as_before() {
        let settings = SampleSettings {
            n: 4,
            nrow: 2,
            sampler: SamplerConfig::default(),
            guidance: NO_GUIDANCE,
            guidance_interval: GuidanceInterval::ALL,
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert!(!json.contains("guidance"), "{json}");
        let back: SampleSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, settings);
        let guided = SampleSettings {
            guidance: 3.0,
            guidance_interval: GuidanceInterval::new(0.1, 0.6).unwrap(),
            ..settings
        };
        let json = serde_json::to_string(&guided).unwrap();
        assert_eq!(
            serde_json::from_str::<SampleSettings>(&json).unwrap(),
            guided
        );
    }
}
