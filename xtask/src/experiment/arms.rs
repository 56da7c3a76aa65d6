//! The five experiments: which arms they train and how each is sampled and scored.

use anyhow::{Context, Result};
use ddpm_diffusion::{Prediction, SamplerConfig, Variance};
use ddpm_train::{
    ChannelList, ControlOverrides, Every, LossWeight, Overrides, RecipeOverrides, TrainConfig,
};
use ddpm_unet::{ModelConfig, ModelKind, ResidualFrom};

use super::{Lab, Scored, Trained};

/// The experiments `cargo xtask experiment` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// The same network trained with T = 100 vs T = 1000, sampled with DDPM.
    Steps,
    /// One trained run (--checkpoint) under DDPM-T and every fast sampler at 5-50 network
    /// evaluations, on at least 1,000 samples per point.
    Samplers,
    /// The reference UNet (LayerNorm), its BatchNorm variant, the residual UNet and the modern
    /// UNet at the same training budget.
    Architectures,
    /// The same run sampled from its EMA weights and from its raw weights.
    Ema,
    /// Why the reference UNet gives all-black / all-white samples: one change at a time.
    Failure,
    /// The quick preset's recipe trained for ε, v and x0 prediction, each with and without
    /// min-SNR-γ weighting, at the same step budget; ≥ 1,000 samples per arm.
    Objectives,
    /// One class-conditional run (--checkpoint) at guidance scales 0-8: per-digit accuracy
    /// and Fréchet distance, at least 1,000 samples per scale.
    Guidance,
    /// Where the reference's colour cast on RGB images comes from: the reference UNet on an
    /// RGB folder (--data), one suspected cause changed at a time, channel means measured.
    Tint,
}

impl Experiment {
    /// The file-name form.
    pub fn slug(self) -> &'static str {
        match self {
            Experiment::Steps => "steps",
            Experiment::Samplers => "samplers",
            Experiment::Architectures => "architectures",
            Experiment::Ema => "ema",
            Experiment::Failure => "failure",
            Experiment::Guidance => "guidance",
            Experiment::Objectives => "objectives",
            Experiment::Tint => "tint",
        }
    }
}

const DDPM: SamplerConfig = SamplerConfig::Ddpm {
    variance: Variance::Beta,
    clip_x0: false,
};

/// A training configuration of `kind` with `channels` (and the reference's pe_dim for the
/// family) at the lab's scale, everything else the faithful `ref-mnist` recipe.
fn config(
    lab: &Lab,
    kind: ModelKind,
    channels: &[usize],
    n_steps: usize,
    ema: f64,
) -> Result<TrainConfig> {
    let overrides = Overrides {
        recipe: RecipeOverrides {
            model: Some(kind),
            channels: Some(ChannelList(channels.to_vec())),
            pe_dim: Some(if kind == ModelKind::Res { 128 } else { 20 }),
            n_steps: Some(n_steps),
            batch_size: Some(lab.scale.batch_size),
            epochs: Some(1_000_000),
            ema: Some(ema),
            ..RecipeOverrides::default()
        },
        control: arm_control(lab),
    };
    let mut config = TrainConfig::resolve("ref-mnist", lab.scale.dataset.clone(), &overrides)?;
    config.control.sample_every = None;
    // The run's own final grid is only a preview here (the arms are scored separately).
    config.spec.sample.sampler = SamplerConfig::ddim(20, 0.0, false);
    Ok(config)
}

const SMALL: [usize; 4] = [10, 20, 40, 80];

/// How every trained arm runs: the lab's steps, one checkpoint at the end (resolving turns the
/// preview grids off).
pub(super) fn arm_control(lab: &Lab) -> ControlOverrides {
    ControlOverrides {
        max_steps: Some(lab.scale.steps),
        log_every: Some(50),
        save_every: Some(Every::Steps(lab.scale.steps)),
        ..ControlOverrides::default()
    }
}

/// The `quick` preset's recipe for `prediction` and `loss_weight`, run for the lab's steps
/// over its `n_images` training images (the LR schedule's horizon is those steps).
fn objective_config(
    lab: &Lab,
    n_images: usize,
    prediction: Prediction,
    loss_weight: LossWeight,
) -> Result<TrainConfig> {
    let batches_per_epoch = n_images.div_ceil(lab.scale.batch_size) as u64;
    let overrides = Overrides {
        recipe: RecipeOverrides {
            prediction: Some(prediction),
            loss_weight: Some(loss_weight),
            conditional: Some(false),
            cond_drop: Some(0.0),
            batch_size: Some(lab.scale.batch_size),
            epochs: Some(lab.scale.steps.div_ceil(batches_per_epoch)),
            ..RecipeOverrides::default()
        },
        control: arm_control(lab),
    };
    let mut config = TrainConfig::resolve("quick", lab.scale.dataset.clone(), &overrides)?;
    config.control.sample_every = None;
    // Unconditional arms: the preset's guidance scale means nothing to them.
    config.spec.sample.guidance = ddpm_run::NO_GUIDANCE;
    Ok(config)
}

