//! `cargo xtask experiment guidance --checkpoint RUN`: one class-conditional run sampled at
//! classifier-free guidance scales 0-8 with its own sampler, the same number of samples of every
//! class at each scale (≥ 1,000 in all); per-class accuracy by the evaluator's classifier,
//! Fréchet distance and confidence of the pooled samples, a plot and the reading; then the
//! same with guidance limited to an interval of the schedule.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ddpm_data::ImageSet;
use ddpm_diffusion::{GenerateOptions, Guidance, GuidanceInterval, class_rows};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_run::checkpoint;
use plotters::prelude::*;

use super::sweep::{Subject, draw_legend, read_points, register_plot_font, write_points};
use super::{Args, Lab};

/// The guidance scales measured (1 = the plain conditional model, 0 = its unconditional half).
const SCALES: [f64; 6] = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0];

/// Guidance limited to part of the schedule (Kynkäänniemi et al. 2024): (scale, from, to),
/// the interval in fractions of the diffusion steps T.
const LIMITED: [(f64, f64, f64); 4] = [
    (5.0, 0.0, 0.6),
    (5.0, 0.3, 1.0),
    (5.0, 0.2, 0.6),
    (8.0, 0.2, 0.6),
];

/// Settings measured again from another seed, beside the run's own guidance: the most correct
/// limited interval and the most correct scale over every step, (scale, from, to) as in
/// [`LIMITED`].
const CANDIDATES: [(f64, f64, f64); 2] = [(8.0, 0.2, 0.6), (8.0, 0.0, 1.0)];

/// The plot's file name beside the report's grids.
const PLOT: &str = "guidance.png";

/// One scored guidance scale.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct GuidedPoint {
    /// Samples per class and the seed they were drawn from.
    pub per_class: usize,
    pub seed: u64,
    pub scale: f64,
    /// The guided part of the schedule (points from before intervals guided every step).
    #[serde(default)]
    pub interval: GuidanceInterval,
    pub frechet: f64,
    pub floor: f64,
    pub confidence: f64,
    /// Fraction of each class's samples the classifier recognises as that class.
    pub accuracy: Vec<f64>,
    pub seconds: f64,
}

impl GuidedPoint {
    /// The point's name: its scale, and its interval when limited (`w5`, `w5 t∈[0.3,1]`).
    fn name(&self) -> String {
        match self.interval {
            GuidanceInterval::ALL => format!("w{}", self.scale),
            i => format!("w{} t∈[{i}]", self.scale),
        }
    }

    /// The mean over classes of the per-class accuracy.
    pub fn mean_accuracy(&self) -> f64 {
        self.accuracy.iter().sum::<f64>() / self.accuracy.len() as f64
    }

    /// The least-recognised class and its accuracy.
    pub fn worst(&self) -> (usize, f64) {
        self.accuracy
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |w, (c, a)| if a < w.1 { (c, a) } else { w },
            )
    }
}

