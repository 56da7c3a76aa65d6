//! Download tests against a real HTTP server on 127.0.0.1, with small generated files and
//! their digests injected; the MNIST digests are checked on the real files in ../shared.

use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::digest::{Digest, FileSpec};
use super::download::{Outcome, fetch_all};
use super::source::Source;
use super::test_server::{Reply, Server};

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn spec(name: &str, bytes: &[u8]) -> FileSpec {
    let sha = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    FileSpec {
        name: name.to_string(),
        accepted: vec![Digest::Sha256(sha)],
    }
}

/// Files in `dir`, sorted, to check that nothing partial is left behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn good_mirror_then_files_already_present() {
    let (a, b) = (content(1, 300_000), content(2, 1000));
    let server = Server::start(vec![
        ("a.gz", vec![Reply::Ok(a.clone())]),
        ("b.gz", vec![Reply::Ok(b.clone())]),
    ]);
    let out = tempfile::tempdir().unwrap();
    let specs = [spec("a.gz", &a), spec("b.gz", &b)];
    let mirrors = [Source::parse(server.base())];
    let outcomes = fetch_all(&specs, &mirrors, out.path(), 1).unwrap();
    assert!(
        matches!(&outcomes[0], Outcome::Fetched { location, .. } if location.ends_with("/a.gz"))
    );
    assert_eq!(std::fs::read(out.path().join("a.gz")).unwrap(), a);
    assert_eq!(std::fs::read(out.path().join("b.gz")).unwrap(), b);
    let served = server.requests();
    let again = fetch_all(&specs, &mirrors, out.path(), 1).unwrap();
    assert!(
        again.iter().all(|o| matches!(o, Outcome::Present(_))),
        "{again:?}"
    );
    assert_eq!(
        server.requests(),
        served,
        "valid files are not fetched again"
    );
    assert_eq!(listing(out.path()), ["a.gz", "b.gz"]);
}

#[test]
fn falls_back_to_the_next_mirror_after_404() {
    let a = content(3, 5000);
    let empty = Server::start(vec![]);
    let good = Server::start(vec![("a.gz", vec![Reply::Ok(a.clone())])]);
    let out = tempfile::tempdir().unwrap();
    let mirrors = [Source::parse(empty.base()), Source::parse(good.base())];
    let outcomes = fetch_all(&[spec("a.gz", &a)], &mirrors, out.path(), 3).unwrap();
    assert_eq!(
        outcomes[0],
        Outcome::Fetched {
            location: format!("{}a.gz", good.base()),
            digest: spec("a.gz", &a).accepted[0].clone()
        }
    );
    assert_eq!(empty.requests(), 1, "a 404 is not retried");
}

#[test]
fn corrupted_file_is_rejected_and_nothing_is_left() {
    let a = content(4, 5000);
    let mut bad = a.clone();
    bad[100] ^= 1;
    let server = Server::start(vec![("a.gz", vec![Reply::Ok(bad)])]);
    let out = tempfile::tempdir().unwrap();
    let e = fetch_all(
        &[spec("a.gz", &a)],
        &[Source::parse(server.base())],
        out.path(),
        2,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("a.gz: no mirror gave a valid file") && msg.contains("digest mismatch"),
        "{msg}"
    );
    assert!(
        listing(out.path()).is_empty(),
        "left behind: {:?}",
        listing(out.path())
    );
}

#[test]
fn cut_transfer_is_retried_then_reported_without_partial_file() {
    let a = content(5, 200_000);
    // Cut once, then complete: the retry succeeds.
    let flaky = Server::start(vec![(
        "a.gz",
        vec![Reply::Cut(a.clone()), Reply::Ok(a.clone())],
    )]);
    let out = tempfile::tempdir().unwrap();
    fetch_all(
        &[spec("a.gz", &a)],
        &[Source::parse(flaky.base())],
        out.path(),
        2,
    )
    .unwrap();
    assert_eq!(std::fs::read(out.path().join("a.gz")).unwrap(), a);
    // Always cut: a clear error after the tries, and no file under any name.
    let broken = Server::start(vec![("a.gz", vec![Reply::Cut(a.clone())])]);
    let out = tempfile::tempdir().unwrap();
    let e = fetch_all(
        &[spec("a.gz", &a)],
        &[Source::parse(broken.base())],
        out.path(),
        2,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("try 2:") && msg.contains("a.gz"), "{msg}");
    assert!(
        msg.contains("cut") || msg.contains("closed") || msg.contains("EOF") || msg.contains("eof"),
        "{msg}"
    );
    assert!(
        listing(out.path()).is_empty(),
        "left behind: {:?}",
        listing(out.path())
    );
}

