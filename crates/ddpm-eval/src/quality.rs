//! MNIST sample quality: Fréchet distance of classifier features against real digits, with
//! the real-vs-real floor, mean confidence and class-histogram entropy.

use std::fmt;

use candle_core::Device;
use ddpm_data::{Batches, ImageSet};

use crate::classifier::{Classifier, Embedding, FEATURE_DIM, NUM_CLASSES};
use crate::error::{EvalError, Result};
use crate::frechet::{GaussianStats, frechet_distance};

/// Images per forward pass while embedding.
const EMBED_BATCH: usize = 250;

/// The quality figures of one set of samples (see `docs/evaluation.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// Images compared on each side of every distance (samples used, and real digits per half).
    pub n: usize,
    /// Samples given (more than `n` when the real set could not supply two halves of that size).
    pub samples_given: usize,
    /// Fréchet distance between the features of `n` samples and `n` real digits (half A).
    pub frechet: f64,
    /// Fréchet distance between two disjoint halves (A, B) of `n` real digits each: what a
    /// perfect generator would score at this `n`.
    pub frechet_floor: f64,
    /// Mean over the samples of the largest softmax probability (1 = always certain).
    pub confidence: f64,
    /// The same for the real digits of half A.
    pub real_confidence: f64,
    /// Entropy (nats) of the histogram of predicted classes of the samples; ln 10 ≈ 2.303
    /// when every digit is equally frequent.
    pub class_entropy: f64,
    /// The same for the real digits of half A.
    pub real_class_entropy: f64,
    /// How many samples were predicted as each digit.
    pub class_counts: [usize; NUM_CLASSES],
}

impl fmt::Display for QualityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "n = {} (of {} samples given)",
            self.n, self.samples_given
        )?;
        writeln!(
            f,
            "Fréchet distance (classifier features): {:.4}   real-vs-real floor: {:.4}",
            self.frechet, self.frechet_floor
        )?;
        writeln!(
            f,
            "mean max-softmax confidence: {:.4}   (real: {:.4})",
            self.confidence, self.real_confidence
        )?;
        writeln!(
            f,
            "predicted-class entropy: {:.4} nats   (real: {:.4}, uniform: {:.4})",
            self.class_entropy,
            self.real_class_entropy,
            (NUM_CLASSES as f64).ln()
        )?;
        write!(f, "predicted-class counts 0-9: {:?}", self.class_counts)
    }
}

/// Evaluates MNIST samples against a fixed, shuffled pool of real digits whose features are
/// computed once (so a trainer can call [`MnistEvaluator::evaluate`] repeatedly).
#[derive(Debug, Clone)]
pub struct MnistEvaluator {
    classifier: Classifier,
    device: Device,
    real: Embedding,
}

impl MnistEvaluator {
    /// Embeds `real` (1 x 28 x 28 digits, e.g. the MNIST test split) in an order shuffled by
    /// `seed`. Needs at least 4 real digits.
    pub fn new(
        classifier: Classifier,
        real: &ImageSet,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if real.len() < 4 {
            return Err(EvalError::Invalid(format!(
                "{} real digits: need at least 4 for two halves",
                real.len()
            )));
        }
        let order = Batches::new(real.len(), 1, seed, 0, 1)?.permutation(0);
        let mut pixels = Vec::with_capacity(real.pixels().len());
        for &i in &order {
            pixels.extend_from_slice(real.image(i));
        }
        let shuffled = ImageSet::new(pixels, real.channels(), real.height(), real.width())?;
        let real = classifier.embed(&shuffled, EMBED_BATCH, device)?;
        Ok(Self {
            classifier,
            device: device.clone(),
            real,
        })
    }

    /// The largest `n` this pool supports: half the real digits.
    pub fn max_n(&self) -> usize {
        self.real.n / 2
    }

    /// The classifier in use.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Scores `samples` (1 x 28 x 28): uses the first `min(len, max_n)` of them, compared with
    /// as many real digits (half A); the floor compares half A with the next as many (half B).
    pub fn evaluate(&self, samples: &ImageSet) -> Result<QualityReport> {
        let n = samples.len().min(self.max_n());
        if n < 2 {
            return Err(EvalError::Invalid(format!(
                "{} samples: need at least 2 for a covariance",
                samples.len()
            )));
        }
        let mut used = samples.clone();
        used.truncate(n);
        let fake = self.classifier.embed(&used, EMBED_BATCH, &self.device)?;
        let dim = FEATURE_DIM;
        let half_a = &self.real.features[..n * dim];
        let half_b = &self.real.features[n * dim..2 * n * dim];
        let stats_a = GaussianStats::from_rows(half_a, dim)?;
        let stats_b = GaussianStats::from_rows(half_b, dim)?;
        let stats_fake = GaussianStats::from_rows(&fake.features, dim)?;
        let real_a = Embedding {
            features: half_a.to_vec(),
            probs: self.real.probs[..n * NUM_CLASSES].to_vec(),
            n,
        };
        let counts = class_counts(&fake);
        Ok(QualityReport {
            n,
            samples_given: samples.len(),
            frechet: frechet_distance(&stats_fake, &stats_a)?,
            frechet_floor: frechet_distance(&stats_b, &stats_a)?,
            confidence: mean_confidence(&fake),
            real_confidence: mean_confidence(&real_a),
            class_entropy: entropy(&counts),
            real_class_entropy: entropy(&class_counts(&real_a)),
            class_counts: counts,
        })
    }
}

/// Mean over images of the largest class probability.
pub fn mean_confidence(e: &Embedding) -> f64 {
    let total: f64 = (0..e.n)
        .map(|i| f64::from(e.prob_row(i).iter().copied().fold(0.0f32, f32::max)))
        .sum();
    total / e.n.max(1) as f64
}

/// How many images are predicted as each class.
pub fn class_counts(e: &Embedding) -> [usize; NUM_CLASSES] {
    let mut counts = [0usize; NUM_CLASSES];
    e.predictions()
        .iter()
        .for_each(|&p| counts[p as usize] += 1);
    counts
}

/// Entropy in nats of the histogram `counts` (0 for an empty histogram).
pub fn entropy(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}
