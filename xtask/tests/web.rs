//! The browser demo in a real browser: `cargo xtask web --check` builds the page, serves it on
//! 127.0.0.1, draws a grid in headless Chromium and compares it with the native sampler's.
//! And `cargo xtask wasm-test`: the kernels' fast-versus-portable tests on wasm32 (under Node's
//! WASI). Skipped (with a message) when the tools are missing, except under `CI=true`, where
//! `.ci/run` installs them.

use std::process::Command;

/// Which of `targets` rustup has not installed.
fn missing_targets(targets: &[&str]) -> Vec<String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    targets
        .iter()
        .filter(|t| !installed.lines().any(|i| i == **t))
        .map(|t| format!("the {t} target (rustup target add {t})"))
        .collect()
}

/// Fails under `CI=true`, else says what is missing and returns true (the test is skipped).
fn skip_without(missing: &[String], what: &str) -> bool {
    if missing.is_empty() {
        return false;
    }
    let message = format!("{what} needs {}", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    true
}

/// What the check needs beyond the Rust toolchain, each with how to get it.
fn missing_tools() -> Vec<String> {
    let mut missing = missing_targets(&["wasm32-unknown-unknown"]);
    for (program, package) in [
        ("chromium", "apt-get install chromium"),
        ("chromedriver", "apt-get install chromium-driver"),
        (
            "wasm-bindgen",
            "cargo install --locked wasm-bindgen-cli (.ci/run)",
        ),
    ] {
        if Command::new(program).arg("--version").output().is_err() {
            missing.push(format!("{program} ({package})"));
        }
    }
    missing
}

#[test]
fn the_browser_draws_the_native_samplers_grid() {
    if skip_without(&missing_tools(), "the browser test") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = env!("CARGO_TARGET_TMPDIR");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["web", "--check", "--out"])
        .arg(out.path())
        .arg("--report-dir")
        .arg(format!("{report}/web-check"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask web --check failed");
}

#[test]
fn the_kernels_fast_and_portable_twins_agree_on_wasm32() {
    let mut missing = missing_targets(&["wasm32-wasip1"]);
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (Node.js 20 or later)".into());
    }
    if skip_without(&missing, "the wasm32 kernel tests") {
        return;
    }
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .arg("wasm-test")
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask wasm-test failed");
}
