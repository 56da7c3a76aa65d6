//! Fuzzed IDX input (property tests with bounded cases; docs/reliability.md): arbitrary bytes,
//! valid files mutated (truncated, bytes overwritten, dimensions rewritten), and gzip files
//! that inflate far beyond what their header announces. The readers must return an error,
//! never panic, and never allocate much more than the input holds or announces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use ddpm_data::{parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels};
use proptest::prelude::*;

/// The system allocator, counting the bytes live and the most ever live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by the tests that measure the peak, so that they do not measure each other (the other
/// tests allocate a few KiB at a time).
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A valid images file: `n` images of `h` x `w`.
fn images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051, n, h, w] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n * h * w).map(|i| i as u8));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_idx_images(&bytes, Path::new("fuzz"));
        let _ = parse_idx_labels(&bytes, Path::new("fuzz"));
    }

    #[test]
    fn mutated_files_are_refused_or_consistent(
        (n, h, w) in (1u32..5, 1u32..6, 1u32..6),
        cut in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        dim in (any::<prop::sample::Index>(), any::<u32>()),
    ) {
        let mut bytes = images(n, h, w);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if dim.1 % 3 == 0 {
            // A rewritten dimension, possibly huge: the announced size must not be allocated.
            let word = 1 + dim.0.index(3);
            bytes[4 * word..4 * word + 4].copy_from_slice(&dim.1.to_be_bytes());
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(set) = parse_idx_images(&bytes, Path::new("fuzz")) {
            prop_assert_eq!(16 + set.len() * set.height() * set.width(), bytes.len());
        }
    }
}

#[test]
fn corrupt_or_truncated_gzip_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let valid = gzip(&images(3, 4, 4));
    for cut in [0, 2, 10, valid.len() / 2, valid.len() - 4, valid.len() - 1] {
        let path = dir.path().join(format!("cut{cut}.gz"));
        std::fs::write(&path, &valid[..cut]).unwrap();
        let e = read_idx_images(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("cut{cut}.gz")), "{e}");
    }
    for flip in (10..valid.len()).step_by(7) {
        let mut bytes = valid.clone();
        bytes[flip] ^= 0x5a;
        let path = dir.path().join("flip.gz");
        std::fs::write(&path, &bytes).unwrap();
        // A flip may still decode (into wrong pixels): it must not panic.
        let _ = read_idx_images(&path);
        let _ = read_idx_labels(&path);
    }
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    // A header announcing one 28x28 image, then 256 MiB of zeros: about 250 KiB compressed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&images(1, 28, 28)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    std::fs::write(&path, e.finish().unwrap()).unwrap();
    drop(zeros);
    let _alone = MEASURING.lock().unwrap();
    let file = std::fs::metadata(&path).unwrap().len() as usize;
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let err = read_idx_images(&path).unwrap_err().to_string();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(err.contains("announce 784 data bytes but 785"), "{err}");
    assert!(
        peak < file + (1 << 20),
        "reading a {file}-byte bomb allocated {peak} bytes"
    );
}

#[test]
fn a_header_announcing_billions_of_images_allocates_nothing_like_it() {
    let mut bytes = images(1, 28, 28);
    bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.gz");
    std::fs::write(&path, gzip(&bytes)).unwrap();
    let _alone = MEASURING.lock().unwrap();
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let err = read_idx_images(&path).unwrap_err().to_string();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(err.contains("data bytes but 784 follow"), "{err}");
    assert!(peak < 1 << 20, "allocated {peak} bytes");
}
