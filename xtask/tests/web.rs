//! The browser demo in a real browser: `cargo xtask web --check` builds the page, serves it on
//! 127.0.0.1, draws a grid in headless Chromium and compares it with the native sampler's.
//! Skipped (with a message) when the tools are missing, except under `CI=true`, where `.ci/run`
//! installs them.

use std::process::Command;

/// What the check needs beyond the Rust toolchain, each with how to get it.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
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
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !targets.lines().any(|t| t == "wasm32-unknown-unknown") {
        missing.push("the wasm32-unknown-unknown target (rustup target add)".into());
    }
    missing
}

#[test]
fn the_browser_draws_the_native_samplers_grid() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let message = format!("the browser test needs {}", missing.join(", "));
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
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
