//! `m6rec train` data-parallel over 2 processes on 127.0.0.1 (launched as torchrun launches workers: environment
//! variables), against the same run in one process. Every process is bounded in time.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_testkit::process::{finish, free_port, launch_env, Done};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

const CONFIG: &str = r#"
[model]
d_model = 32
n_layers = 1
n_heads = 2
max_len = 20
dropout = 0.0
loss = { type = "full_softmax" }
# SGD: Adam turns float noise in a gradient that is exactly zero in exact arithmetic (the attention keys' bias: softmax
# ignores a constant added to every key) into steps of +-lr, which would hide what this test compares.
[optim]
algorithm = "sgd"
momentum = 0.9
lr = 0.2
[train]
batch_size = 64
epochs = 4
patience = 5
seed = 3
"#;

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

/// A small demo dataset and the run config in `dir`.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let (src, ds, cfg) = (dir.join("src"), dir.join("ds"), dir.join("run.toml"));
    std::fs::create_dir(&src).unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let keep: String = inter.lines().take(8000).map(|l| format!("{l}\n")).collect();
    std::fs::write(src.join("demo.inter"), keep).unwrap();
    std::fs::copy(m6rec_testkit::fixture("demo/demo.item"), src.join("demo.item")).unwrap();
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_m6rec"))
        .args(["import", "recbole", p(&src), "--out", p(&ds)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (ds, cfg)
}

fn train(args: &[&str], rank: Option<(usize, usize, u16)>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_m6rec"));
    c.arg("train").args(args).args(["--threads", "1", "--device", "cpu"]);
    match rank {
        Some((rank, world, port)) => {
            launch_env(&mut c, rank, world, port);
        }
        None => {
            for v in ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "TORCHELASTIC_USE_AGENT_STORE"]
            {
                c.env_remove(v);
            }
        }
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn single(args: &[&str]) {
    let d = finish(train(args, None), Duration::from_secs(120));
    assert!(d.ok, "{}\n{}", d.stdout, d.stderr);
}

fn pair(args: &[&str]) -> Done {
    let port = free_port();
    let (a, b) = (train(args, Some((0, 2, port))), train(args, Some((1, 2, port))));
    let (a, b) = (finish(a, Duration::from_secs(120)), finish(b, Duration::from_secs(120)));
    assert!(a.ok && b.ok, "rank 0: {}\n{}\nrank 1: {}\n{}", a.stdout, a.stderr, b.stdout, b.stderr);
    assert!(b.stdout.is_empty(), "rank 1 trains quietly: {}", b.stdout);
    a
}

fn weights(dir: &Path, file: &str) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(dir.join(file)).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_diff(a: &Path, b: &Path, file: &str) -> f64 {
    let (wa, wb) = (weights(a, file), weights(b, file));
    assert_eq!(wa.len(), wb.len());
    wa.iter()
        .zip(&wb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
}

fn curve(s: &serde_json::Value, field: &str) -> Vec<f64> {
    s["history"].as_array().unwrap().iter().map(|r| r[field].as_f64().unwrap_or(f64::NAN)).collect()
}

#[test]
fn two_ranks_train_what_one_process_trains_and_resume_as_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, cfg) = setup(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    single(&["--data", p(&ds), "--config", p(&cfg), "--out", p(&one)]);
    // The group trains 2 epochs, stops, and resumes for the rest: still the single run.
    let out = pair(&["--data", p(&ds), "--config", p(&cfg), "--out", p(&two), "--until-epoch", "2"]);
    assert!(out.stdout.contains("data-parallel: 2 ranks"), "{}", out.stdout);
    assert_eq!(state(&two)["epoch"], 2);
    pair(&["--data", p(&ds), "--config", p(&cfg), "--out", p(&two), "--resume"]);

    let (s1, s2) = (state(&one), state(&two));
    assert_eq!(s1["epoch"], 4);
    assert_eq!(s1["step"], s2["step"], "same number of optimizer steps");
    assert_eq!(s1["best_epoch"], s2["best_epoch"]);
    for (a, b) in curve(&s1, "loss").iter().zip(curve(&s2, "loss")) {
        assert!((a - b).abs() < 1e-5, "epoch losses differ: {a} vs {b}");
    }
    for (a, b) in curve(&s1, "valid_ndcg10").iter().zip(curve(&s2, "valid_ndcg10")) {
        assert!((a - b).abs() < 1e-3, "validation NDCG@10 differs: {a} vs {b}");
    }
    for file in ["last.safetensors", "model.safetensors", "optim.safetensors"] {
        let d = max_diff(&one, &two, file);
        eprintln!("{file}: max |1 process - 2 ranks| = {d:e}");
        assert!(d < 1e-5, "{file}: max difference {d} between 1 process and 2 ranks");
    }
}

#[test]
fn a_killed_rank_ends_the_run_with_its_name_and_a_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, cfg) = setup(dir.path());
    let ck = dir.path().join("ck");
    let port = free_port();
    let args = ["--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--epochs", "100000", "--dist-timeout", "20"];
    let rank0 = train(&args, Some((0, 2, port)));
    let mut rank1 = train(&args, Some((1, 2, port)));
    // Let it train (and checkpoint) for a while, then kill rank 1 without warning.
    let start = Instant::now();
    while !ck.join("state.json").exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let d = finish(rank0, Duration::from_secs(40));
    assert!(!d.ok, "rank 0 must fail: {}", d.stdout);
    assert!(d.stderr.contains("lost rank 1"), "the error must name rank 1: {}", d.stderr);
    assert!(d.secs < 30.0, "reported after {:.1} s", d.secs);
    // The last checkpoint is whole: its state parses and its weights load.
    let s = state(&ck);
    assert!(s["epoch"].as_u64().unwrap() >= 1);
    assert!(!weights(&ck, "last.safetensors").is_empty());
}

