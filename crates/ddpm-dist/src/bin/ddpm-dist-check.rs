//! Checks the collectives end to end, in separate processes, and times the all-reduce.
//!
//! `ddpm-dist-check --procs N [--backend tcp|nccl] [--elems K] [--steps S]` launches N ranks on
//! this machine; each all-reduces (sum and mean), broadcasts and averages tensors, verifies the
//! results exactly, and rank 0 prints the mean all-reduce time. Run under torchrun-style variables
//! instead of `--procs` to span machines. `--fail-rank R --fail-step T` makes rank R exit with
//! status 7 at step T (to see how the other ranks and the launcher react).

use candle_core::{Device, Tensor};
use ddpm_dist::{
    Backend, Collective, DistError, EXIT_PEER_LOST, ReduceOp, WorldInfo, connect, launch,
};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    procs: Option<usize>,
    backend: String,
    elems: usize,
    steps: usize,
    fail: Option<(usize, usize)>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        procs: None,
        backend: "tcp".into(),
        elems: 1 << 20,
        steps: 5,
        fail: None,
    };
    let (mut fail_rank, mut fail_step) = (None, 0);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--procs" => a.procs = Some(num(value()?)?),
            "--backend" => a.backend = value()?,
            "--elems" => a.elems = num(value()?)?,
            "--steps" => a.steps = num(value()?)?,
            "--fail-rank" => fail_rank = Some(num(value()?)?),
            "--fail-step" => fail_step = num(value()?)?,
            "-h" | "--help" => return Err(HELP.into()),
            other => return Err(format!("unknown argument {other}\n{HELP}")),
        }
    }
    a.fail = fail_rank.map(|r| (r, fail_step));
    Ok(a)
}

const HELP: &str = "usage: ddpm-dist-check [--procs N] [--backend tcp|nccl] [--elems K] [--steps S] [--fail-rank R --fail-step T]";

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let result = match WorldInfo::from_env() {
        Ok(_) if args.procs.is_some() && !WorldInfo::env_present() => {
            supervise(&args).map_err(Failure::Other)
        }
        Ok(world) => work(&world, &args),
        Err(e) => Err(Failure::Dist(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Dist(e)) => {
            eprintln!("error: {e}");
            if e.is_peer_failure() {
                std::process::exit(EXIT_PEER_LOST);
            }
            ExitCode::FAILURE
        }
        Err(Failure::Other(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Why a rank failed: a collective's error (which may be another rank's fault) or a wrong result.
enum Failure {
    Dist(DistError),
    Other(String),
}

impl From<DistError> for Failure {
    fn from(e: DistError) -> Self {
        Self::Dist(e)
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Self::Other(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Self {
        Self::Other(msg.into())
    }
}

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        Self::Other(e.to_string())
    }
}

fn supervise(args: &Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let n = args.procs.expect("checked by the caller");
    launch(n, &exe, &argv, &[]).map_err(|e| e.to_string())?;
    println!("all {n} ranks passed");
    Ok(())
}

fn device(world: &WorldInfo, backend: &str) -> Result<Device, String> {
    match backend {
        "tcp" => Ok(Device::Cpu),
        "nccl" => Device::new_cuda(world.local_rank)
            .map_err(|e| format!("CUDA device {}: {e}", world.local_rank)),
        other => Err(format!("unknown backend {other} (tcp or nccl)")),
    }
}

fn work(world: &WorldInfo, args: &Args) -> Result<(), Failure> {
    let dev = device(world, &args.backend)?;
    let backend = if args.backend == "nccl" {
        Backend::Nccl(dev.clone())
    } else {
        Backend::Tcp
    };
    let mut c = connect(world, backend)?;
    let (rank, n) = (c.rank(), c.world_size());
    // Small integers: every summation order gives the same exact result, on every backend.
    let part =
        |r: usize| -> Vec<f32> { (0..args.elems).map(|i| ((i + 3 * r) % 11) as f32).collect() };
    let total: Vec<f32> = (0..args.elems)
        .map(|i| (0..n).map(|r| ((i + 3 * r) % 11) as f32).sum())
        .collect();
    let mut seconds = 0.0;
    for step in 0..args.steps {
        if args.fail == Some((rank, step)) {
            eprintln!("rank {rank}: injected failure at step {step}");
            std::process::exit(7);
        }
        let mut buf = part(rank);
        let t = Instant::now();
        c.all_reduce(&mut buf, ReduceOp::Sum)?;
        seconds += t.elapsed().as_secs_f64();
        if buf != total {
            return Err(
                format!("step {step}: all-reduce sum differs from the expected total").into(),
            );
        }
    }
    let mut buf = part(rank);
    c.all_reduce(&mut buf, ReduceOp::Mean)?;
    if buf
        .iter()
        .zip(&total)
        .any(|(m, t)| (m - t / n as f32).abs() > 1e-6 * t.abs().max(1.0))
    {
        return Err("all-reduce mean differs from total / world size".into());
    }
    let mut buf = part(rank);
    c.broadcast(&mut buf, n - 1)?;
    if buf != part(n - 1) {
        return Err(format!("broadcast from rank {} differs", n - 1).into());
    }
    check_tensors(c.as_mut(), &dev, &part, &total)?;
    c.barrier()?;
    if rank == 0 && args.steps > 0 {
        let ms = seconds / args.steps as f64 * 1e3;
        let gbps = (args.elems * 4) as f64 / (seconds / args.steps as f64) / 1e9;
        println!(
            "ok: {n} ranks, backend {}, all-reduce of {} f32: {ms:.3} ms per call ({gbps:.2} GB/s of buffer)",
            c.backend(),
            args.elems
        );
    }
    Ok(())
}

fn check_tensors(
    c: &mut dyn Collective,
    dev: &Device,
    part: &dyn Fn(usize) -> Vec<f32>,
    total: &[f32],
) -> Result<(), Failure> {
    let mine = Tensor::from_vec(part(c.rank()), total.len(), dev)?;
    let half = total.len() / 2;
    let a = mine.narrow(0, 0, half)?;
    let b = mine.narrow(0, half, total.len() - half)?;
    let out = c.all_reduce_sum(&[a, b])?;
    let joined = Tensor::cat(&out, 0)?.to_vec1::<f32>()?;
    if joined != total || !out[0].device().same_device(dev) {
        return Err("tensor all-reduce differs from the expected total".into());
    }
    Ok(())
}
