//! The small MNIST CNN whose penultimate features the evaluator compares.
//!
//! Architecture (input 1x28x28 in [-1, 1], the DDPM's pixel scale):
//! `conv1` 3x3 1->16 (pad 1) -> ReLU -> max-pool 2 -> `conv2` 3x3 16->32 (pad 1) -> ReLU ->
//! max-pool 2 -> flatten (32x7x7 = 1568) -> `fc1` 1568->64 -> ReLU (the 64 features) ->
//! `fc2` 64->10 (logits). 105,866 parameters, 414 KiB as f32 safetensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use ddpm_data::{ImageSet, batch_tensor};
use ddpm_nn::{Conv2d, Linear, max_pool2d};

use crate::error::{EvalError, Result};

/// Dimension of the penultimate features (input of the last layer).
pub const FEATURE_DIM: usize = 64;
/// Number of classes (digits 0-9).
pub const NUM_CLASSES: usize = 10;
/// Side of the square grayscale input images.
pub const IMAGE_SIDE: usize = 28;
/// Path of the committed weights, relative to the workspace root.
pub const COMMITTED_WEIGHTS: &str = "assets/mnist-classifier/mnist-cnn.safetensors";

static COMMITTED_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/mnist-classifier/mnist-cnn.safetensors"
));

/// The names and shapes of every parameter, as stored in the safetensors file.
pub fn parameter_shapes() -> Vec<(&'static str, Vec<usize>)> {
    let flat = 32 * 7 * 7;
    vec![
        ("conv1.weight", vec![16, 1, 3, 3]),
        ("conv1.bias", vec![16]),
        ("conv2.weight", vec![32, 16, 3, 3]),
        ("conv2.bias", vec![32]),
        ("fc1.weight", vec![FEATURE_DIM, flat]),
        ("fc1.bias", vec![FEATURE_DIM]),
        ("fc2.weight", vec![NUM_CLASSES, FEATURE_DIM]),
        ("fc2.bias", vec![NUM_CLASSES]),
    ]
}

/// The MNIST classifier (see the module docs for the architecture).
#[derive(Debug, Clone)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Classifier {
    /// Builds the network from `vb` (parameters `conv1`, `conv2`, `fc1`, `fc2`, each with
    /// `weight` and `bias`; PyTorch default init when `vb` creates them).
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(vb.pp("conv1"), 1, 16, 3, 1, 1)?,
            conv2: Conv2d::new(vb.pp("conv2"), 16, 32, 3, 1, 1)?,
            fc1: Linear::new(vb.pp("fc1"), 32 * 7 * 7, FEATURE_DIM)?,
            fc2: Linear::new(vb.pp("fc2"), FEATURE_DIM, NUM_CLASSES)?,
        })
    }

    /// Loads weights from a safetensors file (f32, the names of [`parameter_shapes`]).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| EvalError::Weights {
                source_name: path.display().to_string(),
                problem: e.to_string(),
            })?;
        Self::from_tensors(tensors, &path.display().to_string(), device)
    }

    /// The weights committed under [`COMMITTED_WEIGHTS`], compiled into the library (see
    /// `assets/mnist-classifier/PROVENANCE.json` for how they were trained and their accuracy).
    pub fn committed(device: &Device) -> Result<Self> {
        let name = "committed weights";
        let tensors =
            candle_core::safetensors::load_buffer(COMMITTED_BYTES, device).map_err(|e| {
                EvalError::Weights {
                    source_name: name.into(),
                    problem: e.to_string(),
                }
            })?;
        Self::from_tensors(tensors, name, device)
    }

    /// Builds the network from named tensors, checking every name and shape first.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        source_name: &str,
        device: &Device,
    ) -> Result<Self> {
        let bad = |problem: String| EvalError::Weights {
            source_name: source_name.to_string(),
            problem,
        };
        for (name, shape) in parameter_shapes() {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
        }
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Ok(Self::new(vb)?)
    }

    /// Features (B, [`FEATURE_DIM`]) and logits (B, [`NUM_CLASSES`]) of `x` (B, 1, 28, 28)
    /// in [-1, 1].
    pub fn features_and_logits(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let h = max_pool2d(&self.conv1.forward(x)?.relu()?, 2)?;
        let h = max_pool2d(&self.conv2.forward(&h)?.relu()?, 2)?;
        let features = self.fc1.forward(&h.flatten_from(1)?)?.relu()?;
        let logits = self.fc2.forward(&features)?;
        Ok((features, logits))
    }

    /// Logits (B, [`NUM_CLASSES`]) of `x` (B, 1, 28, 28) in [-1, 1].
    pub fn forward_logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.features_and_logits(x)?.1)
    }

    /// Runs the network over every image of `images` (1 x 28 x 28 u8 pixels), `batch_size`
    /// at a time, keeping the features and softmax probabilities.
    pub fn embed(
        &self,
        images: &ImageSet,
        batch_size: usize,
        device: &Device,
    ) -> Result<Embedding> {
        check_mnist_shape(images)?;
        if batch_size == 0 {
            return Err(EvalError::Invalid("batch size must be positive".into()));
        }
        let n = images.len();
        let mut features = Vec::with_capacity(n * FEATURE_DIM);
        let mut probs = Vec::with_capacity(n * NUM_CLASSES);
        for start in (0..n).step_by(batch_size) {
            let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
            let x = batch_tensor(images, &idx, &vec![false; idx.len()], device)?;
            let (f, logits) = self.features_and_logits(&x)?;
            let p = candle_nn::ops::softmax(&logits, D::Minus1)?;
            features.extend(f.flatten_all()?.to_vec1::<f32>()?);
            probs.extend(p.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Embedding { features, probs, n })
    }
}

