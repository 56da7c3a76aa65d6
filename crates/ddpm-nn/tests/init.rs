//! Seeded initialisation: reproducible, PyTorch bounds, names, redraw.

mod support;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use ddpm_nn::{Conv2d, ConvTranspose2d, InitSpec, Linear, SeededInit, reinit_seeded};
use support::vals;

fn build(seed: u64, reverse_order: bool) -> VarMap {
    let varmap = VarMap::new();
    let init = SeededInit::new(&varmap, seed);
    let vb = init.var_builder(DType::F32, &Device::Cpu);
    let make_conv = || Conv2d::new(vb.pp("conv"), 4, 8, 3, 1, 1).unwrap();
    let make_up = || ConvTranspose2d::new(vb.pp("up"), 8, 4, 3, 2, 1, 1).unwrap();
    let make_lin = || Linear::new(vb.pp("lin"), 20, 10).unwrap();
    if reverse_order {
        make_lin();
        make_up();
        make_conv();
    } else {
        make_conv();
        make_up();
        make_lin();
    }
    varmap
}

fn values(varmap: &VarMap, name: &str) -> Vec<f64> {
    vals(varmap.data().lock().unwrap()[name].as_tensor())
}

#[test]
fn same_seed_same_values_regardless_of_order_other_seed_differs() {
    let (a, b, c) = (build(5, false), build(5, true), build(6, false));
    for name in [
        "conv.weight",
        "conv.bias",
        "up.weight",
        "up.bias",
        "lin.weight",
        "lin.bias",
    ] {
        assert_eq!(values(&a, name), values(&b, name), "{name}");
        assert_ne!(values(&a, name), values(&c, name), "{name}");
    }
}

#[test]
fn bounds_and_spread_match_pytorch_defaults() {
    let varmap = build(1, false);
    // (name, fan_in): conv in*k*k = 36; transposed conv weight.size(1)*k*k = 4*9; linear in = 20.
    for (name, fan_in) in [
        ("conv.weight", 36.0),
        ("up.weight", 36.0),
        ("up.bias", 36.0),
        ("lin.weight", 20.0),
        ("lin.bias", 20.0),
    ] {
        let v = values(&varmap, name);
        let bound = 1.0 / f64::sqrt(fan_in);
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "{name} exceeds ±{bound}"
        );
        if v.len() >= 200 {
            // U(-b, b) has variance b^2/3; with >= 200 draws the estimate is within 25%.
            let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
            let expect = bound * bound / 3.0;
            assert!(
                (var / expect - 1.0).abs() < 0.25,
                "{name}: variance {var} vs {expect}"
            );
        }
    }
}

#[test]
fn reinit_redraws_exactly_what_a_fresh_build_gives() {
    let varmap = VarMap::new();
    let init = SeededInit::new(&varmap, 1);
    Conv2d::new(
        init.var_builder(DType::F32, &Device::Cpu).pp("conv"),
        4,
        8,
        3,
        1,
        1,
    )
    .unwrap();
    let specs = init.specs();
    assert_eq!(
        specs[0],
        ("conv.bias".to_string(), InitSpec::torch_default(36))
    );
    reinit_seeded(&varmap, &specs, 5).unwrap();
    let fresh = build(5, false);
    assert_eq!(
        values(&varmap, "conv.weight"),
        values(&fresh, "conv.weight")
    );
    let err = reinit_seeded(&VarMap::new(), &specs, 5).unwrap_err();
    assert!(err.to_string().contains("conv.bias"), "{err}");
}
