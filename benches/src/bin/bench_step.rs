//! A profile of one training step (`cargo xtask bench step --data DIR [--config RUN.toml]`): where a step's time goes
//! (batch building, forward through the embedding and the Transformer, the item product with the loss, backward,
//! optimizer), and the useful FLOP/s of the step against this machine's own matmul roof, measured in the same run.
//!
//! "Useful" counts work on real tokens only: the Transformer's products and attention over each row's real positions
//! (causal: a position attends to itself and the ones before it), and the item product at positions that carry a
//! target (the whole catalog for full softmax, the drawn candidates for sampled softmax), times 3 for forward plus
//! backward. Padding, masking, normalisation and the optimizer count as overhead. The roof is a square f32 matmul
//! on the same threads.
//!
//! The steps use the id table (no item tower) and the batches an epoch of `m6rec train` would build (buckets and
//! token budget as configured), after a few warm-up steps.
//!
//! Usage: bench-step --data DIR [--config RUN.toml] [--steps 30] [--warmup 3] [--threads 2] [--json PATH]
//! [--chunk ROWS] (the full softmax in chunks of ROWS rows; 0: libtorch's autograd over the whole matrix; default:
//! what training does, `m6rec_objective::loss::full_softmax`)

use anyhow::{Context, Result};
use m6rec_data::{Dataset, SeqBatch, IGNORE};
use m6rec_model::{LossConfig, SeqRec};
use m6rec_optim::Optimizer;
use m6rec_tensor::Mode;
use m6rec_train::{plan_batches, training_spans, RunConfig};
use rand::SeedableRng;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The phases of a step, in order.
const PHASES: [&str; 5] =
    ["data (batch building)", "forward (embedding + Transformer)", "item product + loss", "backward", "optimizer"];

/// Forward FLOPs of a batch on its real tokens (see the module docs), split into (Transformer, item product).
fn useful_forward_flops(
    batch: &SeqBatch,
    cfg: &m6rec_model::SeqRecConfig,
    n_items: i64,
    n_candidates: i64,
) -> (f64, f64) {
    let d = cfg.d_model as f64;
    let d_ff = cfg.d_ff() as f64;
    let layers = cfg.n_layers as f64;
    let (mut dense, mut attention) = (0.0, 0.0);
    for &len in batch.lengths() {
        let len = len as f64;
        // QKV and output projections, the two feed-forward products: 2 FLOPs per multiply-add.
        dense += len * 2.0 * (4.0 * d * d + 2.0 * d * d_ff);
        // Scores and the weighted sum over the len·(len+1)/2 causal pairs.
        attention += len * (len + 1.0) / 2.0 * 4.0 * d;
    }
    let targets = batch.targets().iter().filter(|&&y| y != IGNORE).count() as f64;
    let candidates = if n_candidates > 0 { n_candidates } else { n_items } as f64;
    (layers * (dense + attention), targets * 2.0 * d * candidates)
}

/// GFLOP/s of an `n × n` by `n × n` f32 matmul, the best of `reps`.
fn matmul_roof(n: i64, reps: usize) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let _ = a.mm(&b); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let c = a.mm(&b);
        let _ = c.double_value(&[0, 0]);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data: PathBuf = arg(&args, "--data", String::new()).into();
    anyhow::ensure!(!data.as_os_str().is_empty(), "--data DIR is required (a dataset from `m6rec import`)");
    let config: String = arg(&args, "--config", String::new());
    let steps: usize = arg(&args, "--steps", 30);
    let warmup: usize = arg(&args, "--warmup", 3);
    let threads: i32 = arg(&args, "--threads", 2);
    let json_out: String = arg(&args, "--json", String::new());
    tch::set_num_threads(threads);

    let ds = Dataset::load(&data).with_context(|| format!("loading the dataset {}", data.display()))?;
    let cfg = if config.is_empty() { RunConfig::default() } else { RunConfig::load(std::path::Path::new(&config))? };
    let (n_users, n_items) = (ds.n_users(), ds.n_items());
    let split = cfg.split(&ds.interactions, n_users, n_items);
    let max_len = usize::try_from(cfg.model.max_len).context("model.max_len")?;
    let spans = training_spans(&split, max_len, cfg.train.windows);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.train.seed);
    let t = &cfg.train;
    let planned = plan_batches(&spans, max_len, t.batch_size, t.batch_tokens, t.buckets, &mut rng);
    anyhow::ensure!(!planned.is_empty(), "no training rows in {}", data.display());
    let seqs: Vec<Vec<u32>> = (0..n_users).map(|u| split.train(u).to_vec()).collect();

    m6rec_tensor::seed(cfg.train.seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SeqRec::init(&(vs.root() / "model"), &cfg.model, n_items)?;
    let mut opt = Optimizer::new(&vs, &cfg.optim);
    let n_candidates = match cfg.model.loss {
        LossConfig::FullSoftmax => 0,
        LossConfig::SampledSoftmax { n_uniform, .. } => n_uniform, // plus the batch's distinct targets, added per step
    };

    // Default: whatever `full_softmax` does (the whole matrix for catalogs like these, chunks for huge ones).
    let chunk: i64 = arg(&args, "--chunk", -1);
    let mut secs = [0.0f64; 5];
    let (mut flops, mut real, mut computed, mut rows) = (0.0, 0usize, 0usize, 0usize);
    for (i, job) in planned.iter().cycle().take(warmup + steps).enumerate() {
        let mut clock = Instant::now();
        let mut lap = |k: usize, secs: &mut [f64; 5]| {
            if i >= warmup {
                secs[k] += clock.elapsed().as_secs_f64();
            }
            clock = Instant::now();
        };
        let rows_of: Vec<&[u32]> = job.iter().map(|s| &seqs[s.user][s.start..s.end]).collect();
        let batch = SeqBatch::for_training(&rows_of, max_len, n_items)?;
        let tokens = batch.tokens_tensor(Device::Cpu)?;
        let targets = batch.targets_tensor(Device::Cpu)?.view([-1]);
        lap(0, &mut secs);
        let hidden = model.forward(&tokens, &model.item_embeddings(), Mode::Train);
        let _ = hidden.double_value(&[0, 0, 0]);
        lap(1, &mut secs);
        let keep = targets.ne(IGNORE).nonzero().squeeze_dim(1);
        let h = hidden.view([-1, cfg.model.d_model]).index_select(0, &keep);
        let y = targets.index_select(0, &keep);
        let table = model.item_embeddings();
        let loss = step_loss(&h, &table, &y, &cfg.model.loss, chunk);
        let _ = loss.double_value(&[]);
        lap(2, &mut secs);
        opt.zero_grad();
        loss.backward();
        lap(3, &mut secs);
        opt.step(cfg.optim.lr);
        lap(4, &mut secs);
        if i >= warmup {
            let distinct = if n_candidates > 0 { y.unique_dim(0, false, false, false).0.size()[0] } else { 0 };
            let (dense, product) = useful_forward_flops(&batch, &cfg.model, n_items as i64, n_candidates + distinct);
            flops += 3.0 * (dense + product);
            real += batch.lengths().iter().sum::<usize>();
            computed += batch.b_sz() * batch.seq_len();
            rows += batch.b_sz();
        }
    }
    let totals = Totals { secs, flops, real, computed, rows };
    report(&ds.name, n_users, n_items, &cfg, steps, threads, chunk, &totals, &json_out)
}

