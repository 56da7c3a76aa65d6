//! Errors of the collectives, the rendezvous and the world description.

use std::time::Duration;

/// What went wrong in a collective, in the rendezvous or in reading the world from the environment.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// An environment variable of the torchrun-style world is missing, or does not parse.
    #[error("environment variable {var}: {problem}")]
    Env {
        /// The variable, e.g. `WORLD_SIZE`.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The world description itself is inconsistent (rank out of range, world of zero ranks, ...).
    #[error("invalid world: {0}")]
    World(String),
    /// A socket operation failed; `what` says which one and with whom.
    #[error("{what}: {source}")]
    Io {
        /// The operation, e.g. "rank 0: listening on 127.0.0.1:29500".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The rendezvous did not complete within the connect timeout.
    #[error("rendezvous at {addr} timed out after {after:?}: {detail}")]
    RendezvousTimeout {
        /// The master address.
        addr: String,
        /// How long this rank waited.
        after: Duration,
        /// Which ranks were missing, or what this rank was waiting for.
        detail: String,
    },
    /// A peer sent something that does not follow the protocol (wrong magic, version, world size, ...).
    #[error("protocol error with rank {rank}: {detail}")]
    Protocol {
        /// The peer's rank (0 for the master).
        rank: usize,
        /// What was wrong.
        detail: String,
    },
    /// The ranks did not call the same collective with the same sizes.
    #[error("collective mismatch: {0}")]
    Mismatch(String),
    /// A peer's connection closed or errored: the peer process died or dropped its collective.
    #[error("rank {rank} is gone: {detail}")]
    PeerLost {
        /// The rank that disappeared.
        rank: usize,
        /// How it was noticed (end of stream, reset, ...).
        detail: String,
    },
    /// A peer sent nothing, not even a heartbeat, for longer than the peer timeout.
    #[error("rank {rank} sent nothing (not even a heartbeat) for {after:?}: presumed dead")]
    PeerSilent {
        /// The silent rank.
        rank: usize,
        /// The peer timeout that elapsed.
        after: Duration,
    },
    /// No peer connection produced anything, not even a failure report, for this long.
    #[error("{detail} from any peer for {after:?}")]
    Stalled {
        /// How long this rank waited.
        after: Duration,
        /// What happened.
        detail: &'static str,
    },
    /// A rank gave up (its collective failed) and said why.
    #[error("aborted by rank {rank}: {reason}")]
    Aborted {
        /// The rank that sent the abort.
        rank: usize,
        /// Why it aborted.
        reason: String,
    },
    /// Turning tensors into a flat buffer or back failed (device, dtype, shape problems).
    #[error("tensor {index} of {count}: {source}")]
    Tensor {
        /// Index of the tensor in the list passed to the collective.
        index: usize,
        /// Length of that list.
        count: usize,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// The tensors passed to one collective call live on different devices.
    #[error(
        "tensor {index} is on {found:?} but tensor 0 is on {expected:?}: one collective call takes tensors of one device"
    )]
    MixedDevices {
        /// Index of the offending tensor.
        index: usize,
        /// Device of tensor 0.
        expected: candle_core::DeviceLocation,
        /// Device of the offending tensor.
        found: candle_core::DeviceLocation,
    },
    /// A candle operation on the flat buffer failed.
    #[error("{what}: {source}")]
    Candle {
        /// What was being done.
        what: &'static str,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// An NCCL call failed.
    #[error("NCCL {what}: {detail}")]
    Nccl {
        /// The NCCL operation.
        what: &'static str,
        /// NCCL's error.
        detail: String,
    },
}

/// Result with [`DistError`].
pub type Result<T> = std::result::Result<T, DistError>;

impl DistError {
    /// True when this rank failed because another rank did (lost, silent, aborted): a process
    /// ending on such an error should exit with [`crate::EXIT_PEER_LOST`] so that the launcher
    /// blames the rank that failed first.
    pub fn is_peer_failure(&self) -> bool {
        matches!(
            self,
            Self::PeerLost { .. }
                | Self::PeerSilent { .. }
                | Self::Aborted { .. }
                | Self::Stalled { .. }
        )
    }

    /// Wraps an I/O error with a description of the operation.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
