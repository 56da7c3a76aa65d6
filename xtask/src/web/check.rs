//! `cargo xtask web --check`: the built page drives a grid in headless Chromium; its samples
//! and canvas pixels are compared with the same grid drawn natively, and the speed of both is
//! reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ddpm_web::{Demo, GridPart, GridRequest, grid_picture};
use serde_json::{Value, json};

use super::MODEL_DIR;
use super::serve::Server;
use super::webdriver::Browser;

/// The grid `--check` draws, and what it tolerates.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// With --check: the digit drawn.
    #[arg(long, default_value_t = 7)]
    digit: u32,
    /// With --check: the sampler.
    #[arg(long, default_value = "ddim")]
    sampler: String,
    /// With --check: network evaluations (not for ddpm).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// With --check: the guidance scale.
    #[arg(long, default_value_t = 5.0)]
    guidance: f64,
    /// With --check: the seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --check: the largest difference allowed between a browser sample and the native one.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// With --check: how many Web Workers draw the grid (default: the page's choice, one per
    /// core, at most one per grid row).
    #[arg(long)]
    workers: Option<usize>,
    /// With --check: where the screenshot and report.json go.
    #[arg(long, default_value = "target/web-check")]
    report_dir: PathBuf,
}

impl CheckArgs {
    fn request(&self) -> GridRequest {
        GridRequest {
            class: Some(self.digit),
            sampler: self.sampler.clone(),
            steps: (self.sampler != "ddpm").then_some(self.steps),
            guidance: self.guidance,
            seed: self.seed,
        }
    }

    /// The page address that draws this grid once the model is loaded.
    fn query(&self, request: &GridRequest) -> String {
        let steps = request
            .steps
            .map_or(String::new(), |s| format!("&steps={s}"));
        let workers = self
            .workers
            .map_or(String::new(), |n| format!("&workers={n}"));
        format!(
            "?autorun&digit={}&sampler={}{steps}&guidance={}&seed={}{workers}",
            self.digit,
            self.sampler.replace('+', "%2B"),
            self.guidance,
            self.seed
        )
    }
}

/// The longest a grid may take in the browser before the check gives up.
const GRID_TIMEOUT: Duration = Duration::from_secs(300);

/// The grid as drawn on one side.
struct Drawn {
    samples: Vec<f32>,
    rgba: Vec<u8>,
    step_ms: Vec<f64>,
    total_ms: f64,
    /// Web Workers (browser) or threads (native) that drew it.
    parallel: usize,
}

impl Drawn {
    fn mean_step_ms(&self) -> f64 {
        self.step_ms.iter().sum::<f64>() / self.step_ms.len() as f64
    }
}

/// Runs the check on the page built in `out`.
pub fn run(out: &Path, args: &CheckArgs) -> Result<()> {
    ddpm_nn::configure_cpu_threads();
    let request = args.request();
    let native = draw_natively(&out.join(MODEL_DIR), &request)?;
    let server = Server::start(out, 0)?;
    let url = format!("{}{}", server.url(), args.query(&request));
    println!("opening {url} in headless Chromium");
    let browser = Browser::start(1200, 1100)?;
    let drawn = draw_in_browser(&browser, &url);
    std::fs::create_dir_all(&args.report_dir)
        .with_context(|| format!("cannot create {}", args.report_dir.display()))?;
    let screenshot = args.report_dir.join("screenshot.png");
    std::fs::write(&screenshot, browser.screenshot()?)
        .with_context(|| format!("cannot write {}", screenshot.display()))?;
    println!("screenshot: {}", screenshot.display());
    let refused = drawn
        .is_ok()
        .then(|| refuse_broken_checkpoint(&browser, out, &args.report_dir));
    drop(browser);
    server.stop();
    let browser = drawn?;
    compare(&browser, &native, &request, args)?;
    refused.unwrap_or(Ok(()))
}

/// Loads a checkpoint with truncated weights through the page's file input: the page must say
/// why it cannot load it and keep the model it has.
fn refuse_broken_checkpoint(browser: &Browser, out: &Path, dir: &Path) -> Result<()> {
    let model = out.join(MODEL_DIR);
    let weights = std::fs::read(model.join(ddpm_run::checkpoint::MODEL_FILE))?;
    let broken = dir.join("broken.safetensors");
    std::fs::write(&broken, &weights[..weights.len() / 2])?;
    let manifest = model.join(ddpm_run::checkpoint::MANIFEST_FILE);
    browser.choose_files(
        "#checkpoint-files",
        &[&manifest.canonicalize()?, &broken.canonicalize()?],
    )?;
    let shown = browser.wait_for(
        "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
        Duration::from_secs(30),
    )?;
    let shown = shown.as_str().unwrap_or_default();
    ensure!(
        shown.contains("Cannot load this checkpoint") && shown.contains("broken.safetensors"),
        "the page's message for a broken checkpoint does not say what is wrong: {shown}"
    );
    let status = browser.execute("return document.getElementById('model-status').textContent;")?;
    ensure!(
        status.as_str().is_some_and(|s| s.contains("still loaded")),
        "after a broken checkpoint the page says: {status}"
    );
    println!("a broken checkpoint is refused on the page: {shown}");
    Ok(())
}

