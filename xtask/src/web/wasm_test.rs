//! `cargo xtask wasm-test`: a crate's own tests compiled for WebAssembly (`wasm32-wasip1` with
//! `simd128`, the page's instruction set and kernels) and run under Node's WASI, so that the
//! tests comparing the fast CPU kernels with their portable twins also hold on wasm32.

use anyhow::{Context, Result, ensure};
use std::process::Command;

use super::{target_dir, workspace_root};

/// The target the tests are built for: wasm32 with a system interface, so test binaries run
/// outside a browser (the same `target_arch = "wasm32"` code as the page's build).
const WASI_TARGET: &str = "wasm32-wasip1";
/// Runs one test binary under Node's `node:wasi` (cargo's runner for [`WASI_TARGET`]).
const RUNNER: &str = include_str!("wasi-runner.mjs");

/// `cargo xtask wasm-test` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The packages whose tests run (default: the network kernels).
    #[arg(short, long = "package", default_values_t = ["ddpm-nn".to_string()])]
    packages: Vec<String>,
}

/// Runs `cargo xtask wasm-test`.
pub fn run(args: Args) -> Result<()> {
    let node = Command::new("node").arg("--version").output();
    ensure!(
        node.is_ok_and(|o| o.status.success()),
        "`node` (Node.js 20 or later, for its WASI) is not installed"
    );
    let root = workspace_root();
    let target = target_dir(&root);
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let runner = target.join("wasi-runner.mjs");
    std::fs::write(&runner, RUNNER)
        .with_context(|| format!("cannot write {}", runner.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(&root)
        .args(["test", "--release", "--target", WASI_TARGET]);
    for package in &args.packages {
        command.args(["-p", package]);
    }
    let status = command
        .env(
            "CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS",
            "-C target-feature=+simd128",
        )
        .env(
            "CARGO_TARGET_WASM32_WASIP1_RUNNER",
            format!("node --no-warnings {}", runner.display()),
        )
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    ensure!(
        status.success(),
        "the tests failed on {WASI_TARGET} (is the target installed? rustup target add {WASI_TARGET})"
    );
    Ok(())
}
