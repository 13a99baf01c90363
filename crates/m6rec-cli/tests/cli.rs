//! The `m6rec` binary end to end: a small run, and bad input that must exit 2 with a message naming what and where.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

fn m6rec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m6rec")).args(args).args(["--threads", "2"]).output().expect("running m6rec")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Exit code 2, no panic, and the message on stderr.
fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn import_train_eval_recommend_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (src, ds, ck) = (dir.path().join("src"), dir.path().join("ds"), dir.path().join("ck"));
    std::fs::create_dir(&src).unwrap();
    // A quarter of the demo users keeps this fast.
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let keep: String = inter.lines().take(8000).map(|l| format!("{l}\n")).collect();
    std::fs::write(src.join("demo.inter"), keep).unwrap();
    std::fs::copy(m6rec_testkit::fixture("demo/demo.item"), src.join("demo.item")).unwrap();

    let out = ok(&m6rec(&["import", "recbole", p(&src), "--out", p(&ds)]));
    assert!(out.contains("imported 7999 interactions"), "{out}");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "[model]\nd_model = 16\nmax_len = 20\n[train]\nepochs = 2\n").unwrap();
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--device", "cpu"]));
    assert!(out.contains("best validation NDCG@10"), "{out}");
    let json = dir.path().join("m.json");
    let chart = dir.path().join("m.svg");
    let out = ok(&m6rec(&["eval", "--checkpoint", p(&ck), "--data", p(&ds), "--json", p(&json), "--plot", p(&chart)]));
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("popularity") && svg.contains("ndcg@10"),
        "chart: {}",
        &svg[..svg.len().min(200)]
    );
    let curves = std::fs::read_to_string(ck.join("curves.svg")).unwrap();
    assert!(curves.contains("validation NDCG@10"), "training curves must be drawn");
    assert!(out.contains("popularity") && out.contains("NDCG"), "{out}");
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for model in ["model", "popularity"] {
        let v = metrics[model]["ndcg@10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{model}: {v}");
    }
    let out = ok(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--user", "u0", "-k", "5"]));
    assert_eq!(out.lines().filter(|l| l.contains(". i")).count(), 5, "{out}");
    let out = ok(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--history", "i0,i1", "-k", "3"]));
    assert!(out.contains("The Crimson Harbor"), "titles must be shown: {out}");
    assert!(!out.contains(" i0 ") && !out.contains(" i1 "), "seen items are excluded: {out}");

    // Bad input on a real checkpoint.
    let err = fails(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--history", "i0,nope"]));
    assert!(err.contains("unknown item `nope`"), "{err}");
    let err = fails(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--user", "ghost"]));
    assert!(err.contains("unknown user `ghost`"), "{err}");
    let err = fails(&m6rec(&[
        "train",
        "--data",
        p(&ds),
        "--out",
        p(&dir.path().join("none")),
        "--resume",
        "--device",
        "cpu",
    ]));
    assert!(err.contains("resuming from") && err.contains("m6rec train"), "{err}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[model]\nn_heads = 3\n").unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg)]));
    assert!(err.contains("bad.toml") && err.contains("n_heads"), "{err}");
}

#[test]
fn bad_input_exits_2_with_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    // Missing source.
    let err = fails(&m6rec(&["import", "movielens", "/nonexistent/ml", "--out", p(&dir.path().join("x"))]));
    assert!(err.contains("/nonexistent/ml"), "{err}");
    // Empty dataset: nothing written.
    let src = dir.path().join("empty");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("e.inter"), "user_id:token\titem_id:token\n").unwrap();
    let out_dir = dir.path().join("empty-ds");
    let err = fails(&m6rec(&["import", "recbole", p(&src), "--out", p(&out_dir)]));
    assert!(err.contains("no interactions imported"), "{err}");
    assert!(!out_dir.exists(), "no partial dataset may be left behind");
    // Not a dataset.
    let err = fails(&m6rec(&["train", "--data", p(dir.path()), "--device", "cpu"]));
    assert!(err.contains("no dataset.json") && err.contains("m6rec import"), "{err}");
    // Missing checkpoint.
    let err = fails(&m6rec(&["eval", "--checkpoint", p(&dir.path().join("none")), "--data", p(dir.path())]));
    assert!(err.contains("dataset.json"), "{err}");
    // Unknown format and device.
    let out = m6rec(&["import", "csv", ".", "--out", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = fails(&m6rec(&["train", "--data", ".", "--device", "tpu"]));
    assert!(err.contains("unknown device `tpu`"), "{err}");
}

/// A run whose items come from an item tower over cached MiniLM text embeddings: `features --text-model`, then
/// train, eval and recommend find the cache beside the dataset; without the cache the error says how to make it.
#[test]
fn item_tower_runs_read_the_feature_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (src, ds, ck) = (dir.path().join("src"), dir.path().join("ds"), dir.path().join("ck"));
    std::fs::create_dir(&src).unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let keep: String = inter.lines().take(4000).map(|l| format!("{l}\n")).collect();
    std::fs::write(src.join("demo.inter"), keep).unwrap();
    std::fs::copy(m6rec_testkit::fixture("demo/demo.item"), src.join("demo.item")).unwrap();
    ok(&m6rec(&["import", "recbole", p(&src), "--out", p(&ds)]));
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        "[model]\nd_model = 16\nmax_len = 20\n[train]\nepochs = 2\n[item_tower]\nmode = \"hybrid\"\nfusion = { type = \"gated\" }\n",
    )
    .unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]));
    assert!(err.contains("feature cache") && err.contains("m6rec features"), "{err}");
    let model = m6rec_testkit::text_model();
    let out = ok(&m6rec(&["features", p(&ds), "--text-model", p(&model)]));
    assert!(out.contains("text") && out.contains("embedded"), "{out}");
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--device", "cpu"]));
    assert!(out.contains("best validation NDCG@10"), "{out}");
    let out = ok(&m6rec(&["eval", "--checkpoint", p(&ck), "--data", p(&ds), "--no-baseline"]));
    assert!(out.contains("NDCG"), "{out}");
    let out = ok(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--history", "i1,i2", "-k", "3"]));
    assert!(out.lines().filter(|l| l.trim_start().starts_with(['1', '2', '3'])).count() >= 3, "{out}");
}
