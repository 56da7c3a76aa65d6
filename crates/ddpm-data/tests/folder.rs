//! Image folders on the committed test images (tests/fixtures/images): real PNGs from
//! shared/data/rgb64 converted to grayscale, RGBA, a non-square JPEG, a WebP, and a corrupt PNG.

use std::path::{Path, PathBuf};

use ddpm_data::{
    CacheUse, DataError, FolderOptions, OnCorrupt, load_image_folder, load_image_folder_report,
};

fn images_dir() -> PathBuf {
    ddpm_tests::fixture("images")
}

/// A copy of the fixture folder, so tests can modify it.
fn copy_fixtures(to: &Path) {
    for entry in ddpm_data::list_folder(&images_dir()).unwrap().images {
        let dest = to.join(&entry.relative);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry.path, dest).unwrap();
    }
}

fn skip_opts(size: u32, channels: usize) -> FolderOptions {
    FolderOptions {
        on_corrupt: OnCorrupt::Skip,
        ..FolderOptions::new(size, channels)
    }
}

#[test]
fn corrupt_image_fails_by_default_naming_the_file() {
    let e = load_image_folder(&images_dir(), &FolderOptions::new(32, 3)).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("corrupt.png"), "{e}");
}

#[test]
fn folder_is_read_recursively_in_sorted_order_with_skips_reported() {
    let report = load_image_folder_report(&images_dir(), &skip_opts(32, 3)).unwrap();
    let set = &report.images;
    assert_eq!(
        (set.len(), set.channels(), set.height(), set.width()),
        (5, 3, 32, 32)
    );
    assert_eq!(report.non_images.len(), 2, "{:?}", report.non_images); // README.txt, PROVENANCE.md
    assert_eq!(report.corrupt.len(), 1);
    assert!(report.corrupt[0].0.ends_with("corrupt.png"));
    assert_eq!(report.cache, CacheUse::Disabled);
    // Sorted order: gray.png, nested/deeper/wide.jpg, nested/photo.webp, nested/rgba.png, rgb.png.
    let gray = set.image(0);
    let plane = 32 * 32;
    assert_eq!(
        &gray[..plane],
        &gray[plane..2 * plane],
        "grayscale replicated to RGB"
    );
    assert_eq!(&gray[..plane], &gray[2 * plane..]);
    let rgb = set.image(4);
    assert_ne!(&rgb[..plane], &rgb[plane..2 * plane]);
}

#[test]
fn full_size_images_pass_through_unchanged() {
    let report = load_image_folder_report(&images_dir(), &skip_opts(64, 3)).unwrap();
    let set = &report.images;
    // rgb.png is a byte-exact copy of shared/data/rgb64/000000.png: 64x64 needs no resize.
    let decoded = image::open(images_dir().join("rgb.png"))
        .unwrap()
        .into_rgb8();
    let plane = 64 * 64;
    for (i, px) in decoded.pixels().enumerate() {
        for c in 0..3 {
            assert_eq!(set.image(4)[c * plane + i], px.0[c]);
        }
    }
    // RGBA: alpha dropped, colour kept.
    let rgba = image::open(images_dir().join("nested/rgba.png"))
        .unwrap()
        .into_rgba8();
    assert_eq!(set.image(3)[0], rgba.get_pixel(0, 0).0[0]);
    // The 64x40 JPEG becomes 102x64 then its centre 64 columns (offset 19).
    let wide = image::open(images_dir().join("nested/deeper/wide.jpg")).unwrap();
    assert_eq!((wide.width(), wide.height()), (64, 40));
    let resized = wide
        .resize_exact(102, 64, image::imageops::FilterType::Triangle)
        .into_rgb8();
    assert_eq!(set.image(1)[0], resized.get_pixel(19, 0).0[0]);
}

#[test]
fn grayscale_output_uses_one_channel() {
    let set = load_image_folder_report(&images_dir(), &skip_opts(16, 1))
        .unwrap()
        .images;
    assert_eq!(
        (set.len(), set.channels(), set.height(), set.width()),
        (5, 1, 16, 16)
    );
    let gray_src = image::open(images_dir().join("gray.png")).unwrap();
    assert!(
        matches!(gray_src, image::DynamicImage::ImageLuma8(_)),
        "fixture is 8-bit grayscale"
    );
    let direct = ddpm_data::preprocess(gray_src, 16, 1);
    assert_eq!(set.image(0), &direct[..]);
}

