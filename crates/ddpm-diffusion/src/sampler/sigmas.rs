//! The VP schedule seen in σ-space (Karras et al. 2022), for the samplers that work there:
//! σ_t = sqrt((1-ᾱ_t)/ᾱ_t), so x_t = sqrt(ᾱ_t)·(x0 + σ_t·ε) and ᾱ = 1/(σ²+1); Karras'
//! ρ-spaced noise levels; and back from σ to a (fractional) timestep, as k-diffusion and
//! diffusers compute them.
//!
//! σ and the half log-SNR λ = -ln σ are infinite where ᾱ = 0, the last step of a
//! zero-terminal-SNR schedule ([`Schedule::with_zero_terminal_snr`]). The samplers that work
//! in σ or λ (DPM-Solver++, UniPC, Euler, Heun) therefore read the schedule through
//! [`solver_alpha_bars`], which takes that ᾱ as [`ZERO_SNR_ALPHA_BAR`] = 2^-24 (σ = 4096), as
//! diffusers does for those schedulers with `rescale_betas_zero_snr`. DDPM and DDIM use
//! ᾱ = 0 itself.

use crate::Schedule;

/// The ᾱ the σ- and λ-based samplers use for a schedule's ᾱ = 0 (zero terminal SNR): 2^-24,
/// the smallest positive f16 subnormal, diffusers' choice ("close to 0 without being 0 so
/// first sigma is not inf").
pub const ZERO_SNR_ALPHA_BAR: f64 = 1.0 / 16_777_216.0;

/// The schedule's f32 ᾱ_t as f64 (as diffusers computes its σ), an ᾱ of exactly 0 (only a
/// zero-terminal-SNR schedule's last step has one) replaced by [`ZERO_SNR_ALPHA_BAR`].
pub fn solver_alpha_bars(schedule: &Schedule) -> Vec<f64> {
    schedule
        .alpha_bars()
        .iter()
        .map(|&ab| {
            if ab > 0.0 {
                f64::from(ab)
            } else {
                ZERO_SNR_ALPHA_BAR
            }
        })
        .collect()
}

/// σ_t for every timestep of `schedule`, increasing with t (from [`solver_alpha_bars`]: its f32
/// ᾱ, as diffusers computes them, finite at zero terminal SNR).
pub fn vp_sigmas(schedule: &Schedule) -> Vec<f64> {
    solver_alpha_bars(schedule)
        .iter()
        .map(|&ab| ((1.0 - ab) / ab).sqrt())
        .collect()
}

/// The ᾱ of noise level σ: 1/(σ²+1) (1 at σ = 0, the clean sample).
pub fn alpha_bar_of(sigma: f64) -> f64 {
    1.0 / (sigma * sigma + 1.0)
}

/// `n` noise levels from `sigma_max` down to `sigma_min`, uniform in σ^(1/ρ) with ρ = 7
/// (Karras et al. 2022, eq. 5).
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (lo, hi) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    (0..n)
        .map(|i| {
            let ramp = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            (hi + ramp * (lo - hi)).powf(RHO)
        })
        .collect()
}

/// The fractional timestep whose σ is `sigma`, given `log_sigmas` = ln σ_t for t in 0..T
/// (increasing): log σ interpolated linearly between the two neighbouring timesteps and
/// clamped to [0, T-1] (diffusers' `_sigma_to_t`).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_sigmas
        .iter()
        .take_while(|&&l| log_sigma - l >= 0.0)
        .count();
    let low = below.saturating_sub(1).min(log_sigmas.len() - 2);
    let (l, h) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// σ at a fractional timestep `t` in [0, T-1]: σ interpolated linearly between the two
/// neighbouring timesteps (`np.interp`, as diffusers' Euler and Heun do).
pub fn sigma_at(t: f64, sigmas: &[f64]) -> f64 {
    let last = sigmas.len() - 1;
    let t = t.clamp(0.0, last as f64);
    let low = (t.floor() as usize).min(last);
    let high = (low + 1).min(last);
    let w = t - low as f64;
    sigmas[low] * (1.0 - w) + sigmas[high] * w
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::BetaKind;

    #[test]
    fn sigma_and_timestep_invert_each_other() {
        let s = Schedule::new(BetaKind::Linear, 1000, &Device::Cpu).unwrap();
        let sigmas = vp_sigmas(&s);
        let logs: Vec<f64> = sigmas.iter().map(|v| v.ln()).collect();
        assert!(sigmas.windows(2).all(|w| w[0] < w[1]), "σ increases with t");
        for t in [0usize, 1, 250, 998, 999] {
            assert!(
                (sigma_to_t(sigmas[t], &logs) - t as f64).abs() < 1e-9,
                "t = {t}"
            );
        }
        // Between two timesteps, in log σ.
        let mid = ((logs[10] + logs[11]) / 2.0).exp();
        assert!((sigma_to_t(mid, &logs) - 10.5).abs() < 1e-9);
        assert!((sigma_at(10.5, &sigmas) - (sigmas[10] + sigmas[11]) / 2.0).abs() < 1e-12);
        // Beyond the ends: clamped.
        assert_eq!(sigma_to_t(1e-6, &logs), 0.0);
        assert_eq!(sigma_to_t(1e6, &logs), 999.0);
        assert!((alpha_bar_of(sigmas[500]) - f64::from(s.alpha_bars()[500])).abs() < 1e-7);
    }

    #[test]
    fn karras_levels_span_the_range_in_rho_space() {
        let k = karras_sigmas(0.03, 80.0, 5);
        assert!((k[0] - 80.0).abs() < 1e-9 && (k[4] - 0.03).abs() < 1e-12);
        let roots: Vec<f64> = k.iter().map(|v| v.powf(1.0 / 7.0)).collect();
        let steps: Vec<f64> = roots.windows(2).map(|w| w[0] - w[1]).collect();
        assert!(
            steps.iter().all(|d| (d - steps[0]).abs() < 1e-12),
            "{steps:?}"
        );
    }
}
