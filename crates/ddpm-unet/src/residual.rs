//! The residual UNet of DL-Demos (`unet_res_cfg`), with PyTorch state-dict names.
//!
//! Layout (channels `c_0 … c_{L-1}`, `H_i = H >> i`):
//! - `class_embed` (class-conditional networks only): `nn.Embedding(classes + 1, pe_dim)`, the
//!   last row for "no class", added to the time encoding that every level reads.
//! - encoder level i < L-1: `pe_linears_en.i` (Linear → ReLU → Linear, width of the level
//!   input) added to the input, `encoders.i.{0,1}` blocks (in → c_i → c_i) at `H_i`, the output
//!   kept as skip, then `downs.i` = Conv2d(c_i → c_i, k2, s2).
//! - middle: `pe_mid` (one Linear) added, `mid.{0,1}` blocks (c_{L-2} → c_{L-1} → c_{L-1}).
//! - decoder j (deepest first, level i = L-2-j): `ups.j` = ConvTranspose2d(k2, s2), zero-padded
//!   to the skip size, `cat([skip, x])`, `pe_linears_de.j` (one Linear, width 2c_i) added,
//!   `decoders.j.{0,1}` blocks (2c_i → c_i → c_i).
//! - `conv_out`: Conv3x3(c_0 → C).
//!
//! Block (`ln`, `conv1`, `conv2`, `residual_conv`): LayerNorm over (C,H,W) → Conv3x3 → ReLU →
//! Conv3x3, plus the residual from the raw input (1x1 conv when the widths differ), then ReLU.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ddpm_nn::{Conv2d, ConvTranspose2d, LayerNormChw, Linear, relu};

use crate::config::ResUNetConfig;
use crate::layers::{ClassEmbedding, MlpAct, TimeMlp, Tracer, per_channel};
use crate::time::PeTable;

/// Epsilon of `nn.LayerNorm` (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// DL-Demos `UnetBlock` with `residual=True`.
#[derive(Debug)]
struct ResBlock {
    ln: LayerNormChw,
    conv1: Conv2d,
    conv2: Conv2d,
    residual_conv: Option<Conv2d>,
}

impl ResBlock {
    fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        (h, w): (usize, usize),
    ) -> candle_core::Result<Self> {
        let residual_conv = if in_c == out_c {
            None
        } else {
            Some(Conv2d::new(vb.pp("residual_conv"), in_c, out_c, 1, 1, 0)?)
        };
        Ok(ResBlock {
            ln: LayerNormChw::new(vb.pp("ln"), (in_c, h, w), LN_EPS)?,
            conv1: Conv2d::new(vb.pp("conv1"), in_c, out_c, 3, 1, 1)?,
            conv2: Conv2d::new(vb.pp("conv2"), out_c, out_c, 3, 1, 1)?,
            residual_conv,
        })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.ln.forward(x)?;
        let h = self.conv2.forward(&relu(&self.conv1.forward(&h)?)?)?;
        let skip = match &self.residual_conv {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        relu(&(h + skip)?)
    }
}

/// Two blocks in sequence (`nn.Sequential(UnetBlock, UnetBlock)`).
#[derive(Debug)]
struct BlockPair([ResBlock; 2]);

impl BlockPair {
    fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        size: (usize, usize),
    ) -> candle_core::Result<Self> {
        Ok(BlockPair([
            ResBlock::new(vb.pp(0), in_c, out_c, size)?,
            ResBlock::new(vb.pp(1), out_c, out_c, size)?,
        ]))
    }
}

impl Module for BlockPair {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0[1].forward(&self.0[0].forward(x)?)
    }
}

/// The DL-Demos `UNet`.
#[derive(Debug)]
pub(crate) struct ResUNet {
    pe: PeTable,
    class_embed: Option<ClassEmbedding>,
    pe_en: Vec<TimeMlp>,
    encoders: Vec<BlockPair>,
    downs: Vec<Conv2d>,
    pe_mid: Linear,
    mid: BlockPair,
    pe_de: Vec<Linear>,
    ups: Vec<ConvTranspose2d>,
    decoders: Vec<BlockPair>,
    conv_out: Conv2d,
}