/// The batch's loss: `--chunk 0` is libtorch's autograd over the whole logit matrix (for comparison), a negative
/// chunk whatever `full_softmax` does (the whole matrix for catalogs like these, chunks for huge ones).
fn step_loss(h: &Tensor, table: &Tensor, y: &Tensor, loss: &LossConfig, chunk: i64) -> Tensor {
    match loss {
        LossConfig::FullSoftmax if chunk == 0 => {
            h.matmul(&table.tr()).cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, IGNORE, 0.0)
        }
        LossConfig::FullSoftmax if chunk < 0 => m6rec_objective::loss::full_softmax(h, table, y),
        LossConfig::FullSoftmax => m6rec_objective::loss::full_softmax_chunked(h, table, y, chunk),
        LossConfig::SampledSoftmax { n_uniform, in_batch } => {
            m6rec_objective::loss::sampled_softmax(h, table, y, *n_uniform, *in_batch)
        }
    }
}

/// Sums over the measured steps.
struct Totals {
    /// Seconds per phase.
    secs: [f64; 5],
    /// Useful FLOPs (real tokens, counted targets).
    flops: f64,
    real: usize,
    computed: usize,
    rows: usize,
}

/// The phase table, the rates against the roof measured now, and with `--json` the same as JSON.
#[allow(clippy::too_many_arguments)]
fn report(
    name: &str,
    n_users: usize,
    n_items: usize,
    cfg: &RunConfig,
    steps: usize,
    threads: i32,
    chunk: i64,
    t: &Totals,
    json_out: &str,
) -> Result<()> {
    let (secs, flops, real, computed, rows) = (t.secs, t.flops, t.real, t.computed, t.rows);
    let total: f64 = secs.iter().sum();
    let roof = matmul_roof(1024, 5);
    let useful = flops / total / 1e9;
    println!(
        "{}: {n_users} users, {n_items} items; d_model {} x {} layers, max_len {}, {:?}; {steps} steps on {threads} threads",
        name, cfg.model.d_model, cfg.model.n_layers, cfg.model.max_len, cfg.model.loss
    );
    println!("{:<36} {:>10} {:>7}", "phase", "ms/step", "share");
    for (name, s) in PHASES.iter().zip(secs) {
        println!("{name:<36} {:>10.2} {:>6.1}%", s * 1e3 / steps as f64, 100.0 * s / total);
    }
    println!(
        "rows/s {:.0}  real tokens/s {:.0}  padding {:.1}%  useful {:.2} GFLOP/s  matmul roof {:.2} GFLOP/s  ({:.1}% of roof)",
        rows as f64 / total,
        real as f64 / total,
        100.0 * (1.0 - real as f64 / computed.max(1) as f64),
        useful,
        roof,
        100.0 * useful / roof
    );
    if !json_out.is_empty() {
        let phases: serde_json::Map<String, serde_json::Value> =
            PHASES.iter().zip(secs).map(|(n, s)| (n.to_string(), json!(s * 1e3 / steps as f64))).collect();
        let out = json!({
            "dataset": name, "n_users": n_users, "n_items": n_items, "steps": steps, "threads": threads, "chunk": chunk,
            "ms_per_step": phases, "rows_per_sec": rows as f64 / total, "real_tokens_per_sec": real as f64 / total,
            "padding": 1.0 - real as f64 / computed.max(1) as f64, "useful_gflops": useful, "roof_gflops": roof,
            "share_of_roof": useful / roof, "config": cfg,
        });
        std::fs::write(json_out, serde_json::to_string_pretty(&out)?).with_context(|| format!("writing {json_out}"))?;
    }
    Ok(())
}
