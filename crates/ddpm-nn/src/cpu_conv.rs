//! CPU kernels of the convolution family: im2col + GEMM, parallel over the batch.
//!
//! All three kernels share one geometry, seen from the ordinary convolution: an input of
//! `c_in x h x w` convolved with a `c_out x c_in x k x k` kernel (stride, zero padding) gives an
//! output of `c_out x ho x wo`. Forward is `y_n = W · cols(x_n)`; the input gradient is
//! `col2im(Wᵀ · dy_n)`; the weight gradient is `Σ_n dy_n · cols(x_n)ᵀ`. A transposed
//! convolution is the input-gradient kernel run forward.

use rayon::prelude::*;

/// An element type the kernels handle (f32, f64).
pub(crate) trait Elem: Copy + Default + Send + Sync + std::ops::AddAssign + 'static {
    /// The multiplicative identity.
    const ONE: Self;
}

impl Elem for f32 {
    const ONE: Self = 1.0;
}

impl Elem for f64 {
    const ONE: Self = 1.0;
}

/// Geometry of an ordinary convolution (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    /// Rows of the im2col matrix (`c_in*k*k`).
    fn col_rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels per channel.
    fn out_px(&self) -> usize {
        self.ho * self.wo
    }

    /// Input elements per sample.
    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Output elements per sample.
    fn out_len(&self) -> usize {
        self.c_out * self.out_px()
    }

    /// A 1x1, stride-1, unpadded convolution needs no im2col: the input is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The output columns `lo..hi` whose kernel tap `j` reads inside the input row.
    #[inline]
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        // ow*s + j - p >= 0  and  ow*s + j - p < w
        let lo = self.pad.saturating_sub(j).div_ceil(self.stride);
        let hi = if self.w + self.pad > j {
            ((self.w + self.pad - j - 1) / self.stride + 1).min(self.wo)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Input index along one axis for output position `o` and kernel tap `t`, if inside.
    #[inline]
    fn src(&self, o: usize, t: usize, n: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.pad)
            .filter(|&i| i < n)
    }
}

