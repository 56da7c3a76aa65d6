//! `cargo xtask experiment samplers --checkpoint RUN`: one trained model, every sampler at 5,
//! 10, 20 and 50 network evaluations, each scored on the same number of samples (≥ 1,000)
//! against DDPM over all T steps; the report, a plot of Fréchet distance against evaluations,
//! and the fewest evaluations at which each sampler comes within 10% of DDPM-T.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ddpm_data::ImageSet;
use ddpm_diffusion::{
    GenerateOptions, NoiseRng, Prediction, SamplerConfig, Schedule, Variance, generate,
};
use ddpm_image::{grid, save_image, to_u8};
use ddpm_run::checkpoint;
use ddpm_unet::Model;
use plotters::prelude::*;

use super::{Args, Lab};

/// The network evaluations each fast sampler is run at.
const EVALUATIONS: [usize; 4] = [5, 10, 20, 50];

/// "Within 10% of DDPM-T".
const TOLERANCE: f64 = 0.10;

/// A family of samplers, one configuration per evaluation budget.
struct Family {
    name: &'static str,
    /// The configuration using at most `n` network evaluations.
    config: fn(usize) -> SamplerConfig,
}

/// DPM-Solver++ of `order` at `steps`, x̂0 clipped or not.
fn dpm(steps: usize, order: usize, clip_x0: bool) -> SamplerConfig {
    SamplerConfig::DpmSolver {
        steps,
        order,
        karras: false,
        lower_order_final: true,
        clip_x0,
    }
}

const FAMILIES: [Family; 9] = [
    Family {
        name: "DDIM (η 0)",
        config: |n| SamplerConfig::ddim(n, 0.0, false),
    },
    Family {
        name: "DDIM (η 0), clip",
        config: |n| SamplerConfig::ddim(n, 0.0, true),
    },
    Family {
        // Stochastic: σ as DDPM's posterior over the coarser steps.
        name: "DDIM (η 1), clip",
        config: |n| SamplerConfig::ddim(n, 1.0, true),
    },
    Family {
        name: "DPM-Solver++ 2M",
        config: |n| dpm(n, 2, false),
    },
    Family {
        name: "DPM-Solver++ 2M, clip",
        config: |n| dpm(n, 2, true),
    },
    Family {
        name: "DPM-Solver++ 3M, clip",
        config: |n| dpm(n, 3, true),
    },
    Family {
        name: "UniPC, clip",
        config: |n| SamplerConfig::UniPc {
            steps: n,
            clip_x0: true,
        },
    },
    Family {
        name: "Euler",
        config: |n| SamplerConfig::Euler {
            steps: n,
            karras: false,
        },
    },
    Family {
        // 2·steps − 1 evaluations.
        name: "Heun",
        config: |n| SamplerConfig::Heun {
            steps: n.div_ceil(2),
            karras: false,
        },
    },
];

/// One scored sampler run (kept in `points.json` beside the report, so that an interrupted
/// sweep resumes where it stopped).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Point {
    /// Samples scored and the seed they were drawn from.
    n: usize,
    seed: u64,
    evaluations: usize,
    frechet: f64,
    /// The real-vs-real Fréchet distance at the same n.
    floor: f64,
    /// Mean classifier confidence (absent for points recovered from a run's log).
    confidence: Option<f64>,
    seconds: f64,
}

/// The points measured so far, by label.
pub(super) type Measured<P> = std::collections::BTreeMap<String, P>;

/// The points cached at `path` (none when it is absent or unreadable).
pub(super) fn read_points<P: serde::de::DeserializeOwned>(path: &Path) -> Measured<P> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Writes the cache of points.
pub(super) fn write_points<P: serde::Serialize>(path: &Path, points: &Measured<P>) -> Result<()> {
    let text = serde_json::to_string_pretty(points).expect("points serialise");
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Registers the committed font as the plots' "sans-serif".
pub(super) fn register_plot_font() -> Result<()> {
    static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("cannot load the plot font"))
}

/// Draws `chart`'s series legend in the reports' style (white box, black border) at
/// `position`, in `size`-point type.
pub(super) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    size: u32,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", size))
        .draw()
        .map_err(|e| anyhow::anyhow!("drawing a plot's legend: {e}"))
}

/// The model under test.
pub(super) struct Subject {
    pub model: Model,
    pub schedule: Schedule,
    pub prediction: Prediction,
    /// The run's own sampler.
    pub sampler: SamplerConfig,
}

impl Subject {
    /// Generates `options` from `seed` on `device`; returns the samples and the seconds taken.
    pub fn generate(
        &self,
        options: &GenerateOptions,
        seed: u64,
        device: &candle_core::Device,
    ) -> Result<(candle_core::Tensor, f64)> {
        let started = Instant::now();
        let x = generate(
            &self.model,
            &self.schedule,
            options,
            None,
            &mut NoiseRng::new(seed),
            device,
            |_, _| {},
        )?;
        Ok((x, started.elapsed().as_secs_f64()))
    }
}

