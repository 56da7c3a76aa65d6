//! MNIST from a folder (raw or .gz IDX files) and the embedded 2,000-digit subset.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::{parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels};
use crate::image_set::ImageSet;

/// Which half of MNIST to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The 60,000 training digits (`train-*`).
    Train,
    /// The 10,000 test digits (`t10k-*`).
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Finds `<prefix>-<kind>-idx?-ubyte` (or the `<prefix>-<kind>.idx?-ubyte` spelling), raw or
/// `.gz`, in `dir` or in torchvision's `dir/MNIST/raw`.
fn find_file(dir: &Path, split: Split, kind: &str, idx: &str) -> Result<PathBuf> {
    let p = split.prefix();
    let stems = [
        format!("{p}-{kind}-{idx}-ubyte"),
        format!("{p}-{kind}.{idx}-ubyte"),
    ];
    let names: Vec<String> = stems
        .iter()
        .flat_map(|s| [s.clone(), format!("{s}.gz")])
        .collect();
    for folder in [dir.to_path_buf(), dir.join("MNIST").join("raw")] {
        for name in &names {
            let path = folder.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(DataError::MnistMissing {
        dir: dir.to_path_buf(),
        what: format!("{p} {kind}"),
        tried: format!("{} (also under MNIST/raw)", names.join(", ")),
    })
}

/// Loads one split of MNIST from `dir`: 1 x 28 x 28 images and their labels. Accepts the
/// files raw or gzip-compressed; checks that images and labels agree in count.
pub fn load_mnist_dir(dir: &Path, split: Split) -> Result<(ImageSet, Vec<u8>)> {
    let images_path = find_file(dir, split, "images", "idx3")?;
    let labels_path = find_file(dir, split, "labels", "idx1")?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    check_counts(&images, &images_path, &labels, &labels_path)?;
    Ok((images, labels))
}

fn check_counts(images: &ImageSet, ip: &Path, labels: &[u8], lp: &Path) -> Result<()> {
    if images.len() != labels.len() {
        return Err(DataError::CountMismatch {
            images: ip.to_path_buf(),
            n_images: images.len(),
            labels: lp.to_path_buf(),
            n_labels: labels.len(),
        });
    }
    Ok(())
}

/// Number of digits in the embedded subset.
pub const EMBEDDED_MNIST_LEN: usize = 2000;

const EMBEDDED_IMAGES_NAME: &str = "assets/mnist-subset/train-images-first2000-idx3-ubyte.gz";
const EMBEDDED_LABELS_NAME: &str = "assets/mnist-subset/train-labels-first2000-idx1-ubyte.gz";
static EMBEDDED_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/mnist-subset/train-images-first2000-idx3-ubyte.gz"
));
static EMBEDDED_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/mnist-subset/train-labels-first2000-idx1-ubyte.gz"
));

/// Parses the embedded subset; an error here means the committed asset is broken.
fn parse_embedded() -> Result<(ImageSet, Vec<u8>)> {
    let (ip, lp) = (
        Path::new(EMBEDDED_IMAGES_NAME),
        Path::new(EMBEDDED_LABELS_NAME),
    );
    let images = parse_idx_images(
        &crate::idx::decompress(EMBEDDED_IMAGES, ip, crate::idx::IMAGES_MAGIC, 3)?,
        ip,
    )?;
    let labels = parse_idx_labels(
        &crate::idx::decompress(EMBEDDED_LABELS, lp, crate::idx::LABELS_MAGIC, 1)?,
        lp,
    )?;
    check_counts(&images, ip, &labels, lp)?;
    Ok((images, labels))
}

/// The first 2,000 MNIST training digits (1 x 28 x 28), compiled into the library from
/// `assets/mnist-subset/` (provenance in its `PROVENANCE.json`). Needs no file at run time.
pub fn embedded_mnist() -> ImageSet {
    embedded_mnist_with_labels().0
}

/// The embedded subset with its labels (digits 0-9).
pub fn embedded_mnist_with_labels() -> (ImageSet, Vec<u8>) {
    parse_embedded().expect("the embedded MNIST subset is compiled in and valid")
}
