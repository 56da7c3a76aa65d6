//! `experiment tint`: where the reference's colour cast on RGB images comes from. The
//! reference UNet is trained on an RGB image folder, then one suspected cause is changed at a
//! time; every arm is sampled with the reference's DDPM, and each channel's mean is measured
//! in the final samples and along the reverse chain, against the data's.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{D, Tensor};
use ddpm_data::ImageSet;
use ddpm_diffusion::{GenerateOptions, NoiseRng, SamplerConfig, Variance, generate};
use ddpm_eval::{ChannelStats, channel_stats};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_run::checkpoint;
use ddpm_train::{ChannelList, ControlOverrides, Overrides, RecipeOverrides, TrainConfig};
use ddpm_unet::{ModelConfig, ModelKind, ResidualFrom};
use plotters::prelude::*;

use super::sweep::{draw_legend, read_points, register_plot_font, write_points};
use super::{Args, Lab, Trained};

/// The goal for a recipe we recommend: every channel's sample mean within this of
/// the data's, on [-1, 1].
const GOAL: f64 = 0.03;
/// The chain plot's file, beside the report.
const PLOT: &str = "chain.png";
/// Samples shown per grid (8 x 8).
const SHOWN: usize = 64;
/// The reference's sampler: DDPM over every step, σ² = β, nothing clipped.
const DDPM: SamplerConfig = SamplerConfig::Ddpm {
    variance: Variance::Beta,
    clip_x0: false,
};
/// Channel widths of the reference UNet arms (the failure experiment's small network).
const REF_CHANNELS: [usize; 4] = [10, 20, 40, 80];

/// One trained arm: what changed and how it is built.
struct Arm {
    /// The row's name.
    name: &'static str,
    /// Run directory name and figure prefix.
    slug: &'static str,
    /// The training configuration.
    config: TrainConfig,
    /// Sampled from the EMA weights (the recommended recipe keeps them).
    ema: bool,
    /// The reverse process: the reference's DDPM, or the recommended recipe's own sampler.
    sampler: SamplerConfig,
    /// Samples drawn (a DDPM-1000 sample costs ten of a 100-step one).
    samples: usize,
}

/// The per-channel measurements of one arm's samples (cached in `points.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Measurement {
    /// Samples drawn, from seed 1.
    n: usize,
    /// Mean and standard deviation per channel of the 8-bit samples, on [0, 1].
    mean: Vec<f64>,
    std: Vec<f64>,
    /// Standard error of each channel's mean on [-1, 1]: the spread of the images' own
    /// channel means over √n.
    std_error: Vec<f64>,
    /// The reverse chain, one point per step.
    chain: Vec<ChainPoint>,
    /// Sampling wall time, seconds.
    seconds: f64,
}

/// The samples after one reverse step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ChainPoint {
    /// The step's time t.
    t: usize,
    /// √ᾱ of the time the step lands on (1 for the clean sample): the forward process's x
    /// there has mean signal·μ.
    signal: f64,
    /// Each channel's mean on [-1, 1] over all samples.
    mean: Vec<f64>,
}

/// One arm's row: the training run and its measurement.
struct Row<'a> {
    arm: &'a Arm,
    trained: Trained,
    measured: Measurement,
}

