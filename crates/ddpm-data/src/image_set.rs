//! [`ImageSet`]: a block of u8 images, N x C x H x W, row-major.

use crate::error::{DataError, Result};

/// A set of images of one shape, stored as u8 pixels in N x C x H x W row-major order
/// (channel planes, not interleaved pixels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    pixels: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
}

impl ImageSet {
    /// Wraps `pixels` (N x C x H x W). Fails when a dimension is zero or the length is not a
    /// multiple of `channels * height * width`.
    pub fn new(pixels: Vec<u8>, channels: usize, height: usize, width: usize) -> Result<Self> {
        let per_image = channels * height * width;
        if per_image == 0 {
            return Err(DataError::Shape(format!(
                "zero dimension in C x H x W = {channels} x {height} x {width}"
            )));
        }
        if !pixels.len().is_multiple_of(per_image) {
            return Err(DataError::Shape(format!(
                "{} bytes is not a whole number of {channels} x {height} x {width} images",
                pixels.len()
            )));
        }
        Ok(Self {
            pixels,
            channels,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Channels per image (1 for grayscale, 3 for RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes per image: C * H * W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (C x H x W). Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        assert!(
            i < self.len(),
            "image index {i} out of range for {} images",
            self.len()
        );
        &self.pixels[i * n..(i + 1) * n]
    }

    /// All pixels, N x C x H x W.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Keeps only the first `n` images (no-op when `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        let keep = n.min(self.len()) * self.image_len();
        self.pixels.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_validated_and_images_are_sliced() {
        let set = ImageSet::new((0..24).collect(), 3, 2, 2).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.image(1), &(12..24).collect::<Vec<u8>>()[..]);
        assert!(ImageSet::new(vec![0; 23], 3, 2, 2).is_err());
        assert!(ImageSet::new(vec![], 0, 2, 2).is_err());
        let mut s = set.clone();
        s.truncate(1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.image(0), set.image(0));
    }
}