fn draw_natively(model_dir: &Path, request: &GridRequest) -> Result<Drawn> {
    let read = |name: &str| {
        let path = model_dir.join(name);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let demo = Demo::from_bytes(
        &read(ddpm_run::checkpoint::MANIFEST_FILE)?,
        &read(ddpm_run::checkpoint::MODEL_FILE)?,
        ddpm_run::checkpoint::MODEL_FILE,
    )?;
    let start = Instant::now();
    let mut last = start;
    let mut step_ms = Vec::new();
    let x0 = demo.grid(request, GridPart::WHOLE, |_| {
        step_ms.push(last.elapsed().as_secs_f64() * 1e3);
        last = Instant::now();
    })?;
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(Drawn {
        samples: x0.flatten_all()?.to_vec1()?,
        rgba: grid_picture(&x0)?.rgba,
        step_ms,
        total_ms,
        parallel: rayon::current_num_threads(),
    })
}

fn draw_in_browser(browser: &Browser, url: &str) -> Result<Drawn> {
    browser.goto(url)?;
    let result = browser.wait_for("return window.ddpmResult ?? null;", GRID_TIMEOUT)?;
    if let Some(error) = result["error"].as_str() {
        bail!("the page failed: {error}");
    }
    let page_error = browser.execute(
        "const e = document.getElementById('error'); return e.hidden ? null : e.textContent;",
    )?;
    ensure!(
        page_error.is_null(),
        "the page shows an error: {page_error}"
    );
    let pixels = browser.execute(
        "const c = document.getElementById('grid');
         return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);",
    )?;
    Ok(Drawn {
        samples: numbers(&result["samples"])?,
        rgba: numbers(&pixels)?,
        step_ms: numbers(&result["stepMs"])?,
        total_ms: result["totalMs"].as_f64().unwrap_or(f64::NAN),
        parallel: result["workers"].as_u64().unwrap_or(0) as usize,
    })
}

/// A JSON array of numbers as `T` (f32 samples are exact in JSON's f64).
fn numbers<T: serde::de::DeserializeOwned>(value: &Value) -> Result<Vec<T>> {
    serde_json::from_value(value.clone()).context("the page returned something other than numbers")
}

fn compare(browser: &Drawn, native: &Drawn, request: &GridRequest, args: &CheckArgs) -> Result<()> {
    ensure!(
        browser.samples.len() == native.samples.len() && browser.rgba.len() == native.rgba.len(),
        "the browser drew {} values ({} pixel bytes), natively {} ({})",
        browser.samples.len(),
        browser.rgba.len(),
        native.samples.len(),
        native.rgba.len()
    );
    let max_diff = browser
        .samples
        .iter()
        .zip(&native.samples)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let identical = browser
        .samples
        .iter()
        .zip(&native.samples)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let pixels_differing = browser
        .rgba
        .iter()
        .zip(&native.rgba)
        .filter(|(a, b)| a != b)
        .count();
    let max_pixel_diff = browser
        .rgba
        .iter()
        .zip(&native.rgba)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    let report = json!({
        "request": request,
        "browser": {"workers": browser.parallel, "step_ms": browser.step_ms, "mean_step_ms": browser.mean_step_ms(), "grid_ms": browser.total_ms},
        "native": {"threads": native.parallel, "step_ms": native.step_ms, "mean_step_ms": native.mean_step_ms(), "grid_ms": native.total_ms},
        "max_abs_diff": max_diff,
        "bit_identical": identical,
        "pixel_bytes_differing": pixels_differing,
        "max_pixel_diff": max_pixel_diff,
    });
    let path = args.report_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "browser: {} steps, {:.1} ms per step, grid {:.0} ms ({} Web Workers)\n\
         native:  {} steps, {:.1} ms per step, grid {:.0} ms ({} threads)\n\
         samples: max |browser - native| = {max_diff:.3e} ({}), canvas bytes differing: \
         {pixels_differing} (largest difference {max_pixel_diff})\nreport: {}",
        browser.step_ms.len(),
        browser.mean_step_ms(),
        browser.total_ms,
        browser.parallel,
        native.step_ms.len(),
        native.mean_step_ms(),
        native.total_ms,
        native.parallel,
        if identical {
            "bit-identical"
        } else {
            "not bit-identical"
        },
        path.display()
    );
    ensure!(
        max_diff <= args.tolerance,
        "the browser's samples differ from the native ones by {max_diff:.3e} > {:.0e}",
        args.tolerance
    );
    // Samples within the tolerance may still round to neighbouring bytes.
    ensure!(
        max_pixel_diff <= 1 && (!identical || pixels_differing == 0),
        "the canvas differs from the native grid: {pixels_differing} bytes, up to {max_pixel_diff}"
    );
    Ok(())
}
