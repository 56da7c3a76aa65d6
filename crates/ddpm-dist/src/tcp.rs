//! The CPU backend: collectives over TCP in a star around rank 0.
//!
//! Every collective is "gather to rank 0, combine, send the result back". Rank 0 sums the buffers
//! in rank order (0, 1, 2, ...) and every rank receives rank 0's bytes, so the results are
//! deterministic and bit-identical on all ranks.

use crate::collective::{Collective, ReduceOp};
use crate::error::{DistError, Result};
use crate::rendezvous;
use crate::wire::{DataMsg, Event, Link, Op};
use crate::world::{Timeouts, WorldInfo};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Collectives among processes (or threads) over TCP; used for CPU training and by tests.
pub struct TcpCollective {
    rank: usize,
    world_size: usize,
    links: Vec<Link>,
    events: Receiver<(usize, Event)>,
    seq: u64,
    /// Longest wait for the next event: readers report a dead peer within the peer timeout, this
    /// only guards against a reader thread that vanished.
    patience: Duration,
    /// The first error; afterwards every call fails with its text.
    broken: Option<String>,
}

impl TcpCollective {
    /// Joins the world: rank 0 listens on the master address, the others connect to it.
    pub fn connect(world: &WorldInfo, timeouts: &Timeouts) -> Result<Self> {
        let joined = rendezvous::join(world, timeouts, || Ok(Vec::new()))?;
        Ok(Self {
            rank: world.rank,
            world_size: world.world_size,
            links: joined.links,
            events: joined.events,
            seq: 0,
            patience: timeouts.peer * 2,
            broken: None,
        })
    }

    /// Runs one collective on `buf`, poisoning the collective and telling the peers on failure.
    fn run(&mut self, op: Op, buf: &mut [f32]) -> Result<()> {
        if let Some(reason) = &self.broken {
            return Err(DistError::Aborted {
                rank: self.rank,
                reason: format!("this collective already failed: {reason}"),
            });
        }
        if let Op::Broadcast(root) = op
            && root >= self.world_size
        {
            return Err(DistError::Mismatch(format!(
                "broadcast root {root} is not a rank of a world of {}",
                self.world_size
            )));
        }
        let seq = self.seq;
        self.seq += 1;
        let result = if self.rank == 0 {
            self.hub(op, seq, buf)
        } else {
            self.spoke(op, seq, buf)
        };
        if let Err(e) = &result {
            let reason = format!("rank {}: {e}", self.rank);
            for link in &self.links {
                link.send_abort(&reason);
            }
            self.broken = Some(e.to_string());
        }
        result
    }

    fn next_event(&self) -> Result<(usize, Event)> {
        self.events
            .recv_timeout(self.patience)
            .map_err(|e| DistError::Stalled {
                after: self.patience,
                detail: match e {
                    RecvTimeoutError::Timeout => "no message and no failure report",
                    RecvTimeoutError::Disconnected => "every connection is closed",
                },
            })
    }

    /// Rank 0: gathers every rank's part, combines in rank order, sends the result back.
    fn hub(&mut self, op: Op, seq: u64, buf: &mut [f32]) -> Result<()> {
        let mut parts: Vec<Option<Vec<f32>>> = (0..self.world_size).map(|_| None).collect();
        let mut missing = self.world_size - 1;
        while missing > 0 {
            let (rank, event) = self.next_event()?;
            let msg = expect_data(rank, event)?;
            check(&msg, rank, op, seq, buf.len(), self.carries(op, rank))?;
            if parts[rank].replace(msg.values).is_some() {
                return Err(DistError::Protocol {
                    rank,
                    detail: format!("sent collective #{seq} twice"),
                });
            }
            missing -= 1;
        }
        match op {
            Op::Sum | Op::Mean => {
                for part in parts.iter().skip(1).flatten() {
                    for (acc, v) in buf.iter_mut().zip(part) {
                        *acc += v;
                    }
                }
                if op == Op::Mean {
                    let n = self.world_size as f32;
                    buf.iter_mut().for_each(|v| *v /= n);
                }
            }
            Op::Broadcast(root) if root != 0 => {
                buf.copy_from_slice(parts[root].as_deref().expect("root's part arrived"));
            }
            Op::Broadcast(_) | Op::Barrier => {}
        }
        let reply: &[f32] = if op == Op::Barrier { &[] } else { buf };
        for link in &self.links {
            link.send_data(op, seq, buf.len(), reply)?;
        }
        Ok(())
    }