/// The residual UNet at T = 1000 with EMA: the model several experiments share.
fn base(lab: &Lab) -> Result<Trained> {
    lab.train(
        "res-t1000-ema",
        &config(lab, ModelKind::Res, &SMALL, 1000, 0.995)?,
    )
}

/// One table row.
fn row(arm: &str, trained: &Trained, s: &Scored) -> String {
    let q = &s.quality;
    format!(
        "| {arm} | {:.4} | {:.2} | {:.2} | {:.3} | {:.3} | {:.0}% | {:.2} / {:.2} / {:.2} | {:.1} | {} |",
        trained.loss,
        q.frechet,
        q.frechet_floor,
        q.confidence,
        q.class_entropy,
        100.0 * s.flat,
        s.range.0,
        s.range.1,
        s.range.2,
        s.sample_s,
        if trained.train_s.is_nan() {
            "reused".to_string()
        } else {
            format!("{:.0}", trained.train_s)
        },
    )
}

const HEADER: &str = "| arm | final loss | Fréchet ↓ | floor | confidence ↑ | class entropy (ln 10 = 2.303) | flat tiles | x0 min / max / mean | sampling s | training s |\n|---|---|---|---|---|---|---|---|---|---|";

fn table(rows: &[(String, &Trained, Scored)]) -> String {
    let lines: Vec<String> = rows.iter().map(|(arm, t, s)| row(arm, t, s)).collect();
    format!("{HEADER}\n{}", lines.join("\n"))
}

fn grids(rows: &[(String, &Trained, Scored)]) -> String {
    let shown: Vec<String> = rows
        .iter()
        .map(|(arm, _, s)| format!("**{arm}**\n\n![{arm}]({})\n", s.grid))
        .collect();
    shown.join("\n")
}

