//! UniPC against diffusers' UniPCMultistepScheduler (the committed fixture), its evaluations,
//! its validation and its saved form.

mod diffusers;

use std::cell::RefCell;

use candle_core::{Device, Tensor};
use ddpm_diffusion::sampler::UniPc;
use ddpm_diffusion::{BetaKind, NoiseRng, Prediction, Sampler, SamplerConfig, Schedule, sample};

#[test]
fn unipc_matches_diffusers() {
    let case = diffusers::case("unipc_linear_10");
    let config = &case.config;
    assert_eq!(config["solver_type"], "bh2");
    assert_eq!(config["solver_order"], 2);
    assert_eq!(config["predict_x0"], true);
    assert_eq!(config["lower_order_final"], true);
    assert_eq!(config["timestep_spacing"], "linspace");
    assert_eq!(config["final_sigmas_type"], "zero");
    assert_eq!(config["disable_corrector"], serde_json::json!([]));
    assert_eq!(config["prediction_type"], "epsilon");
    let schedule = diffusers::schedule();
    let mut unipc = UniPc::new(&schedule, Prediction::Epsilon, 10).unwrap();
    diffusers::check(&case, &mut unipc, 0.0, |_, x| x.clone());
    // A second run from the same sampler starts afresh at evaluation 0.
    diffusers::check(&case, &mut unipc, 0.0, |_, x| x.clone());
}

#[test]
fn the_timesteps_are_diffusers_linspace() {
    let unipc = |steps| SamplerConfig::UniPc {
        steps,
        clip_x0: false,
    };
    assert_eq!(
        unipc(10).timesteps(1000).unwrap(),
        [
            999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0
        ]
    );
    assert_eq!(unipc(1).timesteps(1000).unwrap(), [999.0]);
    // linspace(0, 9, 5) = 0, 2.25, 4.5, 6.75, 9: 4.5 rounds to even.
    assert_eq!(unipc(4).timesteps(10).unwrap(), [9.0, 7.0, 4.0, 2.0]);
    // At steps = T two timesteps round together and are merged.
    let all = unipc(30).timesteps(30).unwrap();
    assert_eq!(all.len(), 29);
    assert!(all.windows(2).all(|w| w[1] < w[0]), "{all:?}");
    assert_eq!((all[0], all[28]), (29.0, 1.0));
}

#[test]
fn one_evaluation_per_step_ending_at_the_prediction_of_x0() {
    const T: usize = 30;
    let schedule = Schedule::new(BetaKind::Linear, T, &Device::Cpu).unwrap();
    for steps in [1, 2, 3, 7, T] {
        let config = SamplerConfig::UniPc {
            steps,
            clip_x0: false,
        };
        let sampler = config.build(&schedule, Prediction::Epsilon).unwrap();
        let timesteps = sampler.timesteps().to_vec();
        assert_eq!(timesteps, config.timesteps(T).unwrap());
        assert_eq!(timesteps.len(), steps.min(T - 1), "{steps} steps");
        let asked = RefCell::new(Vec::new());
        let model = |x: &Tensor, t: &Tensor| {
            asked.borrow_mut().push(f64::from(t.to_vec1::<f32>()?[0]));
            x.affine(0.5, 0.0)?.tanh()
        };
        let x_t = Tensor::from_vec(NoiseRng::new(1).normal_vec(18), (2, 1, 3, 3), &Device::Cpu);
        let x0 = sample(
            sampler,
            &model,
            x_t.unwrap(),
            &mut diffusers::NoNoise,
            |_| {},
        )
        .unwrap();
        assert_eq!(asked.into_inner(), timesteps, "{steps} steps");
        let values = x0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{steps}: {values:?}");
    }
}

#[test]
fn bad_settings_and_out_of_order_steps_are_errors() {
    let schedule = diffusers::schedule();
    for steps in [0, 1001] {
        let err = SamplerConfig::UniPc {
            steps,
            clip_x0: false,
        }
        .build(&schedule, Prediction::Epsilon)
        .err()
        .expect("built");
        assert_eq!(
            err.to_string(),
            format!("invalid steps: UniPC needs 1..=1000 steps, got {steps}")
        );
        assert!(
            SamplerConfig::UniPc {
                steps,
                clip_x0: false,
            }
            .timesteps(1000)
            .is_err()
        );
    }
    let mut unipc = UniPc::new(&schedule, Prediction::Epsilon, 3).unwrap();
    let x = Tensor::ones((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let out = x.zeros_like().unwrap();
    let err = unipc
        .step(&out, 1, &x, &mut diffusers::NoNoise)
        .unwrap_err();
    assert!(err.to_string().contains("multistep"), "{err}");
    let err = unipc
        .step(&out, 3, &x, &mut diffusers::NoNoise)
        .unwrap_err();
    assert!(err.to_string().contains("past"), "{err}");
}

#[test]
fn the_config_is_saved_as_unipc() {
    let config = SamplerConfig::UniPc {
        steps: 20,
        clip_x0: false,
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(json, r#"{"kind":"unipc","steps":20}"#);
    assert_eq!(
        serde_json::from_str::<SamplerConfig>(&json).unwrap(),
        config
    );
}
