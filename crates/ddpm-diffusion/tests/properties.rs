//! Properties every schedule and sampler must have, over many T and all schedule kinds.

use candle_core::{Device, Tensor};
use ddpm_diffusion::{
    BetaKind, NoiseRng, Prediction, Sampler, SamplerConfig, Schedule, Variance, sample,
};
use ddpm_tests::{assert_close, max_abs_diff};

mod common;

const KINDS: [BetaKind; 3] = [BetaKind::Linear, BetaKind::LinearScaled, BetaKind::Cosine];

fn schedules() -> impl Iterator<Item = Schedule> {
    KINDS.into_iter().flat_map(|kind| {
        [50usize, 100, 257, 1000, 4000]
            .into_iter()
            .map(move |n| Schedule::new(kind, n, &Device::Cpu).unwrap())
    })
}

#[test]
fn alpha_bars_strictly_decrease_inside_the_unit_interval() {
    for s in schedules() {
        let ab = s.alpha_bars();
        assert!(
            ab.iter().all(|a| *a > 0.0 && *a < 1.0),
            "{:?} T={}",
            s.kind(),
            s.n_steps()
        );
        assert!(
            ab.windows(2).all(|w| w[1] < w[0]),
            "{:?} T={}",
            s.kind(),
            s.n_steps()
        );
    }
}

#[test]
fn posterior_variance_never_exceeds_beta() {
    for s in schedules() {
        for t in 0..s.n_steps() {
            assert!(
                s.posterior_variance(t) <= s.betas()[t],
                "{:?} T={} t={t}",
                s.kind(),
                s.n_steps()
            );
        }
    }
}

#[test]
fn scaled_and_cosine_schedules_reach_noise_for_short_chains() {
    // The reference's unscaled linear schedule with T = 100 keeps ~36% of the signal; the
    // T-rescaled and cosine schedules end near pure noise for any T.
    let linear = Schedule::new(BetaKind::Linear, 100, &Device::Cpu).unwrap();
    assert!(*linear.alpha_bars().last().unwrap() > 0.3);
    for kind in [BetaKind::LinearScaled, BetaKind::Cosine] {
        let s = Schedule::new(kind, 100, &Device::Cpu).unwrap();
        assert!(*s.alpha_bars().last().unwrap() < 1e-3, "{kind:?}");
    }
}

