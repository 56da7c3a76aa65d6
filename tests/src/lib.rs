//! Test support shared by every crate of the workspace: where fixtures live, how to load them,
//! and how to compare tensors.
//!
//! Small fixtures from the PyTorch reference are committed under `tests/fixtures/`. Large ones
//! are read from the read-only `../shared` folder next to the checkout: a test that needs one
//! skips with a message when the folder is absent, but fails when `CI=true` (CI always has it).
//!
//! [`chaos`]: the kill-and-resume harness (`cargo xtask chaos`, the trainer's tests).

pub mod chaos;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a fixture committed in the repository under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    let path = workspace_root().join("tests").join("fixtures").join(name);
    assert!(
        path.exists(),
        "committed fixture {} is missing",
        path.display()
    );
    path
}

/// The shared folder (`$DDPM_SHARED_DIR`, else `../shared` beside the checkout), if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DDPM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared"));
    dir.is_dir().then_some(dir)
}

/// True when running under CI (`CI=true`), where skipping for a missing `../shared` is an error.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Path of a file under the shared folder, or `None` (after printing why) when the folder is
/// absent outside CI. Panics under CI or when the folder exists but lacks the file.
pub fn shared_file(relative: &str) -> Option<PathBuf> {
    match shared_dir() {
        Some(dir) => {
            let path = dir.join(relative);
            assert!(
                path.exists(),
                "{} is missing from the shared folder",
                path.display()
            );
            Some(path)
        }
        None if in_ci() => {
            panic!("CI=true but the shared folder (../shared) is absent: needed {relative}")
        }
        None => {
            eprintln!("SKIPPED: ../shared is absent, so {relative} cannot be read");
            None
        }
    }
}

/// Loads every tensor of a safetensors file onto the CPU.
pub fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

/// Largest absolute elementwise difference between two tensors of the same shape (in f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Asserts that two tensors agree within `tol` (max abs), naming `what` on failure.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let diff = max_abs_diff(a, b);
    assert!(diff <= tol, "{what}: max abs diff {diff:e} exceeds {tol:e}");
}