impl ResUNet {
    /// Builds the network; `cfg` must be valid.
    pub(crate) fn new(vb: VarBuilder, cfg: &ResUNetConfig) -> candle_core::Result<Self> {
        let ch = &cfg.channels;
        let last = ch.len() - 1;
        let size = |i: usize| (cfg.image.height >> i, cfg.image.width >> i);
        let (mut pe_en, mut encoders, mut downs) = (Vec::new(), Vec::new(), Vec::new());
        let mut prev = cfg.image.channels;
        for (i, &c) in ch[..last].iter().enumerate() {
            pe_en.push(TimeMlp::new(
                vb.pp("pe_linears_en").pp(i),
                cfg.pe_dim,
                prev,
                prev,
                MlpAct::Relu,
            )?);
            encoders.push(BlockPair::new(vb.pp("encoders").pp(i), prev, c, size(i))?);
            downs.push(Conv2d::new(vb.pp("downs").pp(i), c, c, 2, 2, 0)?);
            prev = c;
        }
        let pe_mid = Linear::new(vb.pp("pe_mid"), cfg.pe_dim, prev)?;
        let mid = BlockPair::new(vb.pp("mid"), prev, ch[last], size(last))?;
        prev = ch[last];
        let (mut pe_de, mut ups, mut decoders) = (Vec::new(), Vec::new(), Vec::new());
        for (j, i) in (0..last).rev().enumerate() {
            let c = ch[i];
            pe_de.push(Linear::new(
                vb.pp("pe_linears_de").pp(j),
                cfg.pe_dim,
                2 * c,
            )?);
            ups.push(ConvTranspose2d::new(
                vb.pp("ups").pp(j),
                prev,
                c,
                2,
                2,
                0,
                0,
            )?);
            decoders.push(BlockPair::new(vb.pp("decoders").pp(j), 2 * c, c, size(i))?);
            prev = c;
        }
        Ok(ResUNet {
            pe: PeTable::new(cfg.n_steps, cfg.pe_dim, vb.device())?,
            class_embed: (cfg.num_classes > 0)
                .then(|| ClassEmbedding::new(vb.pp("class_embed"), cfg.num_classes, cfg.pe_dim))
                .transpose()?,
            pe_en,
            encoders,
            downs,
            pe_mid,
            mid,
            pe_de,
            ups,
            decoders,
            conv_out: Conv2d::new(vb.pp("conv_out"), prev, cfg.image.channels, 3, 1, 1)?,
        })
    }

    /// The frozen positional-encoding table.
    pub(crate) fn pe(&self) -> &PeTable {
        &self.pe
    }

    /// ε̂(x, t, class), reporting `pe`, `enc{i}` (block outputs), `mid`, `dec{j}` to `trace`.
    /// A class-conditional network adds the class embedding of `classes` (the "no class" one
    /// when `None`) to the time encoding.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        classes: Option<&Tensor>,
        trace: Tracer,
    ) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let mut pe = self.pe.embed(t, batch)?;
        if let Some(embed) = &self.class_embed {
            pe = (pe + embed.forward(classes, batch)?)?;
        }
        trace("pe", &pe);
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut h = x.clone();
        for (i, ((mlp, enc), down)) in self
            .pe_en
            .iter()
            .zip(&self.encoders)
            .zip(&self.downs)
            .enumerate()
        {
            let out = enc.forward(&h.broadcast_add(&per_channel(&mlp.forward(&pe)?)?)?)?;
            trace(&format!("enc{i}"), &out);
            h = down.forward(&out)?;
            skips.push(out);
        }
        h = self
            .mid
            .forward(&h.broadcast_add(&per_channel(&self.pe_mid.forward(&pe)?)?)?)?;
        trace("mid", &h);
        for (j, ((lin, up), dec)) in self
            .pe_de
            .iter()
            .zip(&self.ups)
            .zip(&self.decoders)
            .enumerate()
        {
            let skip = skips.pop().expect("one skip per decoder level");
            let up = pad_to(&up.forward(&h)?, &skip)?;
            let input = Tensor::cat(&[&skip, &up], 1)?;
            h = dec.forward(&input.broadcast_add(&per_channel(&lin.forward(&pe)?)?)?)?;
            trace(&format!("dec{j}"), &h);
        }
        self.conv_out.forward(&h)
    }
}

/// Zero-pads `x` (B,C,h,w) to the spatial size of `like`, the extra row/column going
/// after (`F.pad` with `diff // 2` before and the rest after).
fn pad_to(x: &Tensor, like: &Tensor) -> candle_core::Result<Tensor> {
    let (dh, dw) = (like.dim(2)? - x.dim(2)?, like.dim(3)? - x.dim(3)?);
    x.pad_with_zeros(2, dh / 2, dh - dh / 2)?
        .pad_with_zeros(3, dw / 2, dw - dw / 2)
}