impl Module for Classifier {
    /// Logits (B, 10) of `x` (B, 1, 28, 28) in [-1, 1].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_logits(x)
    }
}

/// Checks that `images` are 1 x 28 x 28, the classifier's input.
pub fn check_mnist_shape(images: &ImageSet) -> Result<()> {
    let shape = (images.channels(), images.height(), images.width());
    if shape != (1, IMAGE_SIDE, IMAGE_SIDE) {
        return Err(EvalError::Invalid(format!(
            "the MNIST classifier needs 1 x 28 x 28 images, got {} x {} x {}",
            shape.0, shape.1, shape.2
        )));
    }
    Ok(())
}

/// The classifier's view of a set of images: penultimate features and class probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Features, n x [`FEATURE_DIM`] row-major.
    pub features: Vec<f32>,
    /// Softmax probabilities, n x [`NUM_CLASSES`] row-major.
    pub probs: Vec<f32>,
    /// Number of images.
    pub n: usize,
}

impl Embedding {
    /// The features of image `i`.
    pub fn feature_row(&self, i: usize) -> &[f32] {
        &self.features[i * FEATURE_DIM..(i + 1) * FEATURE_DIM]
    }

    /// The class probabilities of image `i`.
    pub fn prob_row(&self, i: usize) -> &[f32] {
        &self.probs[i * NUM_CLASSES..(i + 1) * NUM_CLASSES]
    }

    /// The predicted class (argmax of the probabilities; the first on ties) of every image.
    pub fn predictions(&self) -> Vec<u8> {
        (0..self.n)
            .map(|i| {
                let row = self.prob_row(i);
                let mut best = 0;
                for (c, &p) in row.iter().enumerate() {
                    if p > row[best] {
                        best = c;
                    }
                }
                best as u8
            })
            .collect()
    }

    /// The fraction of images whose prediction equals `labels` (same length as the set).
    pub fn accuracy(&self, labels: &[u8]) -> Result<f64> {
        if labels.len() != self.n || self.n == 0 {
            return Err(EvalError::Invalid(format!(
                "{} labels for {} images",
                labels.len(),
                self.n
            )));
        }
        let hits = self
            .predictions()
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(hits as f64 / self.n as f64)
    }
}
