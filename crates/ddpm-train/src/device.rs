//! Choosing the compute device from a command-line value.

use candle_core::Device;

use crate::{Result, TrainError};

/// `None` → CUDA device 0 when built with CUDA and a GPU is present, else the CPU;
/// `cpu`, `cuda` or `cuda:N` → that device (an error if it cannot be opened).
pub fn select_device(choice: Option<&str>) -> Result<Device> {
    let cuda = |n: usize| {
        Device::new_cuda(n).map_err(|e| {
            TrainError::Config(format!(
                "cannot open CUDA device {n} ({e}); build with --features cuda, or use --device cpu"
            ))
        })
    };
    match choice {
        None => Ok(Device::cuda_if_available(0)?),
        Some("cpu") => Ok(Device::Cpu),
        Some("cuda") => cuda(0),
        Some(other) => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(TrainError::Config(format!(
                "unknown device `{other}`: use cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// Keeps candle's own matmul thread pool to one thread unless `CANDLE_NUM_THREADS` is set:
/// our convolution kernels already use every core through rayon, and candle's spin-waiting
/// pool competing with them made a CPU training step ~50% slower on 2 cores (measured).
///
/// Call it first thing in `main`, before any other thread exists.
pub fn configure_cpu_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process is single-threaded, so
        // no other thread can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