impl Lab {
    /// Draws `per_class` samples of every class of `subject` at guidance `scale` within
    /// `interval` (the run's sampler), scores them and keeps a grid of 9 per class as
    /// `<label>.png`. Points already in `points.json` beside the report are reused.
    pub(super) fn guided_point(
        &self,
        subject: &Subject,
        classes: usize,
        (scale, interval): (f64, GuidanceInterval),
        per_class: usize,
        seed: u64,
    ) -> Result<GuidedPoint> {
        let label = point_label(scale, interval, seed);
        let cache = self.figures.join("points.json");
        let mut measured = read_points::<GuidedPoint>(&cache);
        if let Some(p) = measured
            .get(&label)
            .filter(|p| p.per_class == per_class && p.seed == seed)
        {
            eprintln!("[{label}] reusing from {}", cache.display());
            return Ok(p.clone());
        }
        let all: Vec<u32> = (0..classes as u32).collect();
        let labels = class_rows(&all, per_class);
        let options = GenerateOptions {
            n: labels.len(),
            image: subject.model.config().image().dims(),
            batch_size: 250,
            sampler: subject.sampler,
            prediction: subject.prediction,
            guidance: Some(Guidance {
                classes: labels.clone(),
                scale,
                interval,
            }),
        };
        let (x, seconds) = subject.generate(&options, seed, &self.device)?;
        let images = to_u8(&x)?;
        let [c, h, w] = subject.model.config().image().dims();
        let set = ImageSet::new(images.pixels.clone(), c, h, w)?;
        // 9 of each class, a row each.
        let shown: Vec<usize> = (0..classes)
            .flat_map(|k| (0..9.min(per_class)).map(move |j| k * per_class + j))
            .collect();
        let shown = x.index_select(
            &candle_core::Tensor::new(
                shown
                    .iter()
                    .map(|&i| i as u32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                x.device(),
            )?,
            0,
        )?;
        save_image(
            &grid(&to_u8(&shown)?, 9.min(per_class), 0)?,
            &self.figures.join(format!("{label}.png")),
        )?;
        let quality = self.evaluator()?.evaluate(&set)?;
        let predicted = self
            .evaluator()?
            .classifier()
            .embed(&set, 250, &self.device)?
            .predictions();
        let accuracy = (0..classes)
            .map(|k| {
                let hits = predicted[k * per_class..(k + 1) * per_class]
                    .iter()
                    .filter(|&&p| usize::from(p) == k)
                    .count();
                hits as f64 / per_class as f64
            })
            .collect();
        let point = GuidedPoint {
            per_class,
            seed,
            scale,
            interval,
            frechet: quality.frechet,
            floor: quality.frechet_floor,
            confidence: quality.confidence,
            accuracy,
            seconds,
        };
        eprintln!(
            "[{label}] Fréchet {:.1}, confidence {:.3}, accuracy {:.3} (worst {:?}) in {seconds:.0} s",
            point.frechet,
            point.confidence,
            point.mean_accuracy(),
            point.worst()
        );
        measured.insert(label, point.clone());
        write_points(&cache, &measured)?;
        Ok(point)
    }
}

/// A point's key in `points.json` and the stem of its grid's file: `w5`, `w5-t0.3-1`,
/// `w5-seed2`.
fn point_label(scale: f64, interval: GuidanceInterval, seed: u64) -> String {
    let mut label = format!("w{scale}");
    if interval != GuidanceInterval::ALL {
        label += &format!("-t{}-{}", interval.from, interval.to);
    }
    if seed != 1 {
        label += &format!("-seed{seed}");
    }
    label
}

/// Runs the guidance sweep on the class-conditional checkpoint `run`, `n` samples per scale;
/// returns the report's body.
pub(super) fn run(lab: &Lab, args: &Args, run: &Path, n: usize) -> Result<String> {
    let dir = checkpoint::resolve(run)?;
    let loaded = checkpoint::load_model(&dir, &lab.device, true)?;
    let manifest = loaded.manifest;
    let Some(names) = manifest.classes.clone() else {
        bail!(
            "{} is not class-conditional: train one with --conditional true",
            run.display()
        );
    };
    if names.len() != 10 {
        bail!(
            "the guidance experiment scores MNIST digits: the run has {} classes",
            names.len()
        );
    }
    let per_class = n.div_ceil(names.len());
    if per_class * names.len() < 1000 {
        bail!("--samples {n}: the guidance comparison needs at least 1,000 samples per scale");
    }
    let subject = Subject {
        schedule: manifest.schedule(&lab.device)?,
        model: loaded.model,
        prediction: manifest.prediction,
        sampler: manifest.sample.sampler,
    };
    std::fs::create_dir_all(&lab.figures)
        .with_context(|| format!("cannot create {}", lab.figures.display()))?;
    let mut points = Vec::new();
    for scale in SCALES {
        let every = (scale, GuidanceInterval::ALL);
        points.push(lab.guided_point(&subject, names.len(), every, per_class, 1)?);
    }
    let mut limited = Vec::new();
    for (scale, from, to) in LIMITED {
        let interval = GuidanceInterval::new(from, to)?;
        limited.push(lab.guided_point(&subject, names.len(), (scale, interval), per_class, 1)?);
    }
    // Seed noise at the run's own guidance and at the candidates for it.
    let mut repeated = vec![(manifest.sample.guidance, manifest.sample.guidance_interval)];
    for (scale, from, to) in CANDIDATES {
        repeated.push((scale, GuidanceInterval::new(from, to)?));
    }
    let mut repeats = Vec::new();
    for guidance in repeated {
        repeats.push(lab.guided_point(&subject, names.len(), guidance, per_class, 2)?);
    }
    plot(&lab.figures.join(PLOT), &points)?;
    let figures = lab
        .figures
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    Ok(body(
        args, run, &manifest, &points, &limited, &repeats, figures,
    ))
}

fn body(
    args: &Args,
    run: &Path,
    manifest: &ddpm_run::RunManifest,
    points: &[GuidedPoint],
    limited: &[GuidedPoint],
    repeats: &[GuidedPoint],
    figures: &str,
) -> String {
    let per_class = points[0].per_class;
    let noise: Vec<String> = repeats
        .iter()
        .filter_map(|r| {
            let first = points
                .iter()
                .chain(limited)
                .find(|p| p.scale == r.scale && p.interval == r.interval)?;
            let ((d1, a1), (d2, a2)) = (first.worst(), r.worst());
            Some(format!(
                "{} gave Fréchet {:.1} (seed 1: {:.1}), mean accuracy {:.3} ({:.3}), worst digit \
                 {d2} at {:.0}% ({d1} at {:.0}%)",
                r.name(),
                r.frechet,
                first.frechet,
                r.mean_accuracy(),
                first.mean_accuracy(),
                100.0 * a2,
                100.0 * a1
            ))
        })
        .collect();
    let mut text = format!(
        "One class-conditional model (`{run}`, EMA weights) sampled with its own sampler \
         ({sampler}) at each guidance scale w (ε̃ = ε_u + w·(ε_c − ε_u): 0 = the unconditional \
         output, 1 = the plain conditional one), {per_class} samples of every digit from seed 1. \
         **Accuracy** is the fraction of a digit's samples that the evaluator's classifier \
         (98.7% on real test digits) recognises as that digit; Fréchet distance and confidence \
         are of the pooled, class-balanced samples against the MNIST test split (`{real}`), \
         real-vs-real floor {floor:.1} at this n. Per-class Fréchet distances are left out: \
         at {per_class} samples the estimate's own bias is several times the differences.\n\n\
         **Noise**, the same points drawn from seed 2 (the run's own guidance, then the most \
         correct limited interval and the most correct scale over every step): {noise}.\n\n\
         ![accuracy and Fréchet distance against the guidance scale]({figures}/{PLOT})\n\n\
         | w | Fréchet ↓ | confidence | mean accuracy | worst digit | {digits} | seconds |\n\
         |---|---|---|---|---|{sep}---|\n",
        run = run.display(),
        sampler = manifest.sample.sampler,
        real = args.real.display(),
        floor = points[0].floor,
        noise = noise.join("; "),
        digits = (0..10)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" | "),
        sep = "---|".repeat(10),
    );
    let row = |p: &GuidedPoint, first: String| {
        let (worst, acc) = p.worst();
        let per: Vec<String> = p
            .accuracy
            .iter()
            .map(|a| format!("{:.0}", 100.0 * a))
            .collect();
        format!(
            "| {first} | {:.1} | {:.3} | {:.3} | {worst} ({:.0}%) | {} | {:.0} |\n",
            p.frechet,
            p.confidence,
            p.mean_accuracy(),
            100.0 * acc,
            per.join(" | "),
            p.seconds
        )
    };
    for p in points {
        text += &row(p, p.scale.to_string());
    }
    text += &format!(
        "\n(per-digit columns: % of that digit's samples recognised as it)\n\n\
         ## Guidance limited to an interval\n\n\
         The same samples (same seed, same x_T) guided only at the steps whose time t lies in \
         [from·T, to·T] (T = {steps}; Kynkäänniemi et al. 2024), the plain conditional output \
         (w = 1) at the others.\n\n\
         | w | t/T guided | Fréchet ↓ | confidence | mean accuracy | worst digit | {digits} | \
         seconds |\n|---|---|---|---|---|---|{sep}---|\n",
        steps = manifest.n_steps,
        digits = (0..10)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" | "),
        sep = "---|".repeat(10),
    );
    for p in limited {
        text += &row(p, format!("{} | [{}]", p.scale, p.interval));
    }
    text += "\n## Grids (9 samples of each digit, seed 1)\n\n";
    for p in points.iter().chain(limited) {
        let name = p.name();
        let file = point_label(p.scale, p.interval, p.seed);
        text += &format!("**{name}**\n\n![{name}]({figures}/{file}.png)\n\n");
    }
    text
}

