//! Per-image preprocessing: colour conversion, torchvision-style `Resize(size)` (shorter side
//! to `size`, antialiased bilinear) then `CenterCrop(size)`, and HWC -> CHW layout.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};

/// Converts to RGB (alpha dropped, grey replicated) or to L with PIL's ITU-R 601-2 weights.
fn convert(img: DynamicImage, channels: usize) -> DynamicImage {
    if channels == 3 {
        return DynamicImage::ImageRgb8(img.into_rgb8());
    }
    match img {
        DynamicImage::ImageLuma8(g) => DynamicImage::ImageLuma8(g),
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma8(img.into_luma8()),
        other => {
            let rgb = other.into_rgb8();
            let luma = GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
                // PIL's fixed-point L = R*299/1000 + G*587/1000 + B*114/1000, rounded.
                image::Luma([((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8])
            });
            DynamicImage::ImageLuma8(luma)
        }
    }
}

/// Output size of torchvision's `Resize(size)` for a `w` x `h` image: the shorter side becomes
/// `size`, the longer one `floor(size * long / short)`.
pub(crate) fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let scale =
        |long: u32, short: u32| (u64::from(size) * u64::from(long) / u64::from(short)) as u32;
    if w <= h {
        (size, scale(h, w))
    } else {
        (scale(w, h), size)
    }
}

/// Offset of a centered crop of `crop` out of `full`: `round((full - crop) / 2)` with Python's
/// round-half-to-even, as torchvision's `CenterCrop`.
pub(crate) fn crop_offset(full: u32, crop: u32) -> u32 {
    let d = full - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Converts to `channels` (1 or 3), resizes the shorter side to `size` and center-crops to
/// `size` x `size`. Returns C x H x W bytes.
pub fn preprocess(img: DynamicImage, size: u32, channels: usize) -> Vec<u8> {
    let img = convert(img, channels);
    let (w, h) = (img.width(), img.height());
    let (rw, rh) = resized_dims(w, h, size);
    let img = if (rw, rh) == (w, h) {
        img
    } else {
        img.resize_exact(rw, rh, FilterType::Triangle)
    };
    let img = img.crop_imm(crop_offset(rw, size), crop_offset(rh, size), size, size);
    match img {
        DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => hwc_to_chw(&other.into_rgb8()),
    }
}

fn hwc_to_chw(rgb: &RgbImage) -> Vec<u8> {
    let plane = (rgb.width() * rgb.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px.0[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_torchvision_rules() {
        assert_eq!(resized_dims(64, 40, 32), (51, 32));
        assert_eq!(resized_dims(40, 64, 32), (32, 51));
        assert_eq!(resized_dims(100, 100, 64), (64, 64));
        // round-half-to-even: 19/2 = 9.5 -> 10, 17/2 = 8.5 -> 8, 1/2 = 0.5 -> 0
        assert_eq!(crop_offset(51, 32), 10);
        assert_eq!(crop_offset(49, 32), 8);
        assert_eq!(crop_offset(33, 32), 0);
        assert_eq!(crop_offset(36, 32), 2);
    }

    #[test]
    fn layout_is_channel_planes_and_luma_uses_pil_weights() {
        let rgb = RgbImage::from_fn(2, 1, |x, _| {
            image::Rgb(if x == 0 { [255, 0, 0] } else { [0, 0, 255] })
        });
        let chw = preprocess(DynamicImage::ImageRgb8(rgb.clone()), 1, 3);
        assert_eq!(chw.len(), 3);
        let full = hwc_to_chw(&rgb);
        assert_eq!(full, vec![255, 0, 0, 0, 0, 255]);
        let l = preprocess(DynamicImage::ImageRgb8(rgb), 2, 1);
        // 2x1 -> shorter side 1 -> 2, so 4x2 resized then cropped to 2x2.
        assert_eq!(l.len(), 4);
        let red = convert(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0]))),
            1,
        );
        assert_eq!(red.into_luma8().into_raw(), vec![76]); // PIL: L of pure red is 76
    }
}