/// `cols[(c*k+i)*k+j, oh*wo+ow] = x[c, oh*s+i-p, ow*s+j-p]` (zero outside).
fn im2col<T: Elem>(g: &Geom, x: &[T], cols: &mut [T]) {
    let px = g.out_px();
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.k {
            for j in 0..g.k {
                let row = &mut cols[((c * g.k + i) * g.k + j) * px..][..px];
                for oh in 0..g.ho {
                    let dst = &mut row[oh * g.wo..(oh + 1) * g.wo];
                    match g.src(oh, i, g.h) {
                        None => dst.fill(T::default()),
                        Some(ih) => {
                            let src = &plane[ih * g.w..(ih + 1) * g.w];
                            let (lo, hi) = g.valid_cols(j);
                            dst[..lo].fill(T::default());
                            dst[hi..].fill(T::default());
                            if g.stride == 1 {
                                let start = lo + j - g.pad;
                                dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                            } else {
                                for (ow, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                                    *d = src[ow * g.stride + j - g.pad];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds every column entry back to the input pixel it was read from (adjoint of [`im2col`]),
/// on top of what `x` holds.
fn col2im<T: Elem>(g: &Geom, cols: &[T], x: &mut [T]) {
    let px = g.out_px();
    for c in 0..g.c_in {
        let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.k {
            for j in 0..g.k {
                let row = &cols[((c * g.k + i) * g.k + j) * px..][..px];
                for oh in 0..g.ho {
                    let Some(ih) = g.src(oh, i, g.h) else {
                        continue;
                    };
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    let src = &row[oh * g.wo..(oh + 1) * g.wo];
                    let (lo, hi) = g.valid_cols(j);
                    if g.stride == 1 {
                        let start = lo + j - g.pad;
                        for (d, &v) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (ow, &v) in src.iter().enumerate().take(hi).skip(lo) {
                            dst[ow * g.stride + j - g.pad] += v;
                        }
                    }
                }
            }
        }
    }
}

/// A row-major matrix operand, optionally read transposed.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    /// Stored as `cols`-wide rows; when `trans`, the operand is the transpose of the stored one.
    pub stored_cols: usize,
    pub trans: bool,
}

impl<T> Mat<'_, T> {
    /// (column stride, row stride) of the operand as used.
    fn strides(&self) -> (isize, isize) {
        let s = self.stored_cols as isize;
        if self.trans { (s, 1) } else { (1, s) }
    }
}

/// `dst (m x n, row-major) (+)= a (m x k) · b (k x n)`.
pub(crate) fn gemm<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    acc: bool,
) {
    debug_assert!(dst.len() >= m * n);
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    // SAFETY: the slices hold at least the m*k, k*n and m*n elements addressed by the
    // strides above (checked by the callers' shape arithmetic); dst does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Fills each `plane`-sized channel of `out` with that channel's bias.
fn fill_bias<T: Elem>(out: &mut [T], bias: &[T], plane: usize) {
    for (dst, &b) in out.chunks_mut(plane).zip(bias) {
        dst.fill(b);
    }
}

/// A per-task column buffer (empty for pointwise convolutions, which need none).
fn col_buffer<T: Elem>(g: &Geom) -> Vec<T> {
    let len = if g.is_pointwise() {
        0
    } else {
        g.col_rows() * g.out_px()
    };
    vec![T::default(); len]
}

/// The column matrix of sample `x_n`: the sample itself when pointwise, else `im2col` into `buf`.
fn columns<'a, T: Elem>(g: &Geom, x_n: &'a [T], buf: &'a mut [T]) -> &'a [T] {
    if g.is_pointwise() {
        x_n
    } else {
        im2col(g, x_n, buf);
        buf
    }
}

/// Ordinary convolution: `x` (B, c_in, h, w), `w` (c_out, c_in, k, k), `bias` (c_out)
/// -> (B, c_out, ho, wo).
pub(crate) fn conv_forward<T: Elem>(g: &Geom, x: &[T], w: &[T], bias: &[T]) -> Vec<T> {
    let mut y = vec![T::default(); g.batch * g.out_len()];
    let wm = Mat {
        data: w,
        stored_cols: g.col_rows(),
        trans: false,
    };
    y.par_chunks_mut(g.out_len()).enumerate().for_each_init(
        || col_buffer(g),
        |buf, (n, y_n)| {
            let cols = columns(g, &x[n * g.in_len()..(n + 1) * g.in_len()], buf);
            let cm = Mat {
                data: cols,
                stored_cols: g.out_px(),
                trans: false,
            };
            fill_bias(y_n, bias, g.out_px());
            gemm(g.c_out, g.out_px(), g.col_rows(), y_n, wm, cm, true);
        },
    );
    y
}

/// Input gradient: `dy` (B, c_out, ho, wo), `w` (c_out, c_in, k, k) -> (B, c_in, h, w), plus
/// `bias` (c_in) per channel (the transposed convolution's bias; zeros for a gradient).
pub(crate) fn conv_backward_input<T: Elem>(g: &Geom, dy: &[T], w: &[T], bias: &[T]) -> Vec<T> {
    let mut dx = vec![T::default(); g.batch * g.in_len()];
    let wt = Mat {
        data: w,
        stored_cols: g.col_rows(),
        trans: true,
    };
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || col_buffer(g),
        |cols, (n, dx_n)| {
            let dy_n = &dy[n * g.out_len()..(n + 1) * g.out_len()];
            let dm = Mat {
                data: dy_n,
                stored_cols: g.out_px(),
                trans: false,
            };
            fill_bias(dx_n, bias, g.h * g.w);
            if g.is_pointwise() {
                gemm(g.c_in, g.out_px(), g.c_out, dx_n, wt, dm, true);
            } else {
                gemm(g.col_rows(), g.out_px(), g.c_out, cols, wt, dm, false);
                col2im(g, cols, dx_n);
            }
        },
    );
    dx
}

/// Weight and bias gradients: `x` (B, c_in, h, w), `dy` (B, c_out, ho, wo) ->
/// `[dw (c_out, c_in, k, k), db (c_out)]` packed in one vector.
pub(crate) fn conv_backward_weight<T: Elem>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let wlen = g.c_out * g.col_rows();
    let threads = rayon::current_num_threads().max(1);
    let per = g.batch.div_ceil(threads).max(1);
    let partials: Vec<Vec<T>> = (0..g.batch.div_ceil(per))
        .into_par_iter()
        .map(|chunk| {
            let mut grads = vec![T::default(); wlen + g.c_out];
            let mut buf = col_buffer(g);
            for n in chunk * per..((chunk + 1) * per).min(g.batch) {
                let cols = columns(g, &x[n * g.in_len()..(n + 1) * g.in_len()], &mut buf);
                let dy_n = &dy[n * g.out_len()..(n + 1) * g.out_len()];
                let dm = Mat {
                    data: dy_n,
                    stored_cols: g.out_px(),
                    trans: false,
                };
                let ct = Mat {
                    data: cols,
                    stored_cols: g.out_px(),
                    trans: true,
                };
                let (dw, db) = grads.split_at_mut(wlen);
                gemm(
                    g.c_out,
                    g.col_rows(),
                    g.out_px(),
                    dw,
                    dm,
                    ct,
                    n > chunk * per,
                );
                for (db, row) in db.iter_mut().zip(dy_n.chunks(g.out_px())) {
                    for &v in row {
                        *db += v;
                    }
                }
            }
            grads
        })
        .collect();
    let mut total = vec![T::default(); wlen + g.c_out];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}
