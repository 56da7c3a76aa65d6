//! Classifier-free guidance: the combination formula, one network call per step, the checks,
//! and guided batched generation.

use std::cell::RefCell;

use candle_core::{Device, Tensor};
use ddpm_diffusion::{
    BetaKind, Denoiser, GenerateOptions, Guidance, GuidanceInterval, Guided, NoiseRng, Prediction,
    SamplerConfig, Schedule, class_rows, generate,
};

/// A closed-form conditional "network" with 3 classes: output = 0.1·x + (class + 1), with the
/// unconditional label 3 giving 0.1·x - 1. It records the batch size of every call.
struct ToyConditional {
    calls: RefCell<Vec<usize>>,
}

impl ToyConditional {
    fn new() -> Self {
        ToyConditional {
            calls: RefCell::new(Vec::new()),
        }
    }
}

impl Denoiser for ToyConditional {
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let none = Tensor::full(3u32, x_t.dim(0)?, x_t.device())?;
        self.predict_classes(x_t, t, &none)
    }

    fn num_classes(&self) -> usize {
        3
    }

    fn predict_classes(
        &self,
        x_t: &Tensor,
        _t: &Tensor,
        classes: &Tensor,
    ) -> candle_core::Result<Tensor> {
        self.calls.borrow_mut().push(x_t.dim(0)?);
        let shift: Vec<f32> = classes
            .to_vec1::<u32>()?
            .into_iter()
            .map(|c| if c == 3 { -1.0 } else { c as f32 + 1.0 })
            .collect();
        let shift = Tensor::from_vec(shift, (x_t.dim(0)?, 1, 1, 1), x_t.device())?;
        x_t.affine(0.1, 0.0)?.broadcast_add(&shift)
    }
}

fn values(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn guided_output_is_unconditional_plus_scaled_difference_in_one_call() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(vec![0.5f32, -2.0, 1.0, 3.0], (2, 1, 2, 1), &dev).unwrap();
    let t = Tensor::new(&[7f32, 7.0], &dev).unwrap();
    let classes = [2u32, 0];
    for (scale, calls) in [
        (0.0, vec![2]),
        (1.0, vec![2]),
        (3.0, vec![4]),
        (7.5, vec![4]),
    ] {
        let model = ToyConditional::new();
        let guided = Guided::new(&model, &classes, scale).unwrap();
        let out = values(&guided.predict(&x, &t).unwrap());
        let xs = values(&x);
        // o_u = 0.1x - 1, o_c = 0.1x + c + 1: o_u + w (o_c - o_u) = 0.1x - 1 + w (c + 2).
        let want: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, &xv)| 0.1 * xv - 1.0 + scale as f32 * (classes[i / 2] as f32 + 2.0))
            .collect();
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-5, "w={scale}: {out:?} vs {want:?}");
        }
        assert_eq!(
            *model.calls.borrow(),
            calls,
            "w={scale}: one call, doubled batch"
        );
    }
}

#[test]
fn an_interval_guides_only_its_steps_and_uses_the_conditional_output_elsewhere() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(vec![0.5f32, -2.0], (2, 1, 1, 1), &dev).unwrap();
    let classes = [1u32, 0];
    let scale = 4.0;
    // Guided where 0.2·T <= t <= 0.5·T, T = 100 (both ends included).
    let interval = GuidanceInterval::new(0.2, 0.5).unwrap();
    for (t, guided_step) in [
        (10.0, false),
        (20.0, true),
        (35.0, true),
        (50.0, true),
        (51.0, false),
    ] {
        let model = ToyConditional::new();
        let guided = Guided::new(&model, &classes, scale)
            .unwrap()
            .within(interval, 100);
        let t = Tensor::new(&[t as f32, t as f32], &dev).unwrap();
        let out = values(&guided.predict(&x, &t).unwrap());
        let w = if guided_step { scale as f32 } else { 1.0 };
        for (i, (o, xv)) in out.iter().zip(values(&x)).enumerate() {
            let want = 0.1 * xv - 1.0 + w * (classes[i] as f32 + 2.0);
            assert!((o - want).abs() < 1e-5, "t={t}: {out:?}");
        }
        // Outside the interval: one plain conditional call.
        let calls = if guided_step { vec![4] } else { vec![2] };
        assert_eq!(*model.calls.borrow(), calls);
    }
}

