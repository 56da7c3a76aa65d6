//! Euler and Heun against diffusers' EulerDiscreteScheduler and HeunDiscreteScheduler (the
//! committed fixture), and their Karras option and validation.

mod diffusers;

use candle_core::{Device, Tensor};
use ddpm_diffusion::sampler::sigmas::vp_sigmas;
use ddpm_diffusion::sampler::{Euler, Heun};
use ddpm_diffusion::{BetaKind, NoiseRng, Prediction, Sampler, SamplerConfig, Schedule, sample};

/// The case with its x_T mapped to our VP start. diffusers starts from x_T·init_noise_sigma
/// in σ-space, and with "linspace" spacing init_noise_sigma is σ_max itself (not
/// sqrt(σ_max²+1)), so the VP sample it stands for is x_T·σ_max/sqrt(σ_max²+1).
fn vp_case(name: &str, sigma_max: f64) -> diffusers::Case {
    let mut case = diffusers::case(name);
    let sigma_space = case.init_noise_sigma;
    assert!((sigma_space - sigma_max).abs() <= 1e-5 * sigma_max);
    case.x_t = case
        .x_t
        .affine(sigma_space / (sigma_max * sigma_max + 1.0).sqrt(), 0.0)
        .unwrap();
    case
}

#[test]
fn euler_matches_diffusers() {
    let case = diffusers::case("euler_linear_30");
    assert_eq!(case.config["timestep_spacing"], "linspace");
    assert_eq!(case.config["interpolation_type"], "linear");
    assert_eq!(case.config["use_karras_sigmas"], false);
    assert_eq!(case.config["final_sigmas_type"], "zero");
    let schedule = diffusers::schedule();
    let euler = Euler::new(&schedule, Prediction::Epsilon, 30, false).unwrap();
    let case = vp_case("euler_linear_30", euler.sigmas()[0]);
    let mapper = euler.clone();
    diffusers::check(&case, &mut euler.clone(), 1e-6, |i, x| {
        to_sigma_space(x, mapper.sigma_after(i))
    });
}

#[test]
fn heun_matches_diffusers() {
    let case = diffusers::case("heun_linear_15");
    assert_eq!(case.config["timestep_spacing"], "linspace");
    assert_eq!(case.config["use_karras_sigmas"], false);
    let schedule = diffusers::schedule();
    let heun = Heun::new(&schedule, Prediction::Epsilon, 15, false).unwrap();
    assert_eq!(heun.timesteps().len(), 29);
    let case = vp_case("heun_linear_15", heun.sigmas()[0]);
    let mapper = heun.clone();
    diffusers::check(&case, &mut heun.clone(), 1e-6, |i, x| {
        to_sigma_space(x, mapper.sigma_after(i))
    });
}

/// x_σ = x·sqrt(σ²+1).
fn to_sigma_space(x: &Tensor, sigma: f64) -> Tensor {
    x.affine((sigma * sigma + 1.0).sqrt(), 0.0).unwrap()
}

#[test]
fn karras_levels_run_from_sigma_max_to_sigma_min() {
    let schedule = diffusers::schedule();
    let table = vp_sigmas(&schedule);
    let euler = Euler::new(&schedule, Prediction::Epsilon, 12, true).unwrap();
    let heun = Heun::new(&schedule, Prediction::Epsilon, 12, true).unwrap();
    assert_eq!(euler.timesteps().len(), 12);
    assert_eq!(heun.timesteps().len(), 23);
    for sigmas in [euler.sigmas(), heun.sigmas()] {
        assert_eq!(sigmas.len(), 13);
        assert!((sigmas[0] - table[999]).abs() < 1e-9 * table[999]);
        assert!((sigmas[11] - table[0]).abs() < 1e-12);
        assert_eq!(sigmas[12], 0.0);
        assert!(sigmas.windows(2).all(|w| w[1] < w[0]), "{sigmas:?}");
    }
    let times = euler.timesteps();
    assert!(
        (times[0] - 999.0).abs() < 1e-6 && times[11].abs() < 1e-6,
        "{times:?}"
    );
    assert!(times.windows(2).all(|w| w[1] < w[0]), "{times:?}");
    assert!(times[1..11].iter().any(|t| t.fract() != 0.0), "fractional");
    // Heun: the same levels, every time after the first twice.
    let heun_times = heun.timesteps();
    assert_eq!(heun_times[0], times[0]);
    for k in 1..12 {
        assert_eq!(heun_times[2 * k - 1], times[k]);
        assert_eq!(heun_times[2 * k], times[k]);
    }
    // Karras crowds the levels at low noise, more than linspace does.
    let plain = Euler::new(&schedule, Prediction::Epsilon, 12, false).unwrap();
    assert!(euler.sigmas()[10] < plain.sigmas()[10]);
    assert_eq!(plain.sigma_after(11), 0.0);
    assert_eq!(heun.sigma_after(22), 0.0);
    assert_eq!(heun.sigma_after(1), heun.sigmas()[1]);
    assert_eq!(heun.sigma_after(2), heun.sigmas()[2]);
}

