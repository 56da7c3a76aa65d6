//! The committed classifier and the evaluator on real digits, noise and blurred digits.

use std::path::PathBuf;

use candle_core::Device;
use ddpm_data::{ImageSet, Split, embedded_mnist_with_labels, read_idx_images, read_idx_labels};
use ddpm_eval::{Classifier, MnistEvaluator};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The first 1,000 MNIST test digits committed beside the classifier.
fn committed_test_sample() -> (ImageSet, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/mnist-classifier");
    let images = read_idx_images(&dir.join("t10k-images-first1000-idx3-ubyte.gz")).unwrap();
    let labels = read_idx_labels(&dir.join("t10k-labels-first1000-idx1-ubyte.gz")).unwrap();
    (images, labels)
}

fn accuracy(images: &ImageSet, labels: &[u8]) -> f64 {
    Classifier::committed(&Device::Cpu)
        .unwrap()
        .embed(images, 500, &Device::Cpu)
        .unwrap()
        .accuracy(labels)
        .unwrap()
}

#[test]
fn committed_classifier_is_accurate_on_committed_digits() {
    let (train, train_labels) = embedded_mnist_with_labels();
    let on_train = accuracy(&train, &train_labels);
    assert!(on_train >= 0.97, "embedded training subset: {on_train}");
    let (test, test_labels) = committed_test_sample();
    let on_test = accuracy(&test, &test_labels);
    assert!(on_test >= 0.98, "first 1000 test digits: {on_test}");
}

#[test]
fn committed_classifier_reaches_its_documented_test_accuracy() {
    let Some(dir) = ddpm_tests::shared_file("data/mnist") else {
        return;
    };
    let (test, labels) = ddpm_data::load_mnist_dir(&dir, Split::Test).unwrap();
    let acc = accuracy(&test, &labels);
    assert!(acc >= 0.985, "MNIST test split: {acc}");
}

/// A 3x3 box blur of every image (edges clamped).
fn blurred(set: &ImageSet) -> ImageSet {
    let (h, w) = (set.height(), set.width());
    let mut out = Vec::with_capacity(set.pixels().len());
    for i in 0..set.len() {
        let img = set.image(i);
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                        let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                        sum += u32::from(img[yy * w + xx]);
                    }
                }
                out.push((sum / 9) as u8);
            }
        }
    }
    ImageSet::new(out, 1, h, w).unwrap()
}

fn noise(n: usize, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels = (0..n * 784).map(|_| rng.random::<u8>()).collect();
    ImageSet::new(pixels, 1, 28, 28).unwrap()
}

/// Images `range` of `set`.
fn slice(set: &ImageSet, range: std::ops::Range<usize>) -> ImageSet {
    let n = set.image_len();
    let pixels = set.pixels()[range.start * n..range.end * n].to_vec();
    ImageSet::new(pixels, set.channels(), set.height(), set.width()).unwrap()
}

#[test]
fn evaluator_separates_real_digits_from_noise_and_blur() {
    let device = Device::Cpu;
    // Pool: test digits 0..600 (halves of 300); samples: the held-out test digits 600..1000.
    // (Training digits would not do as "real": the classifier's features of the digits it
    // was trained on are measurably tighter than those of unseen digits.)
    let (test, _) = committed_test_sample();
    let classifier = Classifier::committed(&device).unwrap();
    let evaluator = MnistEvaluator::new(classifier, &slice(&test, 0..600), 0, &device).unwrap();
    assert_eq!(evaluator.max_n(), 300);
    let held_out = slice(&test, 600..1000);
    let real = evaluator.evaluate(&held_out).unwrap();
    let blur = evaluator.evaluate(&blurred(&held_out)).unwrap();
    let noisy = evaluator.evaluate(&noise(300, 5)).unwrap();
    eprintln!("real:\n{real}\nblurred:\n{blur}\nnoise:\n{noisy}");
    assert_eq!((real.n, real.samples_given), (300, 400));
    assert_eq!(real.frechet_floor, blur.frechet_floor);
    let floor = real.frechet_floor;
    assert!(floor > 0.0);
    assert!(
        real.frechet < 1.5 * floor,
        "real {} vs floor {floor}",
        real.frechet
    );
    assert!(
        blur.frechet > 10.0 * floor,
        "blurred {} vs floor {floor}",
        blur.frechet
    );
    assert!(
        noisy.frechet > 30.0 * floor,
        "noise {} vs floor {floor}",
        noisy.frechet
    );
    assert!(real.confidence > 0.95 && real.class_entropy > 2.2, "{real}");
    assert!(noisy.class_entropy < 1.5, "{noisy}");
    assert_eq!(real.class_counts.iter().sum::<usize>(), 300);
}

#[test]
fn evaluator_uses_at_most_half_the_pool_and_rejects_wrong_shapes() {
    let device = Device::Cpu;
    let (test, _) = committed_test_sample();
    let mut pool = test.clone();
    pool.truncate(300);
    let classifier = Classifier::committed(&device).unwrap();
    let evaluator = MnistEvaluator::new(classifier, &pool, 1, &device).unwrap();
    let report = evaluator.evaluate(&test).unwrap();
    assert_eq!((report.n, report.samples_given), (150, 1000));
    let rgb = ImageSet::new(vec![0; 2 * 3 * 28 * 28], 3, 28, 28).unwrap();
    let err = evaluator.evaluate(&rgb).unwrap_err();
    assert!(err.to_string().contains("3 x 28 x 28"), "{err}");
    let mut one = test.clone();
    one.truncate(1);
    assert!(evaluator.evaluate(&one).is_err());
}