/// The arms, all at the lab's steps and batch: the reference (LayerNorm over (C,H,W), the
/// residual from the normalised input, the time bias on the raw image), one change each, and
/// the recommended network.
fn arms(lab: &Lab, data: &Path, n_images: usize) -> Result<Vec<Arm>> {
    let control = ControlOverrides {
        data_dir: Some(data.to_path_buf()),
        ..super::arms::arm_control(lab)
    };
    let resolve = |preset: &str, recipe: RecipeOverrides| {
        let overrides = Overrides {
            recipe: RecipeOverrides {
                batch_size: Some(lab.scale.batch_size),
                ..recipe
            },
            control: control.clone(),
        };
        let mut config = TrainConfig::resolve(preset, lab.scale.dataset.clone(), &overrides)?;
        config.control.sample_every = None;
        // The run's own final grid is only a preview: the arms are sampled below.
        config.spec.sample.sampler = SamplerConfig::ddim(20, 0.0, false);
        Ok::<_, anyhow::Error>(config)
    };
    // The reference's anime recipe (T = 1000, linear β, Adam, constant LR, no EMA) at the
    // failure experiment's LR for a short run.
    let reference = resolve(
        "ref-anime",
        RecipeOverrides {
            channels: Some(ChannelList(REF_CHANNELS.to_vec())),
            lr: Some(1e-3),
            epochs: Some(1_000_000),
            ..RecipeOverrides::default()
        },
    )?;
    let variant = |change: fn(&mut ddpm_unet::RefUNetConfig)| {
        let mut config = reference.clone();
        if let ModelConfig::Reference(c) = &mut config.spec.network {
            change(c);
        }
        config
    };
    // Our `anime` recipe (modern UNet, GroupNorm, EMA, warmup + cosine LR, gradient clipping,
    // flips), scaled to the run: a small network, a short warmup, the LR horizon at the end.
    let batches_per_epoch = n_images.div_ceil(lab.scale.batch_size) as u64;
    let mut recommended = resolve(
        "anime",
        RecipeOverrides {
            model: Some(ModelKind::Modern),
            channels: Some(ChannelList(vec![16, 32, 32])),
            lr: Some(1e-3),
            warmup_steps: Some(100),
            ema: Some(0.995),
            epochs: Some(lab.scale.steps.div_ceil(batches_per_epoch)),
            ..RecipeOverrides::default()
        },
    )?;
    let own_sampler = ddpm_train::Preset::named("anime")?.sample.sampler;
    recommended.spec.sample.sampler = own_sampler;
    let n = lab.scale.samples;
    Ok(vec![
        Arm {
            name: "reference",
            slug: "tint-ref",
            config: reference.clone(),
            ema: false,
            sampler: DDPM,
            samples: n,
        },
        Arm {
            name: "residual from the raw input",
            slug: "tint-ref-input",
            config: variant(|c| c.residual_from = ResidualFrom::Input),
            ema: false,
            sampler: DDPM,
            samples: n,
        },
        Arm {
            name: "no time bias on the raw image",
            slug: "tint-ref-untimed",
            config: variant(|c| c.time_on_image = false),
            ema: false,
            sampler: DDPM,
            samples: n,
        },
        Arm {
            name: "recommended: modern UNet (GroupNorm), EMA, its DDIM-100",
            slug: "tint-modern",
            config: recommended,
            ema: true,
            sampler: own_sampler,
            samples: 4 * n,
        },
    ])
}

/// Runs the experiment on the RGB folder `args.data`; returns the report's body.
pub(super) fn run(lab: &Lab, args: &Args) -> Result<String> {
    let data = &args.data;
    let dataset = lab
        .scale
        .dataset
        .load(Some(data), Path::new(super::CACHE_DIR))
        .with_context(|| format!("the tint experiment's RGB images ({})", data.display()))?;
    if dataset.images.channels() != 3 {
        anyhow::bail!("the tint experiment needs RGB images");
    }
    let real = channel_stats(&dataset.images)?;
    std::fs::create_dir_all(&lab.figures)
        .with_context(|| format!("cannot create {}", lab.figures.display()))?;
    let arms = arms(lab, data, dataset.images.len())?;
    let mut rows = Vec::new();
    for arm in &arms {
        let trained = lab.train(arm.slug, &arm.config)?;
        let measured = lab.measure_colour(&trained, arm)?;
        rows.push(Row {
            arm,
            trained,
            measured,
        });
    }
    plot(&lab.figures.join(PLOT), &rows, &real)?;
    let figures = lab
        .figures
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    Ok(body(args, &dataset.images, &real, &rows, figures))
}