impl Lab {
    /// Samples `n` images with `sampler` from `seed`, scores them, and keeps an 81-image grid
    /// as `<label>.png` beside the report.
    fn sweep_point(
        &self,
        subject: &Subject,
        sampler: SamplerConfig,
        n: usize,
        seed: u64,
        label: &str,
    ) -> Result<Point> {
        let cache = self.figures.join("points.json");
        let mut measured = read_points::<Point>(&cache);
        if let Some(p) = measured.get(label).filter(|p| p.n == n && p.seed == seed) {
            eprintln!(
                "[{label}] reusing Fréchet {:.1} from {}",
                p.frechet,
                cache.display()
            );
            return Ok(p.clone());
        }
        let evaluations = sampler
            .build(&subject.schedule, subject.prediction)?
            .timesteps()
            .len();
        let options = GenerateOptions {
            n,
            image: subject.model.config().image().dims(),
            batch_size: 250,
            sampler,
            prediction: subject.prediction,
            guidance: None,
        };
        let (x, seconds) = subject.generate(&options, seed, &self.device)?;
        let images = to_u8(&x)?;
        let shown = to_u8(&x.narrow(0, 0, 81.min(n))?)?;
        save_image(
            &grid(&shown, 9, 0)?,
            &self.figures.join(format!("{label}.png")),
        )?;
        let [c, h, w] = subject.model.config().image().dims();
        let quality =
            self.evaluator()?
                .evaluate(&ImageSet::new(images.pixels.clone(), c, h, w)?)?;
        eprintln!(
            "[{label}] {evaluations} evaluations: Fréchet {:.1} in {seconds:.1} s",
            quality.frechet
        );
        let point = Point {
            n,
            seed,
            evaluations,
            frechet: quality.frechet,
            floor: quality.frechet_floor,
            confidence: Some(quality.confidence),
            seconds,
        };
        measured.insert(label.to_string(), point.clone());
        write_points(&cache, &measured)?;
        Ok(point)
    }
}

/// Runs the sweep on the checkpoint `run` with `n` samples per point; returns the report's
/// body.
pub(super) fn run(lab: &Lab, args: &Args, run: &Path, n: usize) -> Result<String> {
    if n < 1000 {
        bail!("--samples {n}: the sampler comparison needs at least 1,000 samples per point");
    }
    let dir = checkpoint::resolve(run)?;
    let loaded = checkpoint::load_model(&dir, &lab.device, true)?;
    let manifest = loaded.manifest;
    let subject = Subject {
        schedule: manifest.schedule(&lab.device)?,
        model: loaded.model,
        prediction: manifest.prediction,
        sampler: manifest.sample.sampler,
    };
    let t = manifest.n_steps;
    // The quality bar: DDPM over all T, with the run's own variance and clipping when its
    // sampler is DDPM.
    let reference = match manifest.sample.sampler {
        ddpm @ SamplerConfig::Ddpm { .. } => ddpm,
        _ => SamplerConfig::Ddpm {
            variance: Variance::Posterior,
            clip_x0: true,
        },
    };
    std::fs::create_dir_all(&lab.figures)
        .with_context(|| format!("cannot create {}", lab.figures.display()))?;
    let ddpm = lab.sweep_point(&subject, reference, n, 1, "ddpm-t")?;
    let unclipped = match reference {
        SamplerConfig::Ddpm { variance, .. } => SamplerConfig::Ddpm {
            variance,
            clip_x0: false,
        },
        other => other,
    };
    let ddpm_unclipped = lab.sweep_point(&subject, unclipped, n, 1, "ddpm-t-unclipped")?;
    let mut rows = Vec::new();
    for family in &FAMILIES {
        let mut points = Vec::new();
        for budget in EVALUATIONS {
            let slug = family
                .name
                .to_lowercase()
                .replace(|c: char| !c.is_alphanumeric(), "-");
            points.push(lab.sweep_point(
                &subject,
                (family.config)(budget),
                n,
                1,
                &format!("{slug}-{budget}"),
            )?);
        }
        rows.push((family, points));
    }
    // The seed-to-seed noise at this n, on two of the points (a DDPM-T repeat would cost T
    // evaluations).
    let ddim10 = lab.sweep_point(
        &subject,
        (FAMILIES[1].config)(10),
        n,
        2,
        "ddim-clip-10-seed2",
    )?;
    let dpm20 = lab.sweep_point(
        &subject,
        (FAMILIES[3].config)(20),
        n,
        2,
        "dpm-2m-clip-20-seed2",
    )?;
    let noise = [
        relative_gap(rows[1].1[1].frechet, ddim10.frechet),
        relative_gap(rows[3].1[2].frechet, dpm20.frechet),
    ];
    plot(&lab.figures.join(PLOT), &rows, &ddpm, t)?;
    let report = Report {
        run,
        n,
        t,
        reference,
        ddpm: &ddpm,
        ddpm_unclipped: &ddpm_unclipped,
        rows: &rows,
        noise,
        figures: lab
            .figures
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or(""),
    };
    Ok(report.body(args))
}

