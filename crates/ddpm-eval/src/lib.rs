//! Sample-quality evaluation for the DDPM toolkit.
//!
//! - [`Classifier`]: a small MNIST CNN (2 conv + 2 linear layers, 64 penultimate features),
//!   trained by [`train_classifier`] (`cargo xtask train-classifier`); the committed weights
//!   load with [`Classifier::committed`].
//! - [`MnistEvaluator`]: embeds a pool of real digits once, then scores samples with a
//!   [`QualityReport`]: Fréchet distance of the features against real digits, the same
//!   distance between two halves of real data (the floor), mean max-softmax confidence and
//!   the entropy of the predicted-class histogram.
//! - [`frechet_distance`] of [`GaussianStats`], with the symmetric eigensolver
//!   [`symmetric_eigen`] and [`sqrt_psd`] (f64, Jacobi).
//! - [`load_images`] / [`GridGeometry`]: samples from a grid picture or a folder.
//! - [`ColourReport`]: per-channel mean and std of RGB samples against the training data.
//!
//! See `docs/evaluation.md` for what each number means.

mod classifier;
mod colour;
mod error;
mod frechet;
mod images;
mod quality;
mod train;

pub use classifier::{
    COMMITTED_WEIGHTS, Classifier, Embedding, FEATURE_DIM, IMAGE_SIDE, NUM_CLASSES,
    check_mnist_shape, parameter_shapes,
};
pub use colour::{ChannelStats, ColourReport, channel_stats};
pub use error::{EvalError, Result};
pub use frechet::{GaussianStats, frechet_distance, sqrt_psd, symmetric_eigen};
pub use images::{GridGeometry, load_images};
pub use quality::{MnistEvaluator, QualityReport, class_counts, entropy, mean_confidence};
pub use train::{TrainOptions, TrainProgress, Trained, train_classifier};