impl Lab {
    /// Samples `trained` with DDPM from seed 1, keeps a grid (and, for the reference, the grid
    /// as the reference's BGR writer shows it), and measures the channel means.
    fn measure_colour(&self, trained: &Trained, arm: &Arm) -> Result<Measurement> {
        let cache = self.figures.join("points.json");
        let mut measured = read_points::<Measurement>(&cache);
        let n = arm.samples;
        if let Some(m) = measured.get(arm.slug).filter(|m| m.n == n)
            && !trained.train_s.is_finite()
        {
            eprintln!(
                "[{}] reusing the measurement in {}",
                arm.slug,
                cache.display()
            );
            return Ok(m.clone());
        }
        let dir = checkpoint::latest(&trained.run)?;
        let loaded = checkpoint::load_model(&dir, &self.device, arm.ema)?;
        let schedule = loaded.manifest.schedule(&self.device)?;
        let options = GenerateOptions {
            n,
            image: loaded.model.config().image().dims(),
            batch_size: 64,
            sampler: arm.sampler,
            prediction: loaded.manifest.prediction,
            guidance: None,
        };
        let timesteps = arm
            .sampler
            .build(&schedule, loaded.manifest.prediction)?
            .timesteps()
            .to_vec();
        let alpha_bars = schedule.alpha_bars_f64();
        let mut chain: Vec<ChainPoint> = Vec::new();
        let mut failure = None;
        let started = Instant::now();
        let x = generate(
            &loaded.model,
            &schedule,
            &options,
            None,
            &mut NoiseRng::new(1),
            &self.device,
            |_, step| match channel_means(step.x) {
                Ok(means) => {
                    let weight = step.x.dim(0).unwrap_or(0) as f64 / n as f64;
                    if chain.len() < step.done {
                        let landing = timesteps.get(step.done).map(|&t| t as usize);
                        chain.push(ChainPoint {
                            t: timesteps[step.done - 1] as usize,
                            signal: landing.map_or(1.0, |t| alpha_bars[t].sqrt()),
                            mean: vec![0.0; means.len()],
                        });
                    }
                    for (sum, m) in chain[step.done - 1].mean.iter_mut().zip(means) {
                        *sum += weight * m;
                    }
                }
                Err(e) => failure = Some(e),
            },
        )?;
        if let Some(e) = failure {
            return Err(e.context("measuring the reverse chain"));
        }
        let seconds = started.elapsed().as_secs_f64();
        let images = to_u8(&x)?;
        let shown = x.narrow(0, 0, SHOWN.min(n))?;
        save_image(
            &grid(&to_u8(&shown)?, 8, 0)?,
            &self.figures.join(format!("{}.png", arm.slug)),
        )?;
        if arm.slug == "tint-ref" {
            let swapped = shown.index_select(&Tensor::new(&[2u32, 1, 0], x.device())?, 1)?;
            save_image(
                &grid(&to_u8(&swapped)?, 8, 0)?,
                &self.figures.join("tint-ref-bgr.png"),
            )?;
        }
        let [_, c, h, w] = images.dims;
        let std_error = image_means(&x)?
            .iter()
            .map(|spread| spread / (n as f64).sqrt())
            .collect();
        let stats = channel_stats(&ImageSet::new(images.pixels, c, h, w)?)?;
        eprintln!(
            "[{}] channel means {:?} in {seconds:.0} s",
            arm.slug, stats.mean
        );
        let measurement = Measurement {
            n,
            mean: stats.mean,
            std: stats.std,
            std_error,
            chain,
            seconds,
        };
        measured.insert(arm.slug.to_string(), measurement.clone());
        write_points(&cache, &measured)?;
        Ok(measurement)
    }
}

