//! Building a training batch: must stay far below the cost of a training step (it runs on the loader thread).

use criterion::{Criterion, Throughput};
use m6rec_data::SeqBatch;

pub fn bench(c: &mut Criterion) {
    let seqs: Vec<Vec<u32>> = (0..128u32).map(|u| (0..(20 + u % 180)).map(|i| (i * 7 + u) % 1682).collect()).collect();
    let rows: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let mut group = c.benchmark_group("cpu_batching");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("for_training_128x200", |b| b.iter(|| SeqBatch::for_training(&rows, 200, 1682)));
    group.finish();
}
