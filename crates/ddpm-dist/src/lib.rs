//! Data-parallel plumbing for DDPM training: collectives, world info and a launcher.
//!
//! - [`WorldInfo::from_env`] reads the torchrun environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!   `MASTER_ADDR`, `MASTER_PORT`); without it the run is a world of one.
//! - [`launch()`] spawns `n` rank processes on this machine with that environment and supervises
//!   them (the `--gpus N` path of the trainer).
//! - [`connect`] joins the world and returns a [`Collective`]: NCCL for CUDA devices (feature
//!   `nccl`), TCP through rank 0 otherwise. Rank 0 hosts the rendezvous; it also hands out the NCCL
//!   unique id.
//! - [`Collective::all_reduce_mean`] averages a list of gradient tensors as one flat buffer;
//!   [`Collective::broadcast_tensors`] copies rank 0's parameters to everyone.
//!
//! No wait is unbounded: a rank that dies, or goes silent for the peer timeout, makes every other
//! rank fail with an error naming it (TCP backend) or exit with [`EXIT_PEER_LOST`] (NCCL backend,
//! whose blocked calls cannot be interrupted).

mod collective;
mod error;
mod launch;
#[cfg(feature = "nccl")]
mod nccl;
mod rendezvous;
mod tcp;
mod wire;
mod world;

pub use collective::{Collective, ReduceOp};
pub use error::{DistError, Result};
pub use launch::{GRACE, LaunchError, RankFailure, STDERR_TAIL_LINES, free_port, launch};
#[cfg(feature = "nccl")]
pub use nccl::NcclCollective;
pub use tcp::TcpCollective;
pub use world::{
    ENV_CONNECT_TIMEOUT, ENV_LOCAL_RANK, ENV_MASTER_ADDR, ENV_MASTER_PORT, ENV_PEER_TIMEOUT,
    ENV_RANK, ENV_WORLD_SIZE, Timeouts, WorldInfo,
};

use candle_core::Device;

/// Exit status of a process whose NCCL peer died: its watchdog ends the process, because a rank
/// blocked inside an NCCL call cannot be woken up any other way.
pub const EXIT_PEER_LOST: i32 = 75;

/// Which transport the collectives use.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Through rank 0 over TCP; works for tensors on any device (they travel through host memory).
    Tcp,
    /// NCCL on the given CUDA device (this rank's `LOCAL_RANK` GPU); needs the `nccl` feature.
    Nccl(Device),
}

impl Backend {
    /// NCCL when `device` is a CUDA device and the `nccl` feature is compiled in, TCP otherwise.
    pub fn for_device(device: &Device) -> Self {
        if cfg!(feature = "nccl") && device.is_cuda() {
            Self::Nccl(device.clone())
        } else {
            Self::Tcp
        }
    }
}

/// Joins the world with timeouts from the environment ([`Timeouts::from_env`]).
pub fn connect(world: &WorldInfo, backend: Backend) -> Result<Box<dyn Collective>> {
    connect_with(world, backend, &Timeouts::from_env()?)
}

/// Joins the world with explicit timeouts. Every rank must call it; it returns once all have.
pub fn connect_with(
    world: &WorldInfo,
    backend: Backend,
    timeouts: &Timeouts,
) -> Result<Box<dyn Collective>> {
    match backend {
        Backend::Tcp => Ok(Box::new(TcpCollective::connect(world, timeouts)?)),
        #[cfg(feature = "nccl")]
        Backend::Nccl(device) => Ok(Box::new(NcclCollective::connect(world, &device, timeouts)?)),
        #[cfg(not(feature = "nccl"))]
        Backend::Nccl(_) => Err(DistError::Nccl {
            what: "connect",
            detail: "ddpm-dist was built without the `nccl` feature".into(),
        }),
    }
}
