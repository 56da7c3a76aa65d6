//! The diffusers parity fixture (`tests/fixtures/schedulers.*`: diffusers 0.42.1 trajectories
//! of its schedulers on a closed-form predictor) and the check every sampler runs against it.
//! Each `parity_*.rs` test file uses the parts its sampler needs.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Shape, Tensor};
use ddpm_diffusion::{BetaKind, NoiseSource, Sampler, Schedule};

/// One recorded diffusers run.
pub struct Case {
    /// The case's name in the fixture.
    pub name: String,
    /// The scheduler's diffusers config (`prediction_type`, `use_karras_sigmas`, ...).
    pub config: serde_json::Value,
    /// diffusers' `scheduler.timesteps`: the time passed to the model at each evaluation.
    pub timesteps: Vec<f64>,
    /// x_T as drawn (before `init_noise_sigma`), (4, 1, 6, 6).
    pub x_t: Tensor,
    /// Every `step()`'s `prev_sample`, (evaluations, 4, 1, 6, 6), in diffusers' space (σ-space
    /// for Euler and Heun).
    pub xs: Tensor,
    /// diffusers' `init_noise_sigma`.
    pub init_noise_sigma: f64,
}

/// Reads case `name` from the committed fixture.
pub fn case(name: &str) -> Case {
    // Python's json writes ±Infinity (e.g. `lambda_min_clipped`), which JSON lacks: read
    // them as strings.
    let text = std::fs::read_to_string(ddpm_tests::fixture("schedulers.json"))
        .unwrap()
        .replace("-Infinity", "\"-Infinity\"")
        .replace(": Infinity", ": \"Infinity\"");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let meta = &json["cases"][name];
    assert!(meta.is_object(), "no case {name} in the fixture");
    let tensors: HashMap<String, Tensor> =
        ddpm_tests::load_tensors(&ddpm_tests::fixture("schedulers.safetensors"));
    let get = |key: &str| tensors[&format!("{name}.{key}")].clone();
    Case {
        name: name.to_string(),
        config: meta["config"].clone(),
        timesteps: get("timesteps")
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap(),
        x_t: get("x_T").to_dtype(DType::F32).unwrap(),
        xs: get("xs").to_dtype(DType::F32).unwrap(),
        init_noise_sigma: meta["init_noise_sigma"].as_f64().unwrap(),
    }
}

/// The fixture's schedule: diffusers' "linear" betas over 1000 steps (ours bit for bit).
pub fn schedule() -> Schedule {
    Schedule::new(BetaKind::Linear, 1000, &Device::Cpu).unwrap()
}

/// The fixture's predictor, elementwise in f32:
/// `out(x, t) = 0.6·tanh(x)·(t/1000) + 0.25·sin(1.7·x + t/97) + 0.05`, where x is the model
/// input (our samples are already what diffusers' `scale_model_input` gives).
pub fn predictor(x: &Tensor, t: f64) -> Tensor {
    let a = (x.tanh().unwrap() * (0.6 * t / 1000.0)).unwrap();
    let b = x
        .affine(1.7, t / 97.0)
        .unwrap()
        .sin()
        .unwrap()
        .affine(0.25, 0.05)
        .unwrap();
    (a + b).unwrap()
}

/// The fixture's samplers are deterministic: a draw is a bug.
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn randn(&mut self, shape: &Shape, _: &Device) -> ddpm_diffusion::Result<Tensor> {
        panic!("a deterministic sampler drew noise of shape {shape:?}")
    }
}

/// Runs `sampler` from the case's x_T, checking at every evaluation that its time input
/// matches diffusers' (`time_tol`: 0 for integer timesteps) and that the sample after it,
/// mapped into diffusers' space by `to_fixture(i, x)` (the identity except in σ-space),
/// matches diffusers' within 1e-4 relative to max|x|.
pub fn check(
    case: &Case,
    sampler: &mut dyn Sampler,
    time_tol: f64,
    to_fixture: impl Fn(usize, &Tensor) -> Tensor,
) {
    let times = sampler.timesteps().to_vec();
    assert_eq!(
        times.len(),
        case.timesteps.len(),
        "{}: evaluations",
        case.name
    );
    for (i, (&ours, &theirs)) in times.iter().zip(&case.timesteps).enumerate() {
        assert!(
            (ours - theirs).abs() <= time_tol * theirs.abs().max(1.0),
            "{}: time of evaluation {i}: ours {ours}, diffusers {theirs}",
            case.name
        );
    }
    let mut x = case.x_t.clone();
    for (i, &t) in times.iter().enumerate() {
        let output = predictor(&x, t);
        x = sampler.step(&output, i, &x, &mut NoNoise).unwrap();
        let want = case.xs.get(i).unwrap();
        let got = to_fixture(i, &x);
        let scale = ddpm_tests::max_abs_diff(&want, &want.zeros_like().unwrap()).max(1e-12);
        let diff = ddpm_tests::max_abs_diff(&got, &want);
        assert!(
            diff <= 1e-4 * scale,
            "{}: evaluation {i} (t = {t}): max |Δ| {diff:e} vs max |x| {scale:e}",
            case.name
        );
    }
}
