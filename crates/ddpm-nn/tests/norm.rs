//! LayerNorm over (C,H,W), GroupNorm, BatchNorm2d and activations: values and gradients.

mod support;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ddpm_nn::gradcheck::GradCheck;
use ddpm_nn::{
    BatchNorm2d, LayerNormChw, group_norm, layer_norm_chw, layer_norm_chw_portable, leaky_relu,
    leaky_relu_portable, silu,
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

#[test]
fn group_norm_values_and_gradients() {
    let x = rand_tensor(&[2, 4, 3, 3], 5);
    let w = rand_tensor(&[4], 6);
    let b = rand_tensor(&[4], 7);
    let y = vals(&group_norm(&x, 2, &w, &b, 1e-5).unwrap());
    let xhat = standardise_ref(&vals(&x), 18, 1e-5);
    let (wv, bv) = (vals(&w), vals(&b));
    for (i, yv) in y.iter().enumerate() {
        let c = (i / 9) % 4;
        assert!(
            (yv - (xhat[i] * wv[c] + bv[c])).abs() < 1e-12,
            "element {i}"
        );
    }
    GradCheck::default().assert(
        |v| group_norm(&v[0], 2, &v[1], &v[2], 1e-5),
        &[x.clone(), w.clone(), b.clone()],
    );
    assert!(group_norm(&x, 3, &w, &b, 1e-5).is_err());
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
