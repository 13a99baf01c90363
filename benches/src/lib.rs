//! Benchmarks live in `bench_main.rs` and `benchmarks/`; run them with `cargo xtask bench criterion`.

use rand::{Rng, SeedableRng};

/// Generated behaviour for catalog-size benchmarks: `n_users` sequences of 20-60 items that walk through neighbouring
/// items (next item with probability 0.7, else a random jump), so a model has something to learn.
pub fn walk_sequences(n_items: usize, n_users: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n_users)
        .map(|_| {
            let len = rng.random_range(20..=60);
            let mut cur = rng.random_range(0..n_items);
            (0..len)
                .map(|_| {
                    cur = if rng.random::<f64>() < 0.7 { (cur + 1) % n_items } else { rng.random_range(0..n_items) };
                    cur as u32
                })
                .collect()
        })
        .collect()
}

/// This process's resident memory in MiB (`VmRSS` of `/proc/self/status`; 0 where there is none).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}
