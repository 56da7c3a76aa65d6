//! Turning a [`DatasetSpec`] into pixels in memory.

use std::path::{Path, PathBuf};

use ddpm_data::{
    FolderOptions, ImageSet, Split, embedded_mnist, load_image_folder, load_mnist_dir,
};

use crate::{DatasetSpec, Result, TrainError};

/// True when `dir` holds the MNIST training images (raw or gzipped IDX).
pub(crate) fn mnist_present(dir: &Path) -> bool {
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Loads the training images of `spec`. Decoded image folders are cached (u8 safetensors)
/// under `cache_dir`, so later runs skip decoding.
pub fn load_dataset(spec: &DatasetSpec, cache_dir: &Path) -> Result<ImageSet> {
    let missing = |dir: &PathBuf, fetch: &str| {
        TrainError::Config(format!(
            "no dataset at {}: fetch it with `{fetch}`, pass --data-dir, or train on the \
             embedded digits with --dataset embedded",
            dir.display()
        ))
    };
    match spec {
        DatasetSpec::Embedded => Ok(embedded_mnist()),
        DatasetSpec::Mnist { dir } => {
            if !mnist_present(dir) {
                return Err(missing(
                    dir,
                    &format!("cargo xtask fetch-mnist --out {}", dir.display()),
                ));
            }
            Ok(load_mnist_dir(dir, Split::Train)?.0)
        }
        DatasetSpec::Anime { dir, size } => {
            if !dir.is_dir() {
                return Err(missing(
                    dir,
                    &format!("cargo xtask fetch-anime --out {}", dir.display()),
                ));
            }
            folder(dir, *size, 3, cache_dir)
        }
        DatasetSpec::Folder {
            dir,
            size,
            channels,
        } => {
            if !dir.is_dir() {
                return Err(TrainError::Config(format!(
                    "{} is not a folder",
                    dir.display()
                )));
            }
            folder(dir, *size, *channels, cache_dir)
        }
    }
}

fn folder(dir: &Path, size: usize, channels: usize, cache_dir: &Path) -> Result<ImageSet> {
    let mut options = FolderOptions::new(size as u32, channels);
    options.cache_dir = Some(cache_dir.to_path_buf());
    let set = load_image_folder(dir, &options)?;
    if set.is_empty() {
        return Err(TrainError::Config(format!(
            "{} holds no readable image",
            dir.display()
        )));
    }
    Ok(set)
}
