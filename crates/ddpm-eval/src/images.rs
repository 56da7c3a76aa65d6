//! Reading samples to evaluate: a grid picture (tiles with padding between them, as
//! `ddpm_image::grid` writes them) or a folder of pictures.

use std::path::Path;

use ddpm_data::{FolderOptions, ImageSet, load_image_folder};
use image::DynamicImage;

use crate::error::{EvalError, Result};

/// How a grid picture is cut: square tiles of `tile` pixels with `padding` pixels between
/// neighbours (none around the border), so a grid of `cols` x `rows` tiles is
/// `cols·tile + (cols−1)·padding` pixels wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridGeometry {
    /// Side of one tile in pixels.
    pub tile: usize,
    /// Pixels between neighbouring tiles.
    pub padding: usize,
}

impl Default for GridGeometry {
    /// MNIST tiles without padding (the reference's grids): 28, 0.
    fn default() -> Self {
        Self {
            tile: 28,
            padding: 0,
        }
    }
}

impl GridGeometry {
    /// The number of tiles `(cols, rows)` in a `width` x `height` picture; an error when the
    /// picture is not a whole number of tiles.
    pub fn count(&self, width: usize, height: usize) -> Result<(usize, usize)> {
        let err = |problem: String| EvalError::Grid {
            width,
            height,
            tile: self.tile,
            padding: self.padding,
            problem,
        };
        if self.tile == 0 {
            return Err(err("the tile size must be positive".into()));
        }
        let step = self.tile + self.padding;
        let fit = |len: usize, what: &str| {
            if len < self.tile || !(len + self.padding).is_multiple_of(step) {
                Err(err(format!(
                    "the {what} {len} is not n·{} + (n−1)·{} for any n >= 1",
                    self.tile, self.padding
                )))
            } else {
                Ok((len + self.padding) / step)
            }
        };
        Ok((fit(width, "width")?, fit(height, "height")?))
    }

    /// Cuts `picture` into tiles, row by row, as `channels`-channel (1 = luma, 3 = RGB)
    /// images of `tile` x `tile`.
    pub fn split(&self, picture: &DynamicImage, channels: usize) -> Result<ImageSet> {
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        let (cols, rows) = self.count(w, h)?;
        let planes: Vec<Vec<u8>> = match channels {
            1 => vec![picture.to_luma8().into_raw()],
            3 => {
                let rgb = picture.to_rgb8().into_raw();
                (0..3)
                    .map(|c| rgb.iter().skip(c).step_by(3).copied().collect())
                    .collect()
            }
            other => {
                return Err(EvalError::Invalid(format!(
                    "images need 1 or 3 channels, got {other}"
                )));
            }
        };
        let t = self.tile;
        let mut pixels = Vec::with_capacity(cols * rows * channels * t * t);
        for r in 0..rows {
            for c in 0..cols {
                let (x0, y0) = (c * (t + self.padding), r * (t + self.padding));
                for plane in &planes {
                    for y in y0..y0 + t {
                        pixels.extend_from_slice(&plane[y * w + x0..y * w + x0 + t]);
                    }
                }
            }
        }
        Ok(ImageSet::new(pixels, channels, t, t)?)
    }
}

/// Loads images from `path`: a folder of pictures (recursively, sorted by path, resized and
/// center-cropped to `geometry.tile` when they differ) or a single grid picture cut with
/// `geometry`. `channels` is 1 (luma) or 3 (RGB).
pub fn load_images(path: &Path, geometry: GridGeometry, channels: usize) -> Result<ImageSet> {
    if path.is_dir() {
        let opts = FolderOptions::new(geometry.tile as u32, channels);
        return Ok(load_image_folder(path, &opts)?.images);
    }
    let picture = image::ImageReader::open(path)
        .map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|source| EvalError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    geometry.split(&picture, channels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddpm_image::{Images, grid};

    /// `n` images of `c` x 5 x 5 whose pixels encode (image, channel, position).
    fn numbered(n: usize, c: usize) -> Images {
        let pixels = (0..n * c * 25)
            .map(|k| ((k / 25) * 7 + k % 25) as u8)
            .collect();
        Images {
            pixels,
            dims: [n, c, 5, 5],
        }
    }

    #[test]
    fn splits_what_ddpm_sample_grid_writes() {
        for (c, padding) in [(1, 0), (1, 2), (3, 1)] {
            let images = numbered(6, c);
            let picture = grid(&images, 3, padding).unwrap();
            let geometry = GridGeometry { tile: 5, padding };
            assert_eq!(
                geometry
                    .count(picture.width() as usize, picture.height() as usize)
                    .unwrap(),
                (3, 2)
            );
            let set = geometry.split(&picture, c).unwrap();
            assert_eq!((set.len(), set.channels(), set.height()), (6, c, 5));
            assert_eq!(set.pixels(), &images.pixels[..], "c {c}, padding {padding}");
        }
    }

    #[test]
    fn geometry_counts_and_rejects() {
        let g = GridGeometry {
            tile: 28,
            padding: 2,
        };
        assert_eq!(g.count(28, 28).unwrap(), (1, 1));
        assert_eq!(g.count(9 * 28 + 8 * 2, 3 * 28 + 2 * 2).unwrap(), (9, 3));
        assert!(g.count(9 * 28 + 9 * 2, 28).is_err()); // a trailing border
        assert!(g.count(27, 28).is_err());
        let err = GridGeometry::default().count(250, 28).unwrap_err();
        assert!(err.to_string().contains("width 250"), "{err}");
        assert!(
            GridGeometry {
                tile: 0,
                padding: 0
            }
            .count(4, 4)
            .is_err()
        );
    }

    #[test]
    fn folders_and_grid_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let images = numbered(4, 1);
        for i in 0..4 {
            images
                .picture(i)
                .save(dir.path().join(format!("{i}.png")))
                .unwrap();
        }
        let g = GridGeometry {
            tile: 5,
            padding: 0,
        };
        let from_folder = load_images(dir.path(), g, 1).unwrap();
        assert_eq!(from_folder.pixels(), &images.pixels[..]);
        let grid_path = dir.path().join("grid").with_extension("png");
        grid(&images, 2, 0).unwrap().save(&grid_path).unwrap();
        assert_eq!(
            load_images(&grid_path, g, 1).unwrap().pixels(),
            &images.pixels[..]
        );
        let missing = load_images(&dir.path().join("none.png"), g, 1).unwrap_err();
        assert!(missing.to_string().contains("none.png"), "{missing}");
    }
}
