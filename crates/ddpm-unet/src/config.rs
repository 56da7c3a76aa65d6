//! Serializable configurations of the three networks and their validation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, UnetError, config_error};

/// Shape of one image: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Colour channels (1 for MNIST, 3 for RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    /// MNIST: 1x28x28.
    pub const MNIST: ImageShape = ImageShape::new(1, 28, 28);
    /// 64x64 RGB (anime faces).
    pub const RGB64: ImageShape = ImageShape::new(3, 64, 64);

    /// A shape from its three sizes.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        ImageShape {
            channels,
            height,
            width,
        }
    }

    /// `[C, H, W]`.
    pub fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    fn check_nonzero(&self, model: &'static str) -> Result<()> {
        if self.channels == 0 || self.height == 0 || self.width == 0 {
            return config_error(model, format!("image shape {self} has a zero size"));
        }
        Ok(())
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

impl FromStr for ImageShape {
    type Err = UnetError;

    /// Parses `CxHxW`, e.g. `1x28x28`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('x').collect();
        let sizes: Option<Vec<usize>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
        match sizes.as_deref() {
            Some(&[c, h, w]) => Ok(ImageShape::new(c, h, w)),
            _ => config_error(
                "image",
                format!("`{s}` is not of the form CxHxW (e.g. 1x28x28)"),
            ),
        }
    }
}

/// Which normalisation the reference UNet's blocks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefNorm {
    /// `nn.LayerNorm((C,H,W))` with a (C,H,W) elementwise affine (`<block>.LayerNorm.*`).
    #[default]
    LayerNorm,
    /// `nn.BatchNorm2d(C)` on the block input (`<block>.BatchNorm.*`): the reference's final version.
    BatchNorm,
}

/// Where the reference UNet's block takes its residual from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResidualFrom {
    /// The normalised block input (the author's repository; the fixture's `out`).
    #[default]
    Normalized,
    /// The raw block input (the blog's variant; the fixture's `out_residual_input`).
    Input,
}

/// The reference UNet `MyUNet_w_pe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefUNetConfig {
    /// Image shape; the LayerNorm affines depend on it.
    pub image: ImageShape,
    /// Number of diffusion steps T: rows of the positional-encoding table.
    pub n_steps: usize,
    /// Channels of the encoder levels (`ch_list`); the bottom has twice the last.
    pub channels: Vec<usize>,
    /// Width of the sinusoidal time encoding (even).
    pub pe_dim: usize,
    /// Block normalisation.
    pub norm: RefNorm,
    /// Source of the block residual.
    pub residual_from: ResidualFrom,
    /// Whether the first level's time bias is added to the raw image (the reference,
    /// `pe_linears_en.0`); `false` leaves the image unbiased and time enters at the other
    /// stages only (left out of the JSON when true, so older configurations are unchanged).
    #[serde(skip_serializing_if = "is_true")]
    pub time_on_image: bool,
}

impl Default for RefUNetConfig {
    fn default() -> Self {
        RefUNetConfig {
            image: ImageShape::MNIST,
            n_steps: 1000,
            channels: vec![32, 64, 128, 256],
            pe_dim: 20,
            norm: RefNorm::LayerNorm,
            residual_from: ResidualFrom::Normalized,
            time_on_image: true,
        }
    }
}

