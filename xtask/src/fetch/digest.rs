//! Digests a downloaded file must match: MD5 or SHA-256 of the file, or SHA-256 of its
//! gunzipped content (which survives recompression by a mirror).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use md5::Md5;
use sha2::{Digest as _, Sha256};

/// One acceptable digest of a file, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// MD5 of the file's bytes (e.g. as published with MNIST).
    Md5(String),
    /// SHA-256 of the file's bytes.
    Sha256(String),
    /// SHA-256 of the file's gunzipped content.
    GunzipSha256(String),
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Digest::Md5(h) => write!(f, "md5 {h}"),
            Digest::Sha256(h) => write!(f, "sha256 {h}"),
            Digest::GunzipSha256(h) => write!(f, "sha256 of gunzipped content {h}"),
        }
    }
}

/// A file to fetch: its name on the mirror and at the destination, and the digests accepted
/// (any one matching is enough).
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// File name, e.g. `train-images-idx3-ubyte.gz`.
    pub name: String,
    /// Accepted digests; never empty.
    pub accepted: Vec<Digest>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes everything `reader` yields with MD5 and SHA-256.
fn hash_reader(mut reader: impl Read) -> std::io::Result<(String, String)> {
    let (mut md5, mut sha) = (Md5::new(), Sha256::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&md5.finalize()), hex(&sha.finalize())));
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
}

/// Checks `path` against `spec`: returns the digest that matched, or an error that lists
/// what the file hashes to and what was expected.
pub fn verify(path: &Path, spec: &FileSpec) -> Result<Digest> {
    let open =
        || std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let (md5, sha) =
        hash_reader(open()?).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gunzip_sha: Option<String> = None;
    for want in &spec.accepted {
        let ok = match want {
            Digest::Md5(h) => *h == md5,
            Digest::Sha256(h) => *h == sha,
            Digest::GunzipSha256(h) => {
                if gunzip_sha.is_none() {
                    let gz = flate2::read::MultiGzDecoder::new(open()?);
                    gunzip_sha = Some(
                        hash_reader(gz)
                            .map(|(_, s)| s)
                            .unwrap_or_else(|e| format!("(not gzip: {e})")),
                    );
                }
                gunzip_sha.as_deref() == Some(h.as_str())
            }
        };
        if ok {
            return Ok(want.clone());
        }
    }
    let wanted: Vec<String> = spec.accepted.iter().map(|d| d.to_string()).collect();
    anyhow::bail!(
        "digest mismatch for {}: file has md5 {md5}, sha256 {sha}{}; expected one of: {}",
        spec.name,
        gunzip_sha
            .map(|s| format!(", gunzipped sha256 {s}"))
            .unwrap_or_default(),
        wanted.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_accepted_digest_matches_and_mismatch_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // Known vectors: md5("abc"), sha256("abc").
        let md5 = "900150983cd24fb0d6963f7d28e17f72".to_string();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string();
        let spec = |accepted| FileSpec {
            name: "f".into(),
            accepted,
        };
        assert_eq!(
            verify(&path, &spec(vec![Digest::Md5(md5.clone())])).unwrap(),
            Digest::Md5(md5)
        );
        let got = verify(
            &path,
            &spec(vec![
                Digest::Sha256("00".into()),
                Digest::Sha256(sha.clone()),
            ]),
        )
        .unwrap();
        assert_eq!(got, Digest::Sha256(sha));
        let e = verify(&path, &spec(vec![Digest::GunzipSha256("00".into())]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("digest mismatch for f")
                && e.contains("not gzip")
                && e.contains("900150983c"),
            "{e}"
        );
    }
}
