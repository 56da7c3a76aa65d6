//! The single-machine launcher: spawns one process per rank with the torchrun environment and
//! supervises them. When a rank fails, the others get a grace period to exit on their own (they
//! notice the lost peer within seconds), then they are killed; the error names the rank that failed
//! first, its exit status and the tail of its stderr.

use crate::world::{ENV_LOCAL_RANK, ENV_MASTER_ADDR, ENV_MASTER_PORT, ENV_RANK, ENV_WORLD_SIZE};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of each rank's stderr kept for the failure report.
pub const STDERR_TAIL_LINES: usize = 30;
/// How long the other ranks may take to exit on their own after a rank failed.
pub const GRACE: Duration = Duration::from_secs(5);

/// How a launch went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `launch` was asked for zero ranks.
    #[error("launch needs at least one rank")]
    NoRanks,
    /// No ephemeral port could be reserved for the rendezvous.
    #[error("reserving a rendezvous port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    /// A child could not be started (the ranks already started were killed).
    #[error("starting rank {rank} ({program}): {source}")]
    Spawn {
        /// The rank that did not start.
        rank: usize,
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Polling a child failed (the others were killed).
    #[error("waiting for rank {rank}: {source}")]
    Wait {
        /// The rank.
        rank: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A rank exited unsuccessfully.
    #[error("{0}")]
    RankFailed(Box<RankFailure>),
}

/// The report on a failed launch.
#[derive(Debug)]
pub struct RankFailure {
    /// The rank that failed first.
    pub rank: usize,
    /// Number of ranks launched.
    pub world_size: usize,
    /// Its exit status.
    pub status: ExitStatus,
    /// The last lines of its stderr (at most [`STDERR_TAIL_LINES`]).
    pub stderr_tail: Vec<String>,
    /// How every other rank ended: `(rank, status, killed by the launcher)`.
    pub others: Vec<(usize, ExitStatus, bool)>,
}

impl fmt::Display for RankFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rank {} of {} failed first ({})",
            self.rank, self.world_size, self.status
        )?;
        if !self.others.is_empty() {
            let others: Vec<String> = self
                .others
                .iter()
                .map(|(r, s, killed)| {
                    if *killed {
                        format!("rank {r} killed by the launcher")
                    } else {
                        format!("rank {r} {s}")
                    }
                })
                .collect();
            write!(f, "; then {}", others.join(", "))?;
        }
        if self.stderr_tail.is_empty() {
            write!(f, "; rank {} wrote nothing to stderr", self.rank)
        } else {
            write!(f, "; last stderr lines of rank {}:", self.rank)?;
            for line in &self.stderr_tail {
                write!(f, "\n    {line}")?;
            }
            Ok(())
        }
    }
}

/// Reserves a free TCP port on 127.0.0.1 (bound, read, released: another process could take it
/// before rank 0 binds it, which then fails loudly rather than hangs).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Spawns `n` copies of `program args...` as ranks `0..n` on this machine and waits for all.
///
/// Each child gets `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (= rank: its GPU ordinal), `MASTER_ADDR`
/// (`127.0.0.1`) and `MASTER_PORT` (a free port), plus `env`. Children inherit stdout; their
/// stderr is forwarded line by line with a `[rank i]` prefix. On Linux a child is killed if the
/// launcher dies. Returns `Ok` when every rank exits successfully.
pub fn launch(
    n: usize,
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
) -> Result<(), LaunchError> {
    if n == 0 {
        return Err(LaunchError::NoRanks);
    }
    let port = free_port().map_err(LaunchError::Port)?;
    let mut ranks: Vec<Rank> = Vec::with_capacity(n);
    let (exit_tx, exits) = mpsc::channel();
    for rank in 0..n {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(ENV_RANK, rank.to_string())
            .env(ENV_WORLD_SIZE, n.to_string())
            .env(ENV_LOCAL_RANK, rank.to_string())
            .env(ENV_MASTER_ADDR, "127.0.0.1")
            .env(ENV_MASTER_PORT, port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(child) => ranks.push(Rank::start(rank, child, exit_tx.clone())),
            Err(source) => {
                kill_and_reap(&mut ranks, &exits);
                return Err(LaunchError::Spawn {
                    rank,
                    program: program.display().to_string(),
                    source,
                });
            }
        }
    }
    drop(exit_tx);
    supervise(ranks, exits)
}

