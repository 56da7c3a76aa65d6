//! DPM-Solver++ against diffusers' DPMSolverMultistepScheduler (the committed fixture), and
//! its configurations.

mod diffusers;

use std::cell::Cell;

use candle_core::Tensor;
use ddpm_diffusion::sampler::DpmSolver;
use ddpm_diffusion::{Prediction, Sampler, SamplerConfig, sample};

/// Checks the fixture's case `name` against our DPM-Solver++ of the case's settings.
fn matches_diffusers(name: &str, prediction: Prediction) {
    let case = diffusers::case(name);
    let config = &case.config;
    assert_eq!(config["algorithm_type"], "dpmsolver++");
    assert_eq!(config["solver_type"], "midpoint");
    assert_eq!(config["final_sigmas_type"], "zero");
    assert_eq!(config["timestep_spacing"], "linspace");
    assert_eq!(config["thresholding"], false);
    assert_eq!(config["euler_at_final"], false);
    let want_prediction = match prediction {
        Prediction::Epsilon => "epsilon",
        Prediction::V => "v_prediction",
        Prediction::X0 => "sample",
    };
    assert_eq!(config["prediction_type"], want_prediction);
    let order = config["solver_order"].as_u64().unwrap() as usize;
    let karras = config["use_karras_sigmas"].as_bool().unwrap();
    let lower_order_final = config["lower_order_final"].as_bool().unwrap();
    let schedule = diffusers::schedule();
    let steps = case.timesteps.len();
    let solver = || {
        DpmSolver::new(
            &schedule,
            prediction,
            steps,
            order,
            karras,
            lower_order_final,
        )
        .unwrap()
    };
    diffusers::check(&case, &mut solver(), 0.0, |_, x| x.clone());
    // The worst step's error relative to max |x|, as the check measures it, for the record.
    let mut solver = solver();
    let (mut x, mut worst) = (case.x_t.clone(), 0f64);
    for i in 0..steps {
        let out = diffusers::predictor(&x, solver.timesteps()[i]);
        x = solver.step(&out, i, &x, &mut diffusers::NoNoise).unwrap();
        let want = case.xs.get(i).unwrap();
        let scale = ddpm_tests::max_abs_diff(&want, &want.zeros_like().unwrap());
        worst = worst.max(ddpm_tests::max_abs_diff(&x, &want) / scale);
    }
    eprintln!("{name}: max relative error {worst:.2e}");
}

#[test]
fn dpmpp_2m_matches_diffusers_at_10_steps() {
    matches_diffusers("dpmpp2m_linear_10", Prediction::Epsilon);
}

#[test]
fn dpmpp_2m_matches_diffusers_at_20_steps() {
    matches_diffusers("dpmpp2m_linear_20", Prediction::Epsilon);
}

#[test]
fn dpmpp_2m_with_karras_sigmas_matches_diffusers() {
    matches_diffusers("dpmpp2m_linear_20_karras", Prediction::Epsilon);
}

#[test]
fn dpmpp_2m_on_a_v_network_matches_diffusers() {
    matches_diffusers("dpmpp2m_linear_20_vpred", Prediction::V);
}

fn config(steps: usize, order: usize, karras: bool) -> SamplerConfig {
    SamplerConfig::DpmSolver {
        steps,
        order,
        karras,
        lower_order_final: true,
        clip_x0: false,
    }
}

#[test]
fn every_order_gives_one_evaluation_per_step() {
    let schedule = diffusers::schedule();
    let case = diffusers::case("dpmpp2m_linear_10");
    for (steps, order, karras) in [(7, 3, false), (20, 3, true), (4, 1, false), (1, 2, false)] {
        let c = config(steps, order, karras);
        let solver = c.build(&schedule, Prediction::Epsilon).unwrap();
        assert_eq!(solver.timesteps().len(), steps, "{c:?}");
        assert_eq!(solver.timesteps(), c.timesteps(1000).unwrap(), "{c:?}");
        let calls = Cell::new(0);
        let model = |x: &Tensor, t: &Tensor| {
            calls.set(calls.get() + 1);
            let t = t.to_vec1::<f32>()?[0];
            Ok(diffusers::predictor(x, f64::from(t)))
        };
        let x0 = sample(
            solver,
            &model,
            case.x_t.clone(),
            &mut diffusers::NoNoise,
            |_| {},
        )
        .unwrap();
        assert_eq!(calls.get(), steps, "{c:?}");
        let finite = x0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(finite.iter().all(|v| v.is_finite()), "{c:?}");
    }
}

#[test]
fn third_order_stays_close_to_second_order() {
    // Same ODE, same noise levels: the orders differ by the discretisation error only.
    let schedule = diffusers::schedule();
    let case = diffusers::case("dpmpp2m_linear_20");
    let run = |order| {
        let mut solver =
            DpmSolver::new(&schedule, Prediction::Epsilon, 20, order, false, true).unwrap();
        let mut x = case.x_t.clone();
        for i in 0..20 {
            let t = solver.timesteps()[i];
            let out = diffusers::predictor(&x, t);
            x = solver.step(&out, i, &x, &mut diffusers::NoNoise).unwrap();
        }
        x
    };
    let (x2, x3) = (run(2), run(3));
    let scale = ddpm_tests::max_abs_diff(&x2, &x2.zeros_like().unwrap());
    let diff = ddpm_tests::max_abs_diff(&x2, &x3);
    assert!(diff > 0.0 && diff < 0.05 * scale, "{diff:e} vs {scale:e}");
}

#[test]
fn settings_are_validated() {
    let schedule = diffusers::schedule();
    for (c, what) in [
        (config(0, 2, false), "steps"),
        (config(1001, 2, false), "steps"),
        (config(10, 0, false), "order"),
        (config(10, 4, true), "order"),
    ] {
        let err = match c.build(&schedule, Prediction::Epsilon) {
            Ok(_) => panic!("{c:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(what), "{c:?}: {err}");
        assert!(c.timesteps(1000).is_err(), "{c:?}");
    }
    // Out-of-order evaluations are refused.
    let mut solver = DpmSolver::new(&schedule, Prediction::Epsilon, 5, 2, false, true).unwrap();
    let x = diffusers::case("dpmpp2m_linear_10").x_t;
    let out = diffusers::predictor(&x, 999.0);
    assert!(solver.step(&out, 2, &x, &mut diffusers::NoNoise).is_err());
    assert!(solver.step(&out, 5, &x, &mut diffusers::NoNoise).is_err());
}

#[test]
fn configuration_json() {
    let c = config(20, 2, true);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"dpm++","steps":20,"order":2,"karras":true,"lower_order_final":true}"#
    );
    let back: SamplerConfig =
        serde_json::from_str(r#"{"kind":"dpm++","steps":20,"order":2,"karras":true}"#).unwrap();
    assert_eq!(back, c, "lower_order_final defaults to true");
}
