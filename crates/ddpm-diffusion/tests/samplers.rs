//! Samplers built from their configs: the timesteps they visit, their validation, and the
//! configs' saved form.

use std::cell::RefCell;

use candle_core::{Device, Tensor};
use ddpm_diffusion::{
    BetaKind, NoiseRng, Prediction, Sampler, SamplerChoices, SamplerConfig, Schedule, Variance,
    sample,
};

const T: usize = 30;

fn schedule() -> Schedule {
    Schedule::new(BetaKind::Linear, T, &Device::Cpu).unwrap()
}

fn configs() -> [SamplerConfig; 5] {
    [
        SamplerConfig::default(),
        SamplerConfig::Ddpm {
            variance: Variance::Posterior,
            clip_x0: true,
        },
        SamplerConfig::ddim(7, 0.3, false),
        SamplerConfig::ddim(T, 1.0, true),
        SamplerConfig::ddim(1, 0.0, false),
    ]
}

#[test]
fn a_built_sampler_is_driven_through_its_timesteps_in_order() {
    let s = schedule();
    for config in configs() {
        let sampler = config.build(&s, Prediction::Epsilon).unwrap();
        let timesteps = sampler.timesteps().to_vec();
        assert_eq!(timesteps, config.timesteps(T).unwrap(), "{config:?}");
        assert!(
            timesteps.windows(2).all(|w| w[1] < w[0]),
            "{config:?}: {timesteps:?}"
        );
        // The model sees each timestep once, in order, for the whole batch.
        let asked = RefCell::new(Vec::new());
        let model = |x: &Tensor, t: &Tensor| {
            let t = t.to_vec1::<f32>()?;
            assert!(t.iter().all(|ti| *ti == t[0]), "{t:?}");
            asked.borrow_mut().push(f64::from(t[0]));
            x.affine(0.5, 0.0)?.tanh()
        };
        let mut reported = Vec::new();
        let x_t = Tensor::from_vec(NoiseRng::new(1).normal_vec(18), (2, 1, 3, 3), &Device::Cpu);
        sample(
            sampler,
            &model,
            x_t.unwrap(),
            &mut NoiseRng::new(2),
            |info| {
                assert_eq!(info.total, timesteps.len());
                reported.push((info.done, info.t));
            },
        )
        .unwrap();
        assert_eq!(asked.into_inner(), timesteps, "{config:?}");
        let want: Vec<(usize, f64)> = timesteps
            .iter()
            .copied()
            .zip(1..)
            .map(|(t, i)| (i, t))
            .collect();
        assert_eq!(reported, want, "{config:?}");
    }
}

fn build_error(config: SamplerConfig) -> String {
    match config.build(&schedule(), Prediction::Epsilon) {
        Ok(_) => panic!("{config:?} built"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn invalid_ddim_settings_do_not_build() {
    for steps in [0, T + 1] {
        let err = build_error(SamplerConfig::ddim(steps, 0.0, false));
        assert_eq!(
            err,
            format!("invalid steps: DDIM needs 1..={T} steps, got {steps}")
        );
    }
    for eta in [-0.1, 1.5, f64::NAN] {
        let err = build_error(SamplerConfig::ddim(5, eta, false));
        assert_eq!(err, format!("invalid eta: η must be in [0, 1], got {eta}"));
    }
}

#[test]
fn configs_keep_their_saved_json() {
    let cases = [
        (
            SamplerConfig::Ddpm {
                variance: Variance::Beta,
                clip_x0: false,
            },
            r#"{"kind":"ddpm","variance":"beta","clip_x0":false}"#,
        ),
        (
            SamplerConfig::Ddpm {
                variance: Variance::Posterior,
                clip_x0: true,
            },
            r#"{"kind":"ddpm","variance":"posterior","clip_x0":true}"#,
        ),
        (
            SamplerConfig::ddim(50, 0.0, true),
            r#"{"kind":"ddim","steps":50,"eta":0.0,"clip_x0":true}"#,
        ),
    ];
    for (config, json) in cases {
        assert_eq!(serde_json::to_string(&config).unwrap(), json);
        assert_eq!(serde_json::from_str::<SamplerConfig>(json).unwrap(), config);
    }
    assert_eq!(
        serde_json::to_string(&SamplerConfig::default()).unwrap(),
        cases[0].1
    );
    assert_eq!(
        serde_json::to_string(&Prediction::Epsilon).unwrap(),
        r#""epsilon""#
    );
}

/// A predictor whose x̂0 lies far outside [-1, 1].
fn wild(x: &Tensor, _t: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(-4.0, 0.0)
}

#[test]
fn samplers_that_clip_end_inside_the_data_range() {
    let s = schedule();
    let named = |name: &str| {
        SamplerConfig::named(name)
            .unwrap()
            .with(&SamplerChoices {
                steps: (name != "ddpm").then_some(6),
                clip_x0: Some(true),
                ..SamplerChoices::default()
            })
            .unwrap()
    };
    for name in ["ddpm", "ddim", "dpm++", "unipc"] {
        let config = named(name);
        assert_eq!(config.clip_x0(), Some(true), "{name}");
        let x_t = Tensor::from_vec(NoiseRng::new(3).normal_vec(18), (2, 1, 3, 3), &Device::Cpu);
        let sampler = config.build(&s, Prediction::Epsilon).unwrap();
        let x0 = sample(sampler, &wild, x_t.unwrap(), &mut NoiseRng::new(4), |_| {}).unwrap();
        let values: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            values.iter().all(|v| v.abs() <= 1.0 + 1e-6),
            "{name}: {values:?}"
        );
    }
}

#[test]
fn choices_change_only_what_they_name() {
    let run = SamplerConfig::Ddpm {
        variance: Variance::Posterior,
        clip_x0: true,
    };
    let pick = |choices: SamplerChoices| run.with(&choices);
    // Nothing chosen: the run's own.
    assert_eq!(pick(SamplerChoices::default()).unwrap(), run);
    // Another sampler: its defaults, with the run's clipping where it can clip.
    let dpm = pick(SamplerChoices {
        kind: Some("dpm++".into()),
        order: Some(3),
        ..SamplerChoices::default()
    })
    .unwrap();
    assert_eq!(dpm.to_string(), "DPM-Solver++ 3M (20 steps, x̂0 clipped)");
    let euler = pick(SamplerChoices {
        kind: Some("euler".into()),
        karras: Some(true),
        ..SamplerChoices::default()
    })
    .unwrap();
    assert_eq!(euler.clip_x0(), None);
    assert_eq!(euler.to_string(), "Euler (20 steps, Karras σ)");
    // Options of other samplers are refused by name.
    for (kind, choices, option) in [
        (
            None,
            SamplerChoices {
                steps: Some(5),
                ..Default::default()
            },
            "--steps",
        ),
        (
            Some("ddim"),
            SamplerChoices {
                order: Some(2),
                ..Default::default()
            },
            "--order",
        ),
        (
            Some("euler"),
            SamplerChoices {
                clip_x0: Some(true),
                ..Default::default()
            },
            "--clip-x0",
        ),
        (
            Some("unipc"),
            SamplerChoices {
                karras: Some(true),
                ..Default::default()
            },
            "--karras",
        ),
    ] {
        let err = pick(SamplerChoices {
            kind: kind.map(String::from),
            ..choices
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(option), "{err}");
    }
    let err = SamplerConfig::named("nope").unwrap_err().to_string();
    assert!(
        err.contains("unknown sampler `nope`") && err.contains("heun"),
        "{err}"
    );
}