#[test]
fn guidance_intervals_parse_and_refuse_nonsense() {
    let parsed: GuidanceInterval = "0.1, 0.6".parse().unwrap();
    assert_eq!(parsed, GuidanceInterval::new(0.1, 0.6).unwrap());
    assert_eq!(
        parsed.to_string().parse::<GuidanceInterval>().unwrap(),
        parsed
    );
    assert_eq!(
        "0,1".parse::<GuidanceInterval>().unwrap(),
        GuidanceInterval::ALL
    );
    for bad in ["0.6,0.1", "-0.1,0.5", "0.2,1.5", "0.5", "a,b", "NaN,1"] {
        let e = bad.parse::<GuidanceInterval>().unwrap_err().to_string();
        assert!(
            e.contains("guidance interval") && e.contains("FROM,TO"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn guidance_refuses_what_it_cannot_do() {
    let model = ToyConditional::new();
    let err = |r: ddpm_diffusion::Result<Guided<'_, ToyConditional>>| {
        r.err().expect("refused").to_string()
    };
    let e = err(Guided::new(&model, &[3], 2.0));
    assert!(
        e.contains("class 3 is out of range") && e.contains("0..2"),
        "{e}"
    );
    let e = err(Guided::new(&model, &[0], -1.0));
    assert!(e.contains("guidance scale"), "{e}");
    let e = err(Guided::new(&model, &[0], f64::NAN));
    assert!(e.contains("guidance scale"), "{e}");
    let unconditional = |x: &Tensor, _t: &Tensor| Ok(x.clone());
    let e = Guided::new(&unconditional, &[0], 1.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not class-conditional"), "{e}");
    // A batch of another size than the labels is an error, not a broadcast.
    let guided = Guided::new(&model, &[0, 1], 2.0).unwrap();
    let x = Tensor::zeros((3, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(guided.predict(&x, &t).is_err());
}

#[test]
fn generation_guides_each_batch_towards_its_own_images_classes() {
    let schedule = Schedule::new(BetaKind::Linear, 20, &Device::Cpu).unwrap();
    let classes = class_rows(&[2, 0, 1], 2);
    assert_eq!(classes, [2, 2, 0, 0, 1, 1]);
    let options = |batch_size, classes: Vec<u32>| GenerateOptions {
        n: 6,
        image: [1, 2, 2],
        batch_size,
        sampler: SamplerConfig::ddim(4, 0.0, false),
        prediction: Prediction::Epsilon,
        guidance: Some(Guidance {
            classes,
            scale: 2.0,
            interval: GuidanceInterval::ALL,
        }),
    };
    let run = |batch_size, classes| {
        let model = ToyConditional::new();
        let x = generate(
            &model,
            &schedule,
            &options(batch_size, classes),
            None,
            &mut NoiseRng::new(3),
            &Device::Cpu,
            |_, _| {},
        )
        .unwrap();
        (values(&x), model.calls.into_inner())
    };
    let (whole, calls) = run(6, classes.clone());
    assert_eq!(
        calls,
        vec![12; 4],
        "4 steps, conditional and unconditional halves together"
    );
    // Deterministic DDIM from the same x_T: batching (and so slicing the labels) changes nothing.
    let (batched, calls) = run(4, classes.clone());
    assert_eq!(calls, [8, 8, 8, 8, 4, 4, 4, 4]);
    assert_eq!(whole, batched);
    // The classes do change the images: images of class 2 differ from those of class 0.
    let (other, _) = run(6, vec![0; 6]);
    assert_ne!(whole[..8], other[..8]);
    assert_eq!(whole[8..16], other[8..16], "class 0 either way");
    // One label per image.
    let err = generate(
        &ToyConditional::new(),
        &schedule,
        &options(6, vec![0; 5]),
        None,
        &mut NoiseRng::new(3),
        &Device::Cpu,
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("5 class labels given for 6 images"),
        "{err}"
    );
}
