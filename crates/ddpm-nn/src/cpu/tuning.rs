//! Process-wide CPU tuning for the kernels of this crate: candle's matmul thread pool and the
//! glibc allocator. Call [`configure_cpu_threads`] first thing in `main`.

/// Keeps candle's own matmul thread pool to one thread unless `CANDLE_NUM_THREADS` is set:
/// our convolution kernels already use every core through rayon, and candle's spin-waiting
/// pool competing with them made a CPU training step ~50% slower on 2 cores (measured).
///
/// Also tunes the allocator ([`tune_allocator`]).
///
/// Call it first thing in `main`, before any other thread exists.
pub fn configure_cpu_threads() {
    set_candle_threads(1);
    tune_allocator();
}

/// Sets `CANDLE_NUM_THREADS` to `n` unless the user already set it. Call it first thing in
/// `main`, before any other thread exists.
pub fn set_candle_threads(n: usize) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process is single-threaded, so
        // no other thread can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", n.to_string()) };
    }
}

/// glibc only: keeps freed blocks of up to 32 MiB (its maximum) in the heap for reuse, instead
/// of unmapping them and taking fresh zeroed pages from the kernel on the next step. A training
/// step allocates and frees the same activation-sized buffers every time; page faults were ~5% of
/// a CPU step's profile. No effect elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
