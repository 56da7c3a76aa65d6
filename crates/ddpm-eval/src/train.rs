//! Training the MNIST classifier: seeded init, seeded shuffles, Adam, cosine learning rate.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use ddpm_data::{Batches, ImageSet, batch_tensor};
use ddpm_nn::SeededInit;

use crate::classifier::{Classifier, check_mnist_shape};
use crate::error::{EvalError, Result};

/// Hyper-parameters of [`train_classifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Peak learning rate of Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay); it follows a
    /// half cosine from this value down to zero over all steps.
    pub lr: f64,
    /// Seed of the initialisation and of the per-epoch shuffles.
    pub seed: u64,
}

impl Default for TrainOptions {
    /// The committed classifier's setting: 2 epochs, batch 64, lr 2e-3, seed 0.
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 64,
            lr: 2e-3,
            seed: 0,
        }
    }
}

/// Progress of training, passed to the caller's callback after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    /// Epoch (from 0).
    pub epoch: usize,
    /// Step within the epoch (from 0).
    pub step: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Mean cross-entropy of this step's batch.
    pub loss: f32,
    /// Learning rate used by this step.
    pub lr: f64,
}

/// A trained classifier with the variables that hold its weights.
pub struct Trained {
    /// The network (its tensors are the variables of `varmap`).
    pub classifier: Classifier,
    /// The trained variables, named as in [`crate::parameter_shapes`].
    pub varmap: VarMap,
}

impl Trained {
    /// Writes the weights as f32 safetensors, through a temporary file renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let io = |source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension("partial");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Trains a fresh [`Classifier`] on `images` (1 x 28 x 28) with `labels` (0-9), calling
/// `progress` after every step. Deterministic for a given seed and thread count.
pub fn train_classifier(
    images: &ImageSet,
    labels: &[u8],
    opts: &TrainOptions,
    device: &Device,
    mut progress: impl FnMut(&TrainProgress),
) -> Result<Trained> {
    check_mnist_shape(images)?;
    if labels.len() != images.len() {
        return Err(EvalError::Invalid(format!(
            "{} labels for {} training images",
            labels.len(),
            images.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
        return Err(EvalError::Invalid(format!("label {bad} is not a digit")));
    }
    if opts.epochs == 0 || opts.lr.is_nan() || opts.lr <= 0.0 {
        return Err(EvalError::Invalid(format!(
            "need epochs >= 1 and lr > 0, got {} and {}",
            opts.epochs, opts.lr
        )));
    }
    let varmap = VarMap::new();
    let init = SeededInit::new(&varmap, opts.seed);
    let classifier = Classifier::new(init.var_builder(DType::F32, device))?;
    let params = ParamsAdamW {
        lr: opts.lr,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut adam = AdamW::new(varmap.all_vars(), params)?;
    let plan = Batches::new(images.len(), opts.batch_size, opts.seed, 0, 1)?;
    let steps_per_epoch = plan.batches_per_epoch();
    let total = (steps_per_epoch * opts.epochs) as f64;
    for epoch in 0..opts.epochs {
        for (step, (idx, flips)) in plan.epoch(epoch as u64).iter().enumerate() {
            let done = (epoch * steps_per_epoch + step) as f64;
            let lr = opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * done / total).cos());
            adam.set_learning_rate(lr);
            let x = batch_tensor(images, idx, flips, device)?;
            let y: Vec<u32> = idx.iter().map(|&i| u32::from(labels[i])).collect();
            let y = Tensor::from_vec(y, idx.len(), device)?;
            let loss = candle_nn::loss::cross_entropy(&classifier.forward_logits(&x)?, &y)?;
            adam.backward_step(&loss)?;
            progress(&TrainProgress {
                epoch,
                step,
                steps_per_epoch,
                loss: loss.to_scalar::<f32>()?,
                lr,
            });
        }
    }
    Ok(Trained { classifier, varmap })
}
