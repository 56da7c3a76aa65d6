//! The reference UNet `MyUNet_w_pe`, with PyTorch state-dict names.
//!
//! Layout (L = number of channel levels, `H_i = H >> i`):
//! - `encoder.0.{0,1}`: two blocks C → c0 → c0 at `H_0`; `encoder.i.{1,2}` (i ≥ 1): MaxPool2d(2)
//!   (index 0, no parameters) then two blocks c_{i-1} → c_i → c_i at `H_i`.
//! - `bottom`: MaxPool2d(2), blocks `.1`, `.2` (c_{L-1} → 2c_{L-1} → 2c_{L-1}) at `H_L`, then
//!   `.3` = ConvTranspose2d(2c_{L-1} → c_{L-1}, k3, s2) back to `H_{L-1}`.
//! - `decoder.i.{0,1}`: blocks 2c_i → c_i → c_i at `H_i`; `decoder.i.2`: ConvTranspose2d(c_i →
//!   c_{i-1}) for i ≥ 1, Conv1x1(c0 → C) for i = 0. Padding = output padding = 1 when the
//!   target size is even, else 0.
//! - Time: `pe_linears_en.i`, `pe_linears_bottom`, `pe_linears_de.i` = Linear → ReLU → Linear,
//!   added per channel to each stage's input (`cat([skip, x])` in the decoder);
//!   `pe_linears_en.0` (the bias on the raw image) is absent when `time_on_image` is off.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ddpm_nn::{BatchNorm2d, Conv2d, ConvTranspose2d, LayerNormChw, leaky_relu, max_pool2d};

use crate::config::{RefNorm, RefUNetConfig, ResidualFrom};
use crate::layers::{MlpAct, TimeMlp, Tracer, per_channel};
use crate::time::PeTable;

/// Slope of `nn.LeakyReLU()` (PyTorch default).
const LEAKY_SLOPE: f64 = 0.01;
/// Epsilon of `nn.LayerNorm` (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// The block's normalisation layer.
#[derive(Debug)]
enum BlockNorm {
    Layer(LayerNormChw),
    Batch(BatchNorm2d),
}

/// `UnetBlock`: norm → Conv3x3 → LeakyReLU → Conv3x3, plus a residual, then LeakyReLU.
#[derive(Debug)]
struct RefBlock {
    norm: BlockNorm,
    conv1: Conv2d,
    conv2: Conv2d,
    residual_conv: Option<Conv2d>,
    residual_from: ResidualFrom,
}

