//! matmul (transposed operands), scaled_softmax and upsample_nearest2d: values against loop
//! references, gradients against finite differences, CPU kernels against portable candle ops.

mod support;

use candle_core::{DType, Result, Tensor};
use ddpm_nn::gradcheck::{GradCheck, analytic_grads};
use ddpm_nn::{
    matmul, matmul_portable, scaled_softmax, scaled_softmax_portable, upsample_nearest2d,
    upsample_nearest2d_portable,
};
use support::{max_diff, rand_tensor, vals};

type MatMulFn = fn(&Tensor, &Tensor, bool, bool) -> Result<Tensor>;
const MATMULS: [(&str, MatMulFn); 2] = [("fast", matmul), ("portable", matmul_portable)];
type SoftmaxFn = fn(&Tensor, f64) -> Result<Tensor>;
const SOFTMAXES: [(&str, SoftmaxFn); 2] = [
    ("fast", scaled_softmax),
    ("portable", scaled_softmax_portable),
];
type UpsampleFn = fn(&Tensor, usize) -> Result<Tensor>;
const UPSAMPLES: [(&str, UpsampleFn); 2] = [
    ("fast", upsample_nearest2d),
    ("portable", upsample_nearest2d_portable),
];

/// Element (i, j) of `op(m)` for a row-major (rows, cols) matrix stored in `m`.
fn at(m: &[f64], cols: usize, trans: bool, i: usize, j: usize) -> f64 {
    if trans {
        m[j * cols + i]
    } else {
        m[i * cols + j]
    }
}

/// `op(a) · op(b)` in loops for batches of matrices: returns (batch, m, n) values.
fn matmul_ref(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Vec<f64> {
    let (batch, ar, ac) = a.dims3().unwrap();
    let (_, br, bc) = b.dims3().unwrap();
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    let (av, bv) = (vals(a), vals(b));
    let mut out = vec![0f64; batch * m * n];
    for z in 0..batch {
        let (a, b) = (&av[z * ar * ac..], &bv[z * br * bc..]);
        for i in 0..m {
            for j in 0..n {
                out[(z * m + i) * n + j] = (0..k)
                    .map(|p| at(a, ac, ta, i, p) * at(b, bc, tb, p, j))
                    .sum();
            }
        }
    }
    out
}

#[test]
fn matmul_matches_loops_and_finite_differences_for_every_transpose() {
    let (m, k, n) = (3, 4, 2);
    for (name, mm) in MATMULS {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rand_tensor(&if ta { [2, k, m] } else { [2, m, k] }, 1);
            let b = rand_tensor(&if tb { [2, n, k] } else { [2, k, n] }, 2);
            let y = mm(&a, &b, ta, tb).unwrap();
            assert_eq!(y.dims(), &[2, m, n], "{name} ({ta}, {tb})");
            let r = matmul_ref(&a, &b, ta, tb);
            for (i, (yv, rv)) in vals(&y).iter().zip(&r).enumerate() {
                assert!((yv - rv).abs() < 1e-12, "{name} ({ta}, {tb}) element {i}");
            }
            GradCheck::default().assert(|v| mm(&v[0], &v[1], ta, tb), &[a.clone(), b.clone()]);
            // 2-D operands are one matrix of the batch.
            let (a0, b0) = (a.get(1).unwrap(), b.get(1).unwrap());
            let y0 = mm(&a0, &b0, ta, tb).unwrap();
            assert_eq!(max_diff(&y0, &y.get(1).unwrap()), 0.0, "{name} 2-D");
            GradCheck::default().assert(|v| mm(&v[0], &v[1], ta, tb), &[a0, b0]);
        }
        let err = mm(
            &rand_tensor(&[2, 3], 3),
            &rand_tensor(&[2, 3], 4),
            false,
            false,
        );
        assert!(err.unwrap_err().to_string().contains("inner dim"), "{name}");
    }
}

#[test]
fn matmul_f32_kernel_agrees_with_candle() {
    let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let inputs = [
        f32(rand_tensor(&[6, 32, 49], 5)),
        f32(rand_tensor(&[6, 32, 49], 6)),
    ];
    let fast = |v: &[Tensor]| matmul(&v[0], &v[1], true, false);
    let portable = |v: &[Tensor]| matmul_portable(&v[0], &v[1], true, false);
    assert!(max_diff(&fast(&inputs).unwrap(), &portable(&inputs).unwrap()) < 1e-4);
    let (ga, gp) = (
        analytic_grads(fast, &inputs, 1).unwrap(),
        analytic_grads(portable, &inputs, 1).unwrap(),
    );
    for (a, p) in ga.iter().zip(&gp) {
        assert!(max_diff(a, p) < 1e-3, "gradient {}", max_diff(a, p));
    }
}

#[test]
fn scaled_softmax_matches_loops_and_finite_differences() {
    let x = rand_tensor(&[2, 3, 5], 7);
    let scale = 0.7;
    for (name, softmax) in SOFTMAXES {
        let y = vals(&softmax(&x, scale).unwrap());
        for (row, xs) in vals(&x).chunks(5).enumerate() {
            let e: Vec<f64> = xs.iter().map(|v| (v * scale).exp()).collect();
            let total: f64 = e.iter().sum();
            for (j, ev) in e.iter().enumerate() {
                let got = y[row * 5 + j];
                assert!((got - ev / total).abs() < 1e-12, "{name} row {row} col {j}");
            }
        }
        GradCheck::default().assert(|v| softmax(&v[0], scale), std::slice::from_ref(&x));
    }
    // Large inputs do not overflow (the row maximum is subtracted).
    let big = (rand_tensor(&[4, 6], 8) * 1e4)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let y = scaled_softmax(&big, 1.0).unwrap();
    assert!(max_diff(&y, &scaled_softmax_portable(&big, 1.0).unwrap()) < 1e-6);
}

/// Nearest up-sampling in loops.
fn upsample_ref(x: &Tensor, s: usize) -> Vec<f64> {
    let (b, c, h, w) = x.dims4().unwrap();
    let xv = vals(x);
    let mut out = Vec::with_capacity(xv.len() * s * s);
    for p in 0..b * c {
        for i in 0..h * s {
            for j in 0..w * s {
                out.push(xv[(p * h + i / s) * w + j / s]);
            }
        }
    }
    out
}

#[test]
fn upsample_matches_loops_and_finite_differences() {
    for s in [1, 2, 3] {
        let x = rand_tensor(&[2, 3, 3, 2], 9 + s as u64);
        for (name, up) in UPSAMPLES {
            let y = up(&x, s).unwrap();
            assert_eq!(y.dims(), &[2, 3, 3 * s, 2 * s], "{name} scale {s}");
            assert_eq!(vals(&y), upsample_ref(&x, s), "{name} scale {s}");
            GradCheck::default().assert(|v| up(&v[0], s), std::slice::from_ref(&x));
        }
    }
    let x = rand_tensor(&[1, 1, 2, 2], 0);
    assert!(upsample_nearest2d(&x, 0).is_err());
}

#[test]
fn upsample_f32_gradient_agrees_with_candle() {
    let x = [rand_tensor(&[3, 4, 7, 7], 12).to_dtype(DType::F32).unwrap()];
    let fast = |v: &[Tensor]| upsample_nearest2d(&v[0], 2);
    let portable = |v: &[Tensor]| upsample_nearest2d_portable(&v[0], 2);
    let (ga, gp) = (
        analytic_grads(fast, &x, 2).unwrap(),
        analytic_grads(portable, &x, 2).unwrap(),
    );
    assert!(max_diff(&ga[0], &gp[0]) < 1e-5);
}
