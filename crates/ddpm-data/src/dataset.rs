//! The datasets a run can train on, by name: what each one is ([`DatasetSpec`], part of a
//! run's configuration), where it sits by default, how to tell whether it is there and which
//! command fetches it, and loading it with its labels ([`Dataset`]).
//!
//! To add a dataset: a variant here (its name, shape, default folder, presence check and
//! loader), its reader in a file of this crate, and its fetch command in `xtask`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::folder::{FolderOptions, load_image_folder};
use crate::image_set::ImageSet;
use crate::listing::list_folder;
use crate::mnist::{Split, embedded_mnist_with_labels, load_mnist_dir};

/// The default folder of MNIST (what `cargo xtask fetch-mnist` writes).
pub const MNIST_DIR: &str = "data/mnist";
/// The default folder of the anime faces (what `cargo xtask fetch-anime` writes).
pub const ANIME_DIR: &str = "data/anime-faces";

/// Which images a run trains on. Where they sit on disk is not part of it (a run whose data
/// moved still resumes, given the new folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DatasetSpec {
    /// MNIST's training split from IDX files (raw or .gz), 1x28x28, with labels.
    Mnist,
    /// The anime-faces folder (RGB), resized and centre-cropped to `size`.
    Anime {
        /// Side of the square images.
        size: usize,
    },
    /// Any image folder, searched recursively.
    Folder {
        /// Side of the square images.
        size: usize,
        /// 1 (gray) or 3 (RGB).
        channels: usize,
    },
    /// The 2,000 real MNIST digits compiled into the program, with labels.
    Embedded,
}

/// Training images in memory, with their classes when the dataset has them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The images, N x C x H x W.
    pub images: ImageSet,
    /// One class per image (MNIST's digits; an image folder's class subfolders), or `None`
    /// for unlabelled data.
    pub classes: Option<Classes>,
}

/// The classes of a labelled dataset: their names and each image's class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    /// Class names, indexed by label (`"0"`..`"9"` for MNIST, subfolder names for a folder).
    pub names: Vec<String>,
    /// The label (an index into `names`) of each image, in the dataset's order.
    pub labels: Vec<u32>,
}

impl Classes {
    /// The ten MNIST digits, with their labels.
    fn digits(labels: &[u8]) -> Self {
        Classes {
            names: digit_names(),
            labels: labels.iter().map(|&l| u32::from(l)).collect(),
        }
    }

    /// The classes of an image folder from its images' relative paths (`/`-separated): one
    /// class per first-level subfolder, in name order, when every image sits in one and there
    /// are at least two; `None` otherwise (the folder trains unconditionally).
    pub fn of_folder(files: &[String]) -> Option<Self> {
        let folders: Option<Vec<&str>> = files
            .iter()
            .map(|f| f.split_once('/').map(|(dir, _)| dir))
            .collect();
        let folders = folders?;
        let mut names: Vec<String> = folders.iter().map(|d| d.to_string()).collect();
        names.sort();
        names.dedup();
        if names.len() < 2 {
            return None;
        }
        let labels = folders
            .iter()
            .map(|d| {
                names
                    .binary_search_by(|n| n.as_str().cmp(d))
                    .expect("listed") as u32
            })
            .collect();
        Some(Classes { names, labels })
    }
}

/// `"0"`..`"9"`.
fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

impl DatasetSpec {
    /// Parses `mnist`, `anime`, `embedded` or `folder:PATH`; `size` and `channels` apply to
    /// folder datasets (anime is always RGB). Returns the spec and, for `folder:PATH`, the
    /// folder.
    pub fn parse(name: &str, size: usize, channels: usize) -> Result<(Self, Option<PathBuf>)> {
        Ok(match name {
            "mnist" => (DatasetSpec::Mnist, None),
            "anime" => (DatasetSpec::Anime { size }, None),
            "embedded" => (DatasetSpec::Embedded, None),
            _ => match name.strip_prefix("folder:") {
                Some(path) if !path.is_empty() => {
                    if channels != 1 && channels != 3 {
                        return Err(DataError::Options(format!(
                            "folder datasets have 1 (gray) or 3 (RGB) channels, not {channels}"
                        )));
                    }
                    (
                        DatasetSpec::Folder { size, channels },
                        Some(PathBuf::from(path)),
                    )
                }
                _ => {
                    return Err(DataError::Options(format!(
                        "unknown dataset `{name}`: use mnist, anime, embedded or folder:PATH"
                    )));
                }
            },
        })
    }

    /// MNIST when `dir` (default [`MNIST_DIR`]) holds it, else the embedded digits.
    pub fn mnist_or_embedded(dir: Option<&Path>) -> Self {
        let dir = dir.map_or_else(|| PathBuf::from(MNIST_DIR), Path::to_path_buf);
        if DatasetSpec::Mnist.is_present(&dir) {
            DatasetSpec::Mnist
        } else {
            DatasetSpec::Embedded
        }
    }