    /// Other ranks: send this rank's part, wait for rank 0's result.
    fn spoke(&mut self, op: Op, seq: u64, buf: &mut [f32]) -> Result<()> {
        let mine: &[f32] = if self.carries(op, self.rank) {
            buf
        } else {
            &[]
        };
        self.links[0].send_data(op, seq, buf.len(), mine)?;
        let (rank, event) = self.next_event()?;
        let msg = expect_data(rank, event)?;
        check(&msg, rank, op, seq, buf.len(), op != Op::Barrier)?;
        if op != Op::Barrier {
            buf.copy_from_slice(&msg.values);
        }
        Ok(())
    }

    /// Whether `rank`'s message for `op` carries its buffer.
    fn carries(&self, op: Op, rank: usize) -> bool {
        match op {
            Op::Sum | Op::Mean => true,
            Op::Broadcast(root) => root == rank,
            Op::Barrier => false,
        }
    }
}

fn expect_data(rank: usize, event: Event) -> Result<DataMsg> {
    match event {
        Event::Data(msg) => Ok(msg),
        Event::Left => Err(DistError::PeerLost {
            rank,
            detail: "it closed its collective (finished or returned early) while this rank still communicates".into(),
        }),
        Event::Failed(e) => Err(e),
    }
}

/// Checks that a peer's message belongs to the same collective call as ours.
fn check(
    msg: &DataMsg,
    rank: usize,
    op: Op,
    seq: u64,
    len: usize,
    with_values: bool,
) -> Result<()> {
    if msg.op != op || msg.seq != seq || msg.count != len as u64 {
        return Err(DistError::Mismatch(format!(
            "rank {rank} is in collective #{} {:?} of {} floats, this rank in #{seq} {op:?} of {len} floats",
            msg.seq, msg.op, msg.count
        )));
    }
    let expected = if with_values { len } else { 0 };
    if msg.values.len() != expected {
        return Err(DistError::Protocol {
            rank,
            detail: format!(
                "collective #{seq} carried {} floats, expected {expected}",
                msg.values.len()
            ),
        });
    }
    Ok(())
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn backend(&self) -> &'static str {
        "tcp"
    }

    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let op = match op {
            ReduceOp::Sum => Op::Sum,
            ReduceOp::Mean => Op::Mean,
        };
        self.run(op, buf)
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        self.run(Op::Broadcast(root), buf)
    }

    fn barrier(&mut self) -> Result<()> {
        self.run(Op::Barrier, &mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Kind};
    use std::net::TcpStream;
    use std::time::Instant;

    /// A peer that joins and then sends nothing, not even heartbeats (a frozen or unplugged
    /// machine: its connection never closes), is declared dead after the peer timeout.
    #[test]
    fn a_silent_peer_is_declared_dead_after_the_peer_timeout() {
        let port = crate::free_port().unwrap();
        let t = Timeouts {
            connect: Duration::from_secs(10),
            heartbeat: Duration::from_millis(100),
            peer: Duration::from_millis(600),
        };
        let world = WorldInfo {
            rank: 0,
            world_size: 2,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        };
        let master = std::thread::spawn(move || {
            let mut c = TcpCollective::connect(&world, &t).unwrap();
            let start = Instant::now();
            let e = c.all_reduce(&mut [1.0], ReduceOp::Sum).unwrap_err();
            (e, start.elapsed())
        });
        let frozen = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        wire::write_frame(&mut &frozen, Kind::Hello, &[&wire::hello_payload(1, 2)]).unwrap();
        let welcome = wire::read_frame(&mut &frozen).unwrap();
        assert_eq!(welcome.kind, Kind::Welcome);
        let (e, waited) = master.join().unwrap();
        assert!(matches!(e, DistError::PeerSilent { rank: 1, .. }), "{e}");
        assert!(waited < Duration::from_secs(3), "noticed after {waited:?}");
        drop(frozen);
    }
}