impl RefUNetConfig {
    /// Checks sizes: every level (and the bottom, `len(channels)` halvings down) keeps at
    /// least one pixel, `pe_dim` is even, nothing is zero.
    pub fn validate(&self) -> Result<()> {
        const M: &str = "reference UNet";
        self.image.check_nonzero(M)?;
        check_common(M, self.n_steps, self.pe_dim, &self.channels)?;
        let levels = self.channels.len() as u32;
        let (h, w) = (self.image.height >> levels, self.image.width >> levels);
        if h == 0 || w == 0 {
            return config_error(
                M,
                format!(
                    "image {} is too small for {levels} levels: the bottom (after {levels} \
                     halvings) would be {h}x{w}; use fewer channel levels or a larger image",
                    self.image
                ),
            );
        }
        for i in 0..levels {
            let (h, w) = (self.image.height >> i, self.image.width >> i);
            if h % 2 != w % 2 {
                return config_error(
                    M,
                    format!(
                        "level {i} is {h}x{w}: the transposed convolutions use one padding for \
                         both axes, so height and width must have the same parity at every level"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The residual UNet of DL-Demos (`unet_res_cfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResUNetConfig {
    /// Image shape; the LayerNorm affines depend on it.
    pub image: ImageShape,
    /// Number of diffusion steps T: rows of the positional-encoding table.
    pub n_steps: usize,
    /// Channels per level; the last one is the middle (bottleneck) width.
    pub channels: Vec<usize>,
    /// Width of the sinusoidal time encoding (even).
    pub pe_dim: usize,
    /// Classes the network is conditioned on (0 = unconditional; absent from older files).
    #[serde(skip_serializing_if = "is_zero")]
    pub num_classes: usize,
}

impl Default for ResUNetConfig {
    fn default() -> Self {
        ResUNetConfig {
            image: ImageShape::MNIST,
            n_steps: 1000,
            channels: vec![10, 20, 40, 80],
            pe_dim: 128,
            num_classes: 0,
        }
    }
}

impl ResUNetConfig {
    /// Checks sizes: at least two levels, the middle (after `len(channels)-1` halvings)
    /// keeps at least one pixel, `pe_dim` is even, nothing is zero.
    pub fn validate(&self) -> Result<()> {
        const M: &str = "residual UNet";
        self.image.check_nonzero(M)?;
        check_common(M, self.n_steps, self.pe_dim, &self.channels)?;
        if self.channels.len() < 2 {
            return config_error(M, "needs at least two channel levels (encoder + middle)");
        }
        let downs = (self.channels.len() - 1) as u32;
        let (h, w) = (self.image.height >> downs, self.image.width >> downs);
        if h == 0 || w == 0 {
            return config_error(
                M,
                format!(
                    "image {} is too small for {downs} down-samplings (middle would be {h}x{w})",
                    self.image
                ),
            );
        }
        Ok(())
    }
}

/// A modern DDPM/diffusers-style UNet: GroupNorm + SiLU residual blocks, a time-embedding
/// MLP, self-attention at chosen resolutions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModernUNetConfig {
    /// Image shape. Height and width must be divisible by `2^(len(channel_mult)-1)`.
    pub image: ImageShape,
    /// Base width; level `i` has `base_channels * channel_mult[i]` channels.
    pub base_channels: usize,
    /// Width multipliers, one per resolution level (each level but the last halves the size).
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more per level).
    pub num_res_blocks: usize,
    /// Resolutions (height of the feature map) at which self-attention follows each block.
    pub attn_resolutions: Vec<usize>,
    /// Attention heads (must divide every attended width).
    pub attn_heads: usize,
    /// Dropout probability inside residual blocks (training only; 0 = deterministic).
    pub dropout: f64,
    /// GroupNorm groups (must divide every width; command lines and presets choose the most,
    /// up to 32, that leave at least 4 channels per group at the base width).
    pub norm_groups: usize,
    /// Classes the network is conditioned on (0 = unconditional; absent from older files).
    #[serde(skip_serializing_if = "is_zero")]
    pub num_classes: usize,
}

/// Serde's test for leaving an unconditional network's `num_classes` out of its JSON.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for ModernUNetConfig {
    /// The recommended network for 64x64 RGB anime faces: 64·`[1, 2, 2, 4]`, attention at 16x16.
    fn default() -> Self {
        ModernUNetConfig {
            image: ImageShape::RGB64,
            base_channels: 64,
            channel_mult: vec![1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            attn_heads: 1,
            dropout: 0.0,
            norm_groups: norm_groups_for(64),
            num_classes: 0,
        }
    }
}

/// GroupNorm groups for a modern UNet whose narrowest level is `base` wide: as many as
/// possible, up to 32, with at least [`MIN_CHANNELS_PER_GROUP`] channels in each.
///
/// A group of one channel (instance norm) removes that channel's per-image mean, and with it the
/// image's overall brightness, from every block branch and from `norm_out` before the output
/// conv: measured on the `quick` preset (16 channels), 16 groups left most sampled tiles with
/// grey backgrounds.
pub(crate) fn norm_groups_for(base: usize) -> usize {
    [32usize, 16, 8, 4, 2, 1]
        .into_iter()
        .find(|g| base.is_multiple_of(*g) && base / g >= MIN_CHANNELS_PER_GROUP)
        .unwrap_or(1)
}

/// Fewest channels per GroupNorm group that [`norm_groups_for`] chooses (where the width allows).
pub(crate) const MIN_CHANNELS_PER_GROUP: usize = 4;

impl ModernUNetConfig {
    /// A small configuration for MNIST (1x28x28): 32·`[1, 2, 2]` (28 → 14 → 7), attention at 7x7.
    pub fn mnist() -> Self {
        ModernUNetConfig {
            image: ImageShape::MNIST,
            base_channels: 32,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![7],
            attn_heads: 1,
            dropout: 0.0,
            norm_groups: norm_groups_for(32),
            num_classes: 0,
        }
    }

    /// Width of level `i`.
    pub fn level_channels(&self, level: usize) -> usize {
        self.base_channels * self.channel_mult[level]
    }

    /// Width of the time embedding (4 × `base_channels`, as in DDPM).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// Feature-map height of each level: `H, H/2, …`.
    pub fn level_heights(&self) -> Vec<usize> {
        (0..self.channel_mult.len())
            .map(|i| self.image.height >> i)
            .collect()
    }

    /// Checks that the image halves evenly at every level, that GroupNorm groups and
    /// attention heads divide every width, and that attention resolutions exist.
    pub fn validate(&self) -> Result<()> {
        const M: &str = "modern UNet";
        self.image.check_nonzero(M)?;
        if self.base_channels == 0 || self.channel_mult.is_empty() {
            return config_error(
                M,
                "base_channels and channel_mult must be non-empty / non-zero",
            );
        }
        if self.channel_mult.contains(&0) {
            return config_error(
                M,
                format!("channel_mult {:?} contains 0", self.channel_mult),
            );
        }
        if self.num_res_blocks == 0 {
            return config_error(M, "num_res_blocks must be at least 1");
        }
        let halvings = self.channel_mult.len() - 1;
        let factor = 1usize << halvings;
        for (what, size) in [("height", self.image.height), ("width", self.image.width)] {
            if size % factor != 0 {
                let max_levels = size.trailing_zeros() as usize + 1;
                return config_error(
                    M,
                    format!(
                        "image {what} {size} is not divisible by 2^{halvings} = {factor}, so \
                         {} levels cannot halve it evenly; use at most {max_levels} levels \
                         (channel_mult of length ≤ {max_levels}) — e.g. 28 → 14 → 7 is 3 levels",
                        self.channel_mult.len()
                    ),
                );
            }
        }
        if self.norm_groups == 0 {
            return config_error(M, "norm_groups must be at least 1");
        }
        let widths: Vec<usize> = (0..self.channel_mult.len())
            .map(|i| self.level_channels(i))
            .collect();
        if let Some(c) = widths.iter().find(|&&c| c % self.norm_groups != 0) {
            return config_error(
                M,
                format!(
                    "GroupNorm with {} groups needs widths divisible by it, but level width {c} \
                     is not (widths {widths:?})",
                    self.norm_groups
                ),
            );
        }
        let heights = self.level_heights();
        for &r in &self.attn_resolutions {
            let Some(level) = heights.iter().position(|&h| h == r) else {
                return config_error(
                    M,
                    format!(
                        "attention resolution {r} is not one of the level resolutions {heights:?}"
                    ),
                );
            };
            let c = widths[level];
            if self.attn_heads == 0 || !c.is_multiple_of(self.attn_heads) {
                return config_error(
                    M,
                    format!(
                        "{} attention heads do not divide width {c}",
                        self.attn_heads
                    ),
                );
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return config_error(
                M,
                format!("dropout must be in [0, 1), got {}", self.dropout),
            );
        }
        Ok(())
    }
}

/// Which network to build, with its configuration (serialised with a `kind` tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// The reference UNet `MyUNet_w_pe`.
    Reference(RefUNetConfig),
    /// The DL-Demos residual UNet.
    Residual(ResUNetConfig),
    /// The modern GroupNorm/attention UNet.
    Modern(ModernUNetConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Reference(RefUNetConfig::default())
    }
}

impl ModelConfig {
    /// Validates the inner configuration.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Reference(c) => c.validate(),
            ModelConfig::Residual(c) => c.validate(),
            ModelConfig::Modern(c) => c.validate(),
        }
    }

    /// The image shape the network takes and returns.
    pub fn image(&self) -> ImageShape {
        match self {
            ModelConfig::Reference(c) => c.image,
            ModelConfig::Residual(c) => c.image,
            ModelConfig::Modern(c) => c.image,
        }
    }

    /// The number of classes the network is conditioned on (0: unconditional).
    pub fn num_classes(&self) -> usize {
        match self {
            ModelConfig::Reference(_) => 0,
            ModelConfig::Residual(c) => c.num_classes,
            ModelConfig::Modern(c) => c.num_classes,
        }
    }

    /// The number of timesteps the network's fixed table covers, if it has one (the
    /// modern UNet computes its encoding for any `t`).
    pub fn n_steps(&self) -> Option<usize> {
        match self {
            ModelConfig::Reference(c) => Some(c.n_steps),
            ModelConfig::Residual(c) => Some(c.n_steps),
            ModelConfig::Modern(_) => None,
        }
    }
}

fn check_common(
    model: &'static str,
    n_steps: usize,
    pe_dim: usize,
    channels: &[usize],
) -> Result<()> {
    if n_steps == 0 {
        return config_error(model, "n_steps must be at least 1");
    }
    if pe_dim == 0 || !pe_dim.is_multiple_of(2) {
        return config_error(
            model,
            format!("pe_dim must be even and positive, got {pe_dim}"),
        );
    }
    if channels.is_empty() || channels.contains(&0) {
        return config_error(
            model,
            format!("channels {channels:?} must be non-empty and non-zero"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MIN_CHANNELS_PER_GROUP, norm_groups_for};

    #[test]
    fn groups_keep_several_channels_each() {
        let cases = [
            (16, 4),
            (32, 8),
            (64, 16),
            (128, 32),
            (256, 32),
            (10, 2),
            (3, 1),
        ];
        for (base, groups) in cases {
            assert_eq!(norm_groups_for(base), groups, "base {base}");
            assert_eq!(base % groups, 0);
            assert!(base / groups >= MIN_CHANNELS_PER_GROUP || groups == 1);
        }
    }
}
