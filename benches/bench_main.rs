//! One criterion binary over `benchmarks/*`. Baselines and candidates sit in one group, so ratios come from one run.

use criterion::{criterion_group, criterion_main};

mod benchmarks;

criterion_group!(benches, benchmarks::losses::bench, benchmarks::batching::bench);
criterion_main!(benches);