/// One supervised child; a waiter thread owns the `Child` and reports its exit.
struct Rank {
    rank: usize,
    pid: u32,
    /// Exit status and when the waiter saw it.
    ended: Option<(ExitStatus, Instant)>,
    killed: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
    forwarded: Receiver<()>,
}

/// What a waiter thread reports.
type Exit = (usize, std::io::Result<ExitStatus>, Instant);

impl Rank {
    fn start(rank: usize, mut child: Child, exits: Sender<Exit>) -> Self {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done, forwarded) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                forward(rank, BufReader::new(stderr), &tail);
                let _ = done.send(());
            });
        }
        let pid = child.id();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = exits.send((rank, status, Instant::now()));
        });
        Self {
            rank,
            pid,
            ended: None,
            killed: false,
            tail,
            forwarded,
        }
    }

    /// SIGKILL, if the child has not been seen to exit (its pid cannot have been reused: the
    /// waiter reaps it only after it exits, and reports that right away).
    fn kill(&mut self) {
        if self.ended.is_none() && !self.killed {
            // SAFETY: plain kill(2) on our own child's pid.
            self.killed = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) } == 0;
        }
    }
}

/// Copies a child's stderr lines to ours with a rank prefix, keeping the last few.
fn forward(rank: usize, mut reader: impl BufRead, tail: &Mutex<VecDeque<String>>) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                let _ = writeln!(std::io::stderr().lock(), "[rank {rank}] {text}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
        }
    }
}

/// Kills the running ranks and waits for the waiter threads to report them.
fn kill_and_reap(ranks: &mut [Rank], exits: &Receiver<Exit>) {
    ranks.iter_mut().for_each(Rank::kill);
    while ranks.iter().any(|r| r.ended.is_none()) {
        match exits.recv() {
            Ok((i, status, at)) => {
                // A wait error after SIGKILL leaves nothing to report: count it as killed.
                let status = status.unwrap_or_else(|_| killed_status());
                ranks[i].ended = Some((status, at));
            }
            Err(_) => return,
        }
    }
}

#[cfg(unix)]
fn killed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(libc::SIGKILL)
}

fn supervise(mut ranks: Vec<Rank>, exits: Receiver<Exit>) -> Result<(), LaunchError> {
    let mut kill_at: Option<Instant> = None;
    while ranks.iter().any(|r| r.ended.is_none()) {
        let wait = kill_at.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        match exits.recv_timeout(wait) {
            Ok((i, Ok(status), at)) => {
                ranks[i].ended = Some((status, at));
                if !status.success() && kill_at.is_none() {
                    kill_at = Some(Instant::now() + GRACE);
                }
            }
            Ok((i, Err(source), _)) => {
                kill_and_reap(&mut ranks, &exits);
                return Err(LaunchError::Wait { rank: i, source });
            }
            Err(RecvTimeoutError::Timeout) => kill_and_reap(&mut ranks, &exits),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let failed = ranks.iter().filter_map(|r| match r.ended {
        Some((status, at)) if !status.success() && !r.killed => Some((r.rank, status, at)),
        _ => None,
    });
    // The cause is the first rank to fail of its own accord; ranks that only lost a peer exit
    // with EXIT_PEER_LOST and are blamed only if no other rank failed.
    let Some((failed, _, _)) =
        failed.min_by_key(|&(_, status, at)| (status.code() == Some(crate::EXIT_PEER_LOST), at))
    else {
        return Ok(());
    };
    // The stderr pipe closes when the child exits; wait briefly so the tail is complete.
    let _ = ranks[failed].forwarded.recv_timeout(Duration::from_secs(2));
    let r = &ranks[failed];
    let stderr_tail = r
        .tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let others = ranks
        .iter()
        .filter(|o| o.rank != r.rank)
        .map(|o| (o.rank, o.ended.expect("every rank was reaped").0, o.killed))
        .collect();
    Err(LaunchError::RankFailed(Box::new(RankFailure {
        rank: r.rank,
        world_size: ranks.len(),
        status: r.ended.expect("the failed rank was reaped").0,
        stderr_tail,
        others,
    })))
}

/// Linux: the child gets SIGKILL when the launcher thread that spawned it dies, so an
/// interrupted launcher leaves no orphaned ranks behind.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls the async-signal-safe
    // functions prctl, getppid and _exit.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
