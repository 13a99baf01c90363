//! Serving latency and throughput (`cargo xtask bench serve`): for generated catalogs of each size, starts the
//! service (m6rec-serve) on 127.0.0.1 in this process and drives it from a second process, `wrk`, at a fixed request
//! rate for a fixed time, with top-10 requests for random known users (or explicit histories with `--mode history`).
//! Reports p50/p99 latency, achieved rate, failed requests and this process's resident memory over the run.
//!
//! The models are id-only sequence models with random weights (d_model 64, 2 layers, max_len 50): latency does not
//! depend on what the weights are (`--items clustered`, the default, replaces the random item embeddings with vectors
//! around 2,000 centres, as trained ones cluster; `--items random` keeps them: the worst case for an approximate
//! index), and training a 1M-item model does not fit a benchmark. The index is what `m6rec serve` uses by default
//! (`--index auto`: exact below 200k items, IVF tuned to recall@10 0.97 from there) unless `--index exact|ivf|hnsw`;
//! recall@10 of the index against exact ranking is measured over 500 users' states.
//!
//! Usage: bench-serve [--sizes 10000,100000,1000000] [--rate 200] [--seconds 30] [--connections 10]
//!        [--users 5000] [--mode user|history] [--index exact|ivf|hnsw|auto] [--ivf-lists 0] [--ivf-probe 8]
//!        [--ivf-recall 0.97] [--ef-search 96] [--hnsw-m 12] [--ef-construction 48] [--items clustered|random]
//!        [--threads 1]
//!        [--json PATH]

use anyhow::{bail, Context, Result};
use m6rec_benches::rss_mib;
use m6rec_data::{Dataset, Interactions, Item};
use m6rec_serve::{Limits, ModelSource, ServeConfig, Service};
use m6rec_train::checkpoint::DatasetFingerprint;
use m6rec_train::{RunConfig, Trainer};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A catalog of `n` items and `users` users with 20-60 events each, walking through neighbouring items.
fn dataset(n: usize, users: usize) -> Dataset {
    let mut inter = Interactions::default();
    for (u, seq) in m6rec_benches::walk_sequences(n, users, 11).into_iter().enumerate() {
        for (t, item) in seq.into_iter().enumerate() {
            inter.user.push(u as u32);
            inter.item.push(item);
            inter.timestamp.push(t as i64);
            inter.event.push(None);
        }
    }
    Dataset {
        name: format!("gen-{n}"),
        source: "bench-serve".into(),
        users: (0..users).map(|u| format!("u{u}")).collect(),
        items: (0..n)
            .map(|i| Item {
                id: format!("i{i}"),
                domain: "gen".into(),
                title: format!("item {i}"),
                text: None,
                image: None,
                audio: None,
            })
            .collect(),
        interactions: inter,
    }
}

/// Replaces the checkpoint's item embeddings (random at initialisation, no structure at all: the worst case for a
/// graph index) with vectors around 2,000 centres, the shape trained item embeddings have (items of a kind together).
fn cluster_item_embeddings(ckpt: &Path, n: usize) -> Result<()> {
    let path = ckpt.join("model.safetensors");
    let mut vars = tch::Tensor::read_safetensors(&path)?;
    tch::manual_seed(5);
    for (name, t) in &mut vars {
        if name == "model.item_emb.weight" {
            let d = t.size()[1];
            let centres = tch::Tensor::randn([2000, d], tch::kind::FLOAT_CPU) * 0.05;
            let assign = tch::Tensor::randint(2000, [n as i64 + 1], (tch::Kind::Int64, tch::Device::Cpu));
            let noise = tch::Tensor::randn([n as i64 + 1, d], tch::kind::FLOAT_CPU) * 0.02;
            *t = centres.index_select(0, &assign) + noise;
        }
    }
    tch::Tensor::write_safetensors(&vars, &path)?;
    Ok(())
}