#[test]
fn a_rank_that_never_comes_is_reported_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, cfg) = setup(dir.path());
    let ck = dir.path().join("ck");
    let args = ["--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--dist-timeout", "3"];
    let d = finish(train(&args, Some((0, 2, free_port()))), Duration::from_secs(60));
    assert!(!d.ok);
    assert!(d.stderr.contains("joining the data-parallel group as rank 0 of 2"), "{}", d.stderr);
    assert!(d.stderr.contains("1/2 clients joined"), "{}", d.stderr);
    assert!(d.secs < 30.0, "gave up after {:.1} s", d.secs);
}

#[test]
fn an_item_tower_trains_data_parallel_like_one_process() {
    // Items from content (frozen MiniLM text + id embedding, gated fusion): the sequence model's own id table gets no
    // gradient here, so the DDP engine runs with find_unused_parameters.
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = setup(dir.path());
    let model = m6rec_testkit::text_model();
    let feats = Command::new(env!("CARGO_BIN_EXE_m6rec"))
        .args(["--threads", "2", "features", p(&ds), "--text-model", p(&model)])
        .output()
        .unwrap();
    assert!(feats.status.success(), "{}", String::from_utf8_lossy(&feats.stderr));
    let cfg = dir.path().join("tower.toml");
    let tower = "[item_tower]\nmode = \"hybrid\"\nfusion = { type = \"gated\" }\nid_dropout = 0.0\n";
    std::fs::write(&cfg, format!("{CONFIG}{tower}").replace("epochs = 4", "epochs = 3")).unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    single(&["--data", p(&ds), "--config", p(&cfg), "--out", p(&one)]);
    pair(&["--data", p(&ds), "--config", p(&cfg), "--out", p(&two)]);
    let (s1, s2) = (state(&one), state(&two));
    assert_eq!(s2["epoch"], 3);
    for (a, b) in curve(&s1, "loss").iter().zip(curve(&s2, "loss")) {
        assert!((a - b).abs() < 1e-4, "epoch losses differ: {a} vs {b}");
    }
    let d = max_diff(&one, &two, "last.safetensors");
    eprintln!("item tower: max |1 process - 2 ranks| = {d:e}");
    assert!(d < 1e-4, "weights differ by {d}");
}