    /// (C, H, W) of one image.
    pub fn image_dims(&self) -> [usize; 3] {
        match self {
            DatasetSpec::Mnist | DatasetSpec::Embedded => [1, 28, 28],
            DatasetSpec::Anime { size } => [3, *size, *size],
            DatasetSpec::Folder { size, channels } => [*channels, *size, *size],
        }
    }

    /// A short name for run directories and logs.
    pub fn short_name(&self) -> &'static str {
        match self {
            DatasetSpec::Mnist => "mnist",
            DatasetSpec::Anime { .. } => "anime",
            DatasetSpec::Folder { .. } => "folder",
            DatasetSpec::Embedded => "embedded",
        }
    }

    /// The folder used when none is given (`None`: the embedded digits need none, and a
    /// folder dataset is named by its folder).
    pub fn default_dir(&self) -> Option<PathBuf> {
        match self {
            DatasetSpec::Mnist => Some(PathBuf::from(MNIST_DIR)),
            DatasetSpec::Anime { .. } => Some(PathBuf::from(ANIME_DIR)),
            DatasetSpec::Folder { .. } | DatasetSpec::Embedded => None,
        }
    }

    /// The command that downloads this dataset into `dir`, if there is one.
    pub fn fetch_command(&self, dir: &Path) -> Option<String> {
        let fetch = match self {
            DatasetSpec::Mnist => "fetch-mnist",
            DatasetSpec::Anime { .. } => "fetch-anime",
            DatasetSpec::Folder { .. } | DatasetSpec::Embedded => return None,
        };
        Some(format!("cargo xtask {fetch} --out {}", dir.display()))
    }

    /// True when `dir` holds this dataset (for MNIST: its training images, raw or .gz).
    pub fn is_present(&self, dir: &Path) -> bool {
        match self {
            DatasetSpec::Mnist => ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
                .iter()
                .any(|f| dir.join(f).is_file() || dir.join("MNIST/raw").join(f).is_file()),
            DatasetSpec::Anime { .. } | DatasetSpec::Folder { .. } => dir.is_dir(),
            DatasetSpec::Embedded => true,
        }
    }

    /// The folder to read, checked to hold the dataset: `dir` when given, else
    /// [`DatasetSpec::default_dir`]. A missing dataset is an error that names the folder and
    /// the command that fetches it.
    pub fn present_dir(&self, dir: Option<&Path>) -> Result<PathBuf> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => self.default_dir().ok_or_else(|| {
                DataError::Options(format!(
                    "the {} dataset needs its folder: --dataset folder:PATH or --data-dir DIR",
                    self.short_name()
                ))
            })?,
        };
        if !self.is_present(&dir) {
            let fetch = self
                .fetch_command(&dir)
                .map_or_else(String::new, |c| format!("fetch it with `{c}`, "));
            return Err(DataError::Options(format!(
                "no {} dataset at {}: {fetch}pass --data-dir DIR, or train on the embedded \
                 digits with --dataset embedded",
                self.short_name(),
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// The class names the dataset in `dir` (as for [`DatasetSpec::load`]) has, without
    /// decoding it: MNIST's ten digits, an image folder's class subfolders (see
    /// [`Classes::of_folder`]), or `None` when it is unlabelled.
    pub fn class_names(&self, dir: Option<&Path>) -> Result<Option<Vec<String>>> {
        match self {
            DatasetSpec::Mnist | DatasetSpec::Embedded => Ok(Some(digit_names())),
            DatasetSpec::Anime { .. } | DatasetSpec::Folder { .. } => {
                let listing = list_folder(&self.present_dir(dir)?)?;
                let files: Vec<String> = listing.images.into_iter().map(|f| f.relative).collect();
                Ok(Classes::of_folder(&files).map(|c| c.names))
            }
        }
    }

    /// Loads the training images from `dir` (default: [`DatasetSpec::default_dir`]; the
    /// embedded digits need none). Decoded image folders are cached (u8 safetensors) under
    /// `cache_dir`, so later runs skip decoding.
    pub fn load(&self, dir: Option<&Path>, cache_dir: &Path) -> Result<Dataset> {
        match *self {
            DatasetSpec::Embedded => {
                let (images, labels) = embedded_mnist_with_labels();
                Ok(Dataset {
                    images,
                    classes: Some(Classes::digits(&labels)),
                })
            }
            DatasetSpec::Mnist => {
                let (images, labels) = load_mnist_dir(&self.present_dir(dir)?, Split::Train)?;
                Ok(Dataset {
                    images,
                    classes: Some(Classes::digits(&labels)),
                })
            }
            DatasetSpec::Anime { size } => folder(&self.present_dir(dir)?, size, 3, cache_dir),
            DatasetSpec::Folder { size, channels } => {
                folder(&self.present_dir(dir)?, size, channels, cache_dir)
            }
        }
    }
}

fn folder(dir: &Path, size: usize, channels: usize, cache_dir: &Path) -> Result<Dataset> {
    let mut options = FolderOptions::new(size as u32, channels);
    options.cache_dir = Some(cache_dir.to_path_buf());
    let report = load_image_folder(dir, &options)?;
    Ok(Dataset {
        classes: Classes::of_folder(&report.files),
        images: report.images,
    })
}
