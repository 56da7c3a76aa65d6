use serde::{Deserialize, Serialize};

use super::{
    Ddim, Ddpm, DpmSolver, Euler, Heun, Sampler, Spacing, UniPc, ddim, ddpm, dpm_solver, euler,
    heun, unipc,
};
use crate::{Prediction, Result, Schedule, Variance};

/// How to run the reverse process: the serialisable choice of a [`Sampler`] and its settings
/// (saved runs store it, e.g. `{"kind":"ddim","steps":50,"eta":0.0,"clip_x0":true}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SamplerConfig {
    /// Ancestral DDPM over all T steps ([`Ddpm`]).
    Ddpm {
        /// The step variance.
        variance: Variance,
        /// Clip x̂0 to [-1, 1] (posterior-mean form).
        clip_x0: bool,
    },
    /// DDIM over `steps` timesteps ([`Ddim`]): by default evenly spread over 0..T, both ends
    /// included.
    Ddim {
        /// Number of network evaluations, 1..=T.
        steps: usize,
        /// 0 = deterministic, 1 = DDPM-like noise.
        eta: f64,
        /// Clip x̂0 to [-1, 1].
        clip_x0: bool,
        /// Where the timesteps sit ([`Spacing`]; left out of the JSON when `even`).
        #[serde(default, skip_serializing_if = "Spacing::is_even")]
        spacing: Spacing,
        /// End the chain at x0 (true, the default) or at ᾱ_0 (diffusers'
        /// `set_alpha_to_one = false`, as Stable Diffusion's configuration).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        set_alpha_to_one: bool,
    },
    /// DPM-Solver++ multistep ([`DpmSolver`], Lu et al. 2022), deterministic, e.g.
    /// `{"kind":"dpm++","steps":20,"order":2,"karras":false,"lower_order_final":true}` (2M).
    #[serde(rename = "dpm++")]
    DpmSolver {
        /// Number of network evaluations, 1..=T: diffusers' "linspace" timesteps, or the
        /// Karras noise levels.
        steps: usize,
        /// The solver's order, 1..=3 (2 is the usual choice).
        order: usize,
        /// Karras et al.'s noise levels (diffusers' `use_karras_sigmas`). The timesteps
        /// [`SamplerConfig::timesteps`] lists for them are the linear β schedule's.
        karras: bool,
        /// With fewer than 15 steps, order 3 drops to 2 at the second-to-last step (true, the
        /// default, as diffusers); the last step is first order in any case.
        #[serde(default = "yes")]
        lower_order_final: bool,
        /// Clip every x̂0 to [-1, 1] (left out of the JSON when false).
        #[serde(default, skip_serializing_if = "is_false")]
        clip_x0: bool,
    },
    /// UniPC multistep predictor-corrector over `steps` timesteps ([`UniPc`]): diffusers'
    /// default configuration ("linspace" spacing, ending at x0).
    #[serde(rename = "unipc")]
    UniPc {
        /// Number of network evaluations, 1..=T.
        steps: usize,
        /// Clip every x̂0 to [-1, 1] (left out of the JSON when false).
        #[serde(default, skip_serializing_if = "is_false")]
        clip_x0: bool,
    },
    /// Euler in σ-space over `steps` noise levels ([`Euler`], Karras et al. 2022).
    #[serde(rename = "euler")]
    Euler {
        /// Number of noise levels = network evaluations, 1..=T.
        steps: usize,
        /// Karras-spaced levels (else at linspace(0, T-1, steps)).
        karras: bool,
    },
    /// Heun in σ-space over `steps` noise levels, 2·steps - 1 evaluations ([`Heun`], Karras
    /// et al. 2022).
    #[serde(rename = "heun")]
    Heun {
        /// Number of noise levels, 1..=T.
        steps: usize,
        /// Karras-spaced levels (else at linspace(0, T-1, steps)).
        karras: bool,
    },
}

impl Default for SamplerConfig {
    /// The reference's sampler: DDPM with σ² = β, no clipping.
    fn default() -> Self {
        SamplerConfig::Ddpm {
            variance: Variance::Beta,
            clip_x0: false,
        }
    }
}

impl SamplerConfig {
    /// DDIM over `steps` evenly spread timesteps ending at x0 (our spacing).
    pub fn ddim(steps: usize, eta: f64, clip_x0: bool) -> Self {
        SamplerConfig::Ddim {
            steps,
            eta,
            clip_x0,
            spacing: Spacing::Even,
            set_alpha_to_one: true,
        }
    }

