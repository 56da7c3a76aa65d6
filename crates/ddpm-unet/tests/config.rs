//! Configuration validation and serialisation.

use ddpm_unet::{
    ImageShape, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig, ResidualFrom,
};

#[test]
fn defaults_are_the_reference_settings_and_valid() {
    let r = RefUNetConfig::default();
    assert_eq!(
        (r.channels.clone(), r.pe_dim, r.n_steps),
        (vec![32, 64, 128, 256], 20, 1000)
    );
    assert_eq!(
        (r.norm, r.residual_from),
        (RefNorm::LayerNorm, ResidualFrom::Normalized)
    );
    let s = ResUNetConfig::default();
    assert_eq!((s.channels.clone(), s.pe_dim), (vec![10, 20, 40, 80], 128));
    for config in [
        ModelConfig::Reference(r),
        ModelConfig::Residual(s),
        ModelConfig::Modern(ModernUNetConfig::default()),
        ModelConfig::Modern(ModernUNetConfig::mnist()),
    ] {
        config.validate().unwrap();
    }
}

#[test]
fn json_round_trip_with_kind_tag() {
    let config = ModelConfig::Reference(RefUNetConfig {
        norm: RefNorm::BatchNorm,
        residual_from: ResidualFrom::Input,
        ..RefUNetConfig::default()
    });
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""kind":"reference""#), "{json}");
    assert!(json.contains(r#""norm":"batch-norm""#), "{json}");
    assert!(json.contains(r#""residual_from":"input""#), "{json}");
    // The reference's time bias on the image is the default and stays out of the JSON.
    assert!(!json.contains("time_on_image"), "{json}");
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), config);
    let unbiased = ModelConfig::Reference(RefUNetConfig {
        time_on_image: false,
        ..RefUNetConfig::default()
    });
    let json = serde_json::to_string(&unbiased).unwrap();
    assert!(json.contains(r#""time_on_image":false"#), "{json}");
    assert_eq!(
        serde_json::from_str::<ModelConfig>(&json).unwrap(),
        unbiased
    );
    // Omitted fields take their defaults.
    let partial: ModelConfig =
        serde_json::from_str(r#"{"kind":"modern","base_channels":32}"#).unwrap();
    let ModelConfig::Modern(m) = partial else {
        panic!("not modern")
    };
    assert_eq!((m.base_channels, m.channel_mult), (32, vec![1, 2, 2, 4]));
}

fn modern_error(config: ModernUNetConfig) -> String {
    config.validate().unwrap_err().to_string()
}

#[test]
fn modern_unet_explains_bad_configs() {
    let mnist = ModernUNetConfig::mnist();
    let four_levels = modern_error(ModernUNetConfig {
        channel_mult: vec![1, 2, 2, 2],
        ..mnist.clone()
    });
    assert!(
        four_levels.contains("height 28 is not divisible by 2^3 = 8"),
        "{four_levels}"
    );
    assert!(
        four_levels.contains("use at most 3 levels"),
        "{four_levels}"
    );
    let groups = modern_error(ModernUNetConfig {
        base_channels: 20,
        ..mnist.clone()
    });
    assert!(groups.contains("level width 20"), "{groups}");
    let attn = modern_error(ModernUNetConfig {
        attn_resolutions: vec![16],
        ..mnist.clone()
    });
    assert!(
        attn.contains("attention resolution 16 is not one of the level resolutions [28, 14, 7]"),
        "{attn}"
    );
    let heads = modern_error(ModernUNetConfig {
        attn_heads: 3,
        ..mnist.clone()
    });
    assert!(
        heads.contains("3 attention heads do not divide width 64"),
        "{heads}"
    );
    let dropout = modern_error(ModernUNetConfig {
        dropout: 1.0,
        ..mnist
    });
    assert!(dropout.contains("dropout must be in [0, 1)"), "{dropout}");
}

#[test]
fn reference_and_residual_reject_images_too_small_or_odd_configs() {
    let tiny = RefUNetConfig {
        image: ImageShape::new(1, 8, 8),
        ..RefUNetConfig::default()
    };
    assert!(
        tiny.validate()
            .unwrap_err()
            .to_string()
            .contains("bottom (after 4 halvings) would be 0x0")
    );
    let mixed = RefUNetConfig {
        image: ImageShape::new(1, 28, 27),
        ..RefUNetConfig::default()
    };
    assert!(
        mixed
            .validate()
            .unwrap_err()
            .to_string()
            .contains("same parity")
    );
    let odd_pe = RefUNetConfig {
        pe_dim: 7,
        ..RefUNetConfig::default()
    };
    assert!(
        odd_pe
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pe_dim must be even")
    );
    let one_level = ResUNetConfig {
        channels: vec![8],
        ..ResUNetConfig::default()
    };
    assert!(
        one_level
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least two channel levels")
    );
}

#[test]
fn image_shapes_parse() {
    assert_eq!("3x64x64".parse::<ImageShape>().unwrap(), ImageShape::RGB64);
    assert_eq!(ImageShape::MNIST.to_string(), "1x28x28");
    assert!(
        "28x28"
            .parse::<ImageShape>()
            .unwrap_err()
            .to_string()
            .contains("CxHxW")
    );
}