/// The plot's file name beside the report's grids.
const PLOT: &str = "frechet-vs-evaluations.png";

/// What the report says.
struct Report<'a> {
    run: &'a Path,
    n: usize,
    t: usize,
    reference: SamplerConfig,
    ddpm: &'a Point,
    ddpm_unclipped: &'a Point,
    rows: &'a [(&'a Family, Vec<Point>)],
    noise: [f64; 2],
    figures: &'a str,
}

impl Report<'_> {
    fn body(&self, args: &Args) -> String {
        let bar = self.ddpm.frechet * (1.0 + TOLERANCE);
        let mut text = format!(
            "One trained model (`{run}`, T = {t}, EMA weights) sampled with every sampler from \
             the same seed, {n} samples per point, scored against the MNIST test split \
             (`{real}`) with the committed classifier; the real-vs-real floor at this n is \
             {floor:.1}. The bar is DDPM over all {t} steps with the run's own settings \
             ({reference:?}): Fréchet {ddpm:.1} in {secs:.0} s ({grid:.1} s per 81-image grid). \
             \"Within 10%\" means a Fréchet distance at most {bar:.1}.\n\n\
             **Noise**: the same sampler from another seed moved the Fréchet distance by \
             {n1:.1}% (clipped DDIM at 10 evaluations) and {n2:.1}% (clipped DPM-Solver++ 2M at 20), so \
             differences under ~{noise_max:.0}% are not resolved at this n.\n\n\
             ![Fréchet distance against network evaluations]({figures}/{PLOT})\n\n\
             | sampler | evaluations | Fréchet | confidence | seconds ({n} samples) | per 81-grid |\n\
             |---|---|---|---|---|---|\n",
            run = self.run.display(),
            t = self.t,
            n = self.n,
            real = args.real.display(),
            floor = self.ddpm.floor,
            reference = self.reference,
            ddpm = self.ddpm.frechet,
            secs = self.ddpm.seconds,
            grid = self.ddpm.seconds * 81.0 / self.n as f64,
            n1 = 100.0 * self.noise[0],
            n2 = 100.0 * self.noise[1],
            noise_max = 100.0 * self.noise[0].max(self.noise[1]),
            figures = self.figures,
        );
        let line = |name: &str, p: &Point| {
            format!(
                "| {name} | {} | {:.1} | {} | {:.1} | {:.2} |\n",
                p.evaluations,
                p.frechet,
                p.confidence.map_or("—".into(), |c| format!("{c:.3}")),
                p.seconds,
                p.seconds * 81.0 / self.n as f64
            )
        };
        text += &line(&format!("DDPM-{} (the bar)", self.t), self.ddpm);
        text += &line(&format!("DDPM-{} unclipped", self.t), self.ddpm_unclipped);
        for (family, points) in self.rows {
            for p in points {
                text += &line(family.name, p);
            }
        }
        text += "\n**Fewest evaluations within 10% of DDPM-T** (of 5, 10, 20, 50; what the figures \
                 mean and which defaults follow: `docs/sampling.md`, section \"Measured\"):\n\n";
        for (family, points) in self.rows {
            let first = points.iter().find(|p| p.frechet <= bar);
            text += &match first {
                Some(p) => format!("- {}: {} ({:.1})\n", family.name, p.evaluations, p.frechet),
                None => format!("- {}: not within 50 evaluations\n", family.name),
            };
        }
        text
    }
}

/// Fréchet distance against evaluations (both log scale), one line per family, with DDPM-T, its
/// 10% band and the real-vs-real floor as horizontal lines.
fn plot(path: &Path, rows: &[(&Family, Vec<Point>)], ddpm: &Point, t: usize) -> Result<()> {
    register_plot_font()?;
    let top = rows
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.frechet))
        .fold(ddpm.frechet, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Sampler quality against network evaluations (DDPM-{t} = {:.0})",
                ddpm.frechet
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (4f64..60f64).log_scale(),
            (ddpm.floor * 0.8..top).log_scale(),
        )
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("network evaluations (log scale)")
        .y_desc("Fréchet distance (log scale)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(draw)?;
    let hline = |y: f64, colour: RGBAColor| LineSeries::new([(4.0, y), (60.0, y)], colour);
    chart
        .draw_series(hline(ddpm.frechet, BLACK.to_rgba()))
        .map_err(draw)?
        .label(format!("DDPM-{t}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(hline(ddpm.frechet * (1.0 + TOLERANCE), BLACK.mix(0.5)))
        .map_err(draw)?
        .label("DDPM-T + 10%")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .draw_series(hline(ddpm.floor, BLACK.mix(0.3)))
        .map_err(draw)?
        .label("real-vs-real floor")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));
    for (i, (family, points)) in rows.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.evaluations as f64, p.frechet))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
            .map_err(draw)?
            .label(family.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(xy.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
            .map_err(draw)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::MiddleRight, 15)?;
    root.present().map_err(draw)?;
    Ok(())
}

fn relative_gap(a: f64, b: f64) -> f64 {
    (a - b).abs() / ((a + b) / 2.0)
}