#[test]
fn local_folder_and_file_url_mirrors() {
    let a = content(6, 777);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.gz"), &a).unwrap();
    for mirror in [
        src.path().display().to_string(),
        format!("file://{}", src.path().display()),
    ] {
        let out = tempfile::tempdir().unwrap();
        let missing = tempfile::tempdir().unwrap();
        let mirrors = [
            Source::parse(&missing.path().display().to_string()),
            Source::parse(&mirror),
        ];
        fetch_all(&[spec("a.gz", &a)], &mirrors, out.path(), 1).unwrap();
        assert_eq!(std::fs::read(out.path().join("a.gz")).unwrap(), a);
    }
}

#[test]
fn invalid_file_at_destination_is_replaced() {
    let a = content(7, 1000);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.gz"), &a).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("a.gz"), b"truncated").unwrap();
    let outcomes = fetch_all(
        &[spec("a.gz", &a)],
        &[Source::Dir(src.path().into())],
        out.path(),
        1,
    )
    .unwrap();
    assert!(matches!(outcomes[0], Outcome::Fetched { .. }));
    assert_eq!(std::fs::read(out.path().join("a.gz")).unwrap(), a);
}

#[test]
fn mnist_digests_accept_the_real_files() {
    let Some(file) = ddpm_tests::shared_file("data/mnist/train-labels-idx1-ubyte.gz") else {
        return;
    };
    let dir = file.parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let specs = super::mnist::specs();
    // The small files only (the images are checked by the CLI run documented in docs/data.md).
    let labels: Vec<FileSpec> = specs
        .into_iter()
        .filter(|s| s.name.contains("labels"))
        .collect();
    let outcomes = fetch_all(&labels, &[Source::Dir(dir.into())], out.path(), 1).unwrap();
    for o in outcomes {
        assert!(
            matches!(
                o,
                Outcome::Fetched {
                    digest: Digest::Sha256(_),
                    ..
                }
            ),
            "{o:?}"
        );
    }
    // Recompressed content still matches through the gunzipped digest.
    let raw = {
        let mut s = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()),
            &mut s,
        )
        .unwrap();
        s
    };
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    let recompressed = tempfile::tempdir().unwrap();
    std::fs::write(
        recompressed.path().join("train-labels-idx1-ubyte.gz"),
        enc.finish().unwrap(),
    )
    .unwrap();
    let spec = super::mnist::specs()
        .into_iter()
        .find(|s| s.name == "train-labels-idx1-ubyte.gz")
        .unwrap();
    let got = super::digest::verify(&recompressed.path().join(&spec.name), &spec).unwrap();
    assert!(matches!(got, Digest::GunzipSha256(_)), "{got:?}");
}

/// Writes a zip of `entries` (name, bytes) with deflate compression.
fn write_zip(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(ddpm_tests::fixture("images").join(name)).unwrap()
}

#[test]
fn anime_zip_is_unpacked_checked_and_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let zip = tmp.path().join("archive.zip");
    write_zip(
        &zip,
        &[
            ("data/1.png", fixture_image("rgb.png")),
            ("data/2.png", fixture_image("gray.png")),
            ("data/3.jpg", fixture_image("nested/deeper/wide.jpg")),
            ("data/notes.txt", b"not an image".to_vec()),
        ],
    );
    let out = tmp.path().join("anime-faces");
    let e = super::anime::from_zip(&zip, &out, 5).unwrap_err();
    assert!(
        format!("{e:#}").contains("holds 3 images, expected 5"),
        "{e:#}"
    );
    assert!(!out.exists() && !super::anime::staging(&out).exists());
    assert_eq!(super::anime::from_zip(&zip, &out, 3).unwrap(), 3);
    assert!(out.join("data/1.png").is_file() && !out.join("data/notes.txt").exists());
    // Second run: already there.
    assert_eq!(super::anime::from_zip(&zip, &out, 3).unwrap(), 3);
}

#[test]
fn anime_zip_with_a_corrupt_image_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let zip = tmp.path().join("archive.zip");
    write_zip(
        &zip,
        &[
            ("faces/ok.png", fixture_image("rgb.png")),
            ("faces/bad.png", fixture_image("corrupt.png")),
        ],
    );
    let out = tmp.path().join("anime-faces");
    let e = format!("{:#}", super::anime::from_zip(&zip, &out, 0).unwrap_err());
    assert!(e.contains("1 images") && e.contains("bad.png"), "{e}");
    assert!(!out.exists() && !super::anime::staging(&out).exists());
    let e = format!(
        "{:#}",
        super::anime::from_zip(&tmp.path().join("absent.zip"), &out, 0).unwrap_err()
    );
    assert!(e.contains("absent.zip"), "{e}");
}

#[cfg(not(feature = "hf"))]
#[test]
fn hub_path_without_the_feature_explains_what_to_do() {
    let args = super::AnimeArgs {
        out: "data/anime-faces".into(),
        from_zip: None,
        hf_dataset: "huggan/anime-faces".into(),
        expect_count: 0,
    };
    let e = super::anime(args).unwrap_err().to_string();
    assert!(
        e.contains("--features hf") && e.contains("--from-zip"),
        "{e}"
    );
}
