//! End to end against the PyTorch reference: the reference UNet with the fixture's weights,
//! driven through our 100-step DDPM sampling loop with the reference's recorded noise, must
//! land on the reference's samples.

use candle_core::{Device, Shape, Tensor};
use ddpm_diffusion::{
    BetaKind, NoiseSource, Prediction, SamplerConfig, Schedule, Variance, sample,
};
use ddpm_tests::{fixture, load_tensors, max_abs_diff, shared_file};
use ddpm_unet::{ImageShape, Model, ModelConfig, RefUNetConfig};

/// Replays the reference's draws: `z[t]` is the noise of the step at timestep t.
struct Recorded {
    z: Tensor,
    next_t: usize,
}

impl NoiseSource for Recorded {
    fn randn(&mut self, shape: &Shape, _: &Device) -> ddpm_diffusion::Result<Tensor> {
        let z = self.z.get(self.next_t)?;
        assert_eq!(z.shape(), shape);
        self.next_t -= 1;
        Ok(z)
    }
}

#[test]
fn the_full_reverse_chain_matches_the_reference() {
    let Some(weights) = shared_file("fixtures/unet_small_1x28x28_weights.safetensors") else {
        return;
    };
    let fx = load_tensors(&fixture("sampling_small_n100.safetensors"));
    let config = ModelConfig::Reference(RefUNetConfig {
        image: ImageShape::MNIST,
        n_steps: 100,
        channels: vec![10, 20, 40, 80],
        pe_dim: 20,
        ..RefUNetConfig::default()
    });
    let model = Model::new(&config, &Device::Cpu, 0).unwrap();
    let mut tensors = load_tensors(&weights);
    // The fixture rebuilt the time table with 100 rows (the first 100 of the 1000-row one).
    tensors.remove("pe.embedding.weight");
    model.load_state_dict(&tensors).unwrap();
    let schedule = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
    for (variance, name) in [(Variance::Beta, "true"), (Variance::Posterior, "false")] {
        let sampler = SamplerConfig::Ddpm {
            variance,
            clip_x0: false,
        };
        let mut noise = Recorded {
            z: fx["z"].clone(),
            next_t: 99,
        };
        let mut at_49 = None;
        let x0 = sample(
            sampler.build(&schedule, Prediction::Epsilon).unwrap(),
            &model,
            fx["x_T"].clone(),
            &mut noise,
            |info| {
                // The fixture records x_49: the output of the step at t = 50.
                if info.t == 50.0 {
                    at_49 = Some(info.x.clone());
                }
            },
        )
        .unwrap();
        let want = &fx[&format!("simple_var_{name}_x0")];
        let want_49 = &fx[&format!("simple_var_{name}_x_at_t49")];
        // The chain amplifies float32 rounding (|x0| reaches ~11.5 with these untrained
        // weights; PyTorch's own f32-vs-f64 gap is 1e-5): compare relative to the range.
        let scale = want
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let scale = scale.to_scalar::<f32>().unwrap() as f64;
        let diff = max_abs_diff(&x0, want);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "simple_var={name}: x0 differs by {diff:e} (scale {scale})"
        );
        let diff_49 = max_abs_diff(at_49.as_ref().unwrap(), want_49);
        eprintln!(
            "simple_var={name}: max |Δx_49| = {diff_49:e}, max |Δx0| = {diff:e} (|x0| ≤ {scale})"
        );
        assert!(
            diff_49 <= 1e-4,
            "simple_var={name}: x at t=49 differs by {diff_49:e}"
        );
    }
}
