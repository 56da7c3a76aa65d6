//! max_pool2d: values, odd sizes, and a gradient that reaches exactly the first maximum.

mod support;

use candle_core::{DType, Device, Tensor, Var};
use ddpm_nn::gradcheck::GradCheck;
use ddpm_nn::{max_pool2d, max_pool2d_portable};

type Pool = fn(&Tensor, usize) -> candle_core::Result<Tensor>;
/// The CPU kernel and the portable candle-op version.
const POOLS: [(&str, Pool); 2] = [("fast", max_pool2d), ("portable", max_pool2d_portable)];
use support::{max_diff, max_pool_ref, rand_tensor, vals};

#[test]
fn forward_matches_loops_for_even_and_odd_sizes() {
    for (size, expect) in [(28, 14), (7, 3), (3, 1), (14, 7)] {
        for (_, max_pool2d) in POOLS {
            let x = rand_tensor(&[2, 3, size, size], size as u64);
            let y = max_pool2d(&x, 2).unwrap();
            assert_eq!(y.dims(), &[2, 3, expect, expect]);
            assert_eq!(max_diff(&y, &max_pool_ref(&x, 2)), 0.0);
        }
    }
}

/// Gradient of sum(pool(x)) w.r.t. x.
fn grad_of_sum(pool: Pool, x: &Tensor) -> Vec<f64> {
    let v = Var::from_tensor(x).unwrap();
    let g = pool(v.as_tensor(), 2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    vals(g.get(v.as_tensor()).unwrap())
}

#[test]
fn gradient_goes_to_one_element_per_window_odd_size() {
    for (name, pool) in POOLS {
        let x = rand_tensor(&[1, 2, 7, 7], 9);
        let g = grad_of_sum(pool, &x);
        let xv = vals(&x);
        for c in 0..2 {
            for i in 0..7 {
                for j in 0..7 {
                    let idx = (c * 7 + i) * 7 + j;
                    let expect = if i < 6 && j < 6 {
                        let (bi, bj) = (i / 2 * 2, j / 2 * 2);
                        let window = [(bi, bj), (bi, bj + 1), (bi + 1, bj), (bi + 1, bj + 1)];
                        let m = window
                            .iter()
                            .map(|&(a, b)| xv[(c * 7 + a) * 7 + b])
                            .fold(f64::MIN, f64::max);
                        if xv[idx] == m { 1.0 } else { 0.0 }
                    } else {
                        0.0 // row/column 6 is dropped by floor mode
                    };
                    assert_eq!(g[idx], expect, "{name}: channel {c} pixel ({i},{j})");
                }
            }
        }
        assert_eq!(g.iter().sum::<f64>(), 2.0 * 9.0);
    }
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum_like_torch() {
    // An all -1 MNIST-like background, 28x28: every window is a 4-way tie.
    for (name, pool) in POOLS {
        let x = Tensor::full(-1f32, (1, 1, 28, 28), &Device::Cpu).unwrap();
        let g = grad_of_sum(pool, &x);
        for i in 0..28 {
            for j in 0..28 {
                let expect = if i % 2 == 0 && j % 2 == 0 { 1.0 } else { 0.0 };
                assert_eq!(g[i * 28 + j], expect, "{name}: pixel ({i},{j})");
            }
        }
        // A tie between the 2nd and 4th element: the 2nd (row-major) wins.
        let x = Tensor::new(&[[[[0f32, 5.], [1., 5.]]]], &Device::Cpu).unwrap();
        assert_eq!(grad_of_sum(pool, &x), vec![0.0, 1.0, 0.0, 0.0], "{name}");
    }
}

#[test]
fn gradient_matches_finite_differences() {
    for (_, max_pool2d) in POOLS {
        let x = rand_tensor(&[2, 2, 5, 5], 4);
        GradCheck::default().assert(|v| max_pool2d(&v[0], 2), std::slice::from_ref(&x));
        let x3 = rand_tensor(&[1, 2, 7, 7], 5);
        GradCheck::default().assert(|v| max_pool2d(&v[0], 3), &[x3]);
        assert_eq!(
            max_pool2d(&x.to_dtype(DType::F32).unwrap(), 2)
                .unwrap()
                .dtype(),
            DType::F32
        );
    }
}
