//! The diffusion crate against outputs of the PyTorch reference (tests/fixtures, copied from
//! ../shared/fixtures; see tests/fixtures/index.json).

use candle_core::{DType, Device, Tensor};
use ddpm_diffusion::{BetaKind, Prediction, Sampler, SamplerConfig, Schedule, Variance};
use ddpm_tests::{assert_close, fixture, load_tensors};

mod common;

fn f32_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn linear_schedules_match_the_reference() {
    for n in [1000usize, 100] {
        let fx = load_tensors(&fixture(&format!("schedule_n{n}.safetensors")));
        let s = Schedule::new(BetaKind::Linear, n, &Device::Cpu).unwrap();
        // The recipe reproduces torch.linspace and the sequential product bit for bit.
        assert_eq!(s.betas(), f32_vec(&fx["betas"]).as_slice(), "betas n={n}");
        assert_eq!(
            s.alphas(),
            f32_vec(&fx["alphas"]).as_slice(),
            "alphas n={n}"
        );
        assert_eq!(
            s.alpha_bars(),
            f32_vec(&fx["alpha_bars"]).as_slice(),
            "alpha_bars n={n}"
        );
        let post: Vec<f32> = (0..n).map(|t| s.posterior_variance(t)).collect();
        let diff = max_abs(&post, &f32_vec(&fx["posterior_variance"]));
        assert!(diff <= 1e-6, "posterior variance n={n}: {diff:e}");
    }
}

#[test]
fn forward_noising_matches_the_reference() {
    let fx = load_tensors(&fixture("forward_noising.safetensors"));
    for n in [1000usize, 100] {
        let s = Schedule::new(BetaKind::Linear, n, &Device::Cpu).unwrap();
        let x_t = s
            .add_noise(&fx["x0"], &fx[&format!("n{n}_t")], &fx["eps"])
            .unwrap();
        assert_close(&x_t, &fx[&format!("n{n}_x_t")], 1e-6, &format!("x_t n={n}"));
    }
}

#[test]
fn reverse_steps_match_the_reference() {
    let fx = load_tensors(&fixture("reverse_step.safetensors"));
    for n in [1000usize, 100] {
        let s = Schedule::new(BetaKind::Linear, n, &Device::Cpu).unwrap();
        for t in [n - 1, n / 2, 1, 0] {
            let key = |k: &str| fx[&format!("n{n}_t{t}_{k}")].clone();
            let mut z = common::Fixed(key("z"));
            for (variance, name) in [(Variance::Beta, "true"), (Variance::Posterior, "false")] {
                let config = SamplerConfig::Ddpm {
                    variance,
                    clip_x0: false,
                };
                let mut ddpm = config.build(&s, Prediction::Epsilon).unwrap();
                // DDPM visits T-1, …, 0: timestep t is evaluation T-1-t.
                let out = ddpm
                    .step(&key("eps"), n - 1 - t, &key("x_t"), &mut z)
                    .unwrap();
                let want = key(&format!("out_simple_var_{name}"));
                assert_close(&out, &want, 1e-5, &format!("n={n} t={t} simple_var={name}"));
            }
        }
    }
}