/// Each channel's mean of a batch (N, C, H, W).
fn channel_means(x: &Tensor) -> Result<Vec<f64>> {
    let per_channel = x.transpose(0, 1)?.flatten_from(1)?.mean(D::Minus1)?;
    Ok(per_channel
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// The standard deviation over images of each image's channel mean, on [-1, 1] (of the
/// samples as saved: clamped to [-1, 1]).
fn image_means(x: &Tensor) -> Result<Vec<f64>> {
    let means = x.clamp(-1f32, 1f32)?.flatten_from(2)?.mean(D::Minus1)?;
    let spread = means.var_keepdim(0)?.sqrt()?.flatten_all()?;
    Ok(spread
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// A [0, 1] mean on the model's [-1, 1] scale.
fn signed(mean01: f64) -> f64 {
    2.0 * mean01 - 1.0
}

/// Sample mean minus data mean per channel, on [-1, 1]; `order` picks the sample's channels
/// (`[2, 1, 0]`: as an RGB array written through a BGR writer shows them).
fn shifts(samples: &ChannelStats, real: &ChannelStats, order: [usize; 3]) -> Vec<f64> {
    (0..3)
        .map(|c| 2.0 * (samples.mean[order[c]] - real.mean[c]))
        .collect()
}

/// The chain's drift: each channel's mean after a step minus the forward process's mean of
/// x_(t-1), √ᾱ_(t-1)·μ (μ the data mean on [-1, 1]).
fn drift(chain: &[ChainPoint], real: &ChannelStats) -> Vec<[f64; 3]> {
    chain
        .iter()
        .map(|p| std::array::from_fn(|c| p.mean[c] - p.signal * signed(real.mean[c])))
        .collect()
}

fn fmt3(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:+.3}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn max_abs(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn body(
    args: &Args,
    images: &ImageSet,
    real: &ChannelStats,
    rows: &[Row],
    figures: &str,
) -> String {
    let data_means: Vec<f64> = real.mean.iter().copied().map(signed).collect();
    let mut text = format!(
        "Data: {count} RGB images from `{data}` at {h}x{w}; each channel's mean on [-1, 1] \
         (R / G / B): {means}, standard deviation (on [0, 1]) {stds}.\n\n\
         The reference UNet ({channels:?}, pe_dim 20, LayerNorm over (C,H,W), T = 1000, linear \
         β, Adam 1e-3, constant LR, no EMA), one suspected cause changed at a time, and our \
         recommended recipe; every arm sampled with the reference's DDPM-1000 (σ² = β, no \
         clipping) from seed 1, except the recommended recipe, sampled with its own DDIM-100 (x̂0 \
         clipped). **Shift** is the sample mean minus the data \
         mean per channel on [-1, 1] (the goal for a recommended recipe: every |shift| ≤ \
         {GOAL}); **cast** is the shift minus its mean over the three channels (a colour, not a \
         brightness, change). The last row is the reference's samples as its image writer \
         shows them: it passed RGB arrays to a BGR API (`cv2.imwrite`), which swaps red and \
         blue.\n\n\
         | arm | samples | final loss | sample mean R / G / B | shift R / G / B | ± standard \
         error | max \\|shift\\| | cast R / G / B | std ratio R / G / B | sampling s | training s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        count = images.len(),
        data = args.data.display(),
        h = images.height(),
        w = images.width(),
        means = fmt3(&data_means),
        stds = real
            .std
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(" / "),
        channels = REF_CHANNELS,
    );
    let samples = |m: &Measurement| ChannelStats {
        mean: m.mean.clone(),
        std: m.std.clone(),
    };
    let line = |name: &str, trained: &Trained, m: &Measurement, order: [usize; 3]| {
        let s = samples(m);
        let shift = shifts(&s, real, order);
        let average = shift.iter().sum::<f64>() / 3.0;
        let cast: Vec<f64> = shift.iter().map(|v| v - average).collect();
        let means: Vec<f64> = order.iter().map(|&c| signed(s.mean[c])).collect();
        let ratio: Vec<String> = (0..3)
            .map(|c| format!("{:.2}", s.std[order[c]] / real.std[c]))
            .collect();
        let error: Vec<String> = order
            .iter()
            .map(|&c| format!("{:.3}", m.std_error[c]))
            .collect();
        format!(
            "| {name} | {} | {:.4} | {} | {} | {} | {:.3} | {} | {} | {:.0} | {} |\n",
            m.n,
            trained.loss,
            fmt3(&means),
            fmt3(&shift),
            error.join(" / "),
            max_abs(&shift),
            fmt3(&cast),
            ratio.join(" / "),
            m.seconds,
            if trained.train_s.is_finite() {
                format!("{:.0}", trained.train_s)
            } else {
                "reused".into()
            }
        )
    };
    for row in rows {
        text += &line(row.arm.name, &row.trained, &row.measured, [0, 1, 2]);
    }
    let reference = &rows[0];
    text += &line(
        "reference, as its BGR writer shows it",
        &reference.trained,
        &reference.measured,
        [2, 1, 0],
    );
    text += &format!(
        "\n(std ratio: the samples' per-channel standard deviation over the data's.)\n\n\
         ## Along the reverse chain\n\n\
         Each channel's mean of x over the samples after every step, minus the forward \
         process's mean √ᾱ·μ at the time the step lands on: a correct model keeps it near 0 at every t, so \
         where the line leaves 0 shows when the cast forms.\n\n\
         ![channel mean drift along the reverse chain]({figures}/{PLOT})\n\n"
    );
    text += "| arm | drift at t = 750 | t = 500 | t = 250 | t = 100 | t = 0 (the sample) |\n\
             |---|---|---|---|---|---|\n";
    for row in rows {
        let drifts = drift(&row.measured.chain, real);
        let at = |t: usize| {
            row.measured
                .chain
                .iter()
                .position(|p| p.t == t)
                .map(|i| fmt3(&drifts[i]))
                .unwrap_or_else(|| "–".into())
        };
        text += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.arm.name,
            at(750),
            at(500),
            at(250),
            at(100),
            at(0)
        );
    }
    text += &format!("\n## Grids (first {SHOWN} samples, seed 1)\n\n");
    for row in rows {
        text += &format!(
            "**{}**\n\n![{}]({figures}/{}.png)\n\n",
            row.arm.name, row.arm.name, row.arm.slug
        );
    }
    text += &format!(
        "**reference, as its BGR writer shows it**\n\n![reference through a BGR \
         writer]({figures}/tint-ref-bgr.png)\n"
    );
    text
}

/// One panel per arm: each channel's drift along the chain against t (T on the left, the
/// sample on the right).
fn plot(path: &Path, rows: &[Row], real: &ChannelStats) -> Result<()> {
    register_plot_font()?;
    let height = 260 * rows.len() as u32;
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let n_steps = rows[0].measured.chain.len();
    for (row, area) in rows.iter().zip(root.split_evenly((rows.len(), 1))) {
        let drifts = drift(&row.measured.chain, real);
        let high = drifts
            .iter()
            .flat_map(|d| d.iter())
            .fold(0.05f64, |m, v| m.max(v.abs()))
            * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(row.arm.name, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((n_steps as f64)..0.0, -high..high)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_desc("t (reverse chain runs left to right)")
            .y_desc("mean − √ᾱ·μ")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw)?;
        for (c, (name, colour)) in [("R", RED), ("G", GREEN), ("B", BLUE)]
            .into_iter()
            .enumerate()
        {
            let xy = row
                .measured
                .chain
                .iter()
                .zip(&drifts)
                .map(|(p, d)| (p.t as f64, d[c]));
            chart
                .draw_series(LineSeries::new(xy, colour.stroke_width(2)))
                .map_err(draw)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(n_steps as f64, 0.0), (0.0, 0.0)],
                BLACK.mix(0.3),
            ))
            .map_err(draw)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
    }
    root.present().map_err(draw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_and_swaps_are_on_the_signed_scale() {
        let real = ChannelStats {
            mean: vec![0.6, 0.5, 0.4],
            std: vec![0.2; 3],
        };
        let samples = ChannelStats {
            mean: vec![0.6, 0.5, 0.4],
            std: vec![0.2; 3],
        };
        assert_eq!(shifts(&samples, &real, [0, 1, 2]), vec![0.0, 0.0, 0.0]);
        // Written through a BGR writer, red shows blue's mean: 0.4 vs 0.6 on [0, 1].
        let swapped = shifts(&samples, &real, [2, 1, 0]);
        assert!((swapped[0] + 0.4).abs() < 1e-12 && (swapped[2] - 0.4).abs() < 1e-12);
    }

    #[test]
    fn drift_is_zero_for_the_forward_process_means() {
        let real = ChannelStats {
            mean: vec![0.75, 0.5, 0.25],
            std: vec![0.2; 3],
        };
        let chain: Vec<ChainPoint> = [(2, 0.5), (1, 0.8), (0, 1.0)]
            .into_iter()
            .map(|(t, signal)| ChainPoint {
                t,
                signal,
                mean: vec![0.5 * signal, 0.0, -0.5 * signal],
            })
            .collect();
        for d in drift(&chain, &real) {
            assert!(d.iter().all(|v| v.abs() < 1e-12), "{d:?}");
        }
    }
}
