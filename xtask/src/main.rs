//! `cargo xtask <command>`: the project's tasks that are not training or sampling themselves —
//! downloads, checking a network against PyTorch, benchmarks, the browser demo, chaos resume.

use clap::{Parser, Subcommand};

mod bench;
mod chaos;
mod eval;
mod experiment;
mod fetch;
mod forward;
mod web;

/// Project tasks for the DDPM toolkit.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download MNIST (four IDX .gz files) from mirrors, verifying every file's digest.
    FetchMnist(fetch::MnistArgs),
    /// Fetch the anime-faces set (Hugging Face mirror of the Kaggle set, or a Kaggle zip).
    FetchAnime(fetch::AnimeArgs),
    /// Run a network on tensors from a safetensors file and write its output (port checking).
    Forward(forward::Args),
    /// Benchmarks: training step and sampling forward of the reference UNets, data loading.
    Bench(bench::Args),
    /// Measure the quality of MNIST samples (classifier features) or colour statistics.
    Eval(eval::EvalArgs),
    /// Train the MNIST classifier that `eval` uses and save it under assets/.
    TrainClassifier(eval::TrainClassifierArgs),
    /// Run one of the reference's comparisons and write docs/experiments/NAME.md.
    Experiment(experiment::Args),
    /// Build the browser demo into a folder; `--serve` serves it on 127.0.0.1, `--check` tests
    /// it in headless Chromium against the native sampler (docs/web.md).
    Web(web::Args),
    /// Run a crate's tests (default: ddpm-nn's kernel tests) compiled for wasm32 with simd128,
    /// under Node's WASI (docs/web.md).
    WasmTest(web::wasm_test::Args),
    /// Make the browser demo's default model (web/model/) from a trained run: its manifest
    /// and EMA weights in f16.
    WebModel(web::ModelArgs),
    /// Kill a training run (SIGKILL) at random moments, resume it each time, and compare it bit
    /// for bit with the same run left alone.
    Chaos(chaos::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::FetchMnist(args) => fetch::mnist(args),
        Command::FetchAnime(args) => fetch::anime(args),
        Command::Forward(args) => forward::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::TrainClassifier(args) => eval::train_classifier(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Web(args) => web::run(args),
        Command::WasmTest(args) => web::wasm_test::run(args),
        Command::WebModel(args) => web::default_model::run(args),
        Command::Chaos(args) => chaos::run(args),
    }
}
