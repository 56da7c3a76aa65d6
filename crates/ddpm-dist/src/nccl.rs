//! The NCCL backend: one all-reduce per call on one flat f32 buffer on this rank's GPU.
//!
//! Rank 0 creates the NCCL unique id and hands it out through the TCP rendezvous. The TCP
//! connections stay open with heartbeats, watched by a thread: NCCL calls block without a timeout
//! and cudarc's `Comm` cannot be aborted from another thread, so when a peer dies (connection
//! closed, silent past the peer timeout, or an abort relayed by rank 0) the watchdog tells the other
//! peers why and ends this process with [`EXIT_PEER_LOST`].

use crate::EXIT_PEER_LOST;
use crate::collective::{
    Collective, ReduceOp, flatten, host_all_reduce_tensors, host_broadcast_tensors, unflatten,
};
use crate::error::{DistError, Result};
use crate::rendezvous;
use crate::wire::{self, Event, Link};
use crate::world::{Timeouts, WorldInfo};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::cudarc::nccl::result::NcclError;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp as NcclOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Device, Storage, Tensor};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Collectives over NCCL on one CUDA device. Not `Send`: use it on the thread that made it.
pub struct NcclCollective {
    comm: Comm,
    cuda: CudaDevice,
    device: Device,
    rank: usize,
    world_size: usize,
    state: Arc<State>,
    _links: Vec<Link>,
}

/// What this rank and its watchdog share.
#[derive(Default)]
struct State {
    /// Set when the collective is dropped: link failures after that are our own doing.
    closing: AtomicBool,
    /// When the NCCL call in progress began.
    busy_since: Mutex<Option<Instant>>,
    /// A rank that closed its collective in an orderly way.
    departed: Mutex<Option<usize>>,
}

/// Marks this rank as inside an NCCL call while alive.
struct Busy(Arc<State>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn nccl_err(what: &'static str) -> impl Fn(NcclError) -> DistError {
    move |e| DistError::Nccl {
        what,
        detail: format!("{:?}", e.0),
    }
}

fn cuda_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> DistError {
    move |e| DistError::Nccl {
        what,
        detail: e.to_string(),
    }
}

impl NcclCollective {
    /// Joins the world over TCP, then builds the NCCL communicator on `device` (a CUDA device,
    /// normally `Device::new_cuda(world.local_rank)`). Blocks until every rank has joined.
    pub fn connect(world: &WorldInfo, device: &Device, timeouts: &Timeouts) -> Result<Self> {
        let cuda = device
            .as_cuda_device()
            .map_err(|source| DistError::Candle {
                what: "the NCCL backend needs a CUDA device",
                source,
            })?
            .clone();
        let joined = rendezvous::join(world, timeouts, || {
            let id = Id::new().map_err(nccl_err("creating the unique id"))?;
            Ok(id.internal().iter().map(|&c| c as u8).collect())
        })?;
        let bytes: [u8; 128] =
            joined
                .payload
                .as_slice()
                .try_into()
                .map_err(|_| DistError::Protocol {
                    rank: 0,
                    detail: format!(
                        "NCCL unique id of {} bytes, expected 128",
                        joined.payload.len()
                    ),
                })?;
        let id = Id::uninit(bytes.map(|b| b as core::ffi::c_char));
        let state = Arc::new(State::default());
        let writers = joined.links.iter().map(Link::writer).collect();
        let (rank, t) = (world.rank, *timeouts);
        let watched = Arc::clone(&state);
        let events = joined.events;
        std::thread::Builder::new()
            .name("ddpm-dist-watchdog".into())
            .spawn(move || watch(rank, events, writers, &watched, &t))
            .map_err(|e| DistError::io("spawning the NCCL watchdog thread", e))?;
        let comm = {
            let _busy = begin(&state)?;
            Comm::from_rank(cuda.cuda_stream(), world.rank, world.world_size, id)
                .map_err(nccl_err("initialising the communicator"))?
        };
        Ok(Self {
            comm,
            device: device.clone(),
            cuda,
            rank: world.rank,
            world_size: world.world_size,
            state,
            _links: joined.links,
        })
    }

    /// Runs `call` from the contiguous f32 CUDA tensor `flat` into a fresh buffer, waits for it and
    /// returns the buffer as a 1-D tensor.
    fn on_device(
        &self,
        flat: &Tensor,
        what: &'static str,
        call: impl FnOnce(&CudaView<'_, f32>, &mut CudaSlice<f32>) -> std::result::Result<(), NcclError>,
    ) -> Result<Tensor> {
        let n = flat.elem_count();
        let _busy = begin(&self.state)?;
        let mut out = self
            .cuda
            .alloc_zeros::<f32>(n)
            .map_err(|source| DistError::Candle {
                what: "allocating the NCCL output buffer",
                source,
            })?;
        {
            let (storage, layout) = flat.storage_and_layout();
            let Storage::Cuda(storage) = &*storage else {
                return Err(DistError::Nccl {
                    what,
                    detail: "the flat buffer is not on a CUDA device".into(),
                });
            };
            if !layout.is_contiguous() {
                return Err(DistError::Nccl {
                    what,
                    detail: "the flat buffer is not contiguous".into(),
                });
            }
            let slice = storage
                .as_cuda_slice::<f32>()
                .map_err(|source| DistError::Candle {
                    what: "reading the flat f32 buffer",
                    source,
                })?;
            let start = layout.start_offset();
            call(&slice.slice(start..start + n), &mut out).map_err(nccl_err(what))?;
        }
        self.cuda
            .cuda_stream()
            .synchronize()
            .map_err(cuda_err("waiting for the collective"))?;
        let storage = CudaStorage::wrap_cuda_slice(out, self.cuda.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            n,
            BackpropOp::none(),
            false,
        ))
    }

    /// Runs an in-place NCCL call on a host buffer through a device copy.
    fn through_device(
        &self,
        buf: &mut [f32],
        what: &'static str,
        call: impl FnOnce(&mut CudaSlice<f32>) -> std::result::Result<(), NcclError>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let _busy = begin(&self.state)?;
        let stream = self.cuda.cuda_stream();
        let mut dev = stream
            .clone_htod(&*buf)
            .map_err(cuda_err("copying the buffer to the GPU"))?;
        call(&mut dev).map_err(nccl_err(what))?;
        stream
            .memcpy_dtoh(&dev, buf)
            .map_err(cuda_err("copying the result to the host"))?;
        stream
            .synchronize()
            .map_err(cuda_err("waiting for the collective"))
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(DistError::Mismatch(format!(
                "broadcast root {root} is not a rank of a world of {}",
                self.world_size
            )));
        }
        Ok(())
    }
}

