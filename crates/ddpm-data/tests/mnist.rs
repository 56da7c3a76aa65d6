//! MNIST readers on real bytes: the embedded subset, and the shared full set when present.

use std::io::Write;
use std::path::Path;

use ddpm_data::{
    DataError, EMBEDDED_MNIST_LEN, Split, embedded_mnist, embedded_mnist_with_labels,
    load_mnist_dir,
};

fn asset(name: &str) -> Vec<u8> {
    std::fs::read(
        ddpm_tests::workspace_root()
            .join("assets/mnist-subset")
            .join(name),
    )
    .unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

#[test]
fn embedded_subset_is_real_mnist() {
    let (images, labels) = embedded_mnist_with_labels();
    assert_eq!(
        (
            images.len(),
            images.channels(),
            images.height(),
            images.width()
        ),
        (EMBEDDED_MNIST_LEN, 1, 28, 28)
    );
    // The first five training labels of MNIST are 5 0 4 1 9.
    assert_eq!(&labels[..5], &[5, 0, 4, 1, 9]);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [191, 220, 198, 191, 214, 180, 200, 224, 172, 210]); // PROVENANCE.json
    // Digits are white strokes on black: corner empty, a stroke reaching 255.
    let first = images.image(0);
    assert_eq!(first[0], 0);
    assert_eq!(first.iter().max(), Some(&255));
    let ink = first.iter().filter(|&&p| p > 0).count();
    assert!((100..400).contains(&ink), "{ink} inked pixels");
    assert_eq!(embedded_mnist(), images);
}

/// Writes the embedded subset to `dir` under the standard names, raw or gzipped.
fn write_subset(dir: &Path, split: &str, gz: bool, labels_len: Option<u32>) {
    let mut img = gunzip(&asset("train-images-first2000-idx3-ubyte.gz"));
    let mut lab = gunzip(&asset("train-labels-first2000-idx1-ubyte.gz"));
    if let Some(n) = labels_len {
        lab[4..8].copy_from_slice(&n.to_be_bytes());
        lab.truncate(8 + n as usize);
    }
    for (name, data) in [
        (format!("{split}-images-idx3-ubyte"), &mut img),
        (format!("{split}-labels-idx1-ubyte"), &mut lab),
    ] {
        if gz {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
        } else {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

#[test]
fn folder_reader_takes_raw_and_gz_files() {
    let (want, want_labels) = embedded_mnist_with_labels();
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_subset(dir.path(), "t10k", gz, None);
        let (images, labels) = load_mnist_dir(dir.path(), Split::Test).unwrap();
        assert_eq!(images, want);
        assert_eq!(labels, want_labels);
        let e = load_mnist_dir(dir.path(), Split::Train).unwrap_err();
        assert!(matches!(e, DataError::MnistMissing { .. }), "{e}");
        assert!(e.to_string().contains("train-images-idx3-ubyte.gz"), "{e}");
    }
}

#[test]
fn images_and_labels_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_subset(dir.path(), "train", true, Some(1999));
    let e = load_mnist_dir(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds 2000 images")
            && e.contains("holds 1999 labels")
            && e.contains("train-labels-idx1-ubyte.gz"),
        "{e}"
    );
}

#[test]
fn swapped_files_are_rejected_by_magic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte.gz"),
        asset("train-labels-first2000-idx1-ubyte.gz"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte.gz"),
        asset("train-labels-first2000-idx1-ubyte.gz"),
    )
    .unwrap();
    let e = load_mnist_dir(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("magic number is 2049"),
        "{e}"
    );
}

#[test]
fn shared_full_mnist_loads() {
    let Some(file) = ddpm_tests::shared_file("data/mnist/t10k-images-idx3-ubyte.gz") else {
        return;
    };
    let (images, labels) = load_mnist_dir(file.parent().unwrap(), Split::Test).unwrap();
    assert_eq!(
        (images.len(), labels.len(), images.height(), images.width()),
        (10_000, 10_000, 28, 28)
    );
    assert_eq!(&labels[..3], &[7, 2, 1]); // the first test digits are 7, 2, 1
}
