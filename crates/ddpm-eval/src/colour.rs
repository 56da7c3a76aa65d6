//! Per-channel colour statistics, to show a colour cast in RGB samples.

use std::fmt;

use ddpm_data::ImageSet;

use crate::error::{EvalError, Result};

/// Mean and standard deviation of every channel over all pixels of a set, on a 0-1 scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Standard deviation per channel (population, over all pixels of all images).
    pub std: Vec<f64>,
}

/// The [`ChannelStats`] of `images`.
pub fn channel_stats(images: &ImageSet) -> Result<ChannelStats> {
    if images.is_empty() {
        return Err(EvalError::Invalid(
            "colour statistics of an empty set".into(),
        ));
    }
    let (c, plane) = (images.channels(), images.height() * images.width());
    let mut sum = vec![0u64; c];
    let mut sum_sq = vec![0u64; c];
    for i in 0..images.len() {
        for (ch, px) in images.image(i).chunks_exact(plane).enumerate() {
            for &p in px {
                sum[ch] += u64::from(p);
                sum_sq[ch] += u64::from(p) * u64::from(p);
            }
        }
    }
    let count = (images.len() * plane) as f64;
    let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / count / 255.0).collect();
    let std = sum_sq
        .iter()
        .zip(&mean)
        .map(|(&s, m)| (s as f64 / count / (255.0 * 255.0) - m * m).max(0.0).sqrt())
        .collect();
    Ok(ChannelStats { mean, std })
}

/// Colour statistics of samples beside those of the training data.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourReport {
    /// Number of sample images.
    pub n_samples: usize,
    /// Number of real images.
    pub n_real: usize,
    /// Statistics of the samples.
    pub samples: ChannelStats,
    /// Statistics of the real images.
    pub real: ChannelStats,
}

impl ColourReport {
    /// Compares `samples` with `real`; both must have the same number of channels.
    pub fn new(samples: &ImageSet, real: &ImageSet) -> Result<Self> {
        if samples.channels() != real.channels() {
            return Err(EvalError::Invalid(format!(
                "samples have {} channels but the real images {}",
                samples.channels(),
                real.channels()
            )));
        }
        Ok(Self {
            n_samples: samples.len(),
            n_real: real.len(),
            samples: channel_stats(samples)?,
            real: channel_stats(real)?,
        })
    }

    /// Sample mean minus real mean, per channel (a colour cast shows as one channel
    /// differing from the others).
    pub fn mean_shift(&self) -> Vec<f64> {
        self.samples
            .mean
            .iter()
            .zip(&self.real.mean)
            .map(|(s, r)| s - r)
            .collect()
    }
}

impl fmt::Display for ColourReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: &[&str] = if self.real.mean.len() == 3 {
            &["R", "G", "B"]
        } else {
            &["L"]
        };
        writeln!(
            f,
            "channel  sample mean  real mean  shift    sample std  real std   ({} samples, {} real; 0-1 scale)",
            self.n_samples, self.n_real
        )?;
        for (k, name) in names.iter().enumerate() {
            writeln!(
                f,
                "{name:<8} {:>11.4} {:>10.4} {:>+8.4} {:>11.4} {:>9.4}",
                self.samples.mean[k],
                self.real.mean[k],
                self.samples.mean[k] - self.real.mean[k],
                self.samples.std[k],
                self.real.std[k]
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_statistics_and_shift() {
        // 2 images of 3 x 1 x 2: R always 255, G always 0, B 0 and 255.
        let pixels = vec![255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 255, 0];
        let set = ImageSet::new(pixels, 3, 1, 2).unwrap();
        let s = channel_stats(&set).unwrap();
        assert_eq!(s.mean, vec![1.0, 0.0, 0.5]);
        assert_eq!(s.std, vec![0.0, 0.0, 0.5]);
        let grey = ImageSet::new(vec![51; 12], 3, 1, 2).unwrap();
        let report = ColourReport::new(&set, &grey).unwrap();
        let shift = report.mean_shift();
        assert!((shift[0] - 0.8).abs() < 1e-12 && (shift[1] + 0.2).abs() < 1e-12);
        assert!(report.to_string().contains("+0.8000"), "{report}");
        let gray = ImageSet::new(vec![0; 4], 1, 2, 2).unwrap();
        assert!(ColourReport::new(&set, &gray).is_err());
    }
}
