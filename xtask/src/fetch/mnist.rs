//! The four MNIST files, their digests, and the mirrors torchvision uses.

use super::digest::{Digest, FileSpec};

/// torchvision's MNIST mirrors, tried in this order.
pub const DEFAULT_MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// (name, MD5 as published, SHA-256 of shared/data/mnist's file, SHA-256 of the IDX content).
/// The published MD5s are those of the original .gz files; the shared copies are recompressed
/// (different .gz bytes, same IDX content), hence the content digest.
const FILES: [(&str, &str, &str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
        "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// The four MNIST files with every digest they may match.
pub fn specs() -> Vec<FileSpec> {
    FILES
        .iter()
        .map(|(name, md5, sha, content)| FileSpec {
            name: name.to_string(),
            accepted: vec![
                Digest::Md5(md5.to_string()),
                Digest::Sha256(sha.to_string()),
                Digest::GunzipSha256(content.to_string()),
            ],
        })
        .collect()
}
