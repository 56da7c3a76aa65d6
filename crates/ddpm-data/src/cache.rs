//! The preprocessed cache of an image folder: one safetensors file holding the u8 tensor
//! `images` (N x C x S x S), tagged with a key that digests the source listing (relative paths,
//! sizes, modification times), the size, the channels and the corrupt-file policy. A cache
//! whose key differs from the folder's current key is rebuilt. Files are written to a
//! temporary name and renamed, so a reader never sees a half-written cache.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result, io_err};
use crate::image_set::ImageSet;
use crate::listing::ImageFile;

const FORMAT: &str = "ddpm-data folder cache v1";
const TENSOR: &str = "images";

/// A cache's identity: where it lives and the key it must carry.
#[derive(Debug, Clone)]
pub(crate) struct CacheSlot {
    pub path: PathBuf,
    pub key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file for `source` at `size`/`channels` in `cache_dir`, keyed by the listing.
pub(crate) fn slot(
    cache_dir: &Path,
    source: &Path,
    images: &[ImageFile],
    size: u32,
    channels: usize,
    policy: &str,
) -> CacheSlot {
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let name_hash = Sha256::digest(source.to_string_lossy().as_bytes());
    let name = format!(
        "folder-{}-c{channels}-s{size}.safetensors",
        &hex(&name_hash)[..16]
    );
    let mut h = Sha256::new();
    h.update(format!(
        "{FORMAT}\nsize={size}\nchannels={channels}\npolicy={policy}\n"
    ));
    for f in images {
        h.update(format!("{}\t{}\t{}\n", f.relative, f.len, f.modified_ns));
    }
    CacheSlot {
        path: cache_dir.join(name),
        key: hex(&h.finalize()),
    }
}

/// What a cache file holds besides the pixels.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheMeta {
    /// Corrupt images skipped when the cache was built: (relative path, reason).
    pub corrupt: Vec<(String, String)>,
}

/// Reads the cache when it exists and carries `slot.key`. `Ok(None)`: absent or stale;
/// `Err`: present with the right key but unreadable.
pub(crate) fn read(
    slot: &CacheSlot,
    size: u32,
    channels: usize,
) -> Result<Option<(ImageSet, CacheMeta)>> {
    let bytes = match std::fs::read(&slot.path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&slot.path)(e)),
    };
    let bad = |problem: String| DataError::Cache {
        path: slot.path.clone(),
        problem,
    };
    let Ok((_, header)) = SafeTensors::read_metadata(&bytes) else {
        return Ok(None); // not a safetensors file (e.g. foreign or truncated): rebuild
    };
    let info = header.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some(FORMAT) || info.get("key") != Some(&slot.key)
    {
        return Ok(None);
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let view = st.tensor(TENSOR).map_err(|e| bad(e.to_string()))?;
    let s = size as usize;
    match (view.dtype(), view.shape()) {
        (Dtype::U8, &[_, c, h, w]) if (c, h, w) == (channels, s, s) => {}
        (dtype, shape) => {
            return Err(bad(format!(
                "tensor {TENSOR} is {dtype:?} {shape:?}, expected U8 [N, {channels}, {s}, {s}]"
            )));
        }
    }
    let corrupt = match info.get("corrupt") {
        Some(json) => serde_json::from_str(json).map_err(|e| bad(format!("corrupt list: {e}")))?,
        None => Vec::new(),
    };
    let set = ImageSet::new(view.data().to_vec(), channels, s, s)?;
    Ok(Some((set, CacheMeta { corrupt })))
}

/// Writes the cache atomically: a temporary file in the same folder, flushed, then renamed.
pub(crate) fn write(slot: &CacheSlot, set: &ImageSet, meta: &CacheMeta) -> Result<()> {
    let dir = slot.path.parent().expect("cache file has a folder");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let bad = |problem: String| DataError::Cache {
        path: slot.path.clone(),
        problem,
    };
    let shape = vec![set.len(), set.channels(), set.height(), set.width()];
    let view = TensorView::new(Dtype::U8, shape, set.pixels()).map_err(|e| bad(e.to_string()))?;
    let info = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), slot.key.clone()),
        (
            "corrupt".to_string(),
            serde_json::to_string(&meta.corrupt).expect("strings serialize"),
        ),
    ]);
    let bytes =
        safetensors::serialize([(TENSOR, view)], Some(info)).map_err(|e| bad(e.to_string()))?;
    let file_name = slot
        .path
        .file_name()
        .expect("cache file name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &slot.path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bad(format!("cannot write (via {}): {e}", tmp.display()))
    })
}
