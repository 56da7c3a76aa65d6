//! `fetch-mnist` and `fetch-anime`: verified downloads into the folders the trainer reads.

mod anime;
mod digest;
mod download;
#[cfg(feature = "hf")]
mod hf;
mod mnist;
mod source;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::Result;

use download::Outcome;
use source::Source;

/// Options of `fetch-mnist`.
#[derive(Debug, clap::Args)]
pub struct MnistArgs {
    /// Folder for the four .gz files.
    #[arg(long, default_value = ddpm_data::MNIST_DIR)]
    out: PathBuf,
    /// Mirror to try (http(s):// base URL, file:// URL or local folder); repeat for several,
    /// tried in order. Default: the mirrors torchvision uses.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// Tries per mirror and file when the connection fails or is cut.
    #[arg(long, default_value_t = 3)]
    tries: u32,
}

/// Options of `fetch-anime`.
#[derive(Debug, clap::Args)]
pub struct AnimeArgs {
    /// Folder for the images (the trainer's image-folder layout).
    #[arg(long, default_value = ddpm_data::ANIME_DIR)]
    out: PathBuf,
    /// Unpack this zip downloaded from Kaggle instead of using the Hugging Face mirror.
    #[arg(long, value_name = "PATH")]
    from_zip: Option<PathBuf>,
    /// Hugging Face dataset to read (its parquet conversion); needs the `hf` feature.
    #[arg(long, default_value = "huggan/anime-faces")]
    hf_dataset: String,
    /// Number of images the set must hold (0: do not check the count).
    #[arg(long, default_value_t = anime::EXPECTED_IMAGES)]
    expect_count: usize,
}

/// `cargo xtask fetch-mnist`.
pub fn mnist(args: MnistArgs) -> Result<()> {
    let mirrors: Vec<Source> = if args.mirrors.is_empty() {
        mnist::DEFAULT_MIRRORS
            .iter()
            .map(|m| Source::parse(m))
            .collect()
    } else {
        args.mirrors.iter().map(|m| Source::parse(m)).collect()
    };
    let outcomes = download::fetch_all(&mnist::specs(), &mirrors, &args.out, args.tries)?;
    for (spec, outcome) in mnist::specs().iter().zip(outcomes) {
        match outcome {
            Outcome::Present(d) => println!("{}: already present, verified ({d})", spec.name),
            Outcome::Fetched { location, digest } => println!(
                "{}: fetched from {location}, verified ({digest})",
                spec.name
            ),
        }
    }
    println!("MNIST is in {}", args.out.display());
    Ok(())
}

/// `cargo xtask fetch-anime`.
pub fn anime(args: AnimeArgs) -> Result<()> {
    let n = match &args.from_zip {
        Some(zip) => anime::from_zip(zip, &args.out, args.expect_count)?,
        None => from_hub(&args)?,
    };
    println!("{n} images in {}, all decode", args.out.display());
    Ok(())
}

#[cfg(feature = "hf")]
fn from_hub(args: &AnimeArgs) -> Result<usize> {
    if anime::already_present(&args.out, args.expect_count)? {
        return anime::check(&args.out, args.expect_count);
    }
    let staged = anime::staging(&args.out);
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    if let Err(e) = hf::download(&args.hf_dataset, &staged) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    anime::finish(&staged, &args.out, args.expect_count)
}

#[cfg(not(feature = "hf"))]
fn from_hub(args: &AnimeArgs) -> Result<usize> {
    anyhow::bail!(
        "fetching {} from Hugging Face needs xtask's `hf` feature (it builds candle-datasets, hf-hub and \
         parquet, which the default build leaves out). Either run\n  \
         cargo run --release -p xtask --features hf -- fetch-anime --out {}\nor download the zip from \
         Kaggle (anime-faces) and run\n  cargo xtask fetch-anime --from-zip PATH --out {}",
        args.hf_dataset,
        args.out.display(),
        args.out.display()
    )
}
