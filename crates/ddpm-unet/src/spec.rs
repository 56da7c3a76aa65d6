//! A network described by the knobs a command line offers (`--model`, `--channels`,
//! `--pe-dim`, `--n-steps`, the image shape), turned into a full [`ModelConfig`].

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{
    ImageShape, ModelConfig, ModernUNetConfig, RefNorm, RefUNetConfig, ResUNetConfig, ResidualFrom,
};
use crate::error::{Result, UnetError, config_error};

/// The network families, as command lines name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// `ref`: the reference UNet with LayerNorm blocks.
    Ref,
    /// `ref-bn`: the reference UNet with BatchNorm blocks.
    RefBn,
    /// `res`: the DL-Demos residual UNet.
    Res,
    /// `modern`: the GroupNorm/attention UNet.
    Modern,
}

impl FromStr for ModelKind {
    type Err = UnetError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ref" => Ok(ModelKind::Ref),
            "ref-bn" => Ok(ModelKind::RefBn),
            "res" => Ok(ModelKind::Res),
            "modern" => Ok(ModelKind::Modern),
            _ => config_error(
                "model",
                format!("unknown model `{s}`: use ref, ref-bn, res or modern"),
            ),
        }
    }
}

/// Command-line description of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The family.
    pub kind: ModelKind,
    /// Image shape.
    pub image: ImageShape,
    /// Widths per level (`modern`: level widths, multiples of the first).
    pub channels: Vec<usize>,
    /// Time-encoding width (`ref`, `ref-bn`, `res`).
    pub pe_dim: usize,
    /// Diffusion steps T (rows of the time table of `ref`, `ref-bn`, `res`).
    pub n_steps: usize,
    /// Residual source of the reference blocks.
    pub residual_from: ResidualFrom,
    /// Attention resolutions of `modern` (default: the lowest level, or a quarter of the
    /// image height if that is larger).
    pub attn_resolutions: Option<Vec<usize>>,
    /// Classes to condition on (0 = unconditional; `modern` and `res` only).
    pub num_classes: usize,
}

impl ModelSpec {
    /// The full, validated configuration.
    pub fn to_config(&self) -> Result<ModelConfig> {
        let (image, channels) = (self.image, self.channels.clone());
        let num_classes = self.num_classes;
        if num_classes > 0 && matches!(self.kind, ModelKind::Ref | ModelKind::RefBn) {
            return config_error(
                "reference UNet",
                "it has no class conditioning: use --model modern or --model res for a \
                 class-conditional network",
            );
        }
        let config = match self.kind {
            ModelKind::Ref | ModelKind::RefBn => ModelConfig::Reference(RefUNetConfig {
                image,
                n_steps: self.n_steps,
                channels,
                pe_dim: self.pe_dim,
                norm: if self.kind == ModelKind::RefBn {
                    RefNorm::BatchNorm
                } else {
                    RefNorm::LayerNorm
                },
                residual_from: self.residual_from,
                time_on_image: true,
            }),
            ModelKind::Res => ModelConfig::Residual(ResUNetConfig {
                image,
                n_steps: self.n_steps,
                channels,
                pe_dim: self.pe_dim,
                num_classes,
            }),
            ModelKind::Modern => {
                let base = channels.first().copied().unwrap_or(0);
                if base == 0 || channels.iter().any(|c| c % base != 0) {
                    return config_error(
                        "modern UNet",
                        format!("widths {channels:?} must be positive multiples of the first"),
                    );
                }
                let groups = crate::config::norm_groups_for(base);
                let lowest = image.height >> (channels.len() - 1);
                let attn = self
                    .attn_resolutions
                    .clone()
                    .unwrap_or_else(|| vec![lowest.max(image.height / 4)]);
                ModelConfig::Modern(ModernUNetConfig {
                    image,
                    base_channels: base,
                    channel_mult: channels.iter().map(|c| c / base).collect(),
                    attn_resolutions: attn,
                    norm_groups: groups,
                    num_classes,
                    ..ModernUNetConfig::default()
                })
            }
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ModelKind, channels: Vec<usize>, image: ImageShape) -> ModelSpec {
        ModelSpec {
            kind,
            image,
            channels,
            pe_dim: 20,
            n_steps: 1000,
            residual_from: ResidualFrom::Normalized,
            attn_resolutions: None,
            num_classes: 0,
        }
    }

    #[test]
    fn specs_build_the_documented_defaults() {
        let c = spec(ModelKind::Ref, vec![32, 64, 128, 256], ImageShape::MNIST)
            .to_config()
            .unwrap();
        assert_eq!(c, ModelConfig::Reference(RefUNetConfig::default()));
        let c = spec(
            ModelKind::Modern,
            vec![64, 128, 128, 256],
            ImageShape::RGB64,
        )
        .to_config()
        .unwrap();
        assert_eq!(c, ModelConfig::Modern(ModernUNetConfig::default()));
        let c = spec(ModelKind::Modern, vec![32, 64, 64], ImageShape::MNIST)
            .to_config()
            .unwrap();
        assert_eq!(c, ModelConfig::Modern(ModernUNetConfig::mnist()));
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!("unet".parse::<ModelKind>().is_err());
        assert!(
            spec(ModelKind::Modern, vec![32, 48], ImageShape::MNIST)
                .to_config()
                .is_err()
        );
        assert!(
            spec(ModelKind::Ref, vec![8; 6], ImageShape::MNIST)
                .to_config()
                .is_err()
        );
        let conditional_ref = ModelSpec {
            num_classes: 10,
            ..spec(ModelKind::Ref, vec![8, 16], ImageShape::MNIST)
        };
        let err = conditional_ref.to_config().unwrap_err().to_string();
        assert!(err.contains("--model modern"), "{err}");
    }
}