fn nccl_op(op: ReduceOp) -> NcclOp {
    match op {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Mean => NcclOp::Avg,
    }
}

/// Refuses to start an NCCL call a departed peer will never join; marks this rank busy.
fn begin(state: &Arc<State>) -> Result<Busy> {
    if let Some(rank) = *state.departed.lock().unwrap_or_else(|p| p.into_inner()) {
        return Err(DistError::PeerLost {
            rank,
            detail: "it closed its collective, so it will not join another NCCL call".into(),
        });
    }
    *state.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    Ok(Busy(Arc::clone(state)))
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::SeqCst);
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let op = nccl_op(op);
        self.through_device(buf, "all_reduce", |dev| {
            self.comm.all_reduce_in_place(dev, &op).map(drop)
        })
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        self.check_root(root)?;
        self.through_device(buf, "broadcast", |dev| {
            self.comm.broadcast_in_place(dev, root as i32).map(drop)
        })
    }

    fn barrier(&mut self) -> Result<()> {
        self.all_reduce(&mut [0.0], ReduceOp::Sum)
    }

    fn all_reduce_tensors(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<Vec<Tensor>> {
        if !tensors.iter().all(|t| t.device().same_device(&self.device)) {
            return host_all_reduce_tensors(self, tensors, op);
        }
        let Some((flat, layout)) = flatten(tensors)? else {
            return Ok(Vec::new());
        };
        let op = nccl_op(op);
        let out = self.on_device(&flat, "all_reduce", |src, dst| {
            self.comm.all_reduce(src, dst, &op).map(drop)
        })?;
        unflatten(&out, &layout)
    }

    fn broadcast_tensors(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        self.check_root(root)?;
        if !tensors.iter().all(|t| t.device().same_device(&self.device)) {
            return host_broadcast_tensors(self, tensors, root);
        }
        let Some((flat, layout)) = flatten(tensors)? else {
            return Ok(Vec::new());
        };
        let out = self.on_device(&flat, "broadcast", |src, dst| {
            self.comm.broadcast(Some(src), dst, root as i32).map(drop)
        })?;
        unflatten(&out, &layout)
    }
}

/// The watchdog: ends the process when a peer is lost, or when a peer that left cleanly keeps
/// this rank waiting in an NCCL call longer than the peer timeout.
fn watch(
    rank: usize,
    events: Receiver<(usize, Event)>,
    writers: Vec<Arc<Mutex<TcpStream>>>,
    state: &State,
    t: &Timeouts,
) {
    loop {
        let event = events.recv_timeout(t.heartbeat);
        if state.closing.load(Ordering::SeqCst) {
            return;
        }
        match event {
            Ok((peer, Event::Left)) => {
                *state.departed.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
            }
            Ok((peer, Event::Data(_))) => fatal(
                rank,
                &writers,
                &format!(
                    "rank {peer} sent data over TCP, but this rank uses NCCL (backends differ?)"
                ),
            ),
            Ok((_, Event::Failed(e))) => fatal(rank, &writers, &e.to_string()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let departed = *state.departed.lock().unwrap_or_else(|p| p.into_inner());
        let busy = *state.busy_since.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(peer), Some(since)) = (departed, busy)
            && since.elapsed() > t.peer
        {
            fatal(
                rank,
                &writers,
                &format!(
                    "rank {peer} closed its collective while this rank waits in an NCCL call ({:?} so far)",
                    since.elapsed()
                ),
            );
        }
    }
}

/// Tells the peers why, then ends the process at once (no unwinding through a blocked NCCL call).
fn fatal(rank: usize, writers: &[Arc<Mutex<TcpStream>>], reason: &str) -> ! {
    let reason = format!("rank {rank}: {reason}");
    for w in writers {
        wire::abort_through(w, &reason);
    }
    eprintln!(
        "ddpm-dist: {reason}; exiting with status {EXIT_PEER_LOST} because a rank blocked in NCCL cannot be interrupted"
    );
    // SAFETY: _exit ends the process without running destructors or atexit handlers, which could
    // block on the CUDA context another thread is using.
    unsafe { libc::_exit(EXIT_PEER_LOST) }
}
