//! The TCP backend among threads of this process: results, determinism, failures, timeouts.

use candle_core::{D, DType, Device, Tensor, Var};
use ddpm_dist::{
    Backend, Collective, DistError, ReduceOp, Timeouts, WorldInfo, connect_with, free_port,
};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Short timeouts so failure tests finish in about a second.
fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        heartbeat: Duration::from_millis(100),
        peer: Duration::from_secs(1),
    }
}

fn world(rank: usize, world_size: usize, port: u16) -> WorldInfo {
    WorldInfo {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    }
}

/// Runs `body` on `n` ranks (threads) joined over TCP; returns each rank's result, in rank order.
/// Panics if any rank takes longer than 20 s, so a hang fails the test instead of blocking CI.
fn on_ranks<T: Send + 'static>(
    n: usize,
    body: impl Fn(usize, Box<dyn Collective>) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port().unwrap();
    let (tx, rx) = mpsc::channel();
    for rank in 0..n {
        let (tx, body) = (tx.clone(), body.clone());
        thread::spawn(move || {
            let c = connect_with(&world(rank, n, port), Backend::Tcp, &timeouts())
                .unwrap_or_else(|e| panic!("rank {rank} failed to connect: {e}"));
            tx.send((rank, body(rank, c))).unwrap();
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        let (rank, v) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a rank hung or panicked");
        out[rank] = Some(v);
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Rank `r`'s test buffer: non-integers, so a different summation order would show in the bits.
fn data(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 13) % 17) as f32 * 0.1 + 1.0 / (rank + i + 3) as f32)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn all_reduce_broadcast_and_barrier_over_two_to_four_ranks() {
    const LEN: usize = 1000;
    for n in 2..=4 {
        let results = on_ranks(n, |rank, mut c| {
            assert_eq!(
                (c.rank(), c.world_size(), c.backend()),
                (rank, c.world_size(), "tcp")
            );
            let mut sum = data(rank, LEN);
            c.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
            let mut mean = data(rank, LEN);
            c.all_reduce(&mut mean, ReduceOp::Mean).unwrap();
            let root = c.world_size() - 1;
            let mut bcast = data(rank, LEN);
            c.broadcast(&mut bcast, root).unwrap();
            c.barrier().unwrap();
            let loss = c.mean_scalar(rank as f32).unwrap();
            (sum, mean, bcast, loss)
        });
        // Reference: the sum in rank order, 0 first.
        let mut expected = data(0, LEN);
        for r in 1..n {
            for (a, b) in expected.iter_mut().zip(data(r, LEN)) {
                *a += b;
            }
        }
        let expected_mean: Vec<f32> = expected.iter().map(|v| v / n as f32).collect();
        for (rank, (sum, mean, bcast, loss)) in results.iter().enumerate() {
            assert_eq!(bits(sum), bits(&expected), "sum on rank {rank} of {n}");
            assert_eq!(
                bits(mean),
                bits(&expected_mean),
                "mean on rank {rank} of {n}"
            );
            assert_eq!(
                bits(bcast),
                bits(&data(n - 1, LEN)),
                "broadcast on rank {rank} of {n}"
            );
            let want = (0..n).sum::<usize>() as f32 / n as f32;
            assert_eq!(*loss, want, "scalar mean on rank {rank} of {n}");
        }
    }
}

#[test]
fn tensor_helpers_keep_shapes_dtypes_and_agree_across_ranks() {
    let results = on_ranks(3, |rank, mut c| {
        let dev = Device::Cpu;
        let r = rank as f32;
        let a = (Tensor::arange(0f32, 6., &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap()
            + r as f64)
            .unwrap();
        let b = Tensor::new(&[10. * r as f64, -1.], &dev).unwrap();
        let c0 = Tensor::new(r, &dev).unwrap();
        let mean = c
            .all_reduce_mean(&[a.clone(), b.clone(), c0.clone()])
            .unwrap();
        let sum = c.all_reduce_sum(std::slice::from_ref(&a)).unwrap();
        let bcast = c.broadcast_tensors(&[a, b], 1).unwrap();
        let empty = c.all_reduce_mean(&[]).unwrap();
        assert!(empty.is_empty());
        (mean, sum, bcast)
    });
    for (rank, (mean, sum, bcast)) in results.iter().enumerate() {
        assert_eq!(mean[0].dims(), &[2, 3]);
        assert_eq!(
            mean[0].to_vec2::<f32>().unwrap(),
            [[1., 2., 3.], [4., 5., 6.]],
            "rank {rank}"
        );
        assert_eq!(mean[1].dtype(), DType::F64);
        assert_eq!(mean[1].to_vec1::<f64>().unwrap(), [10., -1.]);
        assert_eq!(mean[2].to_scalar::<f32>().unwrap(), 1.);
        assert_eq!(
            sum[0].to_vec2::<f32>().unwrap(),
            [[3., 6., 9.], [12., 15., 18.]]
        );
        assert_eq!(
            bcast[0].to_vec2::<f32>().unwrap(),
            [[1., 2., 3.], [4., 5., 6.]]
        );
        assert_eq!(bcast[1].to_vec1::<f64>().unwrap(), [10., -1.]);
    }
}

#[test]
fn a_rank_that_leaves_mid_run_fails_the_others_quickly() {
    let start = Instant::now();
    let results = on_ranks(3, |rank, mut c| {
        let mut buf = vec![1.0f32; 16];
        c.all_reduce(&mut buf, ReduceOp::Sum).unwrap();
        if rank == 2 {
            drop(c); // dies between two collectives
            return None;
        }
        Some(c.all_reduce(&mut buf, ReduceOp::Sum).unwrap_err())
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let e0 = results[0].as_ref().unwrap();
    assert!(
        matches!(e0, DistError::PeerLost { rank: 2, .. }),
        "rank 0: {e0}"
    );
    // Rank 1 learns of the failure either from rank 0's abort message or, when rank 0 has
    // already closed the connection before that message is read, as rank 0 being gone (a
    // timing race seen in CI-like runs). Either way it must be a prompt peer failure.
    let e1 = results[1].as_ref().unwrap();
    let text = e1.to_string();
    assert!(e1.is_peer_failure(), "rank 1: {text}");
    assert!(
        (text.contains("aborted by rank 0") && text.contains("rank 2"))
            || text.contains("rank 0 is gone"),
        "rank 1: {text}"
    );
}

#[test]
fn a_killed_master_fails_the_others_and_a_broken_collective_stays_broken() {
    let results = on_ranks(3, |rank, mut c| {
        if rank == 0 {
            drop(c);
            return None;
        }
        let mut buf = vec![0.0f32; 4];
        let first = c.all_reduce(&mut buf, ReduceOp::Mean).unwrap_err();
        let second = c.barrier().unwrap_err();
        Some((first, second))
    });
    for (first, second) in results.iter().skip(1).flatten() {
        assert!(
            matches!(first, DistError::PeerLost { rank: 0, .. }),
            "{first}"
        );
        assert!(second.to_string().contains("already failed"), "{second}");
    }
}

#[test]
fn mismatched_calls_are_reported_not_mixed() {
    let results = on_ranks(2, |rank, mut c| {
        let mut buf = vec![1.0f32; 3 + rank];
        c.all_reduce(&mut buf, ReduceOp::Sum)
            .unwrap_err()
            .to_string()
    });
    assert!(
        results[0].contains("collective mismatch") && results[0].contains("4 floats"),
        "{}",
        results[0]
    );
    assert!(results[1].contains("collective mismatch"), "{}", results[1]);
}

#[test]
fn rendezvous_without_the_other_ranks_times_out() {
    let t = Timeouts {
        connect: Duration::from_millis(300),
        ..timeouts()
    };
    let port = free_port().unwrap();
    let start = Instant::now();
    let e = connect_with(&world(0, 3, port), Backend::Tcp, &t)
        .err()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(e.to_string().contains("ranks 1, 2 never connected"), "{e}");
    let e = connect_with(&world(1, 2, port), Backend::Tcp, &t)
        .err()
        .unwrap();
    assert!(e.to_string().contains("could not connect to rank 0"), "{e}");
}

#[test]
fn world_of_one_needs_no_network() {
    let mut c = connect_with(&WorldInfo::single(), Backend::Tcp, &timeouts()).unwrap();
    let mut buf = [1.5f32, 2.5];
    c.all_reduce(&mut buf, ReduceOp::Mean).unwrap();
    c.broadcast(&mut buf, 0).unwrap();
    c.barrier().unwrap();
    assert_eq!(buf, [1.5, 2.5]);
    assert!(c.broadcast(&mut buf, 1).is_err());
}

/// Gradient of the mean squared error of a linear model `y = x w + b` over a batch.
fn grads(x: &Tensor, y: &Tensor, w: &Var, b: &Var) -> Vec<Tensor> {
    let pred = x
        .matmul(w.as_tensor())
        .unwrap()
        .broadcast_add(b.as_tensor())
        .unwrap();
    let loss = (pred - y).unwrap().sqr().unwrap().mean_all().unwrap();
    let g = loss.backward().unwrap();
    vec![g.get(w).unwrap().clone(), g.get(b).unwrap().clone()]
}

/// Data parallelism's premise: the mean of the half-batch gradients is the full-batch gradient.
#[test]
fn mean_of_half_batch_gradients_equals_the_full_batch_gradient() {
    let dev = Device::Cpu;
    let batch = 8;
    let x = Tensor::arange(0f32, (batch * 3) as f32, &dev)
        .unwrap()
        .reshape((batch, 3))
        .unwrap()
        .sin()
        .unwrap();
    let y = x
        .sum_keepdim(D::Minus1)
        .unwrap()
        .cos()
        .unwrap()
        .repeat((1, 2))
        .unwrap();
    let w =
        Var::from_tensor(&Tensor::new(&[[0.3f32, -0.2], [0.1, 0.4], [-0.5, 0.25]], &dev).unwrap())
            .unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.05f32, -0.1], &dev).unwrap()).unwrap();
    let full = grads(&x, &y, &w, &b);

    let (x2, y2, w2, b2) = (
        x.clone(),
        y.clone(),
        w.as_tensor().clone(),
        b.as_tensor().clone(),
    );
    let averaged = on_ranks(2, move |rank, mut c| {
        let half = batch / 2;
        let xs = x2.narrow(0, rank * half, half).unwrap();
        let ys = y2.narrow(0, rank * half, half).unwrap();
        let (w, b) = (
            Var::from_tensor(&w2).unwrap(),
            Var::from_tensor(&b2).unwrap(),
        );
        let g = grads(&xs, &ys, &w, &b);
        c.all_reduce_mean(&g)
            .unwrap()
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    });
    for (rank, g) in averaged.iter().enumerate() {
        for (got, want) in g.iter().zip(&full) {
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6, "rank {rank}: {a} vs full-batch {b}");
            }
        }
    }
    assert_eq!(averaged[0], averaged[1], "ranks disagree");
}
