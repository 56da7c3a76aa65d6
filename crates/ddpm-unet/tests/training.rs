//! Behaviour every network must have: output shape = input shape, a training step reaches
//! every trainable tensor, and initialisation is a function of the seed.

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use ddpm_tests::max_abs_diff;
use ddpm_unet::{
    ImageShape, Model, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig,
    ResidualFrom,
};

/// Small versions of every network (and reference variant) for the given image.
fn small_configs(image: ImageShape) -> Vec<(&'static str, ModelConfig)> {
    let reference = |norm, residual_from, time_on_image| {
        ModelConfig::Reference(RefUNetConfig {
            image,
            n_steps: 50,
            channels: vec![4, 8, 8, 8],
            pe_dim: 8,
            norm,
            residual_from,
            time_on_image,
        })
    };
    let modern_levels = if image.height == 28 {
        vec![1, 2, 2]
    } else {
        vec![1, 2, 2, 2]
    };
    let attn = if image.height == 28 { 7 } else { 16 };
    vec![
        (
            "ref",
            reference(RefNorm::LayerNorm, ResidualFrom::Normalized, true),
        ),
        (
            "ref residual-from-input",
            reference(RefNorm::LayerNorm, ResidualFrom::Input, true),
        ),
        (
            "ref without time on the image",
            reference(RefNorm::LayerNorm, ResidualFrom::Normalized, false),
        ),
        (
            "ref-bn",
            reference(RefNorm::BatchNorm, ResidualFrom::Normalized, true),
        ),
        (
            "res",
            ModelConfig::Residual(ResUNetConfig {
                image,
                n_steps: 50,
                channels: vec![4, 8, 16, 32],
                pe_dim: 16,
                num_classes: 0,
            }),
        ),
        (
            "modern",
            ModelConfig::Modern(ModernUNetConfig {
                image,
                base_channels: 8,
                channel_mult: modern_levels,
                num_res_blocks: 1,
                attn_resolutions: vec![attn],
                attn_heads: 2,
                dropout: 0.0,
                norm_groups: 4,
                num_classes: 0,
            }),
        ),
    ]
}

fn inputs(image: ImageShape, batch: usize, seed: u64) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let [c, h, w] = image.dims();
    let x = Tensor::randn(0f32, 1.0, (batch, c, h, w), &dev).unwrap();
    // Deterministic, distinct timesteps below every test config's T.
    let t: Vec<u32> = (0..batch as u32)
        .map(|i| (7 * i + seed as u32) % 50)
        .collect();
    (x, Tensor::new(t.as_slice(), &dev).unwrap())
}

#[test]
fn output_shape_equals_input_shape() {
    for image in [ImageShape::MNIST, ImageShape::RGB64] {
        for (name, config) in small_configs(image) {
            let model = Model::new(&config, &Device::Cpu, 1).unwrap();
            let (x, t) = inputs(image, 2, 0);
            for train in [false, true] {
                let y = model.forward(&x, &t, train).unwrap();
                assert_eq!(y.dims(), x.dims(), "{name} at {image}, train={train}");
            }
        }
    }
}

/// One sign-SGD step (`w -= lr · sign(∂L/∂w)`) on the MSE to a fixed target; returns the loss.
/// The sign makes any non-zero gradient move its tensor: in these deliberately tiny nets the
/// gradient reaching the deepest layers can be ~1e-7, which a plain SGD step would round away.
/// A tensor the graph does not reach has no gradient (a panic here); an exactly-zero gradient
/// leaves it unchanged (caught by the caller).
fn sign_sgd_step(model: &Model, x: &Tensor, t: &Tensor, target: &Tensor, name: &str) -> f32 {
    let y = model.forward(x, t, true).unwrap();
    let loss = y.sub(target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    for (var_name, var) in model.trainable() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient reaches {var_name}"));
        let step = (g.sign().unwrap() * 1e-3).unwrap();
        var.set(&(var.as_tensor() - step).unwrap()).unwrap();
    }
    loss.to_scalar::<f32>().unwrap()
}

/// True for the one tensor family that legitimately never moves: with a 1-channel image, the
/// reference block normalises `x + pe_en0` over the whole (C,H,W) = (1,H,W), which removes the
/// per-sample constant `pe_en0`, and (residual from the normalised input) nothing else sees it.
fn cancelled_by_layer_norm(config: &ModelConfig, var_name: &str) -> bool {
    matches!(
        config,
        ModelConfig::Reference(RefUNetConfig {
            image: ImageShape { channels: 1, .. },
            norm: RefNorm::LayerNorm,
            residual_from: ResidualFrom::Normalized,
            ..
        })
    ) && var_name.starts_with("pe_linears_en.0.")
}

