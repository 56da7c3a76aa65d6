//! A modern DDPM / diffusers-style UNet.
//!
//! Layout (level widths `c_l = base · mult_l`, `temb = 4 · base`):
//! - `time_embed.{0,2}`: sinusoidal(base) → Linear(base → temb) → SiLU → Linear(temb → temb).
//! - `class_embed` (class-conditional networks only): `nn.Embedding(classes + 1, temb)`, the
//!   last row for "no class", added to the time embedding.
//! - `conv_in`: Conv3x3(C → c_0).
//! - `down.l.res.j` (j < num_res_blocks) residual blocks, each followed by `down.l.attn.j` when
//!   the level's resolution is in `attn_resolutions`; `down.l.downsample` (Conv3x3, stride 2)
//!   on every level but the last. Every output (and `conv_in`'s) is kept as a skip.
//! - `mid.res1`, `mid.attn`, `mid.res2`.
//! - `up.l.res.j` (j ≤ num_res_blocks) on `cat([x, skip])`, `up.l.attn.j` as above,
//!   `up.l.upsample` (nearest ×2 then Conv3x3) on every level but the first.
//! - `norm_out` (GroupNorm) → SiLU → `conv_out` (Conv3x3(c_0 → C), zero-initialised, so the
//!   untrained network predicts ε̂ = 0).
//!
//! Residual block (`norm1`, `conv1`, `time_proj`, `norm2`, `conv2`, `skip`):
//! `h = conv1(SiLU(GN(x))) + time_proj(SiLU(temb))`, `h = conv2(dropout(SiLU(GN(h))))` (the
//! time add and the second GroupNorm + SiLU run as one fused op),
//! output `skip(x) + h` (`skip` = Conv1x1 when the widths differ).
//! Attention (`norm`, `qkv`, `proj`): multi-head self-attention over the pixels of
//! `GN(x)` with 1x1-conv projections, added back to `x`.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ddpm_nn::{
    Conv2d, GroupNorm, InitSpec, Linear, NormAct, conv2d, matmul, scaled_softmax, silu,
    upsample_nearest2d,
};

use crate::config::ModernUNetConfig;
use crate::layers::{ClassEmbedding, MlpAct, TimeMlp, Tracer};
use crate::time::sinusoidal_embedding;

/// Epsilon of the GroupNorms (PyTorch default).
const GN_EPS: f64 = 1e-5;

/// Settings every residual block shares.
#[derive(Debug, Clone, Copy)]
struct BlockSettings {
    groups: usize,
    temb: usize,
    dropout: f64,
}

/// GroupNorm + SiLU residual block with time injection.
#[derive(Debug)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f64,
}

impl ResnetBlock {
    fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        s: BlockSettings,
    ) -> candle_core::Result<Self> {
        let skip = if in_c == out_c {
            None
        } else {
            Some(Conv2d::new(vb.pp("skip"), in_c, out_c, 1, 1, 0)?)
        };
        Ok(ResnetBlock {
            norm1: GroupNorm::new(vb.pp("norm1"), s.groups, in_c, GN_EPS)?,
            conv1: Conv2d::new(vb.pp("conv1"), in_c, out_c, 3, 1, 1)?,
            time_proj: Linear::new(vb.pp("time_proj"), s.temb, out_c)?,
            norm2: GroupNorm::new(vb.pp("norm2"), s.groups, out_c, GN_EPS)?,
            conv2: Conv2d::new(vb.pp("conv2"), out_c, out_c, 3, 1, 1)?,
            skip,
            dropout: s.dropout,
        })
    }

    /// `temb_act` is `SiLU(temb)`, shared by every block.
    fn forward(&self, x: &Tensor, temb_act: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.norm1.forward_fused(x, None, NormAct::Silu)?)?;
        // SiLU(GN(h + time_proj(temb))) in one fused op.
        let shift = self.time_proj.forward(temb_act)?;
        let mut h = self.norm2.forward_fused(&h, Some(&shift), NormAct::Silu)?;
        if train && self.dropout > 0.0 {
            h = candle_nn::ops::dropout(&h, self.dropout as f32)?;
        }
        let h = self.conv2.forward(&h)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

/// Multi-head self-attention over the pixels, with a residual connection.
#[derive(Debug)]
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: usize, groups: usize, heads: usize) -> candle_core::Result<Self> {
        Ok(Attention {
            norm: GroupNorm::new(vb.pp("norm"), groups, c, GN_EPS)?,
            qkv: Conv2d::new(vb.pp("qkv"), c, 3 * c, 1, 1, 0)?,
            proj: Conv2d::new(vb.pp("proj"), c, c, 1, 1, 0)?,
            heads,
        })
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (heads, d, n) = (self.heads, c / self.heads, h * w);
        // (B, 3C, H, W) → three (B·heads, d, N) tensors: channels by pixels, as stored.
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((b, 3, heads * d * n))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, i, 1)?.reshape((b * heads, d, n))
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        // scores (B·heads, N, N) = qᵀ k / sqrt(d), softmax over the keys.
        let attn = scaled_softmax(&matmul(&q, &k, true, false)?, 1.0 / (d as f64).sqrt())?;
        // out (B·heads, d, N) = v attnᵀ: already in the (B, C, H, W) layout.
        let out = matmul(&v, &attn, false, true)?.reshape((b, c, h, w))?;
        x + self.proj.forward(&out)?
    }
}

