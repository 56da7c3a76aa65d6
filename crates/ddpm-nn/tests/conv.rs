//! conv2d / conv_transpose2d: forward against loop references, gradients against finite
//! differences and against candle's own backprop.

mod support;

use candle_core::Result;
use candle_core::Tensor;
use ddpm_nn::gradcheck::{GradCheck, analytic_grads};
use ddpm_nn::{conv_transpose2d, conv_transpose2d_portable, conv2d, conv2d_portable};

type ConvFn = fn(&Tensor, &Tensor, Option<&Tensor>, usize, usize) -> Result<Tensor>;
type ConvTFn = fn(&Tensor, &Tensor, Option<&Tensor>, usize, usize, usize) -> Result<Tensor>;
/// The CPU-kernel and the portable (candle-op) implementations.
const CONVS: [(&str, ConvFn); 2] = [("fast", conv2d), ("portable", conv2d_portable)];
/// The same for the transposed convolution.
const CONVTS: [(&str, ConvTFn); 2] = [
    ("fast", conv_transpose2d),
    ("portable", conv_transpose2d_portable),
];
use support::{conv_transpose2d_ref, conv2d_ref, max_diff, rand_tensor};

/// (batch, c_in, c_out, size, k, stride, padding). The same-size ones (stride 1, 2·padding =
/// k − 1) take the kernels' shifted-run path, down to a 1x1 plane where most taps read nothing.
/// Small planes put several samples into one GEMM (the last group smaller than the others).
const CONV_CASES: [(usize, usize, usize, usize, usize, usize, usize); 10] = [
    (9, 3, 4, 3, 3, 1, 1),
    (7, 3, 2, 2, 1, 1, 0),
    (5, 3, 4, 6, 3, 1, 1),
    (2, 3, 2, 5, 5, 1, 2),
    (2, 2, 3, 1, 3, 1, 1),
    (1, 2, 2, 4, 3, 1, 0),
    (2, 2, 3, 7, 3, 2, 1),
    (1, 3, 2, 5, 1, 1, 0),
    (2, 2, 2, 6, 2, 2, 0),
    (1, 2, 3, 8, 3, 2, 0),
];

#[test]
fn conv2d_forward_matches_loops() {
    for (name, conv2d) in CONVS {
        for (i, &(b, ci, co, s, k, st, p)) in CONV_CASES.iter().enumerate() {
            let x = rand_tensor(&[b, ci, s, s], i as u64);
            let w = rand_tensor(&[co, ci, k, k], 100 + i as u64);
            let bias = rand_tensor(&[co], 200 + i as u64);
            let y = conv2d(&x, &w, Some(&bias), st, p).unwrap();
            let r = conv2d_ref(&x, &w, Some(&bias), st, p);
            let unbiased = conv2d(&x, &w, None, st, p).unwrap();
            assert!(
                max_diff(&unbiased, &conv2d_ref(&x, &w, None, st, p)) < 1e-12,
                "{name} case {i} without bias"
            );
            assert!(max_diff(&y, &r) < 1e-12, "case {i}: {}", max_diff(&y, &r));
            let y32 = conv2d(
                &x.to_dtype(candle_core::DType::F32).unwrap(),
                &w.to_dtype(candle_core::DType::F32).unwrap(),
                Some(&bias.to_dtype(candle_core::DType::F32).unwrap()),
                st,
                p,
            )
            .unwrap();
            assert!(max_diff(&y32, &r) < 1e-5, "{name} case {i} f32");
        }
    }
}

#[test]
fn conv2d_gradients_match_finite_differences_and_candle() {
    for (name, conv2d) in CONVS {
        for (i, &(b, ci, co, s, k, st, p)) in CONV_CASES.iter().enumerate() {
            let x = rand_tensor(&[b, ci, s, s], i as u64);
            let w = rand_tensor(&[co, ci, k, k], 100 + i as u64);
            let bias = rand_tensor(&[co], 200 + i as u64);
            let ours = |v: &[Tensor]| conv2d(&v[0], &v[1], Some(&v[2]), st, p);
            GradCheck::default().assert(ours, &[x.clone(), w.clone(), bias.clone()]);
            let candle = |v: &[Tensor]| -> Result<Tensor> {
                v[0].conv2d(&v[1], p, st, 1, 1)?
                    .broadcast_add(&v[2].reshape((1, co, 1, 1))?)
            };
            let inputs = [x, w, bias];
            let a = analytic_grads(ours, &inputs, 3).unwrap();
            let c = analytic_grads(candle, &inputs, 3).unwrap();
            for (ga, gc) in a.iter().zip(&c) {
                assert!(
                    max_diff(ga, gc) < 1e-10,
                    "{name} case {i}: ours vs candle {}",
                    max_diff(ga, gc)
                );
            }
        }
    }
}

/// (c_in, c_out, size, k, stride, padding, output_padding, expected output size)
/// One transposed-convolution case (see [`TRANSPOSE_CASES`]).
type TransposeCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const TRANSPOSE_CASES: [TransposeCase; 5] = [
    (3, 2, 7, 3, 2, 1, 1, 14),
    (2, 3, 14, 3, 2, 1, 1, 28),
    (3, 2, 1, 3, 2, 0, 0, 3),
    (2, 2, 3, 3, 2, 0, 0, 7),
    (3, 2, 4, 2, 2, 0, 0, 8),
];

#[test]
fn conv_transpose2d_shapes_and_forward_match_scatter_definition() {
    for (name, conv_transpose2d) in CONVTS {
        for (i, &(ci, co, s, k, st, p, op, expect)) in TRANSPOSE_CASES.iter().enumerate() {
            let x = rand_tensor(&[2, ci, s, s], i as u64);
            let w = rand_tensor(&[ci, co, k, k], 50 + i as u64);
            let bias = rand_tensor(&[co], 60 + i as u64);
            let y = conv_transpose2d(&x, &w, Some(&bias), st, p, op).unwrap();
            assert_eq!(y.dims(), &[2, co, expect, expect], "case {i}");
            let r = conv_transpose2d_ref(&x, &w, Some(&bias), st, p, op);
            assert!(
                max_diff(&y, &r) < 1e-12,
                "{name} case {i}: {}",
                max_diff(&y, &r)
            );
        }
    }
}

#[test]
fn conv_transpose2d_gradients_match_finite_differences() {
    for (_, conv_transpose2d) in CONVTS {
        for (i, &(ci, co, s, k, st, p, op, _)) in TRANSPOSE_CASES.iter().enumerate() {
            // Keep the big case small in batch and channels: each element costs two forwards.
            let s = s.min(7);
            let x = rand_tensor(&[1, ci, s, s], i as u64);
            let w = rand_tensor(&[ci, co, k, k], 50 + i as u64);
            let bias = rand_tensor(&[co], 60 + i as u64);
            GradCheck::default().assert(
                |v| conv_transpose2d(&v[0], &v[1], Some(&v[2]), st, p, op),
                &[x, w, bias],
            );
        }
    }
}

#[test]
fn bad_arguments_are_rejected_with_context() {
    let x = rand_tensor(&[1, 3, 5, 5], 0);
    let w = rand_tensor(&[2, 4, 3, 3], 1);
    let err = conv2d(&x, &w, None, 1, 1).unwrap_err().to_string();
    assert!(
        err.contains("weight") && err.contains("3 input channels"),
        "{err}"
    );
    let wt = rand_tensor(&[3, 2, 3, 3], 1);
    let err = conv_transpose2d(&x, &wt, None, 2, 1, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("output_padding"), "{err}");
}
