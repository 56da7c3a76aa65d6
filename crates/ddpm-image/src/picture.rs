use std::path::Path;

use candle_core::{DType, Tensor};
use image::{DynamicImage, GrayImage, RgbImage};

use crate::{ImageError, Result};

/// A batch of 8-bit images, N x C x H x W row-major, C = 1 (gray) or 3 (RGB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Pixel bytes, N·C·H·W.
    pub pixels: Vec<u8>,
    /// N, C, H, W.
    pub dims: [usize; 4],
}

impl Images {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }

    /// Image `i` as a picture.
    pub fn picture(&self, i: usize) -> DynamicImage {
        let [_, c, h, w] = self.dims;
        let plane = h * w;
        let img = &self.pixels[i * c * plane..(i + 1) * c * plane];
        tile_to_picture(img, c, h, w)
    }
}

fn tile_to_picture(chw: &[u8], c: usize, h: usize, w: usize) -> DynamicImage {
    let plane = h * w;
    if c == 1 {
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(w as u32, h as u32, chw.to_vec()).expect("sized buffer"),
        )
    } else {
        let mut hwc = Vec::with_capacity(3 * plane);
        for p in 0..plane {
            hwc.extend_from_slice(&[chw[p], chw[plane + p], chw[2 * plane + p]]);
        }
        DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, hwc).expect("sized buffer"))
    }
}

/// Quantises samples in [-1, 1] (shape (N, C, H, W), C = 1 or 3) to bytes:
/// `round(clamp((x + 1) / 2 · 255, 0, 255))`. Non-finite values are an error.
pub fn to_u8(x: &Tensor) -> Result<Images> {
    let (n, c, h, w) = x.dims4()?;
    if c != 1 && c != 3 {
        return Err(ImageError::Invalid(format!(
            "images need 1 or 3 channels, got {c}"
        )));
    }
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ImageError::Invalid(format!(
            "sample {} contains a non-finite value ({})",
            i / (c * h * w),
            values[i]
        )));
    }
    let pixels = values
        .iter()
        .map(|v| ((v + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0).round() as u8)
        .collect();
    Ok(Images {
        pixels,
        dims: [n, c, h, w],
    })
}

/// Tiles the images into a grid of `nrow` images per row with `padding` black pixels between
/// tiles (the reference: 9 per row, no padding). `n` must be a multiple of `nrow`.
pub fn grid(images: &Images, nrow: usize, padding: usize) -> Result<DynamicImage> {
    let [n, c, h, w] = images.dims;
    if nrow == 0 || n == 0 || !n.is_multiple_of(nrow) {
        return Err(ImageError::Invalid(format!(
            "{n} images do not fill rows of {nrow}: choose n as a multiple of nrow"
        )));
    }
    let rows = n / nrow;
    let gw = nrow * w + (nrow - 1) * padding;
    let gh = rows * h + (rows - 1) * padding;
    let plane = h * w;
    let mut out = vec![0u8; c * gw * gh];
    for i in 0..n {
        let (x0, y0) = ((i % nrow) * (w + padding), (i / nrow) * (h + padding));
        for ch in 0..c {
            for y in 0..h {
                let src = &images.pixels[(i * c + ch) * plane + y * w..][..w];
                let dst = ch * gw * gh + (y0 + y) * gw + x0;
                out[dst..dst + w].copy_from_slice(src);
            }
        }
    }
    Ok(tile_to_picture(&out, c, gh, gw))
}

/// Writes a picture (PNG, GIF, ... by extension), creating the parent folder, through a
/// temporary file renamed into place so that a failed write never leaves a partial file.
pub fn save_image(picture: &DynamicImage, path: &Path) -> Result<()> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let format = image::ImageFormat::from_path(path).map_err(|source| ImageError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("partial");
    picture
        .save_with_format(&tmp, format)
        .map_err(|source| ImageError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantisation_rounds_and_clamps() {
        let x = Tensor::new(&[-2f32, -1.0, 0.0, 0.5, 1.0, 3.0], &Device::Cpu)
            .unwrap()
            .reshape((6, 1, 1, 1))
            .unwrap();
        assert_eq!(to_u8(&x).unwrap().pixels, vec![0, 0, 128, 191, 255, 255]);
    }

    #[test]
    fn non_finite_samples_are_refused() {
        let x = Tensor::new(&[0f32, f32::NAN], &Device::Cpu)
            .unwrap()
            .reshape((2, 1, 1, 1))
            .unwrap();
        let err = to_u8(&x).unwrap_err().to_string();
        assert!(err.contains("sample 1"), "{err}");
    }
}