impl RefBlock {
    /// A block at resolution `(h, w)` under `vb`'s prefix.
    fn new(
        vb: VarBuilder,
        cfg: &RefUNetConfig,
        in_c: usize,
        out_c: usize,
        (h, w): (usize, usize),
    ) -> candle_core::Result<Self> {
        let norm = match cfg.norm {
            RefNorm::LayerNorm => {
                BlockNorm::Layer(LayerNormChw::new(vb.pp("LayerNorm"), (in_c, h, w), LN_EPS)?)
            }
            RefNorm::BatchNorm => BlockNorm::Batch(BatchNorm2d::new(vb.pp("BatchNorm"), in_c)?),
        };
        let residual_conv = if in_c == out_c {
            None
        } else {
            Some(Conv2d::new(vb.pp("residual_conv"), in_c, out_c, 1, 1, 0)?)
        };
        Ok(RefBlock {
            norm,
            conv1: Conv2d::new(vb.pp("gen").pp("0"), in_c, out_c, 3, 1, 1)?,
            conv2: Conv2d::new(vb.pp("gen").pp("2"), out_c, out_c, 3, 1, 1)?,
            residual_conv,
            residual_from: cfg.residual_from,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xn = match &self.norm {
            BlockNorm::Layer(ln) => ln.forward(x)?,
            BlockNorm::Batch(bn) => bn.forward_t(x, train)?,
        };
        let h = self
            .conv2
            .forward(&leaky_relu(&self.conv1.forward(&xn)?, LEAKY_SLOPE)?)?;
        let skip = match self.residual_from {
            ResidualFrom::Normalized => &xn,
            ResidualFrom::Input => x,
        };
        let skip = match &self.residual_conv {
            Some(conv) => conv.forward(skip)?,
            None => skip.clone(),
        };
        leaky_relu(&(h + skip)?, LEAKY_SLOPE)
    }

    fn batch_norm(&self) -> Option<&BatchNorm2d> {
        match &self.norm {
            BlockNorm::Batch(bn) => Some(bn),
            BlockNorm::Layer(_) => None,
        }
    }
}

/// The last layer of a decoder level.
#[derive(Debug)]
enum DecoderOut {
    Up(ConvTranspose2d),
    Out(Conv2d),
}

/// One decoder level: two blocks, then up-sampling (or the output conv at level 0).
#[derive(Debug)]
struct DecoderLevel {
    blocks: [RefBlock; 2],
    out: DecoderOut,
}

/// `MyUNet_w_pe`.
#[derive(Debug)]
pub(crate) struct RefUNet {
    pe: PeTable,
    encoders: Vec<[RefBlock; 2]>,
    /// The encoder levels' time biases (level 0's is `None` without `time_on_image`).
    pe_en: Vec<Option<TimeMlp>>,
    bottom: [RefBlock; 2],
    bottom_up: ConvTranspose2d,
    pe_bottom: TimeMlp,
    decoders: Vec<DecoderLevel>,
    pe_de: Vec<TimeMlp>,
}

/// `ConvTranspose2d(in → out, k3, s2)` whose output has the (even or odd) size `target`.
fn up_conv(
    vb: VarBuilder,
    in_c: usize,
    out_c: usize,
    target: usize,
) -> candle_core::Result<ConvTranspose2d> {
    let pad = usize::from(target.is_multiple_of(2));
    ConvTranspose2d::new(vb, in_c, out_c, 3, 2, pad, pad)
}

impl RefUNet {
    /// Builds the network; `cfg` must be valid.
    pub(crate) fn new(vb: VarBuilder, cfg: &RefUNetConfig) -> candle_core::Result<Self> {
        let ch = &cfg.channels;
        let levels = ch.len();
        let c_img = cfg.image.channels;
        let size = |i: usize| (cfg.image.height >> i, cfg.image.width >> i);
        let relu_mlp = |vb: VarBuilder, c: usize| TimeMlp::new(vb, cfg.pe_dim, c, c, MlpAct::Relu);
        let (mut encoders, mut pe_en, mut decoders, mut pe_de) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..levels {
            let vb_e = vb.pp("encoder").pp(i);
            let in_c = if i == 0 { c_img } else { ch[i - 1] };
            // Index of the first block: level 0 has no pooling layer in front.
            let first = usize::from(i > 0);
            encoders.push([
                RefBlock::new(vb_e.pp(first), cfg, in_c, ch[i], size(i))?,
                RefBlock::new(vb_e.pp(first + 1), cfg, ch[i], ch[i], size(i))?,
            ]);
            let biased = i > 0 || cfg.time_on_image;
            pe_en.push(match biased {
                true => Some(relu_mlp(vb.pp("pe_linears_en").pp(i), in_c)?),
                false => None,
            });
            let vb_d = vb.pp("decoder").pp(i);
            let out = if i == 0 {
                DecoderOut::Out(Conv2d::new(vb_d.pp(2), ch[0], c_img, 1, 1, 0)?)
            } else {
                DecoderOut::Up(up_conv(vb_d.pp(2), ch[i], ch[i - 1], size(i - 1).0)?)
            };
            decoders.push(DecoderLevel {
                blocks: [
                    RefBlock::new(vb_d.pp(0), cfg, 2 * ch[i], ch[i], size(i))?,
                    RefBlock::new(vb_d.pp(1), cfg, ch[i], ch[i], size(i))?,
                ],
                out,
            });
            pe_de.push(relu_mlp(vb.pp("pe_linears_de").pp(i), 2 * ch[i])?);
        }
        let last = ch[levels - 1];
        let vb_b = vb.pp("bottom");
        Ok(RefUNet {
            pe: PeTable::new(cfg.n_steps, cfg.pe_dim, vb.device())?,
            encoders,
            pe_en,
            bottom: [
                RefBlock::new(vb_b.pp(1), cfg, last, 2 * last, size(levels))?,
                RefBlock::new(vb_b.pp(2), cfg, 2 * last, 2 * last, size(levels))?,
            ],
            bottom_up: up_conv(vb_b.pp(3), 2 * last, last, size(levels - 1).0)?,
            pe_bottom: relu_mlp(vb.pp("pe_linears_bottom"), last)?,
            decoders,
            pe_de,
        })
    }

    /// The frozen positional-encoding table.
    pub(crate) fn pe(&self) -> &PeTable {
        &self.pe
    }

    /// Every BatchNorm layer (none for the LayerNorm variant).
    pub(crate) fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let enc = self.encoders.iter().flatten();
        let dec = self.decoders.iter().flat_map(|d| &d.blocks);
        enc.chain(&self.bottom)
            .chain(dec)
            .filter_map(RefBlock::batch_norm)
            .collect()
    }

    /// ε̂(x, t), reporting `pe`, `pe_en{i}`, `enc{i}`, `pe_bottom`, `bottom`, `pe_de{i}`,
    /// `dec{i}` (the fixture's trace names) to `trace`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        train: bool,
        trace: Tracer,
    ) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let pe = self.pe.embed(t, batch)?;
        trace("pe", &pe);
        let blocks = |blocks: &[RefBlock; 2], x: &Tensor| -> candle_core::Result<Tensor> {
            blocks[1].forward(&blocks[0].forward(x, train)?, train)
        };
        let mut features = Vec::with_capacity(self.encoders.len());
        let mut h = x.clone();
        for (i, (enc, mlp)) in self.encoders.iter().zip(&self.pe_en).enumerate() {
            let mut input = if i == 0 { h } else { max_pool2d(&h, 2)? };
            if let Some(mlp) = mlp {
                let p = per_channel(&mlp.forward(&pe)?)?;
                trace(&format!("pe_en{i}"), &p);
                input = input.broadcast_add(&p)?;
            }
            h = blocks(enc, &input)?;
            trace(&format!("enc{i}"), &h);
            features.push(h.clone());
        }
        let p = per_channel(&self.pe_bottom.forward(&pe)?)?;
        trace("pe_bottom", &p);
        let pooled = max_pool2d(&h, 2)?.broadcast_add(&p)?;
        h = self.bottom_up.forward(&blocks(&self.bottom, &pooled)?)?;
        trace("bottom", &h);
        for (i, (dec, mlp)) in self.decoders.iter().zip(&self.pe_de).enumerate().rev() {
            let p = per_channel(&mlp.forward(&pe)?)?;
            trace(&format!("pe_de{i}"), &p);
            let input = Tensor::cat(&[&features[i], &h], 1)?.broadcast_add(&p)?;
            let y = blocks(&dec.blocks, &input)?;
            h = match &dec.out {
                DecoderOut::Up(up) => up.forward(&y)?,
                DecoderOut::Out(conv) => conv.forward(&y)?,
            };
            trace(&format!("dec{i}"), &h);
        }
        Ok(h)
    }
}
