//! Loader speed on shared/data/rgb64 (2,000 64x64 PNGs): decode + preprocess + write the
//! cache, read the cache back, and assemble batches from memory. Prints images/s.
//! Run: `cargo bench -p ddpm-data` (skips when ../shared is absent).

use std::time::Instant;

use candle_core::Device;
use ddpm_data::{Batches, CacheUse, FolderOptions, batch_tensor, load_image_folder_report};

fn rate(n: usize, secs: f64) -> String {
    format!(
        "{n} images in {secs:.3} s = {:.0} images/s",
        n as f64 / secs
    )
}

fn main() {
    let Some(dir) = ddpm_tests::shared_file("data/rgb64") else {
        return;
    };
    let cache = std::env::temp_dir().join(format!("ddpm-data-bench-{}", std::process::id()));
    let opts = FolderOptions {
        cache_dir: Some(cache.clone()),
        ..FolderOptions::new(64, 3)
    };
    println!("rayon threads: {}", rayon::current_num_threads());

    let t = Instant::now();
    let built = load_image_folder_report(&dir, &opts).expect("decode rgb64");
    let decode = t.elapsed().as_secs_f64();
    assert!(matches!(built.cache, CacheUse::Written(_)));
    let n = built.images.len();
    println!("decode + resize/crop + write cache: {}", rate(n, decode));

    let t = Instant::now();
    let hit = load_image_folder_report(&dir, &opts).expect("read cache");
    let read = t.elapsed().as_secs_f64();
    assert!(matches!(hit.cache, CacheUse::Hit(_)));
    println!("list folder + read cache:           {}", rate(n, read));

    let t = Instant::now();
    let small = load_image_folder_report(&dir, &FolderOptions::new(32, 3)).expect("resize rgb64");
    let resize = t.elapsed().as_secs_f64();
    println!(
        "decode + resize 64->32 (no cache):  {}",
        rate(small.images.len(), resize)
    );

    for batch_size in [64, 256] {
        let batches = Batches::new(n, batch_size, 0, 0, 1)
            .unwrap()
            .with_flip(true);
        let t = Instant::now();
        let mut count = 0;
        for epoch in 0..5 {
            let plan = batches.epoch(epoch);
            for (idx, flips) in plan.iter() {
                let x = batch_tensor(&hit.images, idx, flips, &Device::Cpu).unwrap();
                count += x.dims()[0];
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "batch assembly (B={batch_size}, 5 epochs, flips): {}",
            rate(count, secs)
        );
    }
    std::fs::remove_dir_all(&cache).expect("remove the bench cache");
}
