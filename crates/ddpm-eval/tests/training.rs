//! Training the classifier: seeded, saved weights load back identically, bad files are named.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ddpm_data::embedded_mnist_with_labels;
use ddpm_eval::{Classifier, TrainOptions, train_classifier};

fn small_run(seed: u64) -> (ddpm_eval::Trained, Vec<f32>) {
    let (mut images, mut labels) = embedded_mnist_with_labels();
    images.truncate(512);
    labels.truncate(512);
    let opts = TrainOptions {
        epochs: 2,
        batch_size: 32,
        lr: 5e-3,
        seed,
    };
    let mut losses = Vec::new();
    let trained = train_classifier(&images, &labels, &opts, &Device::Cpu, |p| {
        losses.push(p.loss)
    })
    .unwrap();
    (trained, losses)
}

#[test]
fn training_is_seeded_learns_and_round_trips() {
    let (a, losses_a) = small_run(3);
    let (_, losses_b) = small_run(3);
    let (_, losses_c) = small_run(4);
    assert_eq!(losses_a.len(), 32);
    assert_eq!(losses_a, losses_b, "same seed, same losses");
    assert_ne!(losses_a, losses_c, "another seed");
    let first: f32 = losses_a[..4].iter().sum();
    let last: f32 = losses_a[28..].iter().sum();
    assert!(last < 0.5 * first, "loss did not fall: {losses_a:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    a.save(&path).unwrap();
    let loaded = Classifier::load(&path, &Device::Cpu).unwrap();
    let (images, _) = embedded_mnist_with_labels();
    let e1 = a.classifier.embed(&images, 100, &Device::Cpu).unwrap();
    let e2 = loaded.embed(&images, 100, &Device::Cpu).unwrap();
    assert_eq!(e1, e2);
}

#[test]
fn weight_files_with_missing_or_misshapen_tensors_are_named() {
    let mut tensors: HashMap<String, Tensor> = ddpm_eval::parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            (
                name.to_string(),
                Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    assert!(Classifier::from_tensors(tensors.clone(), "test", &Device::Cpu).is_ok());
    tensors.insert(
        "fc1.bias".into(),
        Tensor::zeros(63, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Classifier::from_tensors(tensors.clone(), "test", &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("fc1.bias") && err.to_string().contains("[63]"),
        "{err}"
    );
    tensors.remove("conv2.weight");
    let err = Classifier::from_tensors(tensors, "test", &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("missing tensor `conv2.weight`"),
        "{err}"
    );
    let err = Classifier::load(
        std::path::Path::new("/nonexistent/w.safetensors"),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/w.safetensors"),
        "{err}"
    );
}
