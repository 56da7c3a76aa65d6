//! Image-folder datasets (e.g. `anime-faces/<subdir>/*.png`): recursive listing, parallel
//! decoding (rayon), torchvision-style resize + center crop, and the preprocessed cache.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cache::{self, CacheMeta};
use crate::error::{DataError, Result};
use crate::image_set::ImageSet;
use crate::listing::{ImageFile, list_folder};
use crate::transform::preprocess;

/// What to do with a file that has an image extension but does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Stop with [`DataError::Decode`] naming the file.
    #[default]
    Fail,
    /// Leave it out and report it (see [`FolderReport::corrupt`]).
    Skip,
}

/// How to read an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderOptions {
    /// Output side: shorter side resized to `size`, then center-cropped to `size` x `size`.
    pub size: u32,
    /// 3 (RGB) or 1 (grayscale).
    pub channels: usize,
    /// Policy for files that fail to decode.
    pub on_corrupt: OnCorrupt,
    /// Folder for the preprocessed cache; `None` decodes every time.
    pub cache_dir: Option<PathBuf>,
}

impl FolderOptions {
    /// `size` x `size` images with `channels` channels, failing on corrupt files, no cache.
    pub fn new(size: u32, channels: usize) -> Self {
        Self {
            size,
            channels,
            on_corrupt: OnCorrupt::Fail,
            cache_dir: None,
        }
    }
}

impl Default for FolderOptions {
    /// The reference's anime-faces setting: 64 x 64 RGB.
    fn default() -> Self {
        Self::new(64, 3)
    }
}

/// Where the pixels of a [`FolderReport`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache folder was given: decoded.
    Disabled,
    /// Read from this up-to-date cache file: nothing decoded.
    Hit(PathBuf),
    /// Decoded, then written to this cache file (absent or stale before).
    Written(PathBuf),
}

/// The result of [`load_image_folder_report`]: the images and what was left out.
#[derive(Debug, Clone)]
pub struct FolderReport {
    /// The preprocessed images, in the order of their sorted relative paths.
    pub images: ImageSet,
    /// The relative path (`/`-separated) of each loaded image, in the same order.
    pub files: Vec<String>,
    /// Files skipped because their extension is not an image's.
    pub non_images: Vec<PathBuf>,
    /// Image files skipped because they failed to decode (only with [`OnCorrupt::Skip`]).
    pub corrupt: Vec<(PathBuf, String)>,
    /// Whether the cache was used.
    pub cache: CacheUse,
}

/// Loads an image folder, printing a warning to stderr for skipped files (counted, with the
/// first few paths). See [`load_image_folder_report`] for the details.
pub fn load_image_folder(dir: &Path, opts: &FolderOptions) -> Result<FolderReport> {
    let report = load_image_folder_report(dir, opts)?;
    warn_skipped(
        "non-image files skipped",
        report.non_images.iter().map(|p| p.display().to_string()),
    );
    warn_skipped(
        "corrupt images skipped",
        report
            .corrupt
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display())),
    );
    Ok(report)
}

fn warn_skipped(what: &str, items: impl ExactSizeIterator<Item = String>) {
    let n = items.len();
    if n > 0 {
        let shown: Vec<String> = items.take(5).collect();
        let more = if n > shown.len() {
            format!(", and {} more", n - shown.len())
        } else {
            String::new()
        };
        eprintln!("warning: {n} {what}: {}{more}", shown.join("; "));
    }
}