    /// The timesteps the sampler visits for a schedule of `n_steps` steps, in order (what
    /// [`Sampler::timesteps`] of the built sampler returns); an error if the settings are
    /// invalid.
    pub fn timesteps(&self, n_steps: usize) -> Result<Vec<f64>> {
        let steps = match *self {
            SamplerConfig::Ddpm { .. } => ddpm::timesteps(n_steps),
            SamplerConfig::Ddim {
                steps,
                eta,
                spacing,
                ..
            } => ddim::timesteps(n_steps, steps, eta, spacing)?,
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras,
                ..
            } => dpm_solver::timesteps(n_steps, steps, order, karras)?,
            SamplerConfig::UniPc { steps, .. } => unipc::timesteps(n_steps, steps)?,
            SamplerConfig::Euler { steps, karras } => {
                return euler::config_times(n_steps, steps, karras, "Euler");
            }
            SamplerConfig::Heun { steps, karras } => {
                return heun::heun_config_times(n_steps, steps, karras);
            }
        };
        Ok(super::as_times(&steps))
    }

    /// Checks the settings against `schedule` and builds a fresh sampler (one per run) that
    /// reads the network output as `prediction`.
    pub fn build<'s>(
        &self,
        schedule: &'s Schedule,
        prediction: Prediction,
    ) -> Result<Box<dyn Sampler + 's>> {
        Ok(match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => {
                Box::new(Ddpm::new(schedule, prediction, variance, clip_x0))
            }
            SamplerConfig::Ddim {
                steps,
                eta,
                clip_x0,
                spacing,
                set_alpha_to_one,
            } => Box::new(Ddim::new(
                schedule,
                prediction,
                steps,
                eta,
                clip_x0,
                spacing,
                set_alpha_to_one,
            )?),
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras,
                lower_order_final,
                clip_x0,
            } => Box::new(
                DpmSolver::new(
                    schedule,
                    prediction,
                    steps,
                    order,
                    karras,
                    lower_order_final,
                )?
                .with_clip_x0(clip_x0),
            ),
            SamplerConfig::UniPc { steps, clip_x0 } => {
                Box::new(UniPc::new(schedule, prediction, steps)?.with_clip_x0(clip_x0))
            }
            SamplerConfig::Euler { steps, karras } => {
                Box::new(Euler::new(schedule, prediction, steps, karras)?)
            }
            SamplerConfig::Heun { steps, karras } => {
                Box::new(Heun::new(schedule, prediction, steps, karras)?)
            }
        })
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// Choices that change a [`SamplerConfig`] (a command line's `--sampler`, `--steps`, ...);
/// `None` keeps the base configuration's value. See [`SamplerConfig::with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplerChoices {
    /// `ddpm`, `ddim`, `dpm++`, `unipc`, `euler` or `heun`: another sampler than the base's.
    pub kind: Option<String>,
    /// Network evaluations (DDIM, DPM-Solver++, UniPC) or noise levels (Euler, Heun).
    pub steps: Option<usize>,
    /// DDIM's η.
    pub eta: Option<f64>,
    /// DDPM's step variance.
    pub variance: Option<Variance>,
    /// Clip x̂0 to [-1, 1] (DDPM, DDIM, DPM-Solver++, UniPC).
    pub clip_x0: Option<bool>,
    /// DPM-Solver++'s order.
    pub order: Option<usize>,
    /// Karras noise levels (DPM-Solver++, Euler, Heun).
    pub karras: Option<bool>,
    /// DDIM's timestep spacing.
    pub spacing: Option<Spacing>,
}

/// The sampler names [`SamplerConfig::with`] accepts.
pub const SAMPLER_NAMES: [&str; 6] = ["ddpm", "ddim", "dpm++", "unipc", "euler", "heun"];

