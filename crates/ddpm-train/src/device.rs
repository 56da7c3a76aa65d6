//! Choosing the compute device from a command-line value.

use candle_core::Device;

use crate::{Result, TrainError};

/// `None` → CUDA device 0 when built with CUDA and a GPU is present, else the CPU (a CUDA
/// build that cannot open a GPU says why on stderr and uses the CPU);
/// `cpu`, `cuda` or `cuda:N` → that device (an error if it cannot be opened).
pub fn select_device(choice: Option<&str>) -> Result<Device> {
    let cuda = |n: usize| {
        Device::new_cuda(n).map_err(|e| {
            let hint = if candle_core::utils::cuda_is_available() {
                "check that the GPU and its driver are present"
            } else {
                "this build has no CUDA: build with --features cuda"
            };
            TrainError::Config(format!(
                "cannot open CUDA device {n} ({e}); {hint}, or use --device cpu"
            ))
        })
    };
    match choice {
        None if candle_core::utils::cuda_is_available() => match Device::new_cuda(0) {
            Ok(device) => Ok(device),
            Err(e) => {
                eprintln!("note: no usable CUDA device ({e}); running on the CPU");
                Ok(Device::Cpu)
            }
        },
        None => Ok(Device::Cpu),
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
/// Also tunes the allocator ([`tune_allocator`]).
///
/// Call it first thing in `main`, before any other thread exists.
pub fn configure_cpu_threads() {
    set_candle_threads(1);
    tune_allocator();
}

/// Sets `CANDLE_NUM_THREADS` to `n` unless the user already set it. Call it first thing in
/// `main`, before any other thread exists.
pub fn set_candle_threads(n: usize) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process is single-threaded, so
        // no other thread can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", n.to_string()) };
    }
}

/// glibc only: keeps freed blocks of up to 32 MiB (its maximum) in the heap for reuse, instead
/// of unmapping them and taking fresh zeroed pages from the kernel on the next step. A training
/// step allocates and frees the same activation-sized buffers every time; page faults were ~5% of
/// a CPU step's profile. No effect elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