#[test]
fn cache_is_reused_then_rebuilt_when_the_source_changes() {
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    copy_fixtures(src.path());
    let opts = FolderOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..skip_opts(24, 3)
    };
    let first = load_image_folder_report(src.path(), &opts).unwrap();
    let CacheUse::Written(path) = &first.cache else {
        panic!("{:?}", first.cache)
    };
    let second = load_image_folder_report(src.path(), &opts).unwrap();
    assert_eq!(second.cache, CacheUse::Hit(path.clone()));
    assert_eq!(second.images, first.images);
    assert_eq!(
        second.corrupt.len(),
        1,
        "the corrupt list survives the cache"
    );
    // Only the cache file is left in the folder: no temporary.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    // A different size is a different cache file.
    let other = load_image_folder_report(
        src.path(),
        &FolderOptions {
            size: 20,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(matches!(other.cache, CacheUse::Written(ref p) if p != path));
    // Removing a source image makes the cache stale: rebuilt, one image fewer.
    std::fs::remove_file(src.path().join("rgb.png")).unwrap();
    let third = load_image_folder_report(src.path(), &opts).unwrap();
    assert_eq!(third.cache, CacheUse::Written(path.clone()));
    assert_eq!(third.images.len(), first.images.len() - 1);
    // A garbled cache file is replaced, not trusted.
    std::fs::write(path, b"not a cache").unwrap();
    let fourth = load_image_folder_report(src.path(), &opts).unwrap();
    assert_eq!(fourth.cache, CacheUse::Written(path.clone()));
    assert_eq!(fourth.images, third.images);
}

#[test]
fn folder_check_counts_and_names_corrupt_files() {
    let check = ddpm_data::check_image_folder(&images_dir()).unwrap();
    assert_eq!(
        (check.images, check.non_images.len(), check.corrupt.len()),
        (5, 2, 1)
    );
    assert!(check.corrupt[0].0.ends_with("corrupt.png"));
}

#[test]
fn empty_and_bad_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let e = load_image_folder(dir.path(), &FolderOptions::new(8, 3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no image found") && e.contains("1 non-image"),
        "{e}"
    );
    assert!(load_image_folder(dir.path(), &FolderOptions::new(8, 2)).is_err());
    let e = load_image_folder(&dir.path().join("absent"), &FolderOptions::new(8, 3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
}

#[test]
fn shared_rgb64_decodes_at_native_size() {
    let Some(dir) = ddpm_tests::shared_file("data/rgb64") else {
        return;
    };
    // Decoding all 2,000 takes a while on 2 cores: a sample of the folder is enough here.
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let name = format!("{i:06}.png");
        std::fs::copy(dir.join(&name), tmp.path().join(name)).unwrap();
    }
    let set = load_image_folder(tmp.path(), &FolderOptions::default())
        .unwrap()
        .images;
    assert_eq!(
        (set.len(), set.channels(), set.height(), set.width()),
        (20, 3, 64, 64)
    );
}

#[test]
fn class_subfolders_become_labels_and_the_cache_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    let fixtures = ddpm_data::list_folder(&images_dir()).unwrap().images;
    // Three good pictures under "cat", two under "dog"; the corrupt one under "cat" is skipped.
    let good: Vec<_> = fixtures
        .iter()
        .filter(|f| !f.relative.ends_with("corrupt.png"))
        .collect();
    let corrupt = fixtures
        .iter()
        .find(|f| f.relative.ends_with("corrupt.png"))
        .unwrap();
    let place = |class: &str, name: String, from: &Path| {
        let dest = data.join(class).join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, dest).unwrap();
    };
    for (i, f) in good.iter().enumerate() {
        let ext = f.path.extension().unwrap().to_str().unwrap();
        let class = if i < 3 { "cat" } else { "dog" };
        place(class, format!("{i}.{ext}"), &f.path);
    }
    place("cat", "9.png".into(), &corrupt.path);
    let spec = ddpm_data::DatasetSpec::Folder {
        size: 16,
        channels: 3,
    };
    let names = spec.class_names(Some(&data)).unwrap().unwrap();
    assert_eq!(names, ["cat", "dog"]);
    // The dataset loader fails on the corrupt file, naming it.
    let err = spec.load(Some(&data), &cache).unwrap_err();
    assert!(err.to_string().contains("9.png"), "{err}");
    // Skipping the corrupt file keeps every other label in place, decoded and from the cache.
    for pass in ["decoded", "cached"] {
        let opts = FolderOptions {
            cache_dir: Some(cache.clone()),
            ..skip_opts(16, 3)
        };
        let report = load_image_folder_report(&data, &opts).unwrap();
        let classes = ddpm_data::Classes::of_folder(&report.files).unwrap();
        assert_eq!(classes.names, ["cat", "dog"], "{pass}");
        assert_eq!(classes.labels, [0, 0, 0, 1, 1], "{pass}");
        assert_eq!(report.images.len(), 5, "{pass}");
    }
}

#[test]
fn folders_without_two_class_subfolders_are_unlabelled() {
    let of = |files: &[&str]| {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        ddpm_data::Classes::of_folder(&files)
    };
    assert_eq!(
        of(&["a/1.png", "2.png"]),
        None,
        "an image outside any class"
    );
    assert_eq!(of(&["a/1.png", "a/2.png"]), None, "one class");
    assert_eq!(of(&[]), None);
    let nested = of(&["b/x/1.png", "a/2.png", "b/3.png"]).unwrap();
    assert_eq!(nested.names, ["a", "b"]);
    assert_eq!(
        nested.labels,
        [1, 0, 1],
        "deeper folders belong to their first-level class"
    );
}