/// A residual block optionally followed by attention.
#[derive(Debug)]
struct Stage {
    res: ResnetBlock,
    attn: Option<Attention>,
}

impl Stage {
    fn forward(&self, x: &Tensor, temb_act: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.res.forward(x, temb_act, train)?;
        match &self.attn {
            Some(attn) => attn.forward(&h),
            None => Ok(h),
        }
    }
}

/// One resolution level of the down or up path.
#[derive(Debug)]
struct Level {
    stages: Vec<Stage>,
    /// Down-sampling (down path) or up-sampling conv (up path), if any.
    resample: Option<Conv2d>,
}

/// The modern UNet.
#[derive(Debug)]
pub(crate) struct ModernUNet {
    base: usize,
    time_embed: TimeMlp,
    class_embed: Option<ClassEmbedding>,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResnetBlock, Attention, ResnetBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out_weight: Tensor,
    conv_out_bias: Tensor,
}

impl ModernUNet {
    /// Builds the network; `cfg` must be valid.
    pub(crate) fn new(vb: VarBuilder, cfg: &ModernUNetConfig) -> candle_core::Result<Self> {
        let s = BlockSettings {
            groups: cfg.norm_groups,
            temb: cfg.time_embed_dim(),
            dropout: cfg.dropout,
        };
        let levels = cfg.channel_mult.len();
        let heights = cfg.level_heights();
        let attn_at = |l: usize| cfg.attn_resolutions.contains(&heights[l]);
        let stage = |vb: VarBuilder,
                     j: usize,
                     l: usize,
                     in_c: usize,
                     out_c: usize|
         -> candle_core::Result<Stage> {
            let attn = if attn_at(l) {
                Some(Attention::new(
                    vb.pp("attn").pp(j),
                    out_c,
                    s.groups,
                    cfg.attn_heads,
                )?)
            } else {
                None
            };
            Ok(Stage {
                res: ResnetBlock::new(vb.pp("res").pp(j), in_c, out_c, s)?,
                attn,
            })
        };
        let base = cfg.base_channels;
        let mut skips = vec![base];
        let mut cur = base;
        let mut down = Vec::with_capacity(levels);
        for l in 0..levels {
            let vb_l = vb.pp("down").pp(l);
            let out_c = cfg.level_channels(l);
            let mut stages = Vec::with_capacity(cfg.num_res_blocks);
            for j in 0..cfg.num_res_blocks {
                stages.push(stage(vb_l.clone(), j, l, cur, out_c)?);
                cur = out_c;
                skips.push(cur);
            }
            let resample = if l + 1 < levels {
                skips.push(cur);
                Some(Conv2d::new(vb_l.pp("downsample"), cur, cur, 3, 2, 1)?)
            } else {
                None
            };
            down.push(Level { stages, resample });
        }
        let vb_m = vb.pp("mid");
        let mid = (
            ResnetBlock::new(vb_m.pp("res1"), cur, cur, s)?,
            Attention::new(vb_m.pp("attn"), cur, s.groups, cfg.attn_heads)?,
            ResnetBlock::new(vb_m.pp("res2"), cur, cur, s)?,
        );
        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let vb_l = vb.pp("up").pp(l);
            let out_c = cfg.level_channels(l);
            let mut stages = Vec::with_capacity(cfg.num_res_blocks + 1);
            for j in 0..=cfg.num_res_blocks {
                let skip = skips.pop().expect("one skip per up-path block");
                stages.push(stage(vb_l.clone(), j, l, cur + skip, out_c)?);
                cur = out_c;
            }
            let resample = if l > 0 {
                Some(Conv2d::new(vb_l.pp("upsample"), cur, cur, 3, 1, 1)?)
            } else {
                None
            };
            up.push(Level { stages, resample });
        }
        let zero = InitSpec::Const(0.0).to_init();
        let vb_o = vb.pp("conv_out");
        Ok(ModernUNet {
            base,
            time_embed: TimeMlp::new(vb.pp("time_embed"), base, s.temb, s.temb, MlpAct::Silu)?,
            class_embed: (cfg.num_classes > 0)
                .then(|| ClassEmbedding::new(vb.pp("class_embed"), cfg.num_classes, s.temb))
                .transpose()?,
            conv_in: Conv2d::new(vb.pp("conv_in"), cfg.image.channels, base, 3, 1, 1)?,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(vb.pp("norm_out"), s.groups, cur, GN_EPS)?,
            conv_out_weight: vb_o.get_with_hints(
                (cfg.image.channels, cur, 3, 3),
                "weight",
                zero,
            )?,
            conv_out_bias: vb_o.get_with_hints(cfg.image.channels, "bias", zero)?,
        })
    }

    /// ε̂(x, t, class), reporting `temb`, `down{l}`, `mid`, `up{l}` (level outputs) to
    /// `trace`. A class-conditional network adds the class embedding of `classes` (the "no
    /// class" one when `None`) to the time embedding.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        classes: Option<&Tensor>,
        train: bool,
        trace: Tracer,
    ) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let emb = sinusoidal_embedding(t, batch, self.base)?.to_dtype(x.dtype())?;
        let mut temb = self.time_embed.forward(&emb)?;
        if let Some(embed) = &self.class_embed {
            temb = (temb + embed.forward(classes, batch)?)?;
        }
        trace("temb", &temb);
        let temb_act = silu(&temb)?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for (l, level) in self.down.iter().enumerate() {
            for stage in &level.stages {
                h = stage.forward(&h, &temb_act, train)?;
                skips.push(h.clone());
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&h)?;
                skips.push(h.clone());
            }
            trace(&format!("down{l}"), &h);
        }
        let (res1, attn, res2) = &self.mid;
        h = res2.forward(
            &attn.forward(&res1.forward(&h, &temb_act, train)?)?,
            &temb_act,
            train,
        )?;
        trace("mid", &h);
        let levels = self.up.len();
        for (i, level) in self.up.iter().enumerate() {
            for stage in &level.stages {
                let skip = skips.pop().expect("one skip per up-path block");
                h = stage.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb_act, train)?;
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&upsample_nearest2d(&h, 2)?)?;
            }
            trace(&format!("up{}", levels - 1 - i), &h);
        }
        let h = self.norm_out.forward_fused(&h, None, NormAct::Silu)?;
        conv2d(&h, &self.conv_out_weight, Some(&self.conv_out_bias), 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{D, DType, Device, Module, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};
    use ddpm_nn::{NormAct, conv2d_portable, group_norm_fused_portable};

    use super::{Attention, BlockSettings, ResnetBlock};

    /// A (B,C,H,W) f64 input from a seed.
    fn input(dims: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let n = dims.0 * dims.1 * dims.2 * dims.3;
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Output and input gradient of `sum(f(x) * x)`-style loss for a quick gradient comparison.
    fn value_and_grad(
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        x: &Tensor,
    ) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let loss = (&y * &y.sin().unwrap()).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    }

    /// The attention written with candle's ops ((B·heads, N, d) layout, candle softmax).
    fn attention_ops(a: &Attention, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (heads, d, n) = (a.heads, c / a.heads, h * w);
        let gn = &a.norm;
        let xn = group_norm_fused_portable(
            x,
            None,
            gn.groups(),
            gn.weight(),
            gn.bias(),
            1e-5,
            NormAct::Identity,
        )?;
        let qkv = conv2d_portable(&xn, a.qkv.weight(), Some(a.qkv.bias()), 1, 0)?
            .reshape((b, 3, heads, d, n))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, i, 1)?
                .reshape((b * heads, d, n))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
        let attn = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + conv2d_portable(&out, a.proj.weight(), Some(a.proj.bias()), 1, 0)?
    }

    #[test]
    fn attention_matches_candle_ops_in_value_and_gradient() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        for heads in [1, 2] {
            let attn = Attention::new(vb.pp(heads), 8, 4, heads).unwrap();
            let x = input((3, 8, 3, 3), heads as u64);
            let (y, g) = value_and_grad(|x| attn.forward(x), &x);
            let (yr, gr) = value_and_grad(|x| attention_ops(&attn, x), &x);
            assert!(max_diff(&y, &yr) < 1e-12, "{heads} heads: values");
            assert!(max_diff(&g, &gr) < 1e-10, "{heads} heads: gradients");
        }
    }

    #[test]
    fn resnet_block_matches_candle_ops_in_value_and_gradient() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let s = BlockSettings {
            groups: 2,
            temb: 6,
            dropout: 0.0,
        };
        let block = ResnetBlock::new(vb, 4, 6, s).unwrap();
        let x = input((2, 4, 5, 5), 3);
        let temb = input((1, 1, 2, 6), 4).reshape((2, 6)).unwrap();
        let ops = |x: &Tensor| -> candle_core::Result<Tensor> {
            let gn = |n: &ddpm_nn::GroupNorm, x: &Tensor| {
                group_norm_fused_portable(
                    x,
                    None,
                    n.groups(),
                    n.weight(),
                    n.bias(),
                    1e-5,
                    NormAct::Silu,
                )
            };
            let conv = |c: &ddpm_nn::Conv2d, x: &Tensor, p| {
                conv2d_portable(x, c.weight(), Some(c.bias()), 1, p)
            };
            let h = conv(&block.conv1, &gn(&block.norm1, x)?, 1)?;
            let t = block.time_proj.forward(&temb)?.reshape((2, 6, 1, 1))?;
            let h = conv(&block.conv2, &gn(&block.norm2, &h.broadcast_add(&t)?)?, 1)?;
            conv(block.skip.as_ref().expect("widths differ"), x, 0)? + h
        };
        let (y, g) = value_and_grad(|x| block.forward(x, &temb, true), &x);
        let (yr, gr) = value_and_grad(ops, &x);
        assert!(max_diff(&y, &yr) < 1e-12, "values");
        assert!(max_diff(&g, &gr) < 1e-10, "gradients");
    }
}
