//! Saving and loading state dicts under PyTorch names, and the errors for bad ones.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ddpm_tests::max_abs_diff;
use ddpm_unet::{
    Denoiser, Model, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig,
    UnetError,
};

fn small_ref(norm: RefNorm) -> ModelConfig {
    ModelConfig::Reference(RefUNetConfig {
        n_steps: 100,
        channels: vec![4, 8],
        pe_dim: 6,
        norm,
        ..RefUNetConfig::default()
    })
}

fn small_configs() -> Vec<ModelConfig> {
    vec![
        small_ref(RefNorm::LayerNorm),
        small_ref(RefNorm::BatchNorm),
        ModelConfig::Residual(ResUNetConfig {
            channels: vec![4, 8],
            pe_dim: 8,
            ..ResUNetConfig::default()
        }),
        ModelConfig::Modern(ModernUNetConfig {
            base_channels: 4,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![14],
            norm_groups: 2,
            ..ModernUNetConfig::mnist()
        }),
    ]
}

fn input(batch: usize) -> (Tensor, Tensor) {
    let x = Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &Device::Cpu).unwrap();
    let t = Tensor::new(&[3u32, 42, 99][..batch], &Device::Cpu).unwrap();
    (x, t)
}

#[test]
fn save_then_load_reproduces_the_outputs() {
    let dir = std::env::temp_dir().join(format!("ddpm-unet-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, config) in small_configs().into_iter().enumerate() {
        let trained = Model::new(&config, &Device::Cpu, 1).unwrap();
        let (x, t) = input(3);
        // A train-mode pass moves BatchNorm running statistics away from their defaults.
        trained.forward(&x, &t, true).unwrap();
        // Move the modern UNet's zero output conv so the comparison is not 0 == 0.
        for (name, var) in trained.trainable() {
            if name.starts_with("conv_out") {
                var.set(&(var.as_tensor() + 0.1).unwrap()).unwrap();
            }
        }
        let path = dir.join(format!("model{i}.safetensors"));
        trained.save(&path).unwrap();
        let fresh = Model::new(&config, &Device::Cpu, 2).unwrap();
        let before = fresh.forward(&x, &t, false).unwrap();
        fresh.load(&path).unwrap();
        let want = trained.predict(&x, &t).unwrap();
        let got = fresh.predict(&x, &t).unwrap();
        assert_eq!(max_abs_diff(&want, &got), 0.0, "{config:?}");
        assert!(
            max_abs_diff(&want, &before) > 0.0,
            "{config:?}: seeds 1 and 2 agree"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_dict_has_buffers_under_pytorch_names() {
    let model = Model::new(&small_ref(RefNorm::BatchNorm), &Device::Cpu, 0).unwrap();
    let sd = model.state_dict().unwrap();
    assert_eq!(sd["pe.embedding.weight"].dims(), [100, 6]);
    assert_eq!(sd["encoder.0.0.BatchNorm.running_var"].dims(), [1]);
    assert_eq!(
        sd["encoder.0.0.BatchNorm.num_batches_tracked"].dtype(),
        DType::I64
    );
    assert_eq!(sd["bottom.3.weight"].dims(), [16, 8, 3, 3]);
    let trainable: Vec<String> = model.trainable().into_iter().map(|(n, _)| n).collect();
    assert!(
        trainable.windows(2).all(|w| w[0] < w[1]),
        "trainable() is sorted"
    );
    assert!(
        !trainable
            .iter()
            .any(|n| n.contains("running") || n.starts_with("pe."))
    );
}

fn state(config: &ModelConfig) -> (Model, HashMap<String, Tensor>) {
    let model = Model::new(config, &Device::Cpu, 0).unwrap();
    let sd = model.state_dict().unwrap().into_iter().collect();
    (model, sd)
}

#[test]
fn loading_names_the_first_bad_tensor() {
    let (model, good) = state(&small_ref(RefNorm::LayerNorm));

    let mut missing = good.clone();
    missing.remove("decoder.0.2.bias");
    missing.remove("encoder.1.2.gen.0.weight");
    match model.load_state_dict(&missing) {
        Err(UnetError::Missing { name, expected }) => {
            assert_eq!((name.as_str(), expected), ("decoder.0.2.bias", vec![1]));
        }
        other => panic!("expected Missing, got {other:?}"),
    }

    let mut unexpected = good.clone();
    unexpected.insert(
        "encoder.0.0.BatchNorm.weight".into(),
        Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = model.load_state_dict(&unexpected).unwrap_err();
    assert!(
        matches!(&err, UnetError::Unexpected { name, .. } if name == "encoder.0.0.BatchNorm.weight"),
        "{err}"
    );

    let mut mis_shaped = good.clone();
    mis_shaped.insert(
        "bottom.3.weight".into(),
        Tensor::zeros((8, 16, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = model.load_state_dict(&mis_shaped).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `bottom.3.weight` has shape [8, 16, 3, 3] but the network expects [16, 8, 3, 3]"
    );

    let mut wrong_table = good.clone();
    wrong_table.insert(
        "pe.embedding.weight".into(),
        Tensor::zeros((100, 6), DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        model.load_state_dict(&wrong_table),
        Err(UnetError::FrozenMismatch { .. })
    ));
}

#[test]
fn table_and_batch_counter_are_optional_on_load() {
    let (model, mut sd) = state(&small_ref(RefNorm::BatchNorm));
    sd.remove("pe.embedding.weight");
    sd.retain(|name, _| !name.ends_with("num_batches_tracked"));
    model.load_state_dict(&sd).unwrap();
}

#[test]
fn a_failed_load_changes_nothing() {
    let (model, good) = state(&small_ref(RefNorm::LayerNorm));
    let mut bad: HashMap<String, Tensor> = good
        .iter()
        .map(|(n, t)| (n.clone(), (t.to_dtype(DType::F32).unwrap() + 1.0).unwrap()))
        .collect();
    bad.remove("pe.embedding.weight");
    bad.insert(
        "surplus".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(model.load_state_dict(&bad).is_err());
    let now = model.state_dict().unwrap();
    for (name, t) in &good {
        assert_eq!(max_abs_diff(t, &now[name]), 0.0, "{name} changed");
    }
}

#[test]
fn bad_inputs_are_rejected_with_their_shapes() {
    let model = Model::new(&small_ref(RefNorm::LayerNorm), &Device::Cpu, 0).unwrap();
    let (x, t) = input(2);
    let err = model
        .forward(&x.narrow(2, 0, 27).unwrap(), &t, false)
        .unwrap_err();
    assert!(err.to_string().contains("[2, 1, 27, 28]"), "{err}");
    let err = model
        .forward(&x, &Tensor::new(&[1u32, 100], &Device::Cpu).unwrap(), false)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("timestep 100 is not an integer in 0..100"),
        "{err}"
    );
    let err = model
        .forward(
            &x,
            &Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("t must have shape (2) or (2, 1)"),
        "{err}"
    );
    let t_i64 = Tensor::new(&[[5i64], [7]], &Device::Cpu).unwrap();
    let t_u32 = Tensor::new(&[5u32, 7], &Device::Cpu).unwrap();
    let a = model.forward(&x, &t_i64, false).unwrap();
    let b = model.forward(&x, &t_u32, false).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}
