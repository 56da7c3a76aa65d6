//! CPU kernels of the convolution family: im2col + GEMM, parallel over the batch.
//!
//! All three kernels share one geometry, seen from the ordinary convolution: an input of
//! `c_in x h x w` convolved with a `c_out x c_in x k x k` kernel (stride, zero padding) gives an
//! output of `c_out x ho x wo`. Forward is `y_n = W · cols(x_n)`; the input gradient is
//! `col2im(Wᵀ · dy_n)`; the weight gradient is `Σ_n dy_n · cols(x_n)ᵀ`. A transposed
//! convolution is the input-gradient kernel run forward.

use rayon::prelude::*;

use super::gemm::{Mat, gemm};
use super::real::Real;

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

/// The run of one im2col row that a same-size convolution copies in one piece (see
/// [`Geom::shift_run`]).
struct ShiftRun {
    /// Offset of the input element read by column entry `e`: `e as isize + offset`.
    offset: isize,
    /// Column entries `start..end` of the row are read from the input.
    start: usize,
    end: usize,
    /// Output columns `lo..hi` read inside the input row; the others inside the run wrap
    /// around into the neighbouring input row and must be zero.
    lo: usize,
    hi: usize,
}

impl Geom {
    /// Stride 1 with an output the size of the input (`2·pad = k − 1`, as every 3x3 padding-1
    /// convolution): each im2col row is the input plane shifted by one offset.
    fn is_same_size(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }

    /// For a same-size geometry: where the row of kernel tap `(i, j)` reads the input.
    fn shift_run(&self, i: usize, j: usize) -> Option<ShiftRun> {
        let (lo, hi) = self.valid_cols(j);
        let oh_lo = self.pad.saturating_sub(i);
        let oh_hi = (self.h + self.pad).saturating_sub(i).min(self.ho);
        if lo >= hi || oh_lo >= oh_hi {
            return None;
        }
        Some(ShiftRun {
            offset: (i as isize - self.pad as isize) * self.w as isize + j as isize
                - self.pad as isize,
            start: oh_lo * self.wo + lo,
            end: (oh_hi - 1) * self.wo + hi,
            lo,
            hi,
        })
    }
}

impl ShiftRun {
    /// Sets the wrapped-around entries of `row` (inside the run) to zero.
    fn zero_wrapped<T: Real>(&self, row: &mut [T], wo: usize) {
        let mut line = self.start - self.lo;
        while line < self.end {
            for e in (line..line + self.lo).chain(line + self.hi..line + wo) {
                if (self.start..self.end).contains(&e) {
                    row[e] = T::default();
                }
            }
            line += wo;
        }
    }

    /// The input elements the run reads.
    fn source<'a, T>(&self, plane: &'a [T]) -> &'a [T] {
        let first = (self.start as isize + self.offset) as usize;
        &plane[first..first + (self.end - self.start)]
    }
}

/// Where one sample's rows sit in a matrix of several samples side by side: row `r` starts at
/// `r * stride + offset`.
#[derive(Debug, Clone, Copy)]
struct RowsAt {
    stride: usize,
    offset: usize,
}

impl RowsAt {
    /// Start of row `r`.
    fn start(&self, r: usize) -> usize {
        r * self.stride + self.offset
    }
}

