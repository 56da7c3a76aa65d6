//! The anime-faces set: unpacking a Kaggle zip, staging in `<out>.partial`, and the final
//! check (image count, every image decodes) before the folder is renamed into place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Images in the Kaggle anime-faces set (and its Hugging Face mirror).
pub const EXPECTED_IMAGES: usize = 21_551;

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// The staging folder next to `out`.
pub fn staging(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Checks that `dir` holds `expect` images (0: any number) that all decode; returns the count.
pub fn check(dir: &Path, expect: usize) -> Result<usize> {
    let report = ddpm_data::check_image_folder(dir)?;
    if !report.corrupt.is_empty() {
        let shown: Vec<String> = report
            .corrupt
            .iter()
            .take(5)
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        anyhow::bail!(
            "{} images in {} do not decode:\n  {}",
            report.corrupt.len(),
            dir.display(),
            shown.join("\n  ")
        );
    }
    anyhow::ensure!(
        expect == 0 || report.images == expect,
        "{} holds {} images, expected {expect} (pass --expect-count {} if this is another set, or 0 to skip the count)",
        dir.display(),
        report.images,
        report.images
    );
    Ok(report.images)
}

/// Returns true (after checking it) when `out` already holds the set; fails when it exists
/// but is not a complete set.
pub fn already_present(out: &Path, expect: usize) -> Result<bool> {
    if !out.exists() {
        return Ok(false);
    }
    check(out, expect).with_context(|| {
        format!(
            "{} exists but is not a complete set: remove it or choose another --out",
            out.display()
        )
    })?;
    Ok(true)
}

/// Checks the staged folder and renames it to `out`; removes it when the check fails.
pub fn finish(staged: &Path, out: &Path, expect: usize) -> Result<usize> {
    match check(staged, expect) {
        Ok(n) => {
            std::fs::rename(staged, out).with_context(|| {
                format!("cannot rename {} to {}", staged.display(), out.display())
            })?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(staged);
            Err(e)
        }
    }
}

/// Unpacks the image entries of `zip` into `out` (keeping their paths inside the zip), via a
/// staging folder, then checks count and decoding. Returns the number of images.
pub fn from_zip(zip: &Path, out: &Path, expect: usize) -> Result<usize> {
    if already_present(out, expect)? {
        eprintln!("{} already holds the set: nothing to do", out.display());
        return check(out, expect);
    }
    let staged = staging(out);
    if staged.exists() {
        std::fs::remove_dir_all(&staged)
            .with_context(|| format!("cannot clear {}", staged.display()))?;
    }
    if let Err(e) = unzip_images(zip, &staged) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    finish(&staged, out, expect)
}

fn unzip_images(zip: &Path, dest: &Path) -> Result<()> {
    let file =
        std::fs::File::open(zip).with_context(|| format!("cannot open {}", zip.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip file", zip.display()))?;
    let bar = indicatif::ProgressBar::new(archive.len() as u64).with_message("unzipping");
    for i in 0..archive.len() {
        bar.inc(1);
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("{}: entry {i}", zip.display()))?;
        let Some(relative) = entry.enclosed_name() else {
            anyhow::bail!(
                "{}: entry {:?} escapes the output folder",
                zip.display(),
                entry.name()
            );
        };
        let is_image = relative
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if entry.is_dir() || !is_image {
            continue;
        }
        let path = dest.join(&relative);
        std::fs::create_dir_all(path.parent().expect("inside dest"))
            .with_context(|| format!("cannot create the folder of {}", path.display()))?;
        let mut out = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("{}: cannot extract {}", zip.display(), relative.display()))?;
    }
    bar.finish_and_clear();
    Ok(())
}
