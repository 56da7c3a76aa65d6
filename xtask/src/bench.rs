//! `cargo xtask bench train|sample`: times one training step and one sampling forward of a
//! network (`--model ref|ref-bn|res|modern`) on the CPU, in wall-clock and CPU time, and prints
//! the PyTorch CPU figures of the reference UNet beside ours.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Subcommand;
use ddpm_unet::{ImageShape, Model, ModelKind, ModelSpec, ResidualFrom};

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
    /// Network family: ref, ref-bn, res or modern.
    #[arg(long, default_value = "ref")]
    model: ModelKind,
    /// Channel lists to time, e.g. `--channels 10,20,40,80 --channels 32,64,128,256`
    /// (modern: level widths, e.g. `16,32,32` = base 16, multipliers (1,2,2)). Default: ref/ref-bn
    /// 10,20,40,80 and 32,64,128,256; res 10,20,40,80; modern 16,32,32 and 32,64,64.
    #[arg(long, value_delimiter = ';')]
    channels: Vec<String>,
    /// Time-encoding width of ref/ref-bn/res (default 20 for ref, 128 for res, as the presets).
    #[arg(long)]
    pe_dim: Option<usize>,
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
    /// Leave glibc's allocator at its defaults (the trainer and sampler tune it, see
    /// `ddpm_nn::tune_allocator`): to measure what the tuning gives.
    #[arg(long)]
    default_malloc: bool,
    /// Image shape CxHxW (the PyTorch figures exist for 1x28x28; 3x64x64 for sampling).
    #[arg(long, default_value = "1x28x28")]
    image: ImageShape,
    /// cpu | cuda | cuda:N (GPU timings synchronise the device after every repetition).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// PyTorch CPU figures to print beside ours.
    #[arg(long, default_value = "../shared/reference/torch-anchor-cpu.json")]
    anchor: PathBuf,
}

/// Wall-clock and CPU figures of the timed repetitions.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Median wall time per repetition, ms.
    median: f64,
    /// Fastest repetition, ms.
    min: f64,
    /// Slowest repetition, ms.
    max: f64,
    /// Median CPU time (all threads of this process) per repetition, ms.
    cpu: Option<f64>,
}

/// The median of `v` (non-empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time consumed so far by all live threads of this process, in ms, from
/// `/proc/self/task/*/schedstat` (nanoseconds on the CPU); `None` where that is unavailable.
/// The benchmark's threads (main, rayon and candle pools) live for the whole run, so
/// differences between two readings are the CPU time spent in between.
fn cpu_ms() -> Option<f64> {
    let mut total_ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total_ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 / 1e6)
}

/// Runs `f` `warmup` times, then `reps` timed times.
fn time(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut wall = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (start, cpu_start) = (Instant::now(), cpu_ms());
        f()?;
        wall.push(start.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (cpu_start, cpu_ms()) {
            cpu.push(b - a);
        }
    }
    let cpu = (cpu.len() == reps).then(|| median(cpu));
    let (min, max) = wall
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    Ok(Timing {
        median: median(wall),
        min,
        max,
        cpu,
    })
}

/// The PyTorch figure for `what` ("train_step" / "forward_no_grad") at `ch` and `batch`.
fn torch_ms(
    anchor: &serde_json::Value,
    what: &str,
    ch: &[usize],
    batch: usize,
    image: ImageShape,
) -> Option<f64> {
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
            && r["img"] == serde_json::json!(image.dims());
        if same { r["ms_median"].as_f64() } else { None }
    })
}

/// Inputs: `x` (B,C,H,W), `t` (B) u32, target noise (B,C,H,W).
fn inputs(
    batch: usize,
    n_steps: usize,
    image: ImageShape,
    dev: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let [c, h, w] = image.dims();
    let x = Tensor::randn(0f32, 1.0, (batch, c, h, w), dev)?;
    let noise = Tensor::randn(0f32, 1.0, (batch, c, h, w), dev)?;
    let t: Vec<u32> = (0..batch).map(|i| ((i * 7919) % n_steps) as u32).collect();
    Ok((x, Tensor::new(t, dev)?, noise))
}

/// Times `what` for one channel list.
fn bench_one(what: &What, common: &Common, ch: &[usize], batch: usize) -> Result<Timing> {
    let spec = ModelSpec {
        kind: common.model,
        image: common.image,
        channels: ch.to_vec(),
        pe_dim: common.pe_dim.unwrap_or(match common.model {
            ModelKind::Res => 128,
            _ => 20,
        }),
        n_steps: 1000,
        residual_from: ResidualFrom::Normalized,
        attn_resolutions: None,
        num_classes: 0,
    };
    let config = spec
        .to_config()
        .with_context(|| format!("channels {ch:?} do not make a valid network"))?;
    let dev = ddpm_run::select_device(Some(&common.device))?;
    let model = Model::new(&config, &dev, 0)?;
    let (x, t, noise) = inputs(batch, 1000, common.image, &dev)?;
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
                dev.synchronize()?;
                Ok(())
            })?
        }
        What::Sample(_) => time(common.warmup, common.reps, || {
            model.forward(&x, &t, false)?.to_dtype(DType::F32)?;
            dev.synchronize()?;
            Ok(())
        })?,
    };
    Ok(times)
}

/// The default channel lists of a network family.
fn default_lists(kind: ModelKind) -> Vec<String> {
    let lists: &[&str] = match kind {
        ModelKind::Ref | ModelKind::RefBn => &["10,20,40,80", "32,64,128,256"],
        ModelKind::Res => &["10,20,40,80"],
        ModelKind::Modern => &["16,32,32", "32,64,64"],
    };
    lists.iter().map(|s| s.to_string()).collect()
}

/// Command-line name of a network family.
fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Ref => "ref",
        ModelKind::RefBn => "ref-bn",
        ModelKind::Res => "res",
        ModelKind::Modern => "modern",
    }
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
    ddpm_nn::set_candle_threads(common.candle_threads);
    if !common.default_malloc {
        ddpm_nn::tune_allocator();
    }
    let batch = common.batch.unwrap_or(default_batch);
    let lists = if common.channels.is_empty() {
        default_lists(common.model)
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
        "{} UNet, {}, batch {batch}, {label}; median of {} reps after {} warm-up; \
         {} rayon threads, CANDLE_NUM_THREADS={}, {} malloc",
        kind_name(common.model),
        common.image,
        common.reps,
        common.warmup,
        rayon_threads(),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_default(),
        if common.default_malloc {
            "default"
        } else {
            "tuned"
        }
    );
    for list in &lists {
        let ch: Vec<usize> = list
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--channels `{list}` is not a comma-separated list"))?;
        let t = bench_one(&args.what, common, &ch, batch)?;
        let rate = batch as f64 / (t.median / 1e3);
        let cpu = t.cpu.map_or("cpu n/a".to_string(), |c| {
            format!(
                "cpu {c:8.1} ms ({:.1} img per cpu-s)",
                batch as f64 / (c / 1e3)
            )
        });
        let reference = matches!(common.model, ModelKind::Ref);
        let torch = anchor
            .as_ref()
            .filter(|_| reference)
            .and_then(|a| torch_ms(a, torch_what, &ch, batch, common.image));
        let torch = torch.map_or("n/a".to_string(), |ms| {
            format!("{ms:.1} ms (ratio ours/torch {:.2})", t.median / ms)
        });
        println!(
            "ch {list:>14}: wall {:8.1} ms (min {:.1}, max {:.1}; {rate:.1} img/s); {cpu}; \
             PyTorch CPU {torch}",
            t.median, t.min, t.max
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
