//! The anime-faces set from its Hugging Face mirror: the hub's parquet conversion read with
//! candle-datasets (`hub::from_hub`), each row's `image.bytes` written as a file.

use std::path::Path;

use anyhow::{Context, Result};
use candle_datasets::hub::{FileReader, from_hub};
use parquet::record::Field;

/// File extension for encoded image bytes, from their magic numbers.
fn extension(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "png",
        [0xff, 0xd8, ..] => "jpg",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "webp",
        _ => "bin",
    }
}

/// The encoded bytes of the `image` column (a struct with `bytes` and `path`) of one row.
fn image_bytes(row: &parquet::record::Row) -> Option<Vec<u8>> {
    row.get_column_iter()
        .find_map(|(name, field)| match (name.as_str(), field) {
            ("image", Field::Group(group)) => {
                group
                    .get_column_iter()
                    .find_map(|(n, f)| match (n.as_str(), f) {
                        ("bytes", Field::Bytes(b)) => Some(b.data().to_vec()),
                        _ => None,
                    })
            }
            _ => None,
        })
}

/// Downloads `dataset` (e.g. `huggan/anime-faces`) and writes its images to
/// `dest/images/NNNNN.<ext>`. Returns the number written.
pub fn download(dataset: &str, dest: &Path) -> Result<usize> {
    let api = hf_hub::HFClientSync::new().context("cannot set up the Hugging Face client")?;
    let readers = from_hub(&api, dataset.to_string()).with_context(|| {
        format!(
            "cannot download the parquet files of {dataset} from the Hugging Face hub (is the network \
             reachable? HF_ENDPOINT and HF_TOKEN are honoured). Alternative: download the Kaggle zip \
             and run `cargo xtask fetch-anime --from-zip PATH`"
        )
    })?;
    anyhow::ensure!(
        !readers.is_empty(),
        "{dataset} has no parquet file on the hub"
    );
    let folder = dest.join("images");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let mut count = 0usize;
    for reader in readers {
        for row in reader.get_row_iter(None)? {
            let row = row?;
            let bytes = image_bytes(&row)
                .with_context(|| format!("{dataset}: row {count} has no image.bytes column"))?;
            let path = folder.join(format!("{count:05}.{}", extension(&bytes)));
            std::fs::write(&path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            count += 1;
        }
    }
    Ok(count)
}