impl SamplerConfig {
    /// The sampler's name, as `--sampler` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            SamplerConfig::Ddpm { .. } => "ddpm",
            SamplerConfig::Ddim { .. } => "ddim",
            SamplerConfig::DpmSolver { .. } => "dpm++",
            SamplerConfig::UniPc { .. } => "unipc",
            SamplerConfig::Euler { .. } => "euler",
            SamplerConfig::Heun { .. } => "heun",
        }
    }

    /// The defaults of the sampler called `name` (20 evaluations for the fast solvers, DDIM-50).
    pub fn named(name: &str) -> Result<Self> {
        Ok(match name {
            "ddpm" => SamplerConfig::default(),
            "ddim" => SamplerConfig::ddim(50, 0.0, false),
            "dpm++" => SamplerConfig::DpmSolver {
                steps: 20,
                order: 2,
                karras: false,
                lower_order_final: true,
                clip_x0: false,
            },
            "unipc" => SamplerConfig::UniPc {
                steps: 20,
                clip_x0: false,
            },
            "euler" => SamplerConfig::Euler {
                steps: 20,
                karras: false,
            },
            "heun" => SamplerConfig::Heun {
                steps: 10,
                karras: false,
            },
            other => {
                return crate::error::invalid(
                    "sampler",
                    format!(
                        "unknown sampler `{other}`: use {}",
                        SAMPLER_NAMES.join(", ")
                    ),
                );
            }
        })
    }

    /// This configuration changed by `choices`. Another `kind` starts from that sampler's
    /// defaults ([`SamplerConfig::named`]), keeping clipping where both have it; a choice the
    /// resulting sampler does not have is an error naming the option.
    pub fn with(&self, choices: &SamplerChoices) -> Result<Self> {
        let mut config = match choices.kind.as_deref() {
            Some(kind) if kind != self.name() => {
                let mut fresh = SamplerConfig::named(kind)?;
                if let (Some(clip), Some(slot)) = (self.clip_x0(), fresh.clip_x0_mut()) {
                    *slot = clip;
                }
                fresh
            }
            _ => *self,
        };
        let name = config.name();
        let refuse = |option: &str| -> Result<Self> {
            crate::error::invalid("sampler", format!("{option} does not apply to {name}"))
        };
        if let Some(clip) = choices.clip_x0 {
            match config.clip_x0_mut() {
                Some(slot) => *slot = clip,
                None => return refuse("--clip-x0"),
            }
        }
        match &mut config {
            SamplerConfig::Ddpm { variance, .. } => {
                if let Some(v) = choices.variance {
                    *variance = v;
                }
                if choices.steps.is_some() {
                    return refuse("--steps (DDPM visits all T steps)");
                }
            }
            SamplerConfig::Ddim {
                steps,
                eta,
                spacing,
                ..
            } => {
                set(steps, choices.steps);
                set(eta, choices.eta);
                set(spacing, choices.spacing);
            }
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras,
                ..
            } => {
                set(steps, choices.steps);
                set(order, choices.order);
                set(karras, choices.karras);
            }
            SamplerConfig::UniPc { steps, .. } => set(steps, choices.steps),
            SamplerConfig::Euler { steps, karras } | SamplerConfig::Heun { steps, karras } => {
                set(steps, choices.steps);
                set(karras, choices.karras);
            }
        }
        let applies = |option: &str, given: bool, kinds: &[&str]| {
            if given && !kinds.contains(&name) {
                refuse(option).map(|_| ())
            } else {
                Ok(())
            }
        };
        applies("--eta", choices.eta.is_some(), &["ddim"])?;
        applies("--spacing", choices.spacing.is_some(), &["ddim"])?;
        applies("--var", choices.variance.is_some(), &["ddpm"])?;
        applies("--order", choices.order.is_some(), &["dpm++"])?;
        applies(
            "--karras",
            choices.karras.is_some(),
            &["dpm++", "euler", "heun"],
        )?;
        Ok(config)
    }

    /// Whether x̂0 is clipped, for the samplers that can clip.
    pub fn clip_x0(&self) -> Option<bool> {
        match *self {
            SamplerConfig::Ddpm { clip_x0, .. }
            | SamplerConfig::Ddim { clip_x0, .. }
            | SamplerConfig::DpmSolver { clip_x0, .. }
            | SamplerConfig::UniPc { clip_x0, .. } => Some(clip_x0),
            _ => None,
        }
    }

    fn clip_x0_mut(&mut self) -> Option<&mut bool> {
        match self {
            SamplerConfig::Ddpm { clip_x0, .. }
            | SamplerConfig::Ddim { clip_x0, .. }
            | SamplerConfig::DpmSolver { clip_x0, .. }
            | SamplerConfig::UniPc { clip_x0, .. } => Some(clip_x0),
            _ => None,
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl std::fmt::Display for SamplerConfig {
    /// A one-line description, e.g. `DPM-Solver++ 2M, 20 steps`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clip = |c: bool| if c { ", x̂0 clipped" } else { "" };
        let karras = |k: bool| if k { ", Karras σ" } else { "" };
        match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => {
                let var = match variance {
                    Variance::Beta => "σ² = β",
                    Variance::Posterior => "posterior variance",
                };
                write!(f, "DDPM ({var}{})", clip(clip_x0))
            }
            SamplerConfig::Ddim {
                steps,
                eta,
                clip_x0,
                spacing,
                ..
            } => write!(
                f,
                "DDIM ({steps} steps, η = {eta}, {spacing:?} spacing{})",
                clip(clip_x0)
            ),
            SamplerConfig::DpmSolver {
                steps,
                order,
                karras: k,
                clip_x0,
                ..
            } => write!(
                f,
                "DPM-Solver++ {order}M ({steps} steps{}{})",
                karras(k),
                clip(clip_x0)
            ),
            SamplerConfig::UniPc { steps, clip_x0 } => {
                write!(f, "UniPC ({steps} steps{})", clip(clip_x0))
            }
            SamplerConfig::Euler { steps, karras: k } => {
                write!(f, "Euler ({steps} steps{})", karras(k))
            }
            SamplerConfig::Heun { steps, karras: k } => write!(
                f,
                "Heun ({steps} steps, {} evaluations{})",
                2 * steps - 1,
                karras(k)
            ),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}