/// Mean and worst-class accuracy (left) and Fréchet distance (right) against the scale.
fn plot(path: &Path, points: &[GuidedPoint]) -> Result<()> {
    register_plot_font()?;
    let root = BitMapBackend::new(path, (1000, 450)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let (left, right) = root.split_horizontally(500);
    let top = SCALES[SCALES.len() - 1] + 0.5;
    let series = |p: &GuidedPoint| (p.scale, p.mean_accuracy(), p.worst().1, p.frechet);
    let values: Vec<(f64, f64, f64, f64)> = points.iter().map(series).collect();
    let mut acc = ChartBuilder::on(&left)
        .caption("class accuracy", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.2..top, 0f64..1.02)
        .map_err(draw)?;
    acc.configure_mesh()
        .x_desc("guidance scale w")
        .y_desc("recognised as the requested digit")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    for (name, pick, colour) in [
        ("mean over digits", 1usize, BLUE.to_rgba()),
        ("worst digit", 2, RED.to_rgba()),
    ] {
        let xy: Vec<(f64, f64)> = values
            .iter()
            .map(|v| (v.0, if pick == 1 { v.1 } else { v.2 }))
            .collect();
        acc.draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
            .map_err(draw)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        acc.draw_series(xy.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
            .map_err(draw)?;
    }
    draw_legend(&mut acc, SeriesLabelPosition::LowerRight, 14)?;
    let high = values.iter().map(|v| v.3).fold(0.0, f64::max) * 1.1;
    let mut fd = ChartBuilder::on(&right)
        .caption("Fréchet distance (pooled digits)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.2..top, 0f64..high)
        .map_err(draw)?;
    fd.configure_mesh()
        .x_desc("guidance scale w")
        .y_desc("Fréchet distance")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    let xy: Vec<(f64, f64)> = values.iter().map(|v| (v.0, v.3)).collect();
    fd.draw_series(LineSeries::new(xy.clone(), BLACK.stroke_width(2)))
        .map_err(draw)?;
    fd.draw_series(xy.into_iter().map(|p| Circle::new(p, 4, BLACK.filled())))
        .map_err(draw)?;
    let floor = points[0].floor;
    fd.draw_series(LineSeries::new(
        [(-0.2, floor), (top, floor)],
        BLACK.mix(0.3),
    ))
    .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}
