//! The TCP wire protocol: length-prefixed frames, and a [`Link`] per peer connection.
//!
//! Every link has a reader thread that drains the socket (so no writer ever blocks on a peer that is
//! alive) and turns frames into [`Event`]s on a channel, and a heartbeat thread that writes a tiny
//! frame every heartbeat interval. The reader's socket timeout is the peer timeout: a peer that sends
//! nothing at all for that long is reported as silent, a closed or reset connection as lost.

use crate::error::DistError;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// First bytes of a Hello frame.
pub(crate) const MAGIC: &[u8; 8] = b"DDPMDIST";
/// Protocol version carried in Hello frames.
pub(crate) const VERSION: u32 = 1;
/// Largest accepted frame payload (64 GiB): a bigger length means a corrupt stream.
const MAX_PAYLOAD: u64 = 1 << 36;
/// Size of the fixed part of a Data payload: op tag, root, sequence number, element count.
const DATA_HEADER: usize = 1 + 8 + 8 + 8;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Client to master: magic, version, rank, world size.
    Hello = 1,
    /// Master to client: the rendezvous is complete; carries the backend payload (NCCL id).
    Welcome = 2,
    /// Liveness only.
    Heartbeat = 3,
    /// One rank's part of a collective.
    Data = 4,
    /// The sender gives up; carries the reason.
    Abort = 5,
    /// The sender closes its collective in an orderly way.
    Bye = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Heartbeat,
            4 => Self::Data,
            5 => Self::Abort,
            6 => Self::Bye,
            _ => return None,
        })
    }
}

/// The collective a Data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// All-reduce, sum.
    Sum,
    /// All-reduce, mean.
    Mean,
    /// Broadcast from the given root.
    Broadcast(usize),
    /// Barrier (no data).
    Barrier,
}

impl Op {
    fn encode(self) -> (u8, u64) {
        match self {
            Self::Sum => (1, 0),
            Self::Mean => (2, 0),
            Self::Broadcast(root) => (3, root as u64),
            Self::Barrier => (4, 0),
        }
    }

    fn decode(tag: u8, root: u64) -> Option<Self> {
        Some(match tag {
            1 => Self::Sum,
            2 => Self::Mean,
            3 => Self::Broadcast(usize::try_from(root).ok()?),
            4 => Self::Barrier,
            _ => return None,
        })
    }
}

/// A decoded Data frame.
#[derive(Debug)]
pub(crate) struct DataMsg {
    /// Which collective.
    pub op: Op,
    /// The sender's collective counter.
    pub seq: u64,
    /// The buffer length the sender called the collective with.
    pub count: u64,
    /// The values carried (empty for a barrier or a non-root's broadcast part).
    pub values: Vec<f32>,
}

/// What a link's reader thread reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// A Data frame arrived.
    Data(DataMsg),
    /// The peer said Bye: it closed its collective in an orderly way.
    Left,
    /// The peer failed, went silent, aborted or broke the protocol; the link is dead.
    Failed(DistError),
}

/// One frame as read from the socket.
pub(crate) struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

/// Writes one frame made of `parts` concatenated.
pub(crate) fn write_frame(w: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut header = [0u8; 9];
    header[0] = kind as u8;
    header[1..].copy_from_slice(&(len as u64).to_le_bytes());
    w.write_all(&header)?;
    for p in parts {
        w.write_all(p)?;
    }
    w.flush()
}

/// Reads one frame; an unknown kind or an absurd length is `InvalidData`.
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut header = [0u8; 9];
    r.read_exact(&mut header)?;
    let kind = Kind::from_u8(header[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", header[0]),
        )
    })?;
    let len = u64::from_le_bytes(header[1..].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the {MAX_PAYLOAD}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Frame { kind, payload })
}

/// Encodes a Hello payload.
pub(crate) fn hello_payload(rank: usize, world_size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&(rank as u64).to_le_bytes());
    p.extend_from_slice(&(world_size as u64).to_le_bytes());
    p
}

