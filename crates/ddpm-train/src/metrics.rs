//! `metrics.jsonl` lines and the `loss.png` curve.

use std::io::Write;
use std::path::Path;

use image::{DynamicImage, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::io_err;

/// One logging interval of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch of the last step (0-based).
    pub epoch: u64,
    /// Mean loss over the interval.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Training images per second over the interval.
    pub images_per_s: f64,
    /// Seconds since this process started training.
    pub wall_s: f64,
}

/// Appends one line to `metrics.jsonl`.
pub(crate) fn append(path: &Path, line: &MetricsLine) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    // One write of the whole line: a kill cannot leave half a line for the next to join.
    let text = serde_json::to_string(line).expect("metrics serialise") + "\n";
    file.write_all(text.as_bytes())
        .map_err(io_err("appending to", path))
}

/// Reads the lines of `metrics.jsonl` (for a resumed run's curve); unreadable lines are skipped.
pub(crate) fn read(path: &Path) -> Vec<MetricsLine> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const MARGIN: u32 = 20;

/// Draws the loss curve (log-scale loss against step, with a grid line at every power of
/// ten) to a PNG.
pub fn plot_loss(lines: &[MetricsLine], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let points: Vec<(f64, f64)> = lines
        .iter()
        .filter(|l| l.loss.is_finite() && l.loss > 0.0)
        .map(|l| (l.step as f64, l.loss.log10()))
        .collect();
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let (x0, x1) = (first.0, last.0.max(first.0 + 1.0));
        let lo = points
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .floor();
        let hi = points
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(lo + 1.0);
        let span_x = (WIDTH - 2 * MARGIN) as f64;
        let span_y = (HEIGHT - 2 * MARGIN) as f64;
        let to_px = |(x, y): (f64, f64)| {
            (
                MARGIN as f64 + (x - x0) / (x1 - x0) * span_x,
                MARGIN as f64 + (hi - y) / (hi - lo) * span_y,
            )
        };
        let mut decade = lo;
        while decade <= hi {
            let (_, y) = to_px((x0, decade));
            for x in MARGIN..WIDTH - MARGIN {
                img.put_pixel(x, y as u32, Rgb([220, 220, 220]));
            }
            decade += 1.0;
        }
        for pair in points.windows(2) {
            draw_line(
                &mut img,
                to_px(pair[0]),
                to_px(pair[1]),
                Rgb([31, 119, 180]),
            );
        }
    }
    ddpm_image::save_image(&DynamicImage::ImageRgb8(img), path)?;
    Ok(())
}

fn draw_line(img: &mut RgbImage, from: (f64, f64), to: (f64, f64), colour: Rgb<u8>) {
    let steps = ((to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let f = i as f64 / steps as f64;
        let (x, y) = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}
