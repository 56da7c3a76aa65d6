//! LayerNorm over (C,H,W), GroupNorm, BatchNorm2d and activations: values and gradients.

mod support;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ddpm_nn::gradcheck::GradCheck;
use ddpm_nn::gradcheck::analytic_grads;
use ddpm_nn::{
    BatchNorm2d, LayerNormChw, NormAct, group_norm, group_norm_fused, group_norm_fused_portable,
    group_norm_portable, layer_norm_chw, layer_norm_chw_portable, leaky_relu, leaky_relu_portable,
    relu, silu,
};
use support::{rand_tensor, vals};

/// Per-sample standardisation over `chunk`-sized slices, in loops.
fn standardise_ref(x: &[f64], chunk: usize, eps: f64) -> Vec<f64> {
    x.chunks(chunk)
        .flat_map(|c| {
            let m = c.iter().sum::<f64>() / chunk as f64;
            let v = c.iter().map(|a| (a - m).powi(2)).sum::<f64>() / chunk as f64;
            c.iter()
                .map(move |a| (a - m) / (v + eps).sqrt())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_chw_values_and_gradients() {
    let x = rand_tensor(&[2, 3, 4, 4], 1);
    let w = rand_tensor(&[3, 4, 4], 2);
    let b = rand_tensor(&[3, 4, 4], 3);
    for ln in [layer_norm_chw, layer_norm_chw_portable] {
        let y = vals(&ln(&x, &w, &b, 1e-5).unwrap());
        let xhat = standardise_ref(&vals(&x), 48, 1e-5);
        let (wv, bv) = (vals(&w), vals(&b));
        for (i, yv) in y.iter().enumerate() {
            let e = xhat[i] * wv[i % 48] + bv[i % 48];
            assert!((yv - e).abs() < 1e-12, "element {i}");
        }
        GradCheck::default().assert(
            |v| ln(&v[0], &v[1], &v[2], 1e-5),
            &[x.clone(), w.clone(), b.clone()],
        );
    }
    // f32 (the training dtype) agrees with f64.
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let y32 = layer_norm_chw(&f32(&x), &f32(&w), &f32(&b), 1e-5).unwrap();
    let y64 = layer_norm_chw(&x, &w, &b, 1e-5).unwrap();
    assert!(support::max_diff(&y32, &y64) < 1e-5);
}

#[test]
fn layer_norm_module_has_torch_names_and_init() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let ln = LayerNormChw::new(vb.pp("ln"), (2, 3, 3), 1e-5).unwrap();
    let data = varmap.data().lock().unwrap();
    assert_eq!(vals(data["ln.weight"].as_tensor()), vec![1.0; 18]);
    assert_eq!(vals(data["ln.bias"].as_tensor()), vec![0.0; 18]);
    drop(data);
    let y = ln
        .forward(&rand_tensor(&[2, 2, 3, 3], 0).to_dtype(DType::F32).unwrap())
        .unwrap();
    assert_eq!(y.dims(), &[2, 2, 3, 3]);
}

type GroupNormFn = fn(&Tensor, usize, &Tensor, &Tensor, f64) -> candle_core::Result<Tensor>;
type FusedFn = fn(
    &Tensor,
    Option<&Tensor>,
    usize,
    &Tensor,
    &Tensor,
    f64,
    NormAct,
) -> candle_core::Result<Tensor>;
/// The fused CPU kernels and the portable candle-op versions.
const GROUP_NORMS: [(&str, GroupNormFn); 2] =
    [("fast", group_norm), ("portable", group_norm_portable)];
const FUSED: [(&str, FusedFn); 2] = [
    ("fast", group_norm_fused),
    ("portable", group_norm_fused_portable),
];
const ACTS: [NormAct; 2] = [NormAct::Identity, NormAct::Silu];

/// `act(GN(x + shift) * w + b)` in loops: x (B,C,H,W), shift (B,C), groups of C/groups channels.
fn group_norm_ref(
    x: &Tensor,
    shift: Option<&Tensor>,
    groups: usize,
    (w, b): (&Tensor, &Tensor),
    act: NormAct,
) -> Vec<f64> {
    let (bs, c, h, wd) = x.dims4().unwrap();
    let hw = h * wd;
    let mut xv = vals(x);
    if let Some(s) = shift {
        let sv = vals(s);
        for (i, v) in xv.iter_mut().enumerate() {
            *v += sv[i / hw];
        }
    }
    let xhat = standardise_ref(&xv, (c / groups) * hw, 1e-5);
    let (wv, bv) = (vals(w), vals(b));
    (0..bs * c * hw)
        .map(|i| {
            let ch = (i / hw) % c;
            let z = xhat[i] * wv[ch] + bv[ch];
            match act {
                NormAct::Identity => z,
                NormAct::Silu => z / (1.0 + (-z).exp()),
            }
        })
        .collect()
}

#[test]
fn group_norm_values_and_gradients() {
    let x = rand_tensor(&[2, 4, 3, 3], 5);
    let w = rand_tensor(&[4], 6);
    let b = rand_tensor(&[4], 7);
    for (name, gn) in GROUP_NORMS {
        let y = vals(&gn(&x, 2, &w, &b, 1e-5).unwrap());
        let r = group_norm_ref(&x, None, 2, (&w, &b), NormAct::Identity);
        for (i, (yv, rv)) in y.iter().zip(&r).enumerate() {
            assert!((yv - rv).abs() < 1e-12, "{name}: element {i}");
        }
        GradCheck::default().assert(
            |v| gn(&v[0], 2, &v[1], &v[2], 1e-5),
            &[x.clone(), w.clone(), b.clone()],
        );
        assert!(gn(&x, 3, &w, &b, 1e-5).is_err(), "{name}: 3 groups of 4");
    }
}

#[test]
fn fused_group_norm_matches_loops_and_finite_differences() {
    let x = rand_tensor(&[2, 4, 3, 2], 15);
    let w = rand_tensor(&[4], 16);
    let b = rand_tensor(&[4], 17);
    let shift = rand_tensor(&[2, 4], 18);
    for (name, gn) in FUSED {
        for act in ACTS {
            for groups in [1, 2, 4] {
                let y = vals(&gn(&x, Some(&shift), groups, &w, &b, 1e-5, act).unwrap());
                let r = group_norm_ref(&x, Some(&shift), groups, (&w, &b), act);
                for (i, (yv, rv)) in y.iter().zip(&r).enumerate() {
                    assert!(
                        (yv - rv).abs() < 1e-12,
                        "{name} {act:?} {groups} groups: element {i}"
                    );
                }
            }
            GradCheck::default().assert(
                |v| gn(&v[0], Some(&v[3]), 2, &v[1], &v[2], 1e-5, act),
                &[x.clone(), w.clone(), b.clone(), shift.clone()],
            );
            GradCheck::default().assert(
                |v| gn(&v[0], None, 2, &v[1], &v[2], 1e-5, act),
                &[x.clone(), w.clone(), b.clone()],
            );
        }
        let bad = rand_tensor(&[4, 2], 19);
        let err = gn(&x, Some(&bad), 2, &w, &b, 1e-5, NormAct::Silu).unwrap_err();
        assert!(err.to_string().contains("shift"), "{name}: {err}");
    }
}

#[test]
fn fused_group_norm_f32_kernel_agrees_with_portable_ops() {
    let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let inputs = [
        f32(rand_tensor(&[5, 8, 7, 7], 21)),
        f32(rand_tensor(&[8], 22)),
        f32(rand_tensor(&[8], 23)),
        f32(rand_tensor(&[5, 8], 24)),
    ];
    for act in ACTS {
        let run =
            |gn: FusedFn| move |v: &[Tensor]| gn(&v[0], Some(&v[3]), 4, &v[1], &v[2], 1e-5, act);
        let (fast, portable) = (run(group_norm_fused), run(group_norm_fused_portable));
        let diff = support::max_diff(&fast(&inputs).unwrap(), &portable(&inputs).unwrap());
        assert!(diff < 1e-5, "{act:?} values: {diff}");
        let ga = analytic_grads(fast, &inputs, 1).unwrap();
        let gp = analytic_grads(portable, &inputs, 1).unwrap();
        for (i, (a, p)) in ga.iter().zip(&gp).enumerate() {
            let diff = support::max_diff(a, p);
            assert!(diff < 1e-4, "{act:?} gradient of input {i}: {diff}");
        }
    }
}

#[test]
fn activations_values_and_gradients() {
    // Keep values away from the kink at 0, where finite differences are meaningless.
    let x = Tensor::new(
        &[[-2.0f64, -0.3, 0.4, 1.7], [-0.9, 0.2, -0.05, 3.0]],
        &Device::Cpu,
    )
    .unwrap();
    for leaky in [leaky_relu, leaky_relu_portable] {
        let y = vals(&leaky(&x, 0.01).unwrap());
        for (a, b) in vals(&x).iter().zip(&y) {
            assert_eq!(*b, if *a > 0.0 { *a } else { 0.01 * a });
        }
        GradCheck::default().assert(|v| leaky(&v[0], 0.01), std::slice::from_ref(&x));
    }
    let y = vals(&relu(&x).unwrap());
    assert_eq!(y, vals(&x.relu().unwrap()));
    GradCheck::default().assert(|v| relu(&v[0]), std::slice::from_ref(&x));
    // torch's relu has gradient 0 at exactly 0 (candle's passes the gradient through).
    let zero = candle_core::Var::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
    let g = relu(zero.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(vals(g.get(zero.as_tensor()).unwrap()), vec![0.0, 1.0]);
    GradCheck::default().assert(|v| silu(&v[0]), &[x]);
}

#[test]
fn batch_norm_train_eval_and_running_stats_like_torch() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let bn = BatchNorm2d::new(vb.pp("bn"), 2).unwrap();
    let x = rand_tensor(&[3, 2, 2, 2], 11);
    let y = bn.forward_t(&x, true).unwrap();
    // Batch statistics per channel (12 values each).
    let xv = vals(&x);
    let per_channel = |c: usize| -> Vec<f64> {
        (0..3)
            .flat_map(|n| xv[(n * 2 + c) * 4..(n * 2 + c + 1) * 4].to_vec())
            .collect()
    };
    let yv = vals(&y);
    let buffers = bn.buffers().unwrap();
    let names: Vec<&str> = buffers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked"
        ]
    );
    let (rm, rv) = (vals(&buffers[0].1), vals(&buffers[1].1));
    for c in 0..2 {
        let v = per_channel(c);
        let m = v.iter().sum::<f64>() / 12.0;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 12.0;
        let first = (xv[c * 4] - m) / (var + 1e-5).sqrt();
        assert!((yv[c * 4] - first).abs() < 1e-6, "channel {c} output");
        assert!((rm[c] - 0.1 * m).abs() < 1e-6, "running mean {c}");
        assert!(
            (rv[c] - (0.9 + 0.1 * var * 12.0 / 11.0)).abs() < 1e-6,
            "running var {c}"
        );
    }
    assert_eq!(buffers[2].1.to_scalar::<i64>().unwrap(), 1);
    // Eval mode normalises with the running statistics.
    let ye = vals(&bn.forward_t(&x, false).unwrap());
    assert!((ye[0] - (xv[0] - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-5);
    // Training-mode gradients (input, weight, bias) are right.
    let varmap2 = VarMap::new();
    let bn2 = BatchNorm2d::new(
        VarBuilder::from_varmap(&varmap2, DType::F64, &Device::Cpu),
        2,
    )
    .unwrap();
    GradCheck::default().assert(|v| bn2.forward_t(&v[0], true), &[x]);
    assert_eq!(
        varmap.all_vars().len(),
        2,
        "buffers must not be trainable variables"
    );
}

#[test]
fn batch_norm_buffers_round_trip_and_errors_name_the_buffer() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bn = BatchNorm2d::new(vb.pp("enc").pp("bn"), 3).unwrap();
    let mean = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
    let var = Tensor::new(&[4f32, 5., 6.], &Device::Cpu).unwrap();
    bn.load_buffers(|n| match n {
        "enc.bn.running_mean" => Some(mean.clone()),
        "enc.bn.running_var" => Some(var.clone()),
        "enc.bn.num_batches_tracked" => Some(Tensor::new(7i64, &Device::Cpu).unwrap()),
        _ => None,
    })
    .unwrap();
    let b = bn.buffers().unwrap();
    assert_eq!(vals(&b[1].1), vec![4.0, 5.0, 6.0]);
    assert_eq!(b[2].1.to_scalar::<i64>().unwrap(), 7);
    let err = bn
        .load_buffers(|n| (n == "enc.bn.running_mean").then(|| mean.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("enc.bn.running_var"), "{err}");
}