/// Runs `experiment` and returns the body of its report (tables and grids).
pub fn run(args: &super::Args, lab: &Lab) -> Result<String> {
    let mut rows: Vec<(String, &Trained, Scored)> = Vec::new();
    let trained: Vec<(String, Trained)>;
    let intro: &str;
    match args.name {
        Experiment::Samplers => {
            let run = args.checkpoint.as_deref().context(
                "the samplers experiment samples a trained run: pass --checkpoint RUN (a quick \
                 run, or better)",
            )?;
            return super::sweep::run(lab, args, run, args.samples.unwrap_or(1000));
        }
        Experiment::Guidance => {
            let run = args.checkpoint.as_deref().context(
                "the guidance experiment samples a class-conditional run: pass --checkpoint RUN",
            )?;
            return super::guidance::run(lab, args, run, args.samples.unwrap_or(1000));
        }
        Experiment::Tint => return super::tint::run(lab, args),
        Experiment::Objectives => {
            intro = "The `quick` preset's recipe (modern UNet 16·[1,2,2], T = 100 scaled-linear β, batch 64, Adam 2e-3 with warmup and cosine decay over the steps shown, EMA 0.99, unconditional) trained for each prediction target with plain MSE and with min-SNR-γ weighting (γ = 5). Every arm costs the same per step (the loss weighting is a per-image scalar), so the equal step budget is an equal time budget: the training seconds column shows it. Sampled with the preset's grid sampler (DDIM-50, η = 1, x̂0 clipped) from the EMA weights.";
            // The LR horizon is the run's steps: count the epochs they make over these images.
            let n_images = lab
                .scale
                .dataset
                .load(None, std::path::Path::new(super::CACHE_DIR))
                .context("the objectives experiment's training images")?
                .images
                .len();
            let mut arms = Vec::new();
            for prediction in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
                for loss_weight in [LossWeight::None, LossWeight::MinSnr] {
                    let name = format!("{prediction:?}, {loss_weight:?}").to_lowercase();
                    let slug = name.replace(", ", "-");
                    let config = objective_config(lab, n_images, prediction, loss_weight)?;
                    arms.push((
                        name,
                        lab.train(&format!("objective-{slug}"), &config)?,
                        slug,
                    ));
                }
            }
            let mut scored = Vec::new();
            for (name, trained, slug) in &arms {
                scored.push((
                    name.clone(),
                    lab.score(trained, true, SamplerConfig::ddim(50, 1.0, true), slug)?,
                ));
            }
            trained = arms.into_iter().map(|(name, t, _)| (name, t)).collect();
            for ((arm, t), (_, s)) in trained.iter().zip(scored) {
                rows.push((arm.clone(), t, s));
            }
        }
        Experiment::Steps => {
            intro = "The residual UNet ([10,20,40,80], pe_dim 128) trained identically with T = 100 and T = 1000 (the reference's unscaled linear β schedule in both), sampled with T-step DDPM (σ² = β).";
            trained = vec![
                (
                    "T = 100".into(),
                    lab.train(
                        "res-t100-ema",
                        &config(lab, ModelKind::Res, &SMALL, 100, 0.995)?,
                    )?,
                ),
                ("T = 1000".into(), base(lab)?),
            ];
            for (arm, t) in &trained {
                let slug = arm.replace([' ', '='], "");
                rows.push((arm.clone(), t, lab.score(t, false, DDPM, &slug)?));
            }
        }
        Experiment::Architectures => {
            intro = "Four networks at the same budget (steps, batch, Adam 1e-3, T = 1000), sampled with DDPM-1000 from their raw weights.";
            trained = vec![
                (
                    "reference UNet (LayerNorm) [10,20,40,80]".into(),
                    lab.train("ref-ln", &config(lab, ModelKind::Ref, &SMALL, 1000, 0.0)?)?,
                ),
                (
                    "reference UNet (BatchNorm) [10,20,40,80]".into(),
                    lab.train("ref-bn", &config(lab, ModelKind::RefBn, &SMALL, 1000, 0.0)?)?,
                ),
                ("residual UNet [10,20,40,80]".into(), base(lab)?),
                (
                    "modern UNet 16·[1,2,2]".into(),
                    lab.train(
                        "modern-16",
                        &config(lab, ModelKind::Modern, &[16, 32, 32], 1000, 0.0)?,
                    )?,
                ),
            ];
            for (i, (arm, t)) in trained.iter().enumerate() {
                rows.push((
                    arm.clone(),
                    t,
                    lab.score(t, false, DDPM, &format!("arch{i}"))?,
                ));
            }
        }
        Experiment::Ema => {
            intro = "One run of the residual UNet (T = 1000, EMA decay 0.995 kept alongside) sampled with DDPM-1000 from its raw and from its EMA weights.";
            trained = vec![("base".into(), base(lab)?)];
            let t = &trained[0].1;
            rows.push(("raw weights".into(), t, lab.score(t, false, DDPM, "raw")?));
            rows.push((
                "EMA weights (0.995)".into(),
                t,
                lab.score(t, true, DDPM, "ema")?,
            ));
        }
        Experiment::Failure => {
            intro = "The reference UNet ([10,20,40,80], pe_dim 20, T = 1000, Adam 1e-3), one change at a time. `flat tiles` counts samples that are one uniform grey level (all black or all white).";
            let reference = config(lab, ModelKind::Ref, &SMALL, 1000, 0.0)?;
            let mut from_input = reference.clone();
            if let ModelConfig::Reference(c) = &mut from_input.spec.network {
                c.residual_from = ResidualFrom::Input;
            }
            trained = vec![
                ("reference".into(), lab.train("ref-ln", &reference)?),
                (
                    "residual from the raw input".into(),
                    lab.train("ref-ln-input", &from_input)?,
                ),
                (
                    "BatchNorm instead of LayerNorm(C,H,W)".into(),
                    lab.train("ref-bn", &config(lab, ModelKind::RefBn, &SMALL, 1000, 0.0)?)?,
                ),
            ];
            let r = &trained[0].1;
            rows.push((
                "reference, DDPM".into(),
                r,
                lab.score(r, false, DDPM, "ref")?,
            ));
            rows.push((
                "reference, DDIM-50".into(),
                r,
                lab.score(r, false, SamplerConfig::ddim(50, 0.0, false), "ref-ddim")?,
            ));
            rows.push((
                "reference, DDPM + x̂0 clipping".into(),
                r,
                lab.score(
                    r,
                    false,
                    SamplerConfig::Ddpm {
                        variance: Variance::Beta,
                        clip_x0: true,
                    },
                    "ref-clip",
                )?,
            ));
            for (i, (arm, t)) in trained.iter().enumerate().skip(1) {
                rows.push((
                    format!("{arm}, DDPM"),
                    t,
                    lab.score(t, false, DDPM, &format!("variant{i}"))?,
                ));
            }
        }
    }
    Ok(format!(
        "{intro}\n\n{}\n\n## Grids (first 81 samples, seed 1)\n\n{}",
        table(&rows),
        grids(&rows)
    ))
}
