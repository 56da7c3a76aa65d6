//! `cargo xtask bench train|sample`: times one training step and one sampling forward of the
//! reference UNet on the CPU and prints the PyTorch CPU figures of the reference beside ours.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Subcommand;
use ddpm_unet::{ImageShape, Model, ModelConfig, RefUNetConfig};

/// Options of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

/// What to time.
#[derive(Debug, Subcommand)]
enum What {
    /// One training step: forward, MSE against the noise, backward and a plain SGD update.
    Train(Common),
    /// One forward without gradients, as in every sampling step.
    Sample(Common),
}

/// Settings shared by the benchmarks.
#[derive(Debug, clap::Args)]
struct Common {
    /// Channel lists to time, e.g. `--channels 10,20,40,80 --channels 32,64,128,256`
    /// (default: both of these).
    #[arg(long, value_delimiter = ';')]
    channels: Vec<String>,
    /// Batch size (default 128 for train, 81 for sample, as in the PyTorch figures).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Threads of candle's own CPU ops (`CANDLE_NUM_THREADS`, unless already set). Our conv,
    /// norm and pool kernels use rayon (`RAYON_NUM_THREADS`, default all cores); candle's
    /// spin-waiting pool competes with them on a 2-core machine, so 1 is the default here.
    #[arg(long, default_value_t = 1)]
    candle_threads: usize,
    /// PyTorch CPU figures to print beside ours.
    #[arg(long, default_value = "../shared/reference/torch-anchor-cpu.json")]
    anchor: PathBuf,
}

/// Median, min and max of `times` in ms.
fn summary(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

/// Runs `f` `warmup` times, then `reps` timed times; returns the times in ms.
fn time(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// The PyTorch figure for `what` ("train_step" / "forward_no_grad") at `ch` and `batch`.
fn torch_ms(anchor: &serde_json::Value, what: &str, ch: &[usize], batch: usize) -> Option<f64> {
    anchor["results"].as_array()?.iter().find_map(|r| {
        let same_ch = r["ch_list"]
            .as_array()?
            .iter()
            .map(|v| v.as_u64())
            .collect::<Vec<_>>()
            == ch.iter().map(|&c| Some(c as u64)).collect::<Vec<_>>();
        let same = r["what"] == what
            && same_ch
            && r["batch"].as_u64() == Some(batch as u64)
            && r["img"] == serde_json::json!([1, 28, 28]);
        if same { r["ms_median"].as_f64() } else { None }
    })
}

/// Deterministic inputs: `x` (B,1,28,28), `t` (B) u32, target noise (B,1,28,28).
fn inputs(batch: usize, n_steps: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &dev)?;
    let noise = Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &dev)?;
    let t: Vec<u32> = (0..batch).map(|i| ((i * 7919) % n_steps) as u32).collect();
    Ok((x, Tensor::new(t, &dev)?, noise))
}

/// Times `what` for one channel list; returns (our median ms, min, max).
fn bench_one(what: &What, common: &Common, ch: &[usize], batch: usize) -> Result<(f64, f64, f64)> {
    let config = ModelConfig::Reference(RefUNetConfig {
        image: ImageShape::MNIST,
        channels: ch.to_vec(),
        ..RefUNetConfig::default()
    });
    let model = Model::new(&config, &Device::Cpu, 0)?;
    let (x, t, noise) = inputs(batch, 1000)?;
    let times = match what {
        What::Train(_) => {
            let vars = model.trainable();
            time(common.warmup, common.reps, || {
                let loss = (model.forward(&x, &t, true)? - &noise)?.sqr()?.mean_all()?;
                let grads = loss.backward()?;
                for (name, var) in &vars {
                    let g = grads
                        .get(var)
                        .with_context(|| format!("no gradient for {name}"))?;
                    var.set(&(var.as_tensor() - (g * 1e-3)?)?)?;
                }
                Ok(())
            })?
        }
        What::Sample(_) => time(common.warmup, common.reps, || {
            model.forward(&x, &t, false)?.to_dtype(DType::F32)?;
            Ok(())
        })?,
    };
    Ok(summary(times))
}

/// Entry point of `cargo xtask bench`.
pub fn run(args: Args) -> Result<()> {
    let (common, label, torch_what, default_batch) = match &args.what {
        What::Train(c) => (c, "train step (fwd+bwd+SGD)", "train_step", 128),
        What::Sample(c) => (c, "sampling forward (no grad)", "forward_no_grad", 81),
    };
    if common.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: nothing else runs yet (no candle op has started its thread pools), so no
        // other thread can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", common.candle_threads.to_string()) };
    }
    let batch = common.batch.unwrap_or(default_batch);
    let lists = if common.channels.is_empty() {
        vec!["10,20,40,80".to_string(), "32,64,128,256".to_string()]
    } else {
        common.channels.clone()
    };
    let anchor: Option<serde_json::Value> = std::fs::read_to_string(&common.anchor)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if anchor.is_none() {
        eprintln!("note: no PyTorch figures at {}", common.anchor.display());
    }
    println!(
        "reference UNet, 1x28x28, batch {batch}, {label}; median of {} reps after {} warm-up; \
         {} rayon threads, CANDLE_NUM_THREADS={}",
        common.reps,
        common.warmup,
        rayon_threads(),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_default()
    );
    for list in &lists {
        let ch: Vec<usize> = list
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--channels `{list}` is not a comma-separated list"))?;
        let (median, min, max) = bench_one(&args.what, common, &ch, batch)?;
        let torch = anchor
            .as_ref()
            .and_then(|a| torch_ms(a, torch_what, &ch, batch));
        let torch = torch.map_or("n/a".to_string(), |ms| {
            format!("{ms:.1} ms (ratio ours/torch {:.2})", median / ms)
        });
        println!(
            "ch {list:>14}: ours {median:8.1} ms (min {min:.1}, max {max:.1}); PyTorch CPU {torch}"
        );
    }
    Ok(())
}

/// Threads of candle's CPU kernels and ours (`RAYON_NUM_THREADS`, else all cores).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