/// wrk script: one POST per call, paced by `delay`, results as one JSON line.
fn lua(users: usize, delay_ms: f64, mode: &str, n_items: usize) -> String {
    let body = if mode == "history" {
        format!(
            r#"local h = {{}}
  local start = math.random(0, {n_items} - 60)
  for j = 0, 29 do h[#h + 1] = '"i' .. (start + j) .. '"' end
  local body = '{{"history":[' .. table.concat(h, ",") .. '],"k":10}}'"#
        )
    } else {
        format!(r#"local body = '{{"user_id":"u' .. math.random(0, {users} - 1) .. '","k":10}}'"#)
    };
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(7)
request = function()
  {body}
  return wrk.format(nil, nil, nil, body)
end
delay = function() return {delay_ms} end
local non2xx = 0
response = function(status, headers, body) if status ~= 200 then non2xx = non2xx + 1 end end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non2xx":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
"#
    )
}

/// One run's settings, from the command line.
struct Opts {
    rate: f64,
    seconds: u64,
    conns: usize,
    users: usize,
    mode: String,
    items_kind: String,
    index: m6rec_serve::index::IndexKind,
}

fn index_kind(args: &[String]) -> Result<m6rec_serve::index::IndexKind> {
    let index_arg: String = arg(args, "--index", "auto".to_string());
    let d = m6rec_serve::index::HnswParams::default();
    let params = m6rec_serve::index::HnswParams {
        ef_search: arg(args, "--ef-search", 96),
        m: arg(args, "--hnsw-m", d.m),
        ef_construction: arg(args, "--ef-construction", d.ef_construction),
    };
    let ivf_recall: f64 = arg(args, "--ivf-recall", 0.97);
    let ivf = m6rec_serve::index::IvfParams {
        lists: arg(args, "--ivf-lists", 0),
        probe: arg(args, "--ivf-probe", 8),
        target_recall: (ivf_recall > 0.0).then_some(ivf_recall),
    };
    Ok(match index_arg.as_str() {
        "exact" => m6rec_serve::index::IndexKind::Exact,
        "ivf" => m6rec_serve::index::IndexKind::Ivf(ivf),
        "hnsw" => m6rec_serve::index::IndexKind::Hnsw(params),
        "auto" => m6rec_serve::index::IndexKind::Auto { min_items: 200_000, params: ivf },
        other => bail!("--index {other}: expected exact, ivf, hnsw or auto"),
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: String = arg(&args, "--sizes", "10000,100000,1000000".to_string());
    let opts = Opts {
        rate: arg(&args, "--rate", 200.0),
        seconds: arg(&args, "--seconds", 30),
        conns: arg(&args, "--connections", 10),
        users: arg(&args, "--users", 5000),
        mode: arg(&args, "--mode", "user".to_string()),
        items_kind: arg(&args, "--items", "clustered".to_string()),
        index: index_kind(&args)?,
    };
    // One libtorch thread: the model thread, the HTTP workers and wrk share 2 cores (measured: p99 17 ms with 1
    // thread vs 28 ms with 2 at 100k items, 200 req/s).
    let threads: i32 = arg(&args, "--threads", 1);
    let json_out: String = arg(&args, "--json", String::new());
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk not found: install it (Debian/Ubuntu: `apt-get install wrk`); it drives the server from a second process");
    }
    tch::set_num_threads(threads);
    println!(
        "{:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>11} {:>9} {:>7}",
        "items",
        "mode",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "RSS start",
        "RSS end/max",
        "recall@10",
        "open s"
    );
    println!("(last column: the index)");
    let mut rows = Vec::new();
    for n in sizes.split(',').map(|s| s.trim().parse::<usize>()) {
        let n = n.context("--sizes takes comma-separated item counts")?;
        rows.push(measure(n, &opts)?);
    }
    if !json_out.is_empty() {
        let doc = json!({ "threads": threads, "rows": rows });
        m6rec_tensor::atomic::write_bytes(Path::new(&json_out), serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("wrote {json_out}");
    }
    Ok(())
}

/// A service over an untrained model of `n` items (item vectors clustered unless `--items random`), opened in `dir`.
/// Returns it with the seconds opening took.
fn open_service(dir: &Path, n: usize, opts: &Opts) -> Result<(std::sync::Arc<Service>, f64)> {
    let ds = dataset(n, opts.users);
    let data = dir.join("data");
    ds.save(&data)?;
    let mut cfg = RunConfig::default();
    cfg.model.d_model = 64;
    cfg.model.n_layers = 2;
    cfg.model.max_len = 50;
    let mut fp = DatasetFingerprint::of(&ds);
    fp.path = Some(data.clone());
    let ckpt = dir.join("ckpt");
    Trainer::new(cfg, fp, tch::Device::Cpu)?.save(&ckpt)?;
    if opts.items_kind == "clustered" {
        cluster_item_embeddings(&ckpt, n)?;
    }
    drop(ds);
    let source = ModelSource {
        checkpoint: ckpt,
        data,
        features: None,
        text_model: None,
        device: tch::Device::Cpu,
        index: opts.index,
    };
    let limits = Limits { max_wait: Duration::from_micros(500), ..Limits::default() };
    let t_open = Instant::now();
    let svc = Service::open(ServeConfig {
        source,
        state_dir: dir.join("state"),
        media_root: None,
        limits,
        admin_token: None,
    })?;
    Ok((svc, t_open.elapsed().as_secs_f64()))
}

/// Serves `n` items on 127.0.0.1 and drives them with wrk at the target rate: the row of the table and the JSON.
fn measure(n: usize, opts: &Opts) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let (svc, open_s) = open_service(dir.path(), n, opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (recall, index_desc) = rt.block_on(svc.index_report(500, 10)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = svc.clone();
    let server = rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        s.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let load = drive(&dir.path().join("bench.lua"), &format!("http://{addr}/v1/recommend"), n, opts)?;
    let r = &load.wrk;
    let get = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let failed = get("connect_errors") + get("read_errors") + get("write_errors") + get("timeouts") + get("non2xx");
    let achieved = get("requests") / (get("duration_us") / 1e6).max(1e-9);
    let (mode, rss_start, rss_end, rss_max) = (&opts.mode, load.rss_start, load.rss_end, load.rss_max);
    println!(
        "{n:>9} {mode:>8} {achieved:>9.1} {:>9.2} {:>9.2} {:>9.2} {failed:>7} {rss_start:>9.0}Mi {rss_end:>5.0}/{rss_max:.0}Mi {recall:>9.3} {open_s:>7.1}  {index_desc}",
        get("p50_us") / 1e3,
        get("p99_us") / 1e3,
        get("max_us") / 1e3,
    );
    let hits = svc.metrics().cache_hits.get();
    let row = json!({
        "items": n, "mode": mode, "target_rate": opts.rate, "achieved_rate": achieved, "seconds": opts.seconds,
        "connections": opts.conns, "p50_ms": get("p50_us") / 1e3, "p90_ms": get("p90_us") / 1e3,
        "p99_ms": get("p99_us") / 1e3, "max_ms": get("max_us") / 1e3, "failed": failed, "wrk": r,
        "rss_mib_start": rss_start, "rss_mib_end": rss_end, "rss_mib_max": rss_max, "rss_samples": load.samples,
        "user_cache_hits": hits, "index": index_desc,
        "recall_at_10": recall, "open_seconds": open_s, "item_embeddings": opts.items_kind,
    });
    let _ = stop.send(());
    let _ = rt.block_on(server);
    drop(svc);
    Ok(row)
}

/// What one wrk run measured, with the process's memory before, after and at most (MiB) and sampled over time.
struct Load {
    wrk: Value,
    rss_start: f64,
    rss_end: f64,
    rss_max: f64,
    samples: Vec<(f64, f64)>,
}

/// A 3 s warm-up (page in the table, fill allocator pools), not measured, whose median latency paces the run: each
/// connection waits `connections / rate - latency` between requests. Then the measured run.
fn drive(script: &Path, url: &str, n: usize, opts: &Opts) -> Result<Load> {
    let conns = opts.conns;
    std::fs::write(script, lua(opts.users, conns as f64 * 1000.0 / opts.rate, &opts.mode, n))?;
    let warm = Command::new("wrk").args(["-t1", &format!("-c{conns}"), "-d3s", "-s"]).arg(script).arg(url).output()?;
    let warm_p50_ms = String::from_utf8_lossy(&warm.stdout)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["p50_us"].as_f64())
        .map_or(0.0, |us| us / 1e3);
    let delay_ms = (conns as f64 * 1000.0 / opts.rate - warm_p50_ms).max(0.0);
    std::fs::write(script, lua(opts.users, delay_ms, &opts.mode, n))?;
    let rss_start = rss_mib();
    let mut child = Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{}s", opts.seconds), "--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let (mut rss_max, t0) = (rss_start, Instant::now());
    let mut samples = Vec::new();
    while child.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        let r = rss_mib();
        rss_max = rss_max.max(r);
        samples.push((t0.elapsed().as_secs_f64(), r));
    }
    let out = child.wait_with_output()?;
    let rss_end = rss_mib();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).context("wrk printed no result line")?;
    Ok(Load { wrk: serde_json::from_str(line)?, rss_start, rss_end, rss_max, samples })
}
