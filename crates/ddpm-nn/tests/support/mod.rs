//! Naive loop implementations (f64) used as references by the tests, plus input helpers.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tensor of U(-1, 1) values (f64) from a seed.
pub fn rand_tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Flat f64 values and dims of a 4-D tensor.
pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Direct convolution: x (B,Ci,H,W), w (Co,Ci,k,k).
pub fn conv2d_ref(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Tensor {
    let (bs, ci, h, wd) = x.dims4().unwrap();
    let (co, _, k, _) = w.dims4().unwrap();
    let (xv, wv) = (vals(x), vals(w));
    let bv = b.map(vals);
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (wd + 2 * pad - k) / stride + 1;
    let mut out = vec![0f64; bs * co * ho * wo];
    for n in 0..bs {
        for o in 0..co {
            for i in 0..ho {
                for j in 0..wo {
                    let mut s = bv.as_ref().map_or(0.0, |b| b[o]);
                    for c in 0..ci {
                        for p in 0..k {
                            for q in 0..k {
                                let (y, xx) = (
                                    (i * stride + p) as isize - pad as isize,
                                    (j * stride + q) as isize - pad as isize,
                                );
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                    s += xv[((n * ci + c) * h + y as usize) * wd + xx as usize]
                                        * wv[((o * ci + c) * k + p) * k + q];
                                }
                            }
                        }
                    }
                    out[((n * co + o) * ho + i) * wo + j] = s;
                }
            }
        }
    }
    Tensor::from_vec(out, (bs, co, ho, wo), &Device::Cpu).unwrap()
}

/// Scatter definition of the transposed convolution: x (B,Ci,H,W), w (Ci,Co,k,k).
pub fn conv_transpose2d_ref(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    out_pad: usize,
) -> Tensor {
    let (bs, ci, h, wd) = x.dims4().unwrap();
    let (_, co, k, _) = w.dims4().unwrap();
    let (xv, wv) = (vals(x), vals(w));
    let ho = (h - 1) * stride + k + out_pad - 2 * pad;
    let wo = (wd - 1) * stride + k + out_pad - 2 * pad;
    let mut out = vec![0f64; bs * co * ho * wo];
    if let Some(b) = b {
        let bv = vals(b);
        for n in 0..bs {
            for o in 0..co {
                for e in &mut out[(n * co + o) * ho * wo..(n * co + o + 1) * ho * wo] {
                    *e = bv[o];
                }
            }
        }
    }
    for n in 0..bs {
        for c in 0..ci {
            for i in 0..h {
                for j in 0..wd {
                    let v = xv[((n * ci + c) * h + i) * wd + j];
                    for o in 0..co {
                        for p in 0..k {
                            for q in 0..k {
                                let y = (i * stride + p) as isize - pad as isize;
                                let xx = (j * stride + q) as isize - pad as isize;
                                if y >= 0 && xx >= 0 && (y as usize) < ho && (xx as usize) < wo {
                                    out[((n * co + o) * ho + y as usize) * wo + xx as usize] +=
                                        v * wv[((c * co + o) * k + p) * k + q];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (bs, co, ho, wo), &Device::Cpu).unwrap()
}

/// Floor-mode max-pool values.
pub fn max_pool_ref(x: &Tensor, k: usize) -> Tensor {
    let (bs, c, h, w) = x.dims4().unwrap();
    let xv = vals(x);
    let (ho, wo) = (h / k, w / k);
    let mut out = vec![f64::NEG_INFINITY; bs * c * ho * wo];
    for n in 0..bs * c {
        for i in 0..ho {
            for j in 0..wo {
                for p in 0..k {
                    for q in 0..k {
                        let v = xv[(n * h + i * k + p) * w + j * k + q];
                        let o = &mut out[(n * ho + i) * wo + j];
                        *o = o.max(v);
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (bs, c, ho, wo), &Device::Cpu).unwrap()
}

/// Largest absolute difference.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    vals(a)
        .iter()
        .zip(vals(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
