//! The TCP rendezvous: rank 0 listens on `MASTER_ADDR:MASTER_PORT`, every other rank connects and
//! says Hello; once all have joined rank 0 answers each with a Welcome that carries the backend's
//! payload (the NCCL unique id, or nothing). The connections stay open afterwards: they carry the
//! CPU backend's data and every backend's heartbeats.

use crate::error::{DistError, Result};
use crate::wire::{self, Event, Frame, Kind, Link};
use crate::world::{Timeouts, WorldInfo};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A completed rendezvous.
pub(crate) struct Joined {
    /// On rank 0 the links to ranks `1..world_size`, in rank order; elsewhere the link to rank 0.
    pub links: Vec<Link>,
    /// Events of all links.
    pub events: Receiver<(usize, Event)>,
    /// The backend payload made by rank 0 (empty for TCP, the NCCL id for NCCL).
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub payload: Vec<u8>,
}

/// Runs the rendezvous; `make_payload` runs on rank 0 only.
pub(crate) fn join(
    world: &WorldInfo,
    timeouts: &Timeouts,
    make_payload: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Joined> {
    world.validate()?;
    timeouts.validate()?;
    let (tx, events) = mpsc::channel();
    if world.world_size == 1 {
        return Ok(Joined {
            links: Vec::new(),
            events,
            payload: make_payload()?,
        });
    }
    if world.master_port == 0 {
        return Err(DistError::World(
            "MASTER_PORT is 0: the other ranks cannot find rank 0".into(),
        ));
    }
    let (streams, payload) = if world.rank == 0 {
        let payload = make_payload()?;
        (host(world, timeouts, &payload)?, payload)
    } else {
        let (stream, payload) = visit(world, timeouts)?;
        (vec![(0, stream)], payload)
    };
    let links = streams
        .into_iter()
        .map(|(rank, s)| Link::start(rank, s, timeouts.heartbeat, timeouts.peer, tx.clone()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Joined {
        links,
        events,
        payload,
    })
}

fn resolve(world: &WorldInfo) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (world.master_addr.as_str(), world.master_port)
        .to_socket_addrs()
        .map_err(|e| DistError::io(format!("resolving MASTER_ADDR {}", world.master()), e))?
        .collect();
    if addrs.is_empty() {
        return Err(DistError::World(format!(
            "MASTER_ADDR {} resolves to no address",
            world.master()
        )));
    }
    Ok(addrs)
}

/// Rank 0: accepts `world_size - 1` valid Hellos, then welcomes everyone.
fn host(world: &WorldInfo, t: &Timeouts, payload: &[u8]) -> Result<Vec<(usize, TcpStream)>> {
    let target = resolve(world)?[0];
    // A loopback master stays private to this machine; otherwise listen on every interface, as
    // the master's name may resolve to an address other ranks cannot reach (e.g. 127.0.1.1).
    let bind = if target.ip().is_loopback() {
        target
    } else if target.is_ipv4() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), target.port())
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), target.port())
    };
    let listener = TcpListener::bind(bind)
        .map_err(|e| DistError::io(format!("rank 0: listening on {bind}"), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| DistError::io("rank 0: set_nonblocking", e))?;
    let deadline = Instant::now() + t.connect;
    let mut joined: Vec<Option<TcpStream>> = (0..world.world_size).map(|_| None).collect();
    let mut missing = world.world_size - 1;
    while missing > 0 {
        match listener.accept() {
            Ok((stream, from)) => {
                if let Some((rank, stream)) = greet(stream, from, world, deadline)? {
                    if joined[rank].is_some() {
                        let reason = format!("rank {rank} joined twice (second time from {from})");
                        wire::write_frame(&mut &stream, Kind::Abort, &[reason.as_bytes()]).ok();
                        return Err(DistError::Protocol {
                            rank,
                            detail: reason,
                        });
                    }
                    joined[rank] = Some(stream);
                    missing -= 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let absent: Vec<String> = (1..world.world_size)
                        .filter(|&r| joined[r].is_none())
                        .map(|r| r.to_string())
                        .collect();
                    return Err(DistError::RendezvousTimeout {
                        addr: world.master(),
                        after: t.connect,
                        detail: format!("ranks {} never connected", absent.join(", ")),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(DistError::io("rank 0: accepting a connection", e)),
        }
    }
    let mut out = Vec::with_capacity(world.world_size - 1);
    for (rank, stream) in joined.into_iter().enumerate().skip(1) {
        let stream = stream.expect("every rank joined");
        wire::write_frame(&mut &stream, Kind::Welcome, &[payload])
            .map_err(|e| DistError::io(format!("rank 0: welcoming rank {rank}"), e))?;
        out.push((rank, stream));
    }
    Ok(out)
}

/// Reads the Hello of a fresh connection. Foreign connections (wrong magic, silence) are dropped
/// and yield `None`; a Hello from a differently configured rank is an error.
fn greet(
    stream: TcpStream,
    from: SocketAddr,
    world: &WorldInfo,
    deadline: Instant,
) -> Result<Option<(usize, TcpStream)>> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let setup = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(wait)));
    if setup.is_err() {
        return Ok(None);
    }
    let Ok(Frame {
        kind: Kind::Hello,
        payload,
    }) = wire::read_frame(&mut &stream)
    else {
        return Ok(None);
    };
    let Some((version, rank, size)) = wire::parse_hello(&payload) else {
        return Ok(None);
    };
    let problem = if version != wire::VERSION {
        Some(format!(
            "protocol version {version} from {from}, rank 0 speaks {}",
            wire::VERSION
        ))
    } else if size != world.world_size {
        Some(format!(
            "rank {rank} at {from} believes the world has {size} ranks, rank 0 says {}",
            world.world_size
        ))
    } else if rank == 0 || rank >= size {
        Some(format!("a process at {from} claims rank {rank} of {size}"))
    } else {
        None
    };
    if let Some(detail) = problem {
        wire::write_frame(&mut &stream, Kind::Abort, &[detail.as_bytes()]).ok();
        return Err(DistError::Protocol { rank, detail });
    }
    Ok(Some((rank, stream)))
}

/// Ranks other than 0: connects (retrying until the deadline), says Hello, awaits the Welcome.
fn visit(world: &WorldInfo, t: &Timeouts) -> Result<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + t.connect;
    let timeout = |detail: String| DistError::RendezvousTimeout {
        addr: world.master(),
        after: t.connect,
        detail,
    };
    let stream = connect_until(world, deadline)
        .map_err(|e| timeout(format!("could not connect to rank 0 (last error: {e})")))?;
    let me = world.rank;
    let hello = wire::hello_payload(me, world.world_size);
    wire::write_frame(&mut &stream, Kind::Hello, &[&hello])
        .map_err(|e| DistError::io(format!("rank {me}: saying hello to rank 0"), e))?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| DistError::io(format!("rank {me}: set_read_timeout"), e))?;
    match wire::read_frame(&mut &stream) {
        Ok(Frame {
            kind: Kind::Welcome,
            payload,
        }) => Ok((stream, payload)),
        Ok(Frame {
            kind: Kind::Abort,
            payload,
        }) => Err(DistError::Aborted {
            rank: 0,
            reason: String::from_utf8_lossy(&payload).into_owned(),
        }),
        Ok(Frame { kind, .. }) => Err(DistError::Protocol {
            rank: 0,
            detail: format!("expected Welcome, got {kind:?}"),
        }),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(timeout(
            "connected to rank 0, but not every rank joined in time".into(),
        )),
        Err(e) => Err(DistError::PeerLost {
            rank: 0,
            detail: format!("connection closed during the rendezvous: {e}"),
        }),
    }
}

/// Connects to rank 0, retrying refused connections (rank 0 may not listen yet) until `deadline`.
fn connect_until(world: &WorldInfo, deadline: Instant) -> io::Result<TcpStream> {
    loop {
        let mut last = io::Error::new(ErrorKind::NotFound, "no address to try");
        let addrs = (world.master_addr.as_str(), world.master_port).to_socket_addrs();
        for addr in addrs.into_iter().flatten() {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = left.clamp(Duration::from_millis(10), Duration::from_secs(2));
            match TcpStream::connect_timeout(&addr, attempt) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
