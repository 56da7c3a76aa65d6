//! Recursive listing of an image folder: image files (by extension) in a stable order, the
//! other files counted apart.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::{Result, io_err};

/// File extensions (lower case) read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// One image file found by [`list_folder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Full path.
    pub path: PathBuf,
    /// Path relative to the listed folder, with `/` separators.
    pub relative: String,
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when unknown).
    pub modified_ns: u128,
}

/// What a folder holds: image files sorted by relative path, and the other files.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Files with an image extension, sorted by relative path.
    pub images: Vec<ImageFile>,
    /// Files without an image extension, sorted.
    pub non_images: Vec<PathBuf>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Lists `dir` recursively (symbolic links followed).
pub fn list_folder(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io_err(&folder))? {
            let path = entry.map_err(io_err(&folder))?.path();
            let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
            if meta.is_dir() {
                pending.push(path);
            } else if is_image(&path) {
                let relative = path
                    .strip_prefix(dir)
                    .expect("listed under dir")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let modified_ns = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                listing.images.push(ImageFile {
                    path,
                    relative,
                    len: meta.len(),
                    modified_ns,
                });
            } else {
                listing.non_images.push(path);
            }
        }
    }
    listing.images.sort_by(|a, b| a.relative.cmp(&b.relative));
    listing.non_images.sort();
    Ok(listing)
}
