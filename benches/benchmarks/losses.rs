//! Full softmax against sampled softmax (forward + backward) as the catalog grows: the reason sampled softmax exists.

use criterion::{BenchmarkId, Criterion, Throughput};
use m6rec_objective::loss::{full_softmax, sampled_softmax};
use tch::{Device, Kind, Tensor};

pub fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let mut group = c.benchmark_group("cpu_next_item_loss");
    let (n_pos, d) = (2048i64, 64i64);
    for n_items in [2_000i64, 20_000, 100_000] {
        group.throughput(Throughput::Elements(n_pos as u64));
        let items = Tensor::randn([n_items, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let h = Tensor::randn([n_pos, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = Tensor::randint(n_items, [n_pos], (Kind::Int64, Device::Cpu));
        group.bench_with_input(BenchmarkId::new("full_softmax", n_items), &n_items, |b, _| {
            b.iter(|| full_softmax(&h, &items, &y).backward())
        });
        group.bench_with_input(BenchmarkId::new("sampled_softmax_256_in_batch", n_items), &n_items, |b, _| {
            b.iter(|| sampled_softmax(&h, &items, &y, 256, true).backward())
        });
    }
    group.finish();
}
