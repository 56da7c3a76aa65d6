//! The torchrun-style description of a data-parallel world, and the timeouts that bound every wait.

use crate::error::{DistError, Result};
use std::time::Duration;

/// Environment variable holding this process's global rank (torchrun's name).
pub const ENV_RANK: &str = "RANK";
/// Environment variable holding the number of ranks (torchrun's name).
pub const ENV_WORLD_SIZE: &str = "WORLD_SIZE";
/// Environment variable holding this process's rank on its machine, i.e. its GPU ordinal.
pub const ENV_LOCAL_RANK: &str = "LOCAL_RANK";
/// Environment variable holding the host of rank 0's rendezvous listener.
pub const ENV_MASTER_ADDR: &str = "MASTER_ADDR";
/// Environment variable holding the port of rank 0's rendezvous listener.
pub const ENV_MASTER_PORT: &str = "MASTER_PORT";
/// Optional: seconds to wait for all ranks to join the rendezvous (default 120).
pub const ENV_CONNECT_TIMEOUT: &str = "DDPM_DIST_CONNECT_TIMEOUT_S";
/// Optional: seconds of silence (no data, no heartbeat) after which a peer is presumed dead (default 30).
pub const ENV_PEER_TIMEOUT: &str = "DDPM_DIST_PEER_TIMEOUT_S";

/// Where this process sits in the data-parallel world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldInfo {
    /// Global rank, `0..world_size`; rank 0 hosts the rendezvous.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this machine: the CUDA ordinal this rank should use.
    pub local_rank: usize,
    /// Host (name or IP) of rank 0's rendezvous listener.
    pub master_addr: String,
    /// Port of rank 0's rendezvous listener.
    pub master_port: u16,
}

impl WorldInfo {
    /// A world of one process: rank 0 of 1, nothing to connect to.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".to_string(),
            master_port: 0,
        }
    }

    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`.
    ///
    /// When none of `RANK` and `WORLD_SIZE` is set this is a single-process run and the answer is
    /// [`WorldInfo::single`]. Otherwise `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` are all
    /// required; `LOCAL_RANK` defaults to `RANK` (one machine).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// True when `RANK` or `WORLD_SIZE` is set: this process is a rank of a launched world (even a
    /// world of one) and must not launch ranks itself.
    pub fn env_present() -> bool {
        std::env::var_os(ENV_RANK).is_some() || std::env::var_os(ENV_WORLD_SIZE).is_some()
    }

    /// [`WorldInfo::from_env`] over any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if get(ENV_RANK).is_none() && get(ENV_WORLD_SIZE).is_none() {
            return Ok(Self::single());
        }
        let required = |var: &'static str| {
            get(var).ok_or(DistError::Env {
                var,
                problem: format!(
                    "not set (a distributed run needs {ENV_RANK}, {ENV_WORLD_SIZE}, {ENV_MASTER_ADDR} and {ENV_MASTER_PORT})"
                ),
            })
        };
        let rank = parse_var(ENV_RANK, &required(ENV_RANK)?)?;
        let world_size = parse_var(ENV_WORLD_SIZE, &required(ENV_WORLD_SIZE)?)?;
        let local_rank = match get(ENV_LOCAL_RANK) {
            Some(v) => parse_var(ENV_LOCAL_RANK, &v)?,
            None => rank,
        };
        let master_addr = required(ENV_MASTER_ADDR)?;
        let master_port = parse_var(ENV_MASTER_PORT, &required(ENV_MASTER_PORT)?)?;
        let world = Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        };
        world.validate()?;
        Ok(world)
    }

    /// Checks that the rank lies in the world and that a multi-rank world has a master.
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(DistError::World("world size is 0".into()));
        }
        if self.rank >= self.world_size {
            return Err(DistError::World(format!(
                "rank {} is not below the world size {}",
                self.rank, self.world_size
            )));
        }
        if self.world_size > 1 && self.master_addr.trim().is_empty() {
            return Err(DistError::World("master address is empty".into()));
        }
        Ok(())
    }

    /// True when there is more than one rank.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// True on rank 0, the rank that logs, writes checkpoints and hosts the rendezvous.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// `master_addr:master_port`, as used in messages.
    pub fn master(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }
}

fn parse_var<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| DistError::Env {
        var,
        problem: format!("{value:?} does not parse: {e}"),
    })
}

/// The bounds on every wait of the TCP rendezvous and the peer-liveness checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long the rendezvous waits for all ranks to join.
    pub connect: Duration,
    /// How often each side sends a heartbeat on an otherwise idle connection.
    pub heartbeat: Duration,
    /// Silence (no data, no heartbeat) after which a peer is presumed dead.
    pub peer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(120),
            heartbeat: Duration::from_secs(1),
            peer: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The defaults, with `DDPM_DIST_CONNECT_TIMEOUT_S` and `DDPM_DIST_PEER_TIMEOUT_S` applied.
    pub fn from_env() -> Result<Self> {
        let mut t = Self::default();
        if let Ok(v) = std::env::var(ENV_CONNECT_TIMEOUT) {
            t.connect = Duration::from_secs_f64(parse_var::<f64>(ENV_CONNECT_TIMEOUT, &v)?);
        }
        if let Ok(v) = std::env::var(ENV_PEER_TIMEOUT) {
            t.peer = Duration::from_secs_f64(parse_var::<f64>(ENV_PEER_TIMEOUT, &v)?);
        }
        t.validate()?;
        Ok(t)
    }

    /// Checks that the peer timeout leaves room for several heartbeats.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat.is_zero() || self.peer < self.heartbeat * 2 {
            return Err(DistError::World(format!(
                "peer timeout {:?} must be at least twice the heartbeat interval {:?} (and both non-zero)",
                self.peer, self.heartbeat
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn unset_environment_is_a_single_process() {
        assert_eq!(
            WorldInfo::from_lookup(lookup(&[])).unwrap(),
            WorldInfo::single()
        );
    }

    #[test]
    fn full_environment_parses_and_local_rank_defaults_to_rank() {
        let w = WorldInfo::from_lookup(lookup(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank), (2, 4, 2));
        assert_eq!(w.master(), "10.0.0.1:29500");
    }

    #[test]
    fn partial_or_invalid_environment_names_the_variable() {
        let e = WorldInfo::from_lookup(lookup(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("MASTER_ADDR"), "{e}");
        let e = WorldInfo::from_lookup(lookup(&[
            ("RANK", "x"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = WorldInfo::from_lookup(lookup(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("not below"), "{e}");
    }
}
