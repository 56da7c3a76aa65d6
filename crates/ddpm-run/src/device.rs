//! Choosing the compute device from a command-line value.

use candle_core::Device;

use crate::{Result, RunError};

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
            RunError::Device(format!(
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
            None => Err(RunError::Device(format!(
                "unknown device `{other}`: use cpu, cuda or cuda:N"
            ))),
        },
    }
}