#[test]
fn sgd_steps_change_every_trainable_tensor() {
    for image in [ImageShape::MNIST, ImageShape::new(3, 28, 28)] {
        for (name, config) in small_configs(image) {
            let model = Model::new(&config, &Device::Cpu, 2).unwrap();
            let before = model.state_dict().unwrap();
            // Every fourth timestep of T = 50, so that no ReLU unit of the time MLPs (a single
            // hidden unit for C = 1) is dead for the whole batch, which would freeze it.
            let x = Tensor::randn(0f32, 1.0, (13, image.channels, 28, 28), &Device::Cpu).unwrap();
            let t = Tensor::arange_step(0u32, 50, 4, &Device::Cpu).unwrap();
            let target = Tensor::randn(0f32, 1.0, x.dims(), &Device::Cpu).unwrap();
            // Two steps: the modern UNet's zero-initialised output conv blocks every other
            // gradient on the first step (by design), so only the second reaches the rest. A
            // tensor passes if either step moved it (two sign steps may cancel exactly).
            let mut unchanged: BTreeSet<String> =
                model.trainable().into_iter().map(|(n, _)| n).collect();
            let mut previous = before.clone();
            for _ in 0..2 {
                let loss = sign_sgd_step(&model, &x, &t, &target, name);
                assert!(loss.is_finite(), "{name}: loss {loss}");
                let now = model.state_dict().unwrap();
                unchanged.retain(|n| max_abs_diff(&previous[n], &now[n]) == 0.0);
                previous = now;
            }
            unchanged.retain(|n| !cancelled_by_layer_norm(&config, n));
            assert!(
                unchanged.is_empty(),
                "{name} at {image}: unchanged {unchanged:?}"
            );
            let after = previous;
            if let ModelConfig::Reference(RefUNetConfig {
                norm: RefNorm::BatchNorm,
                ..
            }) = config
            {
                let key = "encoder.0.0.BatchNorm.running_mean";
                assert!(
                    max_abs_diff(&before[key], &after[key]) > 0.0,
                    "running stats not updated"
                );
                let tracked = after["encoder.0.0.BatchNorm.num_batches_tracked"]
                    .to_dtype(DType::I64)
                    .unwrap()
                    .to_scalar::<i64>()
                    .unwrap();
                assert_eq!(tracked, 2);
            }
        }
    }
}

#[test]
fn layer_norm_cancels_the_first_time_injection_for_one_channel() {
    let (x, t) = inputs(ImageShape::MNIST, 3, 0);
    for (name, config) in small_configs(ImageShape::MNIST).into_iter().take(2) {
        let model = Model::new(&config, &Device::Cpu, 8).unwrap();
        let y0 = model.forward(&x, &t, false).unwrap();
        let (_, bias) = model
            .trainable()
            .into_iter()
            .find(|(n, _)| n == "pe_linears_en.0.2.bias")
            .unwrap();
        bias.set(&(bias.as_tensor() + 5.0).unwrap()).unwrap();
        let y1 = model.forward(&x, &t, false).unwrap();
        let moved = max_abs_diff(&y0, &y1);
        if cancelled_by_layer_norm(&config, "pe_linears_en.0.2.bias") {
            assert!(moved < 1e-4, "{name}: output moved by {moved}");
        } else {
            assert!(moved > 1e-3, "{name}: output moved by only {moved}");
        }
    }
}

#[test]
fn initialisation_is_a_function_of_the_seed() {
    for (name, config) in small_configs(ImageShape::MNIST) {
        let a = Model::new(&config, &Device::Cpu, 5)
            .unwrap()
            .state_dict()
            .unwrap();
        let b = Model::new(&config, &Device::Cpu, 5)
            .unwrap()
            .state_dict()
            .unwrap();
        let c = Model::new(&config, &Device::Cpu, 6)
            .unwrap()
            .state_dict()
            .unwrap();
        let mut differs = false;
        for (key, ta) in &a {
            assert_eq!(
                max_abs_diff(ta, &b[key]),
                0.0,
                "{name}: {key} differs for one seed"
            );
            differs |= max_abs_diff(ta, &c[key]) > 0.0;
        }
        assert!(differs, "{name}: seeds 5 and 6 give the same weights");
    }
}

#[test]
fn eval_forward_is_deterministic_and_bn_uses_running_stats() {
    for (name, config) in small_configs(ImageShape::MNIST) {
        let model = Model::new(&config, &Device::Cpu, 9).unwrap();
        let (x, t) = inputs(ImageShape::MNIST, 3, 1);
        let y1 = model.forward(&x, &t, false).unwrap();
        let y2 = model.forward(&x, &t, false).unwrap();
        assert_eq!(max_abs_diff(&y1, &y2), 0.0, "{name}");
        if matches!(
            config,
            ModelConfig::Reference(RefUNetConfig {
                norm: RefNorm::BatchNorm,
                ..
            })
        ) {
            let train = model.forward(&x, &t, true).unwrap();
            assert!(
                max_abs_diff(&train, &y1) > 1e-3,
                "{name}: train mode must use batch stats"
            );
        }
    }
}

#[test]
fn modern_unet_starts_by_predicting_zero() {
    let config = small_configs(ImageShape::MNIST).pop().unwrap().1;
    let model = Model::new(&config, &Device::Cpu, 4).unwrap();
    let (x, t) = inputs(ImageShape::MNIST, 2, 0);
    let y = model.forward(&x, &t, false).unwrap();
    assert_eq!(
        y.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}
