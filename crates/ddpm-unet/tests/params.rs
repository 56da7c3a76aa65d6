//! Trainable-parameter counts of the three networks at 28x28 and 64x64.
//!
//! The expected figures were derived independently from the layer shapes (see
//! docs/networks.md); the reference ones are the PyTorch model's `sum(p.numel())`.

use candle_core::Device;
use ddpm_unet::{
    ImageShape, Model, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig,
};

fn count(config: ModelConfig) -> usize {
    Model::new(&config, &Device::Cpu, 0)
        .unwrap()
        .trainable_count()
}

fn reference(image: ImageShape, norm: RefNorm) -> ModelConfig {
    ModelConfig::Reference(RefUNetConfig {
        image,
        norm,
        ..RefUNetConfig::default()
    })
}

#[test]
fn reference_unet_counts_match_pytorch() {
    assert_eq!(
        count(reference(ImageShape::MNIST, RefNorm::LayerNorm)),
        17_695_352
    );
    assert_eq!(
        count(reference(ImageShape::RGB64, RefNorm::LayerNorm)),
        19_432_142
    );
}

#[test]
fn fixture_model_total_includes_the_frozen_table() {
    let model = Model::new(
        &ModelConfig::Reference(RefUNetConfig {
            channels: vec![10, 20, 40, 80],
            ..RefUNetConfig::default()
        }),
        &Device::Cpu,
        0,
    )
    .unwrap();
    let total: usize = model
        .state_dict()
        .unwrap()
        .values()
        .map(|t| t.elem_count())
        .sum();
    assert_eq!(total, 1_842_352);
    assert_eq!(model.trainable_count(), 1_842_352 - 1000 * 20);
}

#[test]
fn batch_norm_variant_counts() {
    // Each block's (C,H,W) LayerNorm affine becomes a (C) BatchNorm affine.
    assert_eq!(
        count(reference(ImageShape::MNIST, RefNorm::BatchNorm)),
        17_307_290
    );
    assert_eq!(
        count(reference(ImageShape::RGB64, RefNorm::BatchNorm)),
        17_308_052
    );
}

#[test]
fn no_time_bias_on_the_image_drops_the_first_time_mlp() {
    // pe_linears_en.0 for RGB: Linear(20 → 3) + Linear(3 → 3) = 63 + 12 parameters.
    let config = ModelConfig::Reference(RefUNetConfig {
        image: ImageShape::RGB64,
        time_on_image: false,
        ..RefUNetConfig::default()
    });
    assert_eq!(count(config), 19_432_142 - 75);
}

#[test]
fn residual_unet_counts() {
    assert_eq!(
        count(ModelConfig::Residual(ResUNetConfig::default())),
        543_950
    );
    let rgb = ResUNetConfig {
        image: ImageShape::RGB64,
        ..ResUNetConfig::default()
    };
    assert_eq!(count(ModelConfig::Residual(rgb)), 1_069_328);
}

#[test]
fn modern_unet_counts() {
    assert_eq!(
        count(ModelConfig::Modern(ModernUNetConfig::mnist())),
        1_623_169
    );
    assert_eq!(
        count(ModelConfig::Modern(ModernUNetConfig::default())),
        17_217_923
    );
}
