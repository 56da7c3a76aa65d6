//! Class-conditional networks: the class embedding reaches the output and trains, the "no
//! class" label is the unconditional output, and bad labels are refused.

use candle_core::{Device, Tensor};
use ddpm_tests::max_abs_diff;
use ddpm_unet::{Denoiser, ImageShape, Model, ModelConfig, ModernUNetConfig, ResUNetConfig};

fn conditional_configs(classes: usize) -> Vec<(&'static str, ModelConfig)> {
    let image = ImageShape::MNIST;
    vec![
        (
            "res",
            ModelConfig::Residual(ResUNetConfig {
                image,
                n_steps: 50,
                channels: vec![4, 8, 16],
                pe_dim: 16,
                num_classes: classes,
            }),
        ),
        (
            "modern",
            ModelConfig::Modern(ModernUNetConfig {
                image,
                base_channels: 8,
                channel_mult: vec![1, 2],
                num_res_blocks: 1,
                attn_resolutions: vec![14],
                attn_heads: 1,
                dropout: 0.0,
                norm_groups: 2,
                num_classes: classes,
            }),
        ),
    ]
}

fn inputs() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &dev).unwrap();
    (x, Tensor::new(&[3u32, 20, 41], &dev).unwrap())
}

#[test]
fn labels_change_the_output_and_the_no_class_label_is_the_unconditional_output() {
    for (name, config) in conditional_configs(4) {
        let model = Model::new(&config, &Device::Cpu, 5).unwrap();
        assert_eq!(model.num_classes(), 4, "{name}");
        assert!(
            model
                .trainable()
                .iter()
                .any(|(n, v)| n == "class_embed.weight"
                    && v.dims() == [5, if name == "res" { 16 } else { 32 }]),
            "{name}: a row per class and one for no class"
        );
        // The modern UNet's zero-initialised output conv makes every output 0 until it trains:
        // give it weights so that the labels can show.
        for (n, v) in model.trainable() {
            if n.starts_with("conv_out") {
                v.set(&Tensor::randn(0f32, 0.1, v.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let (x, t) = inputs();
        let label = |l: [u32; 3]| Tensor::new(&l, &Device::Cpu).unwrap();
        let a = model
            .forward_classes(&x, &t, &label([0, 1, 2]), false)
            .unwrap();
        let b = model
            .forward_classes(&x, &t, &label([3, 1, 2]), false)
            .unwrap();
        assert!(
            max_abs_diff(&a.get(0).unwrap(), &b.get(0).unwrap()) > 1e-4,
            "{name}"
        );
        assert_eq!(
            max_abs_diff(&a.get(1).unwrap(), &b.get(1).unwrap()),
            0.0,
            "{name}"
        );
        let none = model
            .forward_classes(&x, &t, &label([4, 4, 4]), false)
            .unwrap();
        let unconditional = model.forward(&x, &t, false).unwrap();
        assert_eq!(max_abs_diff(&none, &unconditional), 0.0, "{name}");
        assert_eq!(
            max_abs_diff(
                &model
                    .predict(&x, &t.to_dtype(candle_core::DType::F32).unwrap())
                    .unwrap(),
                &none
            ),
            0.0,
            "{name}: the Denoiser's plain prediction is the unconditional one"
        );
        let guided = model
            .predict_classes(
                &x,
                &t.to_dtype(candle_core::DType::F32).unwrap(),
                &label([0, 1, 2]),
            )
            .unwrap();
        assert_eq!(max_abs_diff(&guided, &a), 0.0, "{name}");
        let err = model
            .forward_classes(&x, &t, &label([0, 5, 1]), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class label 5 is out of range"),
            "{name}: {err}"
        );
        let short = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        assert!(
            model.forward_classes(&x, &t, &short, false).is_err(),
            "{name}"
        );
    }
}

#[test]
fn the_class_embedding_trains_only_on_the_rows_it_was_given() {
    for (name, config) in conditional_configs(4) {
        let model = Model::new(&config, &Device::Cpu, 6).unwrap();
        let (x, t) = inputs();
        let labels = Tensor::new(&[1u32, 4, 1], &Device::Cpu).unwrap();
        let y = model.forward_classes(&x, &t, &labels, true).unwrap();
        // A loss the zero-initialised output conv passes gradient through to its input.
        let target = Tensor::randn(0f32, 1.0, y.dims(), &Device::Cpu).unwrap();
        let loss = (y - target).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let table = model
            .trainable()
            .into_iter()
            .find(|(n, _)| n == "class_embed.weight")
            .unwrap()
            .1;
        // Row r's gradient magnitude (the modern UNet's output conv is zero at init, so only
        // the residual UNet's is non-zero after one backward pass; both have one).
        let g = grads
            .get(table.as_tensor())
            .expect("a gradient reaches the class embedding");
        let row_norm = |r: usize| -> f32 {
            g.get(r)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        for unused in [0, 2, 3] {
            assert_eq!(row_norm(unused), 0.0, "{name}: row {unused} was not used");
        }
        if name == "res" {
            assert!(row_norm(1) > 0.0 && row_norm(4) > 0.0, "{name}");
        }
    }
}

#[test]
fn unconditional_networks_refuse_labels() {
    let mut configs = conditional_configs(0);
    let (name, config) = configs.remove(1);
    let model = Model::new(&config, &Device::Cpu, 1).unwrap();
    assert_eq!(model.num_classes(), 0);
    assert!(
        !model
            .trainable()
            .iter()
            .any(|(n, _)| n.starts_with("class_embed"))
    );
    let (x, t) = inputs();
    let err = model
        .forward_classes(
            &x,
            &t,
            &Tensor::new(&[0u32, 0, 0], &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("not class-conditional"), "{name}: {err}");
    // And the JSON of an unconditional network is what it was before conditioning existed.
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains("num_classes"), "{json}");
}
