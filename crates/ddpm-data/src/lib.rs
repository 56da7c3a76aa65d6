//! Datasets for the DDPM toolkit.
//!
//! - [`DatasetSpec`]: the datasets by name (mnist, anime, folder, embedded): default folders,
//!   presence checks with the command that fetches what is missing, and loading with labels
//!   ([`Dataset`]). Adding a dataset starts there.
//! - MNIST IDX files, raw or gzip-compressed: [`load_mnist_dir`], [`read_idx_images`],
//!   [`read_idx_labels`]; and the first 2,000 training digits compiled into the library:
//!   [`embedded_mnist`].
//! - Image folders (PNG/JPEG/WebP, recursive): [`load_image_folder`] with torchvision's
//!   `Resize(size)` + `CenterCrop(size)`, parallel decoding and a preprocessed cache.
//! - Batching: [`Batches`] (per-epoch shuffle, data-parallel shards, flips — all a pure
//!   function of the seed, epoch, rank, world and batch index) and [`batch_tensor`].
//!
//! Images live in an [`ImageSet`]: u8 pixels, N x C x H x W.

mod batch;
mod cache;
mod dataset;
mod error;
mod folder;
mod idx;
mod image_set;
mod listing;
mod mnist;
mod transform;

pub use batch::{Batches, EpochPlan, batch_tensor};
pub use dataset::{ANIME_DIR, Classes, Dataset, DatasetSpec, MNIST_DIR};
pub use error::{DataError, Result};
pub use folder::{
    CacheUse, FolderCheck, FolderOptions, FolderReport, OnCorrupt, check_image_folder,
    load_image_folder, load_image_folder_report,
};
pub use idx::{
    IMAGES_MAGIC, LABELS_MAGIC, parse_idx_images, parse_idx_labels, read_idx_images,
    read_idx_labels,
};
pub use image_set::ImageSet;
pub use listing::{IMAGE_EXTENSIONS, ImageFile, Listing, list_folder};
pub use mnist::{
    EMBEDDED_MNIST_LEN, Split, embedded_mnist, embedded_mnist_with_labels, load_mnist_dir,
};
pub use transform::preprocess;
