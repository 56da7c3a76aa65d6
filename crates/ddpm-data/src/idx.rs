//! The IDX format of MNIST: big-endian u32 magic (2051 images, 2049 labels), big-endian u32
//! dimensions, then u8 data. Files may be raw or gzip-compressed (detected by content).

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result, io_err};
use crate::image_set::ImageSet;

/// Magic number of an IDX file of u8 images (N x rows x cols).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of u8 labels (N).
pub const LABELS_MAGIC: u32 = 2049;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads an IDX images file (raw or .gz) into a 1-channel [`ImageSet`].
pub fn read_idx_images(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_idx_images(&decompress(&bytes, path, IMAGES_MAGIC, 3)?, path)
}

/// Reads an IDX labels file (raw or .gz).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_idx_labels(&decompress(&bytes, path, LABELS_MAGIC, 1)?, path)
}

/// The IDX bytes of `bytes`, decompressed when they are gzip data. Decompression stops one
/// byte after the length the header announces, so a small file that inflates without end (or
/// announces more than it holds) costs no more memory than it really holds or claims; the
/// parser then names what is wrong.
pub(crate) fn decompress<'a>(
    bytes: &'a [u8],
    origin: &Path,
    magic: u32,
    ndims: usize,
) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let corrupt = |e: std::io::Error| idx_err(origin, format!("corrupt gzip stream: {e}"));
    let mut stream = flate2::read::MultiGzDecoder::new(bytes);
    let header_len = 4 * (1 + ndims);
    let mut out = Vec::with_capacity(header_len);
    (&mut stream)
        .take(header_len as u64)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() < header_len {
        return Ok(Cow::Owned(out));
    }
    let (_, announced) = header(&out, origin, magic, ndims)?;
    stream
        .take(announced as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    Ok(Cow::Owned(out))
}

fn idx_err(path: &Path, problem: String) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        problem,
    }
}

/// Reads the header (magic + `ndims` dimensions) at the start of `bytes`: the dimensions and
/// the number of data bytes they announce.
fn header(bytes: &[u8], origin: &Path, magic: u32, ndims: usize) -> Result<(Vec<usize>, usize)> {
    let header_len = 4 * (1 + ndims);
    if bytes.len() < header_len {
        return Err(idx_err(
            origin,
            format!(
                "{} bytes is shorter than the {header_len}-byte header",
                bytes.len()
            ),
        ));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let found = word(0);
    if found != magic {
        return Err(idx_err(
            origin,
            format!("magic number is {found} (0x{found:08x}), expected {magic} (0x{magic:08x})"),
        ));
    }
    let dims: Vec<usize> = (1..=ndims).map(|i| word(i) as usize).collect();
    if dims.contains(&0) {
        return Err(idx_err(origin, format!("zero dimension in {dims:?}")));
    }
    let announced = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| idx_err(origin, format!("dimensions {dims:?} overflow")))?;
    Ok((dims, announced))
}

/// Parses the header and checks that exactly the announced number of data bytes follows.
/// Returns the dimensions and the data.
fn parse_header<'a>(
    bytes: &'a [u8],
    origin: &Path,
    magic: u32,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let (dims, expected) = header(bytes, origin, magic, ndims)?;
    let data = &bytes[4 * (1 + ndims)..];
    if data.len() != expected {
        return Err(idx_err(
            origin,
            format!(
                "dimensions {dims:?} announce {expected} data bytes but {} follow the header",
                data.len()
            ),
        ));
    }
    Ok((dims, data))
}

/// Parses IDX images from (uncompressed) bytes; `origin` names the source in errors.
pub fn parse_idx_images(bytes: &[u8], origin: &Path) -> Result<ImageSet> {
    let (dims, data) = parse_header(bytes, origin, IMAGES_MAGIC, 3)?;
    ImageSet::new(data.to_vec(), 1, dims[1], dims[2])
}

/// Parses IDX labels from (uncompressed) bytes; `origin` names the source in errors.
pub fn parse_idx_labels(bytes: &[u8], origin: &Path) -> Result<Vec<u8>> {
    let (_, data) = parse_header(bytes, origin, LABELS_MAGIC, 1)?;
    Ok(data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_bytes(n: u32, h: u32, w: u32, data_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n, h, w] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..data_len).map(|i| i as u8));
        b
    }

    #[test]
    fn parses_big_endian_dimensions() {
        let set = parse_idx_images(&images_bytes(2, 3, 4, 24), Path::new("x")).unwrap();
        assert_eq!(
            (set.len(), set.channels(), set.height(), set.width()),
            (2, 1, 3, 4)
        );
        assert_eq!(set.image(1)[0], 12);
    }

    #[test]
    fn rejects_bad_magic_short_data_and_trailing_bytes() {
        let mut bad = images_bytes(2, 3, 4, 24);
        bad[3] = 0x01; // 2049: a labels file
        let e = parse_idx_images(&bad, Path::new("imgs.idx"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("imgs.idx") && e.contains("magic number is 2049"),
            "{e}"
        );
        let e = parse_idx_images(&images_bytes(2, 3, 4, 23), Path::new("f")).unwrap_err();
        assert!(
            e.to_string().contains("announce 24 data bytes but 23"),
            "{e}"
        );
        let e = parse_idx_images(&images_bytes(2, 3, 4, 25), Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("but 25"), "{e}");
        let e = parse_idx_images(&images_bytes(0, 3, 4, 0), Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("zero dimension"), "{e}");
        let e = parse_idx_labels(&[0, 0, 8], Path::new("l")).unwrap_err();
        assert!(
            e.to_string().contains("shorter than the 8-byte header"),
            "{e}"
        );
    }

    #[test]
    fn gzip_is_detected_by_content() {
        use std::io::Write;
        let raw = images_bytes(1, 2, 2, 4);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(
            *decompress(&gz, Path::new("g"), IMAGES_MAGIC, 3).unwrap(),
            raw
        );
        assert_eq!(
            *decompress(&raw, Path::new("r"), IMAGES_MAGIC, 3).unwrap(),
            raw
        );
        let e = decompress(&gz[..gz.len() / 2], Path::new("cut.gz"), IMAGES_MAGIC, 3).unwrap_err();
        assert!(
            e.to_string().contains("cut.gz") && e.to_string().contains("corrupt gzip"),
            "{e}"
        );
    }
}