/// Loads every PNG/JPEG/WebP under `dir` (recursively, sorted by relative path), converted to
/// `opts.channels`, shorter side resized to `opts.size` (antialiased bilinear) and
/// center-cropped, decoded in parallel. With `opts.cache_dir`, an up-to-date cache is read
/// instead of decoding, and a missing or stale one is rebuilt.
pub fn load_image_folder_report(dir: &Path, opts: &FolderOptions) -> Result<FolderReport> {
    if opts.channels != 1 && opts.channels != 3 {
        return Err(DataError::Options(format!(
            "channels must be 1 or 3, got {}",
            opts.channels
        )));
    }
    if opts.size == 0 {
        return Err(DataError::Options("image size must be positive".into()));
    }
    let listing = list_folder(dir)?;
    let policy = format!("{:?}", opts.on_corrupt);
    let slot = opts
        .cache_dir
        .as_ref()
        .map(|c| cache::slot(c, dir, &listing.images, opts.size, opts.channels, &policy));
    if let Some(slot) = &slot
        && let Some((images, meta)) = cache::read(slot, opts.size, opts.channels)?
    {
        let files = kept_files(&listing.images, meta.corrupt.iter().map(|(rel, _)| rel));
        let corrupt = meta
            .corrupt
            .into_iter()
            .map(|(rel, why)| (dir.join(rel), why))
            .collect();
        return Ok(FolderReport {
            images,
            files,
            non_images: listing.non_images,
            corrupt,
            cache: CacheUse::Hit(slot.path.clone()),
        });
    }
    let (images, corrupt) = decode_all(&listing.images, opts)?;
    if images.is_empty() {
        return Err(DataError::NoImages {
            dir: dir.to_path_buf(),
            non_images: listing.non_images.len(),
            corrupt: corrupt.len(),
        });
    }
    let cache = match &slot {
        Some(slot) => {
            let meta = CacheMeta {
                corrupt: corrupt
                    .iter()
                    .map(|(f, why)| (f.relative.clone(), why.clone()))
                    .collect(),
            };
            cache::write(slot, &images, &meta)?;
            CacheUse::Written(slot.path.clone())
        }
        None => CacheUse::Disabled,
    };
    let files = kept_files(&listing.images, corrupt.iter().map(|(f, _)| &f.relative));
    let corrupt = corrupt
        .into_iter()
        .map(|(f, why)| (f.path.clone(), why))
        .collect();
    Ok(FolderReport {
        images,
        files,
        non_images: listing.non_images,
        corrupt,
        cache,
    })
}

/// The relative paths of the listed `images` that are not `skipped`, in listing order.
fn kept_files<'a>(images: &[ImageFile], skipped: impl Iterator<Item = &'a String>) -> Vec<String> {
    let skipped: HashSet<&str> = skipped.map(String::as_str).collect();
    images
        .iter()
        .filter(|f| !skipped.contains(f.relative.as_str()))
        .map(|f| f.relative.clone())
        .collect()
}

/// Decodes and preprocesses every file in parallel, keeping the listing's order.
fn decode_all<'a>(
    files: &'a [ImageFile],
    opts: &FolderOptions,
) -> Result<(ImageSet, Vec<(&'a ImageFile, String)>)> {
    let decoded: Vec<std::result::Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|f| decode_one(&f.path).map(|img| preprocess(img, opts.size, opts.channels)))
        .collect();
    let s = opts.size as usize;
    let mut pixels = Vec::with_capacity(files.len() * opts.channels * s * s);
    let mut corrupt = Vec::new();
    for (file, result) in files.iter().zip(decoded) {
        match (result, opts.on_corrupt) {
            (Ok(p), _) => pixels.extend_from_slice(&p),
            (Err(reason), OnCorrupt::Fail) => {
                return Err(DataError::Decode {
                    path: file.path.clone(),
                    reason,
                });
            }
            (Err(reason), OnCorrupt::Skip) => corrupt.push((file, reason)),
        }
    }
    Ok((ImageSet::new(pixels, opts.channels, s, s)?, corrupt))
}

/// The outcome of [`check_image_folder`].
#[derive(Debug, Clone, Default)]
pub struct FolderCheck {
    /// Image files that decode.
    pub images: usize,
    /// Files skipped because their extension is not an image's.
    pub non_images: Vec<PathBuf>,
    /// Image files that fail to decode, with the decoder's message.
    pub corrupt: Vec<(PathBuf, String)>,
}

/// Decodes every image under `dir` (in parallel, keeping nothing) to check a download.
pub fn check_image_folder(dir: &Path) -> Result<FolderCheck> {
    let listing = list_folder(dir)?;
    let corrupt: Vec<(PathBuf, String)> = listing
        .images
        .par_iter()
        .filter_map(|f| decode_one(&f.path).err().map(|e| (f.path.clone(), e)))
        .collect();
    Ok(FolderCheck {
        images: listing.images.len() - corrupt.len(),
        non_images: listing.non_images,
        corrupt,
    })
}

/// Opens and decodes one image, guessing the format from its content.
fn decode_one(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())
}