/// `cols[(c*k+i)*k+j, oh*wo+ow] = x[c, oh*s+i-p, ow*s+j-p]` (zero outside), each row placed as
/// `rows` says.
///
/// Same-size geometries copy each row as one run; entries outside it are never written, so
/// `cols` must start zeroed and be reused only for the same geometry (see [`Scratch`]).
fn im2col<T: Real>(g: &Geom, x: &[T], cols: &mut [T], rows: RowsAt) {
    let px = g.out_px();
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.k {
            for j in 0..g.k {
                let row = &mut cols[rows.start((c * g.k + i) * g.k + j)..][..px];
                if g.is_same_size() {
                    if let Some(run) = g.shift_run(i, j) {
                        row[run.start..run.end].copy_from_slice(run.source(plane));
                        run.zero_wrapped(row, g.wo);
                    }
                    continue;
                }
                for oh in 0..g.ho {
                    let dst = &mut row[oh * g.wo..(oh + 1) * g.wo];
                    match g.src(oh, i, g.h) {
                        None => dst.fill(T::default()),
                        Some(ih) => {
                            let src = &plane[ih * g.w..(ih + 1) * g.w];
                            let (lo, hi) = g.valid_cols(j);
                            dst[..lo].fill(T::default());
                            dst[hi..].fill(T::default());
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

/// Adds every column entry back to the input pixel it was read from (adjoint of [`im2col`]),
/// on top of what `x` holds. Same-size geometries zero the wrapped entries of `cols` first.
fn col2im<T: Real>(g: &Geom, cols: &mut [T], rows: RowsAt, x: &mut [T]) {
    let px = g.out_px();
    for c in 0..g.c_in {
        let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.k {
            for j in 0..g.k {
                let row = &mut cols[rows.start((c * g.k + i) * g.k + j)..][..px];
                if g.is_same_size() {
                    if let Some(run) = g.shift_run(i, j) {
                        run.zero_wrapped(row, g.wo);
                        let first = (run.start as isize + run.offset) as usize;
                        let dst = &mut plane[first..first + (run.end - run.start)];
                        for (d, &v) in dst.iter_mut().zip(&row[run.start..run.end]) {
                            *d += v;
                        }
                    }
                    continue;
                }
                for oh in 0..g.ho {
                    let Some(ih) = g.src(oh, i, g.h) else {
                        continue;
                    };
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    let src = &row[oh * g.wo..(oh + 1) * g.wo];
                    let (lo, hi) = g.valid_cols(j);
                    for (ow, &v) in src.iter().enumerate().take(hi).skip(lo) {
                        dst[ow * g.stride + j - g.pad] += v;
                    }
                }
            }
        }
    }
}

/// Columns a GEMM should get before samples are grouped into one: on small planes (7x7, 3x3,
/// 1x1) a per-sample GEMM is nearly a matrix-vector product that re-reads the whole kernel for
/// every sample.
const MIN_GEMM_COLS: usize = 256;

/// Samples that share one GEMM: about [`MIN_GEMM_COLS`] columns each, in a number of groups
/// that is a multiple of the thread count (81 samples of a 3x3 plane in 3 groups left one of 2
/// threads idle through the last).
fn group_size(g: &Geom) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per_gemm = MIN_GEMM_COLS.div_ceil(g.out_px());
    let groups = g.batch.div_ceil(per_gemm).div_ceil(threads) * threads;
    g.batch.div_ceil(groups).max(1)
}

/// Fills each `plane`-sized channel of `out` with that channel's bias (`out` may hold several
/// samples: the bias repeats).
fn fill_bias<T: Real>(out: &mut [T], bias: &[T], plane: usize) {
    for (dst, &b) in out.chunks_mut(plane).zip(bias.iter().cycle()) {
        dst.fill(b);
    }
}

/// Lays `n` samples of `rows x len` side by side: `dst[r, s*len..(s+1)*len] = src[s][r]`.
fn gather<T: Real>(src: &[T], rows: usize, len: usize, dst: &mut [T]) {
    let n = src.len() / (rows * len);
    for (s, sample) in src.chunks(rows * len).enumerate() {
        for (r, row) in sample.chunks(len).enumerate() {
            dst[r * n * len + s * len..][..len].copy_from_slice(row);
        }
    }
}

/// The inverse of [`gather`]: `dst[s][r] = src[r, s*len..(s+1)*len]`.
fn scatter<T: Real>(src: &[T], rows: usize, len: usize, dst: &mut [T]) {
    let n = dst.len() / (rows * len);
    for (s, sample) in dst.chunks_mut(rows * len).enumerate() {
        for (r, row) in sample.chunks_mut(len).enumerate() {
            row.copy_from_slice(&src[r * n * len + s * len..][..len]);
        }
    }
}

/// Per-task buffers for groups of up to `group` samples.
struct Scratch<T> {
    /// Column matrices (`col_rows x group·px`), or a GEMM result of that size.
    cols: Vec<T>,
    /// A gathered operand or a result to scatter (`panel_rows x group·px`).
    panel: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// Zeroed buffers (see [`im2col`] for why `cols` must start zeroed).
    fn new(g: &Geom, group: usize, panel_rows: usize) -> Self {
        let width = group * g.out_px();
        let cols = if g.is_pointwise() && group == 1 {
            0
        } else {
            g.col_rows() * width
        };
        let panel = if group == 1 { 0 } else { panel_rows * width };
        Scratch {
            cols: vec![T::default(); cols],
            panel: vec![T::default(); panel],
        }
    }
}

/// `n` samples of `rows x px` as one `rows x n·px` operand: the samples themselves when `n` is
/// 1, else gathered side by side into `buf`.
fn side_by_side<'a, T: Real>(src: &'a [T], rows: usize, px: usize, buf: &'a mut [T]) -> Mat<'a, T> {
    let n = src.len() / (rows * px);
    let data = if n == 1 {
        src
    } else {
        gather(src, rows, px, &mut buf[..rows * n * px]);
        &*buf
    };
    Mat {
        data,
        stored_cols: n * px,
        trans: false,
    }
}

/// The column matrix of the samples `x` (at most `group` of them, side by side), built in `buf`
/// (a pointwise convolution's is the input itself, see [`side_by_side`]).
fn columns<'a, T: Real>(g: &Geom, x: &'a [T], buf: &'a mut [T], group: usize) -> Mat<'a, T> {
    let px = g.out_px();
    if g.is_pointwise() {
        return side_by_side(x, g.c_in, px, buf);
    }
    // A fixed row stride keeps every entry's position the same from call to call.
    let stride = group * px;
    for (s, x_s) in x.chunks(g.in_len()).enumerate() {
        let rows = RowsAt {
            stride,
            offset: s * px,
        };
        im2col(g, x_s, buf, rows);
    }
    Mat {
        data: buf,
        stored_cols: stride,
        trans: false,
    }
}

/// Ordinary convolution: `x` (B, c_in, h, w), `w` (c_out, c_in, k, k), `bias` (c_out)
/// -> (B, c_out, ho, wo).
pub(crate) fn conv_forward<T: Real>(g: &Geom, x: &[T], w: &[T], bias: &[T]) -> Vec<T> {
    let group = group_size(g);
    let px = g.out_px();
    let mut y = vec![T::default(); g.batch * g.out_len()];
    let wm = Mat {
        data: w,
        stored_cols: g.col_rows(),
        trans: false,
    };
    y.par_chunks_mut(group * g.out_len())
        .enumerate()
        .for_each_init(
            || Scratch::new(g, group, g.c_out),
            |s, (gi, y_g)| {
                let n = y_g.len() / g.out_len();
                let x_g = &x[gi * group * g.in_len()..][..n * g.in_len()];
                let cols = columns(g, x_g, &mut s.cols, group);
                if n == 1 {
                    fill_bias(y_g, bias, px);
                    gemm(g.c_out, px, g.col_rows(), y_g, wm, cols, true);
                } else {
                    let out = &mut s.panel[..g.c_out * n * px];
                    fill_bias(out, bias, n * px);
                    gemm(g.c_out, n * px, g.col_rows(), out, wm, cols, true);
                    scatter(out, g.c_out, px, y_g);
                }
            },
        );
    y
}

/// Input gradient: `dy` (B, c_out, ho, wo), `w` (c_out, c_in, k, k) -> (B, c_in, h, w), plus
/// `bias` (c_in) per channel (the transposed convolution's bias; zeros for a gradient).
pub(crate) fn conv_backward_input<T: Real>(g: &Geom, dy: &[T], w: &[T], bias: &[T]) -> Vec<T> {
    let group = group_size(g);
    let px = g.out_px();
    let mut dx = vec![T::default(); g.batch * g.in_len()];
    let wt = Mat {
        data: w,
        stored_cols: g.col_rows(),
        trans: true,
    };
    dx.par_chunks_mut(group * g.in_len())
        .enumerate()
        .for_each_init(
            || Scratch::new(g, group, g.c_out),
            |s, (gi, dx_g)| {
                let n = dx_g.len() / g.in_len();
                let dy_g = &dy[gi * group * g.out_len()..][..n * g.out_len()];
                let dm = side_by_side(dy_g, g.c_out, g.out_px(), &mut s.panel);
                if g.is_pointwise() && n == 1 {
                    fill_bias(dx_g, bias, px);
                    gemm(g.c_in, px, g.c_out, dx_g, wt, dm, true);
                } else if g.is_pointwise() {
                    let out = &mut s.cols[..g.c_in * n * px];
                    fill_bias(out, bias, n * px);
                    gemm(g.c_in, n * px, g.c_out, out, wt, dm, true);
                    scatter(out, g.c_in, px, dx_g);
                } else {
                    let out = &mut s.cols[..g.col_rows() * n * px];
                    gemm(g.col_rows(), n * px, g.c_out, out, wt, dm, false);
                    for (si, dx_s) in dx_g.chunks_mut(g.in_len()).enumerate() {
                        fill_bias(dx_s, bias, g.h * g.w);
                        let rows = RowsAt {
                            stride: n * px,
                            offset: si * px,
                        };
                        col2im(g, out, rows, dx_s);
                    }
                }
            },
        );
    dx
}

/// Weight and bias gradients: `x` (B, c_in, h, w), `dy` (B, c_out, ho, wo) ->
/// `[dw (c_out, c_in, k, k), db (c_out)]` packed in one vector.
pub(crate) fn conv_backward_weight<T: Real>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let group = group_size(g);
    let px = g.out_px();
    let wlen = g.c_out * g.col_rows();
    let groups = g.batch.div_ceil(group);
    let threads = rayon::current_num_threads().max(1);
    let per = groups.div_ceil(threads).max(1);
    let partials: Vec<Vec<T>> = (0..groups.div_ceil(per))
        .into_par_iter()
        .map(|chunk| {
            let mut grads = vec![T::default(); wlen + g.c_out];
            let mut s = Scratch::new(g, group, g.c_out);
            for gi in chunk * per..((chunk + 1) * per).min(groups) {
                let first = gi * group;
                let n = group.min(g.batch - first);
                let cols = columns(
                    g,
                    &x[first * g.in_len()..][..n * g.in_len()],
                    &mut s.cols,
                    group,
                );
                let dy_g = &dy[first * g.out_len()..][..n * g.out_len()];
                let dm = side_by_side(dy_g, g.c_out, g.out_px(), &mut s.panel);
                let ct = Mat {
                    trans: true,
                    ..cols
                };
                let (dw, db) = grads.split_at_mut(wlen);
                gemm(g.c_out, g.col_rows(), n * px, dw, dm, ct, gi > chunk * per);
                for (row, channel) in dy_g.chunks(px).zip((0..g.c_out).cycle()) {
                    for &v in row {
                        db[channel] += v;
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
