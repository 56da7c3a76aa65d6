//! Every sampler on a zero-terminal-SNR schedule (ᾱ_T = 0, Lin et al. 2023) with a
//! v-prediction network: the samples are finite and land on the data. DDPM and DDIM use
//! ᾱ_T = 0 itself; the σ- and λ-based samplers take it as 2^-24, as diffusers does.

use candle_core::{Device, Tensor};
use ddpm_diffusion::sampler::Spacing;
use ddpm_diffusion::sampler::sigmas::{ZERO_SNR_ALPHA_BAR, alpha_bar_of, sigma_at, vp_sigmas};
use ddpm_diffusion::{BetaKind, NoiseRng, Prediction, SamplerConfig, Schedule, Variance, sample};

const T: usize = 50;

fn schedule() -> Schedule {
    Schedule::new(BetaKind::Linear, T, &Device::Cpu)
        .unwrap()
        .with_zero_terminal_snr()
        .unwrap()
}

/// The one image all the "data" is: values inside [-1, 1].
fn data() -> Tensor {
    let values: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 9.0).collect();
    Tensor::from_vec(values, (1, 1, 4, 4), &Device::Cpu).unwrap()
}

/// The exact v-prediction of data that is the one image `c`: with a = sqrt(ᾱ), b = sqrt(1-ᾱ),
/// ε = (x_t - a·c)/b and v = a·ε - b·c = (a·x_t - c)/b. ᾱ at the (possibly fractional) time
/// input is read as the σ-based samplers read it, from σ interpolated between timesteps.
fn point_mass_v(schedule: &Schedule) -> impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> {
    let sigmas = vp_sigmas(schedule);
    let c = data();
    move |x: &Tensor, t: &Tensor| {
        let t = t.to_vec1::<f32>()?[0];
        let ab = alpha_bar_of(sigma_at(f64::from(t), &sigmas));
        let (a, b) = (ab.sqrt(), (1.0 - ab).sqrt());
        x.affine(a / b, 0.0)?
            .broadcast_sub(&c.affine(1.0 / b, 0.0)?)
    }
}

fn configs() -> Vec<SamplerConfig> {
    vec![
        SamplerConfig::default(),
        SamplerConfig::Ddpm {
            variance: Variance::Posterior,
            clip_x0: true,
        },
        SamplerConfig::ddim(10, 0.0, false),
        SamplerConfig::ddim(10, 1.0, true),
        SamplerConfig::Ddim {
            steps: 10,
            eta: 0.0,
            clip_x0: false,
            spacing: Spacing::Trailing,
            set_alpha_to_one: true,
        },
        SamplerConfig::DpmSolver {
            steps: 10,
            order: 2,
            karras: false,
            lower_order_final: true,
            clip_x0: false,
        },
        SamplerConfig::DpmSolver {
            steps: 10,
            order: 3,
            karras: true,
            lower_order_final: true,
            clip_x0: false,
        },
        SamplerConfig::UniPc {
            steps: 10,
            clip_x0: false,
        },
        SamplerConfig::Euler {
            steps: 10,
            karras: false,
        },
        SamplerConfig::Euler {
            steps: 10,
            karras: true,
        },
        SamplerConfig::Heun {
            steps: 5,
            karras: false,
        },
        SamplerConfig::Heun {
            steps: 5,
            karras: true,
        },
    ]
}

#[test]
fn the_rescaled_schedule_ends_at_zero_snr() {
    let s = schedule();
    assert!(s.zero_terminal_snr());
    assert_eq!(s.alpha_bars()[T - 1], 0.0);
    assert_eq!(s.alpha_bars_f64()[T - 1], 0.0);
    // The σ-based samplers start at σ = sqrt((1 - 2^-24)/2^-24), just under 4096.
    let sigmas = vp_sigmas(&s);
    let want = ((1.0 - ZERO_SNR_ALPHA_BAR) / ZERO_SNR_ALPHA_BAR).sqrt();
    assert_eq!(sigmas[T - 1], want);
    assert!(sigmas.iter().all(|s| s.is_finite()));
}

#[test]
fn every_sampler_runs_a_v_prediction_to_finite_samples_on_the_data() {
    let s = schedule();
    let model = point_mass_v(&s);
    for config in configs() {
        let sampler = config.build(&s, Prediction::V).unwrap();
        let x_t = Tensor::from_vec(NoiseRng::new(1).normal_vec(32), (2, 1, 4, 4), &Device::Cpu);
        let mut trajectory_finite = true;
        let x0 = sample(
            sampler,
            &model,
            x_t.unwrap(),
            &mut NoiseRng::new(2),
            |info| {
                let values = info.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                trajectory_finite &= values.iter().all(|v| v.is_finite());
            },
        )
        .unwrap();
        assert!(
            trajectory_finite,
            "{config}: a non-finite intermediate sample"
        );
        let err = (x0.broadcast_sub(&data()).unwrap())
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-4, "{config}: {err:e} from the data");
    }
}

#[test]
fn samplers_refuse_an_epsilon_prediction_where_it_cannot_give_x0() {
    let s = schedule();
    let eps_model = |x: &Tensor, _t: &Tensor| x.affine(0.5, 0.0);
    for config in [
        SamplerConfig::default(),
        SamplerConfig::ddim(10, 0.0, false),
    ] {
        let sampler = config.build(&s, Prediction::Epsilon).unwrap();
        let x_t = Tensor::from_vec(NoiseRng::new(1).normal_vec(16), (1, 1, 4, 4), &Device::Cpu);
        let err = sample(
            sampler,
            &eps_model,
            x_t.unwrap(),
            &mut NoiseRng::new(2),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ε-prediction needs ᾱ > 0") && err.contains("v- or x0-prediction"),
            "{config}: {err}"
        );
    }
}
