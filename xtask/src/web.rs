//! `cargo xtask web`: the browser demo. Builds `crates/ddpm-web` for `wasm32-unknown-unknown`,
//! runs `wasm-bindgen` (the version pinned in Cargo.lock) and copies `web/` beside it; `--serve`
//! serves the folder on 127.0.0.1, `--check` drives headless Chromium through the page and
//! compares its grid with the native one (docs/web.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

mod check;
pub mod default_model;
mod serve;
pub mod wasm_test;
mod webdriver;

pub use default_model::ModelArgs;

/// The wasm target the page runs.
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The page's sources, relative to the workspace root.
const WEB_DIR: &str = "web";
/// The files of `web/` that make the page (the model folder is copied whole).
const PAGE_FILES: [&str; 4] = ["index.html", "style.css", "app.js", "worker.js"];
/// The default model's folder inside `web/` and the built page.
const MODEL_DIR: &str = "model";

/// `cargo xtask web` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the page is built.
    #[arg(long, default_value = "target/web")]
    out: PathBuf,
    /// Serve the page on 127.0.0.1 after building it (Ctrl-C stops).
    #[arg(long)]
    serve: bool,
    /// The port for --serve.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Build the page, then draw a grid in headless Chromium and compare it with the native
    /// sampler's (needs `chromium` and `chromedriver`).
    #[arg(long, conflicts_with = "serve")]
    check: bool,
    #[command(flatten)]
    grid: check::CheckArgs,
}

/// Runs `cargo xtask web`.
pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    build(&root, &args.out)?;
    if args.check {
        check::run(&args.out, &args.grid)
    } else if args.serve {
        let server = serve::Server::start(&args.out, args.port)?;
        println!(
            "serving {} at {} (Ctrl-C stops)",
            args.out.display(),
            server.url()
        );
        server.wait();
        Ok(())
    } else {
        println!(
            "built the page into {}: `cargo xtask web --serve` serves it",
            args.out.display()
        );
        Ok(())
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Builds the page into `out`: the wasm module and its JavaScript glue in `out/pkg/`, the
/// page's files and the default model beside them.
pub fn build(root: &Path, out: &Path) -> Result<()> {
    let version = pinned_wasm_bindgen(root)?;
    check_wasm_bindgen_cli(&version)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building crates/ddpm-web for {WASM_TARGET}");
    let status = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "ddpm-web",
            "--target",
            WASM_TARGET,
        ])
        // simd128: the gemm crate's vector kernels (every browser the page needs has it).
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            "-C target-feature=+simd128",
        )
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    ensure!(
        status.success(),
        "the wasm build failed (is the target installed? rustup target add {WASM_TARGET})"
    );
    let wasm = target_dir(root)
        .join(WASM_TARGET)
        .join("release")
        .join("ddpm_web.wasm");
    let pkg = out.join("pkg");
    std::fs::create_dir_all(&pkg).with_context(|| format!("cannot create {}", pkg.display()))?;
    let status = Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&pkg)
        .arg(&wasm)
        .status()
        .context("cannot run wasm-bindgen")?;
    ensure!(
        status.success(),
        "wasm-bindgen failed on {}",
        wasm.display()
    );
    let web = root.join(WEB_DIR);
    for file in PAGE_FILES {
        copy(&web.join(file), &out.join(file))?;
    }
    let model = out.join(MODEL_DIR);
    std::fs::create_dir_all(&model)
        .with_context(|| format!("cannot create {}", model.display()))?;
    for entry in std::fs::read_dir(web.join(MODEL_DIR)).context("cannot list web/model")? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            copy(&path, &model.join(name))?;
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The `wasm-bindgen` crate's version in Cargo.lock: the CLI must be exactly this one.
pub fn pinned_wasm_bindgen(root: &Path) -> Result<String> {
    let lock = root.join("Cargo.lock");
    let text = std::fs::read_to_string(&lock)
        .with_context(|| format!("cannot read {}", lock.display()))?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().and_then(|l| l.strip_prefix("version = \""));
            if let Some(v) = version.and_then(|v| v.strip_suffix('"')) {
                return Ok(v.to_string());
            }
        }
    }
    bail!("Cargo.lock names no wasm-bindgen version")
}

fn check_wasm_bindgen_cli(version: &str) -> Result<()> {
    let install = format!("cargo install --locked wasm-bindgen-cli --version {version}");
    let output = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .with_context(|| format!("wasm-bindgen is not installed: {install}"))?;
    let found = String::from_utf8_lossy(&output.stdout);
    ensure!(
        found.split_whitespace().nth(1) == Some(version),
        "wasm-bindgen {version} is needed (the crate's version in Cargo.lock), found `{}`: \
         {install}",
        found.trim()
    );
    Ok(())
}
