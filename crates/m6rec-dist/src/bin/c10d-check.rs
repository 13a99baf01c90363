//! Checks and measures the c10d binding under a torchrun-style launch, one scenario per run:
//!
//! ```text
//! torchrun --standalone --nproc-per-node 2 --no-python target/debug/c10d-check collectives
//! RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 c10d-check ddp & RANK=1 ... c10d-check ddp
//! ```
//!
//! - `collectives`: broadcast, all-reduce (sum, max), all-gather, barrier and a byte broadcast, checked.
//! - `ddp`: 20 SGD steps of a small MLP through PyTorch's DDP engine, each rank on its shard of a fixed batch; rank 0
//!   also trains the same model on the whole batch in one process and prints the largest parameter difference.
//! - `loop`: all-reduces until interrupted (failure tests kill a peer and watch this one report it).
//! - `bandwidth --mb 1,10,25`: all-reduce time and bandwidth for float32 tensors of these sizes.
//! - `host-store [--seconds S]` (no launch variables): hosts a rendezvous store as torchrun's agent does, prints
//!   `port N`, and serves for S seconds (default 60); ranks join it with `TORCHELASTIC_USE_AGENT_STORE=True`.
//!
//! Prints one JSON object per line; exits 1 with the error on stderr when anything fails.

use m6rec_dist::{Group, Launch, Options, ReduceOp, ReducerOptions};
use std::time::{Duration, Instant};
use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map(String::as_str).unwrap_or("collectives");
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let timeout = flag("--timeout").map(|s| s.parse::<f64>()).transpose()?.unwrap_or(60.0);
    if scenario == "host-store" {
        let seconds = flag("--seconds").map(|s| s.parse::<f64>()).transpose()?.unwrap_or(60.0);
        let host = m6rec_dist::StoreHost::start("127.0.0.1", 0, Duration::from_secs_f64(timeout))?;
        println!("port {}", host.port());
        use std::io::Write;
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs_f64(seconds));
        return Ok(());
    }
    let launch = Launch::from_env()?.ok_or("set WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT (or use torchrun)")?;
    let opts = Options { timeout: Duration::from_secs_f64(timeout), ..Options::default() };
    tch::set_num_threads(1);
    let group = Group::join(&launch, &opts)?;
    match scenario {
        "collectives" => collectives(&group),
        "ddp" => ddp(&group, args.iter().any(|a| a == "--find-unused")),
        "loop" => loop {
            let t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
            group.all_reduce(&t, ReduceOp::Sum)?;
            let got = t.double_value(&[0]);
            if got != group.world_size() as f64 {
                return Err(format!("all-reduce returned {got}, expected {}", group.world_size()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        },
        "bandwidth" => {
            let sizes = flag("--mb").unwrap_or_else(|| "1,10,25".into());
            for mb in sizes.split(',') {
                bandwidth(&group, mb.trim().parse()?)?;
            }
            Ok(())
        }
        other => Err(format!("unknown scenario `{other}`: collectives, ddp, loop or bandwidth").into()),
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).flatten(0, -1);
    (0..t.size()[0]).map(|i| t.double_value(&[i])).collect()
}

fn collectives(g: &Group) -> Res<()> {
    let (rank, world) = (g.rank() as f64, g.world_size() as f64);
    let b = if g.rank() == 0 {
        Tensor::from_slice(&[1.0f32, 2.0, 3.0])
    } else {
        Tensor::zeros([3], (Kind::Float, Device::Cpu))
    };
    g.broadcast(&[&b], 0)?;
    let sum = Tensor::from_slice(&[rank as f32 + 1.0]);
    g.all_reduce(&sum, ReduceOp::Sum)?;
    let max = Tensor::from_slice(&[rank as f32 * 2.0]);
    g.all_reduce(&max, ReduceOp::Max)?;
    let gathered: Vec<f64> =
        g.all_gather(&Tensor::from_slice(&[rank as f32 * 10.0]))?.iter().flat_map(values).collect();
    g.barrier()?;
    let bytes = g.broadcast_bytes(if g.rank() == 0 { b"from rank 0" } else { b"" }, 0)?;
    let ok = values(&b) == [1.0, 2.0, 3.0]
        && values(&sum) == [world * (world + 1.0) / 2.0]
        && values(&max) == [(world - 1.0) * 2.0]
        && gathered == (0..g.world_size()).map(|r| r as f64 * 10.0).collect::<Vec<_>>()
        && bytes == b"from rank 0";
    println!(
        "{{\"rank\":{},\"broadcast\":{:?},\"sum\":{:?},\"max\":{:?},\"gather\":{:?},\"bytes\":{:?},\"ok\":{ok}}}",
        g.rank(),
        values(&b),
        values(&sum),
        values(&max),
        gathered,
        String::from_utf8_lossy(&bytes)
    );
    if ok {
        Ok(())
    } else {
        Err("collective results differ from the expected values".into())
    }
}

struct Mlp {
    vs: nn::VarStore,
    net: nn::Sequential,
}

fn mlp(with_unused: bool) -> Mlp {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq().add(nn::linear(&root / "l1", 8, 32, Default::default())).add_fn(|x| x.tanh()).add(nn::linear(
        &root / "l2",
        32,
        1,
        Default::default(),
    ));
    if with_unused {
        let _ = root.var("unused", &[4], nn::Init::Const(1.0));
    }
    Mlp { vs, net }
}

fn sorted(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn ddp(g: &Group, find_unused: bool) -> Res<()> {
    let (rank, world) = (g.rank() as i64, g.world_size() as i64);
    tch::manual_seed(7);
    let x = Tensor::randn([8 * world, 8], (Kind::Float, Device::Cpu));
    let y = (x.sum_dim_intlist(-1, true, Kind::Float) * 0.5).sin();
    // Different initial weights on every rank: the broadcast from rank 0 must make them equal.
    tch::manual_seed(100 + rank);
    let model = mlp(find_unused);
    let params = sorted(&model.vs);
    let refs: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
    g.broadcast(&refs, 0)?;
    let init: Vec<Tensor> = params.iter().map(|(_, t)| t.detach().copy()).collect();
    let reducer = g.reducer(&params, &ReducerOptions { find_unused_parameters: find_unused, ..Default::default() })?;
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&model.vs, 0.05)?;
    let rows = Tensor::arange_start_step(rank, 8 * world, world, (Kind::Int64, Device::Cpu));
    let (xs, ys) = (x.index_select(0, &rows), y.index_select(0, &rows));
    for _ in 0..20 {
        opt.zero_grad();
        reducer.prepare_forward()?;
        let loss = (model.net.forward(&xs) - &ys).square().mean(Kind::Float);
        reducer.prepare_backward(&[&loss])?;
        loss.f_backward().map_err(|e| g.failure("backward", e.to_string()))?;
        opt.step();
    }
    let checksum: f64 = params.iter().map(|(_, t)| t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])).sum();
    let mut max_diff = None;
    if g.rank() == 0 {
        // The same model, the same start, the whole batch, one process.
        let single = mlp(find_unused);
        let sp = sorted(&single.vs);
        tch::no_grad(|| {
            for ((_, t), v) in sp.iter().zip(&init) {
                t.shallow_clone().copy_(v);
            }
        });
        let mut sopt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&single.vs, 0.05)?;
        for _ in 0..20 {
            sopt.zero_grad();
            let loss = (single.net.forward(&x) - &y).square().mean(Kind::Float);
            loss.backward();
            sopt.step();
        }
        let d =
            params.iter().zip(&sp).map(|((_, a), (_, b))| (a - b).abs().max().double_value(&[])).fold(0.0f64, f64::max);
        max_diff = Some(d);
    }
    let sums = g.all_gather(&Tensor::from_slice(&[checksum]))?;
    let same = sums.iter().all(|s| s.double_value(&[0]) == checksum);
    println!(
        "{{\"rank\":{},\"checksum\":{checksum},\"ranks_identical\":{same},\"max_diff_vs_single\":{}}}",
        g.rank(),
        max_diff.map_or("null".to_string(), |d| format!("{d:e}"))
    );
    Ok(())
}

fn bandwidth(g: &Group, mb: f64) -> Res<()> {
    let n = ((mb * 1e6) / 4.0).round().max(1.0) as i64;
    let t = Tensor::ones([n], (Kind::Float, Device::Cpu));
    g.all_reduce(&t, ReduceOp::Sum)?; // warm-up: connections, buffers
    let mut ms = Vec::new();
    for _ in 0..10 {
        g.barrier()?;
        let start = Instant::now();
        g.all_reduce(&t, ReduceOp::Sum)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let bytes = n as f64 * 4.0;
    // Bus bandwidth as nccl-tests defines it for all-reduce: 2 (w - 1) / w of the buffer crosses each link.
    let w = g.world_size() as f64;
    let bus = bytes * 2.0 * (w - 1.0) / w / (median / 1e3) / 1e9;
    if g.rank() == 0 {
        println!(
            "{{\"mb\":{mb},\"ranks\":{},\"median_ms\":{median:.3},\"min_ms\":{:.3},\"algbw_gbps\":{:.3},\"busbw_gbps\":{bus:.3}}}",
            g.world_size(),
            ms[0],
            bytes / (median / 1e3) / 1e9
        );
    }
    Ok(())
}
