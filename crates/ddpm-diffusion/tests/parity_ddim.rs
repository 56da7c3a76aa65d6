//! DDIM against diffusers' DDIMScheduler (the committed fixture), and the timestep spacings.

mod diffusers;

use ddpm_diffusion::sampler::{Ddim, Spacing};
use ddpm_diffusion::{Prediction, SamplerConfig};

#[test]
fn ddim_with_leading_spacing_matches_diffusers() {
    let case = diffusers::case("ddim_linear_50");
    assert_eq!(case.config["timestep_spacing"], "leading");
    assert_eq!(case.config["set_alpha_to_one"], false);
    let schedule = diffusers::schedule();
    let mut ddim = Ddim::new(
        &schedule,
        Prediction::Epsilon,
        50,
        0.0,
        false,
        Spacing::Leading,
        false,
    )
    .unwrap();
    diffusers::check(&case, &mut ddim, 0.0, |_, x| x.clone());
}

#[test]
fn spacings_place_the_timesteps_as_diffusers_does() {
    let at = |spacing| {
        let config = SamplerConfig::Ddim {
            steps: 4,
            eta: 0.0,
            clip_x0: false,
            spacing,
            set_alpha_to_one: true,
        };
        config.timesteps(10).unwrap()
    };
    assert_eq!(at(Spacing::Even), [9.0, 6.0, 3.0, 0.0]);
    assert_eq!(at(Spacing::Linspace), [9.0, 6.0, 3.0, 0.0]);
    assert_eq!(at(Spacing::Leading), [6.0, 4.0, 2.0, 0.0]);
    // np.round(arange(10, 0, -2.5)) - 1, halves to even.
    assert_eq!(at(Spacing::Trailing), [9.0, 7.0, 4.0, 1.0]);
    // The default spacing and ending stay out of saved configurations.
    let json = serde_json::to_string(&SamplerConfig::ddim(50, 0.0, true)).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"ddim","steps":50,"eta":0.0,"clip_x0":true}"#
    );
    let leading: SamplerConfig = serde_json::from_str(
        r#"{"kind":"ddim","steps":5,"eta":0.0,"clip_x0":false,"spacing":"leading"}"#,
    )
    .unwrap();
    assert_eq!(leading.timesteps(10).unwrap(), [8.0, 6.0, 4.0, 2.0, 0.0]);
}
