//! Fetching verified files: mirrors tried in order, retries for transient failures, a
//! temporary name renamed into place only after the digest matched.

use std::path::Path;

use anyhow::{Context, Result};

use super::digest::{Digest, FileSpec, verify};
use super::source::{Source, Transfer, TransferError};

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already held a valid file: nothing transferred.
    Present(Digest),
    /// Fetched from the mirror at this location.
    Fetched {
        /// Where it came from.
        location: String,
        /// The digest that matched.
        digest: Digest,
    },
}

/// Fetches every file of `specs` into `out` (created if needed). Each file: kept when already
/// valid; else each mirror of `sources` is tried in order, up to `tries` times on transient
/// failures, the bytes going to `.NAME.part` and renamed to `NAME` once verified.
pub fn fetch_all(
    specs: &[FileSpec],
    sources: &[Source],
    out: &Path,
    tries: u32,
) -> Result<Vec<Outcome>> {
    anyhow::ensure!(!sources.is_empty(), "no mirror given");
    anyhow::ensure!(tries > 0, "--tries must be at least 1");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let transfer = Transfer::new();
    specs
        .iter()
        .map(|spec| fetch_one(&transfer, spec, sources, out, tries))
        .collect()
}

fn fetch_one(
    transfer: &Transfer,
    spec: &FileSpec,
    sources: &[Source],
    out: &Path,
    tries: u32,
) -> Result<Outcome> {
    let dest = out.join(&spec.name);
    if dest.is_file() {
        match verify(&dest, spec) {
            Ok(digest) => return Ok(Outcome::Present(digest)),
            Err(e) => eprintln!(
                "{} is present but invalid, fetching it again: {e:#}",
                dest.display()
            ),
        }
    }
    let part = out.join(format!(".{}.part", spec.name));
    let mut failures = Vec::new();
    for source in sources {
        for attempt in 1..=tries {
            let result = transfer.fetch(source, &spec.name, &part);
            let failure = match result {
                Ok(_) => match verify(&part, spec) {
                    Ok(digest) => {
                        std::fs::rename(&part, &dest).with_context(|| {
                            format!("cannot rename {} to {}", part.display(), dest.display())
                        })?;
                        return Ok(Outcome::Fetched {
                            location: source.location(&spec.name),
                            digest,
                        });
                    }
                    Err(e) => {
                        TransferError::Missing(format!("{}: {e:#}", source.location(&spec.name)))
                    }
                },
                Err(e) => e,
            };
            let _ = std::fs::remove_file(&part);
            let transient = matches!(failure, TransferError::Transient(_));
            failures.push(format!("try {attempt}: {failure}"));
            if !transient {
                break;
            }
        }
    }
    anyhow::bail!(
        "{}: no mirror gave a valid file:\n  {}",
        spec.name,
        failures.join("\n  ")
    )
}