#[test]
fn invalid_settings_are_errors() {
    assert!(Schedule::new(BetaKind::LinearScaled, 10, &Device::Cpu).is_err());
    let s = Schedule::new(BetaKind::Linear, 10, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut ddpm = SamplerConfig::default()
        .build(&s, Prediction::Epsilon)
        .unwrap();
    assert!(ddpm.step(&x, 10, &x, &mut NoiseRng::new(0)).is_err());
    // No step past the last evaluation.
    let ddim = SamplerConfig::ddim(4, 0.0, false);
    let mut sampler = ddim.build(&s, Prediction::Epsilon).unwrap();
    assert_eq!(sampler.timesteps(), [9.0, 6.0, 3.0, 0.0]);
    assert!(sampler.step(&x, 5, &x, &mut NoiseRng::new(0)).is_err());
    let t = Tensor::new(&[10u32], &Device::Cpu).unwrap();
    assert!(s.add_noise(&x, &t, &x).is_err());
    for steps in [0, 11] {
        let ddim = SamplerConfig::ddim(steps, 0.0, false);
        assert!(ddim.timesteps(10).is_err());
    }
    let ddim = SamplerConfig::ddim(5, 1.5, false);
    assert!(ddim.timesteps(10).is_err());
}

#[test]
fn ddim_timesteps_span_the_chain() {
    let ts = SamplerConfig::ddim(5, 0.0, false).timesteps(1000).unwrap();
    assert_eq!(ts, vec![999.0, 749.0, 500.0, 250.0, 0.0]);
    let all = SamplerConfig::ddim(1000, 0.0, false)
        .timesteps(1000)
        .unwrap();
    assert_eq!(all, (0..1000).rev().map(f64::from).collect::<Vec<_>>());
}

/// A smooth stand-in for a network: ε̂ depends on x_t and t.
fn toy_eps(x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let t = t
        .to_dtype(candle_core::DType::F32)?
        .reshape((x.dim(0)?, 1, 1, 1))?;
    x.affine(0.3, 0.0)?.tanh()?.broadcast_add(&(t / 1000.0)?)
}

/// A whole chain of `config` from `x` with step noise seeded by `seed`.
fn run(s: &Schedule, config: &SamplerConfig, x: Tensor, seed: u64) -> Tensor {
    let sampler = config.build(s, Prediction::Epsilon).unwrap();
    sample(sampler, &toy_eps, x, &mut NoiseRng::new(seed), |_| {}).unwrap()
}

fn x_t(seed: u64) -> Tensor {
    Tensor::from_vec(
        NoiseRng::new(seed).normal_vec(96),
        (2, 3, 4, 4),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn ddim_with_every_step_and_eta_one_is_ddpm_with_posterior_variance() {
    let eps = x_t(7).tanh().unwrap();
    let mut z = common::Fixed(x_t(8));
    for kind in KINDS {
        let s = Schedule::new(kind, 100, &Device::Cpu).unwrap();
        // The toy ε-predictor does not contract, so over whole chains per-step f32 rounding
        // grows like 1/sqrt(ᾱ_T): the chains' tolerance scales with it.
        let growth = 1.0 / (*s.alpha_bars().last().unwrap() as f64).sqrt();
        for clip_x0 in [false, true] {
            let ddpm = SamplerConfig::Ddpm {
                variance: Variance::Posterior,
                clip_x0,
            };
            let ddim = SamplerConfig::ddim(100, 1.0, clip_x0);
            // Step by step, from the same x_t, ε̂ and noise.
            let mut ddpm_sampler = ddpm.build(&s, Prediction::Epsilon).unwrap();
            let mut ddim_sampler = ddim.build(&s, Prediction::Epsilon).unwrap();
            for t in 0..100 {
                let x = x_t(t as u64);
                let a = ddpm_sampler.step(&eps, t, &x, &mut z).unwrap();
                let b = ddim_sampler.step(&eps, t, &x, &mut z).unwrap();
                assert_close(&a, &b, 1e-5, &format!("{kind:?} t={t} clip={clip_x0}"));
            }
            // And whole chains through the sampling loop.
            let a = run(&s, &ddpm, x_t(1), 9);
            let b = run(&s, &ddim, x_t(1), 9);
            assert_close(
                &a,
                &b,
                1e-5 * growth,
                &format!("chain {kind:?} clip={clip_x0}"),
            );
        }
    }
}

#[test]
fn ddim_with_eta_zero_is_deterministic_and_ignores_the_noise_source() {
    let s = Schedule::new(BetaKind::Linear, 1000, &Device::Cpu).unwrap();
    let ddim = SamplerConfig::ddim(20, 0.0, false);
    let a = run(&s, &ddim, x_t(2), 1);
    let b = run(&s, &ddim, x_t(2), 2);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // ...while DDPM depends on its noise.
    let ddpm = SamplerConfig::default();
    let c = run(&s, &ddpm, x_t(2), 1);
    let d = run(&s, &ddpm, x_t(2), 2);
    assert!(max_abs_diff(&c, &d) > 1e-3);
}

#[test]
fn the_loop_reports_every_step_and_clipping_bounds_the_final_sample() {
    let s = Schedule::new(BetaKind::Linear, 50, &Device::Cpu).unwrap();
    let mut seen = Vec::new();
    let sampler = SamplerConfig::Ddpm {
        variance: Variance::Beta,
        clip_x0: true,
    };
    let x0 = sample(
        sampler.build(&s, Prediction::Epsilon).unwrap(),
        &toy_eps,
        x_t(3),
        &mut NoiseRng::new(4),
        |info| {
            assert_eq!(info.total, 50);
            seen.push(info.t)
        },
    )
    .unwrap();
    assert_eq!(seen, (0..50).rev().map(f64::from).collect::<Vec<_>>());
    // The last DDPM step with clipping returns the clipped x̂0 itself.
    let max = x0.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    assert!(max.to_scalar::<f32>().unwrap() <= 1.0);
}

#[test]
fn forward_noising_then_exact_eps_recovers_x0() {
    let s = Schedule::new(BetaKind::Cosine, 200, &Device::Cpu).unwrap();
    let x0 = x_t(5).tanh().unwrap();
    let eps = x_t(6);
    let t = Tensor::new(&[17u32, 150], &Device::Cpu).unwrap();
    let xt = s.add_noise(&x0, &t, &eps).unwrap();
    for (i, ti) in [17usize, 150].into_iter().enumerate() {
        let rec = Prediction::Epsilon
            .x0(&s, &xt.get(i).unwrap(), ti, &eps.get(i).unwrap())
            .unwrap();
        assert_close(&rec, &x0.get(i).unwrap(), 1e-4, &format!("t={ti}"));
    }
}