#[test]
fn karras_samplers_run_through_the_loop() {
    let schedule = Schedule::new(BetaKind::Linear, 50, &Device::Cpu).unwrap();
    for config in [
        SamplerConfig::Euler {
            steps: 8,
            karras: true,
        },
        SamplerConfig::Heun {
            steps: 8,
            karras: true,
        },
        SamplerConfig::Heun {
            steps: 1,
            karras: false,
        },
    ] {
        let sampler = config.build(&schedule, Prediction::Epsilon).unwrap();
        let n = sampler.timesteps().len();
        let x_t = Tensor::from_vec(NoiseRng::new(3).normal_vec(8), (2, 1, 2, 2), &Device::Cpu);
        let mut seen = 0;
        let model = |x: &Tensor, _t: &Tensor| x.affine(0.3, 0.0)?.tanh();
        let x0 = sample(
            sampler,
            &model,
            x_t.unwrap(),
            &mut diffusers::NoNoise,
            |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, n, "{config:?}");
        assert!(
            x0.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }
}

#[test]
fn configs_round_trip_and_list_their_times() {
    let euler = SamplerConfig::Euler {
        steps: 4,
        karras: false,
    };
    let json = serde_json::to_string(&euler).unwrap();
    assert_eq!(json, r#"{"kind":"euler","steps":4,"karras":false}"#);
    assert_eq!(serde_json::from_str::<SamplerConfig>(&json).unwrap(), euler);
    let heun: SamplerConfig =
        serde_json::from_str(r#"{"kind":"heun","steps":4,"karras":true}"#).unwrap();
    assert_eq!(
        heun,
        SamplerConfig::Heun {
            steps: 4,
            karras: true
        }
    );
    assert_eq!(euler.timesteps(10).unwrap(), [9.0, 6.0, 3.0, 0.0]);
    let heun_linspace = SamplerConfig::Heun {
        steps: 4,
        karras: false,
    };
    assert_eq!(
        heun_linspace.timesteps(10).unwrap(),
        [9.0, 6.0, 6.0, 3.0, 3.0, 0.0, 0.0]
    );
    // The built samplers list the same times.
    let schedule = Schedule::new(BetaKind::Linear, 10, &Device::Cpu).unwrap();
    for config in [euler, heun_linspace] {
        let built = config.build(&schedule, Prediction::Epsilon).unwrap();
        assert_eq!(built.timesteps(), config.timesteps(10).unwrap());
    }
    // Karras times depend on the schedule: only the built sampler knows them.
    assert!(heun.timesteps(10).is_err());
    assert_eq!(
        heun.build(&schedule, Prediction::Epsilon)
            .unwrap()
            .timesteps()
            .len(),
        7
    );
}

#[test]
fn bad_settings_are_refused() {
    let schedule = Schedule::new(BetaKind::Linear, 10, &Device::Cpu).unwrap();
    for karras in [false, true] {
        for steps in [0, 11] {
            assert!(Euler::new(&schedule, Prediction::Epsilon, steps, karras).is_err());
            assert!(Heun::new(&schedule, Prediction::Epsilon, steps, karras).is_err());
            for config in [
                SamplerConfig::Euler { steps, karras },
                SamplerConfig::Heun { steps, karras },
            ] {
                assert!(config.build(&schedule, Prediction::Epsilon).is_err());
                assert!(config.timesteps(10).is_err());
            }
        }
        assert!(Euler::new(&schedule, Prediction::Epsilon, 10, karras).is_ok());
    }
    // Steps past the end, and a Heun correction without its first-order evaluation.
    let x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut euler = Euler::new(&schedule, Prediction::Epsilon, 3, false).unwrap();
    assert!(euler.step(&x, 3, &x, &mut diffusers::NoNoise).is_err());
    let mut heun = Heun::new(&schedule, Prediction::Epsilon, 3, false).unwrap();
    assert!(heun.step(&x, 1, &x, &mut diffusers::NoNoise).is_err());
    assert!(heun.step(&x, 5, &x, &mut diffusers::NoNoise).is_err());
    heun.step(&x, 0, &x, &mut diffusers::NoNoise).unwrap();
    heun.step(&x, 1, &x, &mut diffusers::NoNoise).unwrap();
}
