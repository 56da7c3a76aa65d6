//! Parity with the PyTorch reference `MyUNet_w_pe` on the committed fixture.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ddpm_tests::{assert_close, fixture, load_tensors, max_abs_diff, shared_file};
use ddpm_unet::{ImageShape, Model, ModelConfig, RefNorm, RefUNetConfig, ResidualFrom};

/// The fixture model: `MyUNet_w_pe(1000, [10, 20, 40, 80], 20)` on 1x28x28.
fn fixture_config(residual_from: ResidualFrom) -> ModelConfig {
    ModelConfig::Reference(RefUNetConfig {
        image: ImageShape::MNIST,
        n_steps: 1000,
        channels: vec![10, 20, 40, 80],
        pe_dim: 20,
        norm: RefNorm::LayerNorm,
        residual_from,
        time_on_image: true,
    })
}

/// The fixture model with the PyTorch weights loaded, and the input/output file.
fn load(residual_from: ResidualFrom) -> Option<(Model, HashMap<String, Tensor>)> {
    let weights = shared_file("fixtures/unet_small_1x28x28_weights.safetensors")?;
    let model = Model::new(&fixture_config(residual_from), &Device::Cpu, 0).unwrap();
    model.load(&weights).unwrap();
    Some((
        model,
        load_tensors(&fixture("unet_small_1x28x28_io.safetensors")),
    ))
}

#[test]
fn reference_unet_matches_pytorch_with_every_intermediate() {
    let Some((model, io)) = load(ResidualFrom::Normalized) else {
        return;
    };
    let mut traced = Vec::new();
    let out = model
        .forward_traced(&io["x"], &io["t"], false, &mut |name, t| {
            traced.push((name.to_string(), t.clone()))
        })
        .unwrap();
    assert_eq!(
        traced.len(),
        19,
        "pe, 4x(pe_en, enc), pe_bottom, bottom, 4x(pe_de, dec)"
    );
    for (name, ours) in &traced {
        let theirs = io[&format!("trace.{name}")].reshape(ours.dims()).unwrap();
        assert_close(ours, &theirs, 1e-4, &format!("trace.{name}"));
    }
    assert_close(&out, &io["out"], 1e-4, "out");
    eprintln!(
        "max abs diff vs PyTorch out: {:e}",
        max_abs_diff(&out, &io["out"])
    );
}

#[test]
fn residual_from_input_variant_matches_pytorch() {
    let Some((model, io)) = load(ResidualFrom::Input) else {
        return;
    };
    let out = model.forward(&io["x"], &io["t"], false).unwrap();
    assert_close(&out, &io["out_residual_input"], 1e-4, "out_residual_input");
    // The two variants really differ, so this test could not pass with the default block.
    assert!(max_abs_diff(&out, &io["out"]) > 0.1);
}

#[test]
fn t_of_shape_b_and_u32_gives_the_same_output() {
    let Some((model, io)) = load(ResidualFrom::Normalized) else {
        return;
    };
    let t = io["t"]
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let out = model.forward(&io["x"], &t, false).unwrap();
    assert_close(&out, &io["out"], 1e-4, "out with t as (B) u32");
}

#[test]
fn frozen_table_matches_the_pytorch_table() {
    let Some(weights) = shared_file("fixtures/unet_small_1x28x28_weights.safetensors") else {
        return;
    };
    let theirs = load_tensors(&weights)
        .remove("pe.embedding.weight")
        .unwrap();
    let ours = ddpm_unet::sinusoidal_table(1000, 20, &Device::Cpu).unwrap();
    assert_close(&ours, &theirs, 1e-5, "pe.embedding.weight");
}