/// A decoded Hello: `None` when the magic is wrong (not one of ours).
pub(crate) fn parse_hello(p: &[u8]) -> Option<(u32, usize, usize)> {
    if p.len() != 28 || &p[..8] != MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(p[8..12].try_into().ok()?);
    let rank = u64::from_le_bytes(p[12..20].try_into().ok()?);
    let world = u64::from_le_bytes(p[20..28].try_into().ok()?);
    Some((
        version,
        usize::try_from(rank).ok()?,
        usize::try_from(world).ok()?,
    ))
}

fn encode_data(op: Op, seq: u64, count: usize, values: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let (tag, root) = op.encode();
    let mut head = Vec::with_capacity(DATA_HEADER);
    head.push(tag);
    head.extend_from_slice(&root.to_le_bytes());
    head.extend_from_slice(&seq.to_le_bytes());
    head.extend_from_slice(&(count as u64).to_le_bytes());
    let mut body = Vec::with_capacity(values.len() * 4);
    for v in values {
        body.extend_from_slice(&v.to_le_bytes());
    }
    (head, body)
}

fn decode_data(p: &[u8]) -> Option<DataMsg> {
    if p.len() < DATA_HEADER || !(p.len() - DATA_HEADER).is_multiple_of(4) {
        return None;
    }
    let op = Op::decode(p[0], u64::from_le_bytes(p[1..9].try_into().ok()?))?;
    let seq = u64::from_le_bytes(p[9..17].try_into().ok()?);
    let count = u64::from_le_bytes(p[17..25].try_into().ok()?);
    let values = p[DATA_HEADER..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(DataMsg {
        op,
        seq,
        count,
        values,
    })
}

/// A live connection to one peer: the writing half (shared with the heartbeat thread), the reader
/// thread feeding the shared event channel, and the heartbeat thread.
pub(crate) struct Link {
    /// The peer's rank.
    pub rank: usize,
    writer: Arc<Mutex<TcpStream>>,
    _stop_heartbeat: Sender<()>,
}

impl Link {
    /// Starts the reader and heartbeat threads of an established connection to `rank`.
    pub(crate) fn start(
        rank: usize,
        stream: TcpStream,
        heartbeat: Duration,
        peer_timeout: Duration,
        events: Sender<(usize, Event)>,
    ) -> Result<Self, DistError> {
        let ctx = |what: &str| format!("connection to rank {rank}: {what}");
        stream
            .set_nodelay(true)
            .map_err(|e| DistError::io(ctx("set_nodelay"), e))?;
        stream
            .set_read_timeout(Some(peer_timeout))
            .map_err(|e| DistError::io(ctx("set_read_timeout"), e))?;
        stream
            .set_write_timeout(Some(peer_timeout))
            .map_err(|e| DistError::io(ctx("set_write_timeout"), e))?;
        let reader = stream
            .try_clone()
            .map_err(|e| DistError::io(ctx("try_clone"), e))?;
        std::thread::Builder::new()
            .name(format!("ddpm-dist-read-{rank}"))
            .spawn(move || read_loop(rank, reader, peer_timeout, events))
            .map_err(|e| DistError::io(ctx("spawning the reader thread"), e))?;
        let writer = Arc::new(Mutex::new(stream));
        let (stop, stopped) = mpsc::channel::<()>();
        let hb_writer = Arc::clone(&writer);
        std::thread::Builder::new()
            .name(format!("ddpm-dist-beat-{rank}"))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(heartbeat) {
                    if write_frame(&mut *lock(&hb_writer), Kind::Heartbeat, &[]).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| DistError::io(ctx("spawning the heartbeat thread"), e))?;
        Ok(Self {
            rank,
            writer,
            _stop_heartbeat: stop,
        })
    }

    /// Sends this rank's part of a collective.
    pub(crate) fn send_data(
        &self,
        op: Op,
        seq: u64,
        count: usize,
        values: &[f32],
    ) -> Result<(), DistError> {
        let (head, body) = encode_data(op, seq, count, values);
        write_frame(&mut *lock(&self.writer), Kind::Data, &[&head, &body]).map_err(|e| {
            DistError::PeerLost {
                rank: self.rank,
                detail: format!("sending {} floats failed: {e}", values.len()),
            }
        })
    }

    /// Tells the peer why this rank gives up (best effort).
    pub(crate) fn send_abort(&self, reason: &str) {
        let _ = write_frame(&mut *lock(&self.writer), Kind::Abort, &[reason.as_bytes()]);
    }

    /// A handle on the writing half, for a watchdog that must abort without owning the link.
    #[cfg(feature = "nccl")]
    pub(crate) fn writer(&self) -> Arc<Mutex<TcpStream>> {
        Arc::clone(&self.writer)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let stream = lock(&self.writer);
        let _ = write_frame(&mut &*stream, Kind::Bye, &[]);
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Locks a writer, ignoring poisoning (a panicked writer leaves at worst a torn frame, which the
/// peer reports as a protocol error).
pub(crate) fn lock(m: &Mutex<TcpStream>) -> MutexGuard<'_, TcpStream> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes an Abort frame through a shared writer (best effort).
#[cfg(feature = "nccl")]
pub(crate) fn abort_through(writer: &Mutex<TcpStream>, reason: &str) {
    let _ = write_frame(&mut *lock(writer), Kind::Abort, &[reason.as_bytes()]);
}

fn read_loop(
    rank: usize,
    mut stream: TcpStream,
    peer_timeout: Duration,
    events: Sender<(usize, Event)>,
) {
    loop {
        let event = match read_frame(&mut stream) {
            Ok(Frame {
                kind: Kind::Heartbeat,
                ..
            }) => continue,
            Ok(Frame {
                kind: Kind::Data,
                payload,
            }) => match decode_data(&payload) {
                Some(msg) => Event::Data(msg),
                None => Event::Failed(DistError::Protocol {
                    rank,
                    detail: format!("malformed data frame of {} bytes", payload.len()),
                }),
            },
            Ok(Frame {
                kind: Kind::Abort,
                payload,
            }) => Event::Failed(DistError::Aborted {
                rank,
                reason: String::from_utf8_lossy(&payload).into_owned(),
            }),
            Ok(Frame {
                kind: Kind::Bye, ..
            }) => Event::Left,
            Ok(Frame { kind, .. }) => Event::Failed(DistError::Protocol {
                rank,
                detail: format!("unexpected {kind:?} frame after the rendezvous"),
            }),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Event::Failed(DistError::PeerSilent {
                    rank,
                    after: peer_timeout,
                })
            }
            Err(e) => Event::Failed(DistError::PeerLost {
                rank,
                detail: match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        "connection closed (process exited or was killed)".to_string()
                    }
                    _ => format!("connection error: {e}"),
                },
            }),
        };
        let last = !matches!(event, Event::Data(_));
        if events.send((rank, event)).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_round_trip() {
        let values = [1.5f32, -0.0, f32::MAX, 3.25e-8];
        let (head, body) = encode_data(Op::Broadcast(3), 42, 4, &values);
        let mut bytes = Vec::new();
        write_frame(&mut bytes, Kind::Data, &[&head, &body]).unwrap();
        let frame = read_frame(&mut bytes.as_slice()).unwrap();
        assert_eq!(frame.kind, Kind::Data);
        let msg = decode_data(&frame.payload).unwrap();
        assert_eq!((msg.op, msg.seq, msg.count), (Op::Broadcast(3), 42, 4));
        assert_eq!(
            msg.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn hello_round_trips_and_rejects_foreign_bytes() {
        assert_eq!(parse_hello(&hello_payload(3, 8)), Some((VERSION, 3, 8)));
        assert_eq!(parse_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n."), None);
    }

    #[test]
    fn absurd_lengths_and_kinds_are_rejected() {
        let mut bytes = vec![Kind::Data as u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let e = read_frame(&mut bytes.as_slice()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = read_frame(&mut [99u8, 0, 0, 0, 0, 0, 0, 0, 0].as_slice())
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown frame kind 99"), "{e}");
    }
}
