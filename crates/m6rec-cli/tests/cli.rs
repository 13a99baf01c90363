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

    // Online update: new events (one from a new user) appended and trained on; the old checkpoint stays.
    let events = dir.path().join("events.csv");
    std::fs::write(&events, "user_id,item_id\nu0,i5\nu0,i6\nnewcomer,i1\nnewcomer,i2\nnewcomer,i3\n").unwrap();
    let upd = dir.path().join("ck-updated");
    let before = std::fs::read(ck.join("model.safetensors")).unwrap();
    let out = ok(&m6rec(&["update", "--from", p(&ck), "--events", p(&events), "--out", p(&upd), "--epochs", "1"]));
    assert!(out.contains("5 new events for 2 users (1 new)"), "{out}");
    assert_eq!(std::fs::read(ck.join("model.safetensors")).unwrap(), before, "the old checkpoint is untouched");
    let data2 = dir.path().join("ck-updated.data");
    let out = ok(&m6rec(&["recommend", "--checkpoint", p(&upd), "--data", p(&data2), "--user", "newcomer", "-k", "3"]));
    assert_eq!(out.lines().filter(|l| l.contains(". i")).count(), 3, "{out}");
    std::fs::write(&events, "u0,nope\n").unwrap();
    let err = fails(&m6rec(&["update", "--from", p(&ck), "--events", p(&events), "--out", p(&upd)]));
    assert!(err.contains("unknown item `nope`") && err.contains("events.csv"), "{err}");

    // Prompt tuning on the trained model: only a small fraction trains, and the result is an ordinary checkpoint.
    let ad = dir.path().join("adapted");
    let out = ok(&m6rec(&[
        "adapt",
        "--from",
        p(&ck),
        "--data",
        p(&ds),
        "--method",
        "prompt",
        "--prompts",
        "2",
        "--epochs",
        "1",
        "--out",
        p(&ad),
    ]));
    assert!(out.contains("prompt tuning: 32 of"), "{out}");
    ok(&m6rec(&["eval", "--checkpoint", p(&ad), "--data", p(&ds), "--no-baseline"]));
    // LoRA only: rank 2 on the 4 linear layers of each of the 2 blocks (d_model 16, d_ff 64).
    let out = ok(&m6rec(&[
        "adapt",
        "--from",
        p(&ck),
        "--data",
        p(&ds),
        "--method",
        "prompt",
        "--prompts",
        "0",
        "--lora",
        "2",
        "--epochs",
        "1",
        "--out",
        p(&ad),
    ]));
    let per_block = 2 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16));
    assert!(out.contains(&format!("prompt tuning: {} of", 2 * per_block)) && out.contains("LoRA rank 2"), "{out}");
    ok(&m6rec(&["eval", "--checkpoint", p(&ad), "--data", p(&ds), "--no-baseline"]));

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

/// A generative (semantic-ID) run: the codes come from the text feature cache, training prints the codebook's use,
/// eval ranks with beam search, and recommend ranks by the beam without the history's items.
#[test]
fn generative_runs_fit_semantic_ids_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_demo(dir.path());
    let ck = dir.path().join("gen");
    let cfg = dir.path().join("gen.toml");
    std::fs::write(
        &cfg,
        "[model]\nd_model = 32\nmax_len = 20\n[train]\nepochs = 3\n[generative]\nsemantic_ids = { levels = 2, codes = 16 }\n",
    )
    .unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]));
    assert!(err.contains("m6rec features") && err.contains("text"), "{err}");
    ok(&m6rec(&["features", p(&ds), "--text-model", p(&m6rec_testkit::text_model())]));
    // Paused after epoch 2, then resumed: epoch 3 runs in the second process.
    let out = ok(&m6rec(&[
        "train",
        "--data",
        p(&ds),
        "--config",
        p(&cfg),
        "--out",
        p(&ck),
        "--device",
        "cpu",
        "--until-epoch",
        "2",
    ]));
    assert!(out.contains("semantic IDs (residual k-means) for") && out.contains("perplexity"), "{out}");
    assert!(out.contains("epoch   2") && !out.contains("epoch   3") && out.contains("paused after epoch 2"), "{out}");
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--out", p(&ck), "--device", "cpu", "--resume"]));
    assert!(out.contains("resuming") && out.contains("after epoch 2"), "{out}");
    assert!(out.contains("epoch   3") && out.contains("best validation NDCG@10"), "{out}");
    let again = fails(&m6rec(&["train", "--data", p(&ds), "--out", p(&ck), "--resume"]));
    assert!(again.contains("nothing to resume"), "{again}");
    // The dataset's path is recorded (what `m6rec serve` opens without --data), and kept through the resume.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(ck.join("generative.json")).unwrap()).unwrap();
    assert_eq!(
        saved["data"].as_str().map(std::path::PathBuf::from),
        std::fs::canonicalize(&ds).ok(),
        "{}",
        saved["data"]
    );
    let out = ok(&m6rec(&["eval", "--checkpoint", p(&ck), "--data", p(&ds), "--device", "cpu"]));
    assert!(out.contains("generative retrieval (beam 20") && out.contains("popularity"), "{out}");
    let out = ok(&m6rec(&["recommend", "--checkpoint", p(&ck), "--data", p(&ds), "--history", "i1,i2", "-k", "3"]));
    let ranked: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with(['1', '2', '3'])).collect();
    assert_eq!(ranked.len(), 3, "{out}");
    assert!(ranked.iter().all(|l| !l.contains(" i1 ") && !l.contains(" i2 ")), "seen items are left out: {out}");
    let again = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]));
    assert!(again.contains("--force"), "{again}");
}

/// A small demo dataset (a quarter of the users) in `dir/ds`.
fn small_demo(dir: &Path) -> std::path::PathBuf {
    let (src, ds) = (dir.join("src"), dir.join("ds"));
    std::fs::create_dir(&src).unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let keep: String = inter.lines().take(8000).map(|l| format!("{l}\n")).collect();
    std::fs::write(src.join("demo.inter"), keep).unwrap();
    std::fs::copy(m6rec_testkit::fixture("demo/demo.item"), src.join("demo.item")).unwrap();
    ok(&m6rec(&["import", "recbole", p(&src), "--out", p(&ds)]));
    ds
}

fn read_study(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("study.json")).ok()?).ok()
}

#[test]
fn tune_survives_a_kill_records_failures_and_writes_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_demo(dir.path());
    let base = dir.path().join("base.toml");
    std::fs::write(&base, "[model]\nd_model = 16\nmax_len = 20\n[train]\npatience = 100\n").unwrap();
    // n_heads 3 does not divide d_model 16: those trials fail and are recorded, the study goes on.
    let space = dir.path().join("space.toml");
    std::fs::write(
        &space,
        "[study]\nmax_trials = 6\nconcurrency = 2\nmin_epochs = 1\nmax_epochs = 3\neta = 3\nbudget_minutes = 20\n\
         [space]\n\"optim.lr\" = { log_uniform = [1e-4, 1e-2] }\n\"model.n_heads\" = { choice = [1, 2, 3] }\n",
    )
    .unwrap();
    let study = dir.path().join("study");
    let args =
        ["tune", "--space", p(&space), "--config", p(&base), "--data", p(&ds), "--out", p(&study), "--device", "cpu"];
    // First run: killed (SIGKILL, no chance to clean up) as soon as one trial has a result.
    let mut child = Command::new(env!("CARGO_BIN_EXE_m6rec"))
        .args(args)
        .args(["--threads", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let has_result = read_study(&study).is_some_and(|s| {
            s["trials"].as_array().is_some_and(|t| t.iter().any(|t| !t["results"].as_array().unwrap().is_empty()))
        });
        if has_result {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "tune ended before any trial finished");
        assert!(std::time::Instant::now() < deadline, "no trial finished in 300 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = read_study(&study).unwrap();
    let n_before = before["trials"].as_array().unwrap().len();

    // Second run: continues the same study to the end.
    let out = ok(&m6rec(&args));
    assert!(out.contains("continuing the study"), "{out}");
    let s = read_study(&study).unwrap();
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6, "max_trials is the total over both runs (first run had {n_before})");
    let states: Vec<&str> = trials.iter().map(|t| t["status"]["state"].as_str().unwrap()).collect();
    assert!(!states.contains(&"running"), "{states:?}");
    for t in trials {
        let heads = t["params"]["model.n_heads"].as_i64().unwrap();
        if heads == 3 {
            assert_eq!(t["status"]["state"], "failed");
            assert!(t["error"].as_str().unwrap().contains("n_heads"), "{t}");
        } else {
            assert!(!t["results"].as_array().unwrap().is_empty(), "{t}");
        }
    }
    // Trial ids are unique and the earlier trials kept their sampled values.
    for (i, t) in before["trials"].as_array().unwrap().iter().enumerate() {
        assert_eq!(trials[i]["params"], t["params"]);
    }
    // Results: table, plot, best config (ready to train), test metrics of the best trial.
    let file = std::fs::File::open(study.join("trials.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 6);
    let svg = std::fs::read_to_string(study.join("study.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation NDCG@10"), "{}", &svg[..200]);
    let best = m6rec_train::RunConfig::load(&study.join("best.toml")).unwrap();
    assert_eq!(best.train.epochs, 3);
    assert_ne!(best.model.n_heads, 3);
    assert!(out.contains("test metrics of the best trial") && out.contains("NDCG"), "{out}");
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("best-test.json")).unwrap()).unwrap();
    assert!(test["model"]["ndcg@10"].as_f64().unwrap() > 0.0);
    let err = fails(&m6rec(&["tune", "--space", p(&base), "--data", p(&ds), "--out", p(&dir.path().join("x"))]));
    assert!(err.contains("base.toml") && err.contains("space"), "{err}");
}

#[test]
fn without_a_config_the_automatic_strategy_decides_prints_and_saves_its_choices() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_demo(dir.path());
    let ck = dir.path().join("auto");
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--out", p(&ck), "--epochs", "1", "--budget", "2m"]));
    assert!(out.contains("automatic strategy for"), "{out}");
    for field in ["model.max_len", "model.dropout", "model.loss", "optim.lr", "train.max_seconds", "item_tower"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(field)), "{field} missing from the table: {out}");
    }
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["run"]["train"]["max_seconds"].as_f64(), Some(120.0), "the budget is the time cap");
    assert!(saved["run"].get("strategy").is_none(), "the saved config is complete (fixed): {saved}");

    // `strategy = "auto"` in a file: the file's fields win, the rest is decided.
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "strategy = \"auto\"\n[model]\ndropout = 0.05\nd_model = 16\n[train]\nepochs = 1\n").unwrap();
    let ck2 = dir.path().join("auto2");
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck2)]));
    assert!(
        out.lines().any(|l| l.contains("model.dropout") && l.contains("0.05*") && l.contains("set in the run config")),
        "{out}"
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(ck2.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["run"]["model"]["dropout"].as_f64(), Some(0.05));
    assert_eq!(saved["run"]["model"]["d_model"].as_i64(), Some(16));
    assert_eq!(saved["run"]["train"]["epochs"].as_i64(), Some(1));

    // A file without `strategy` is taken as written (its defaults), and says nothing about a strategy.
    std::fs::write(&cfg, "[model]\nd_model = 16\n[train]\nepochs = 1\n").unwrap();
    let out = ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&dir.path().join("fixed"))]));
    assert!(!out.contains("automatic strategy"), "{out}");
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--budget", "soon", "--out", p(&dir.path().join("x"))]));
    assert!(err.contains("soon") && err.contains("10m"), "{err}");
}

/// Regression (issue 19, 16): `--threads 100000` segfaulted in libgomp; `serve --max-body-mib 0` / `--timeout-s 0`
/// were accepted and then failed every request. All are refused at parse time, naming the flag.
#[test]
fn out_of_range_flags_are_refused_before_anything_starts() {
    let err =
        fails(&Command::new(env!("CARGO_BIN_EXE_m6rec")).args(["--threads", "100000", "doctor"]).output().unwrap());
    assert!(err.contains("--threads") && err.contains("100000"), "{err}");
    for flag in ["--max-body-mib", "--timeout-s"] {
        let err = fails(&m6rec(&["serve", "--checkpoint", "nowhere", flag, "0"]));
        assert!(err.contains(flag), "{err}");
    }
}

/// Regression (issue 19, 2): `--out` deleted whatever it named. Each case is refused before any work, and what was
/// there is untouched.
#[test]
fn out_never_replaces_an_input_a_users_folder_or_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_demo(dir.path());
    let src = dir.path().join("src");
    // Import into its own source folder, or a folder holding it.
    let err = fails(&m6rec(&["import", "recbole", p(&src), "--out", p(&src)]));
    assert!(err.contains("contains the input"), "{err}");
    let err = fails(&m6rec(&["import", "recbole", p(&src), "--out", p(dir.path())]));
    assert!(err.contains("contains the input"), "{err}");
    assert!(src.join("demo.inter").exists() && src.join("demo.item").exists());
    // Import over a user's folder.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "mine").unwrap();
    let err = fails(&m6rec(&["import", "recbole", p(&src), "--out", p(&notes)]));
    assert!(err.contains("not a dataset written by m6rec"), "{err}");
    assert_eq!(std::fs::read_to_string(notes.join("todo.txt")).unwrap(), "mine");
    // Train over the dataset, and over a finished run without --resume / --force.
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "[model]\nd_model = 16\nmax_len = 20\n[train]\nepochs = 1\n").unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ds)]));
    assert!(err.contains("contains the dataset"), "{err}");
    assert!(ds.join("dataset.json").exists());
    let ck = dir.path().join("ck");
    ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]));
    let best = std::fs::read(ck.join("model.safetensors")).unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]));
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(ck.join("model.safetensors")).unwrap(), best);
    ok(&m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--force"]));
    // Update onto the checkpoint it reads.
    let events = dir.path().join("events.csv");
    std::fs::write(&events, "user_id,item_id\nu0,i5\n").unwrap();
    let err = fails(&m6rec(&["update", "--from", p(&ck), "--events", p(&events), "--out", p(&ck)]));
    assert!(err.contains("would overwrite"), "{err}");
    // A file as --out.
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "keep").unwrap();
    let err = fails(&m6rec(&["import", "recbole", p(&src), "--out", p(&file)]));
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

/// A warehouse export: a CSV log with its own column names and ISO-8601 times, an item table in JSON lines, the
/// k-core applied; then training under a scheduler (stderr not a terminal) prints plain progress lines.
#[test]
fn an_event_log_imports_with_its_item_table_and_training_reports_progress_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let mut log = String::from("visitor,product,at,kind\n");
    for line in inter.lines().skip(1).take(6000) {
        let f: Vec<&str> = line.split('\t').collect();
        let t = chrono::DateTime::from_timestamp(f[2].parse().unwrap(), 0).unwrap().to_rfc3339();
        log.push_str(&format!("{},{},{t},view\n", f[0], f[1]));
    }
    log.push_str("u0,i1,yesterday,view\n");
    let log_path = dir.path().join("events.csv");
    std::fs::write(&log_path, log).unwrap();
    let items = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.item")).unwrap();
    let mut jsonl = String::new();
    for line in items.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let row = serde_json::json!({ "sku": f[0], "name": f[1], "genre": f[2], "tags": [f[2], f[3]] });
        jsonl.push_str(&format!("{row}\n"));
    }
    let items_path = dir.path().join("items.jsonl");
    std::fs::write(&items_path, jsonl).unwrap();
    let ds = dir.path().join("ds");
    let out = ok(&m6rec(&[
        "import",
        "events",
        p(&log_path),
        "--user",
        "visitor",
        "--item",
        "product",
        "--time",
        "at",
        "--event",
        "kind",
        "--items",
        p(&items_path),
        "--item-id",
        "sku",
        "--title",
        "name",
        "--text",
        "tags",
        "--item-domain",
        "genre",
        "--min-user-events",
        "5",
        "--min-item-events",
        "5",
        "--out",
        p(&ds),
    ]));
    assert!(out.contains("events.csv:6002: time `yesterday`"), "{out}");
    let data = m6rec_data::Dataset::load(&ds).unwrap();
    let mut per_user = vec![0; data.n_users()];
    let mut per_item = vec![0; data.n_items()];
    for (&u, &i) in data.interactions.user.iter().zip(&data.interactions.item) {
        per_user[u as usize] += 1;
        per_item[i as usize] += 1;
    }
    assert!(per_user.iter().chain(&per_item).all(|&n| n >= 5), "the 5-core holds");
    assert!(out.contains(&format!("imported {} interactions", data.interactions.len())), "{out}");
    assert!(data.items.iter().all(|it| it.title.contains("Book") || it.title.contains(' ')), "titles from `name`");
    assert!(data.items.iter().all(|it| it.domain != "events"), "domains from `genre`");
    assert!(data.items.iter().all(|it| it.text.as_deref().is_some_and(|t| t.starts_with(&format!("{}, ", it.domain)))));
    assert_eq!(data.interactions.event[0].as_deref(), Some("view"));

    // Under a scheduler: no terminal, plain lines with the step count, rate and ETA.
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "[model]\nd_model = 16\nmax_len = 20\n[train]\nepochs = 3\nbatch_size = 16\n").unwrap();
    let train = Command::new(env!("CARGO_BIN_EXE_m6rec"))
        .args(["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&dir.path().join("ck"))])
        .args(["--device", "cpu", "--threads", "2", "--split", "temporal"])
        .env("M6REC_PROGRESS_SECS", "0.2")
        .output()
        .unwrap();
    ok(&train);
    let stderr = String::from_utf8_lossy(&train.stderr);
    let line = stderr.lines().find(|l| l.starts_with("train epoch") && l.contains(" steps (")).unwrap_or_else(|| {
        panic!("no plain progress line in: {stderr}");
    });
    assert!(line.contains("/s, ETA ") && line.contains("s elapsed"), "{line}");
    // The run's temporal split is the one evaluation uses, and says so.
    let out = ok(&m6rec(&["eval", "--checkpoint", p(&dir.path().join("ck")), "--data", p(&ds)]));
    assert!(out.contains("split temporal: validation from t=") && out.contains(" UTC), test from t="), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[train.split]\nkind = \"temporal\"\nvalid = 0.6\ntest = 0.5\n").unwrap();
    let err = fails(&m6rec(&["train", "--data", p(&ds), "--config", p(&bad), "--device", "cpu"]));
    assert!(err.contains("train.split: valid 0.6 and test 0.5"), "{err}");
}

/// `m6rec run`: a raw CSV log to a trained, evaluated model with one command, import flags passed through; a second
/// run into the same folder is refused without --force.
#[test]
fn run_goes_from_a_raw_log_to_an_evaluated_model_and_prints_the_serve_line() {
    let dir = tempfile::tempdir().unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let mut log = String::from("who,what,when\n");
    for line in inter.lines().skip(1).take(5000) {
        let f: Vec<&str> = line.split('\t').collect();
        log.push_str(&format!("{},{},{}\n", f[0], f[1], f[2]));
    }
    let src = dir.path().join("shop.csv");
    std::fs::write(&src, log).unwrap();
    let out_dir = dir.path().join("run");
    let args = [
        "run",
        p(&src),
        "--budget",
        "8s",
        "--out",
        p(&out_dir),
        "--text-model",
        "none",
        "--threads",
        "2",
        "--",
        "--user",
        "who",
        "--item",
        "what",
        "--time",
        "when",
    ];
    let run = || Command::new(env!("CARGO_BIN_EXE_m6rec")).args(args).output().unwrap();
    let out = ok(&run());
    assert!(out.contains("== import") && out.contains("== train") && out.contains("== eval"), "{out}");
    assert!(out.contains(&format!("m6rec serve --checkpoint {}", out_dir.join("model").display())), "{out}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap()).unwrap();
    let ndcg = metrics["model"]["ndcg@10"].as_f64().unwrap();
    assert!(ndcg > 0.0, "{metrics}");
    // The report: one file, its metrics table holds the run's numbers, nothing is fetched from elsewhere.
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let table = &html[html.find("<table id=\"metrics\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains(&format!("<td>{ndcg:.4}</td>")) && table.contains(">popularity<"), "{table}");
    assert!(html.contains("<table id=\"profile\"><tr><th class=l>users</th><td>"), "dataset profile");
    assert!(html.contains("<svg") && html.contains("user u"), "curves and examples");
    assert!(
        html.contains("<pre id=\"decisions\">automatic strategy for ") && html.contains("model.max_len"),
        "decisions"
    );
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script"),
        "self-contained"
    );
    let err = fails(&run());
    assert!(err.contains("--force"), "{err}");
}

/// The report in a real browser (headless Chromium over WebDriver): the page renders, its metrics table holds the
/// run's numbers, every image loads, and the page fetches nothing.
#[test]
fn the_report_renders_in_a_headless_browser_with_the_runs_numbers_and_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    let mut log = String::from("who,what,when\n");
    for line in inter.lines().skip(1).take(4000) {
        let f: Vec<&str> = line.split('\t').collect();
        log.push_str(&format!("{},{},{}\n", f[0], f[1], f[2]));
    }
    std::fs::write(dir.path().join("shop.csv"), log).unwrap();
    // Items with titles and, for two in three, a picture in one of four formats.
    let pics = dir.path().join("pics");
    std::fs::create_dir(&pics).unwrap();
    let formats = ["chelsea.png", "coffee.jpg", "astronaut.webp", "astronaut.gif"];
    for f in formats {
        std::fs::copy(m6rec_testkit::fixture(&format!("images/{f}")), pics.join(f)).unwrap();
    }
    let items = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.item")).unwrap();
    let mut table = String::from("id\ttitle\tpicture\n");
    for (n, line) in items.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let pic = if n % 3 == 2 { String::new() } else { format!("pics/{}", formats[n % 4]) };
        table.push_str(&format!("{}\t{} & co\t{pic}\n", f[0], f[1]));
    }
    std::fs::write(dir.path().join("items.tsv"), table).unwrap();
    let out_dir = dir.path().join("run");
    let (shop, items) = (dir.path().join("shop.csv"), dir.path().join("items.tsv"));
    // Not the `m6rec` helper: its trailing --threads would land after `--`, among the import flags.
    ok(&Command::new(env!("CARGO_BIN_EXE_m6rec"))
        .args([
            "run",
            p(&shop),
            "--budget",
            "8s",
            "--out",
            p(&out_dir),
            "--text-model",
            "none",
            "--threads",
            "2",
            "--",
            "--user",
            "who",
            "--item",
            "what",
            "--time",
            "when",
            "--items",
            p(&items),
            "--item-id",
            "id",
            "--title",
            "title",
            "--image-column",
            "picture",
        ])
        .output()
        .unwrap());
    let browser = m6rec_testkit::browser::Browser::start().unwrap();
    browser.open(&format!("file://{}", out_dir.join("report.html").display())).unwrap();
    let page = browser
        .eval(
            "const imgs = Array.from(document.images);
             const table = document.querySelector('#metrics');
             const rows = Array.from(table.rows).map(r => Array.from(r.cells).map(c => c.innerText.trim()));
             return {
               title: document.title,
               images: imgs.length,
               broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 40)),
               rows: rows,
               table_height: table.getBoundingClientRect().height,
               svg_width: Math.max(0, ...Array.from(document.querySelectorAll('svg')).map(s => s.getBoundingClientRect().width)),
               users: document.querySelector('#profile td').innerText,
               titles: Array.from(document.querySelectorAll('td.l')).filter(c => c.innerText.includes(' & co')).length,
               fetched: performance.getEntriesByType('resource').map(e => e.name),
             };",
        )
        .unwrap();
    assert_eq!(page["title"], "m6rec report: shop", "{page}");
    assert!(page["images"].as_u64().unwrap() >= 3, "thumbnails of the example items: {page}");
    assert_eq!(page["broken"], serde_json::json!([]), "every image loads: {page}");
    assert_eq!(page["fetched"], serde_json::json!([]), "nothing is fetched: {page}");
    assert!(page["table_height"].as_f64().unwrap() > 20.0 && page["svg_width"].as_f64().unwrap() > 100.0, "{page}");
    assert!(page["titles"].as_u64().unwrap() >= 3, "titles are shown unescaped-as-text: {page}");
    // Every number of metrics.json is in the rendered table, in its scorer's row and its metric's column.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap()).unwrap();
    let rows = page["rows"].as_array().unwrap();
    let header: Vec<&str> = rows[0].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let mut checked = 0;
    for (scorer, m) in metrics.as_object().unwrap() {
        let row = rows.iter().find(|r| r[0] == scorer.as_str()).unwrap_or_else(|| panic!("no row {scorer}: {page}"));
        for (k, x) in m.as_object().unwrap().iter().filter(|(_, x)| x.is_f64()) {
            let col = header.iter().position(|h| h == k).unwrap_or_else(|| panic!("no column {k}: {page}"));
            assert_eq!(row[col], format!("{:.4}", x.as_f64().unwrap()), "{scorer} {k}: {page}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "{metrics}");
    let ds = m6rec_data::Dataset::load(&out_dir.join("data")).unwrap();
    assert_eq!(page["users"], ds.n_users().to_string(), "{page}");
    // The probe itself can fail: a corrupt thumbnail is reported broken.
    let bad = dir.path().join("bad.html");
    std::fs::write(&bad, "<!doctype html><img src=\"data:image/png;base64,iVBORw0KGgoAAAA\">").unwrap();
    browser.open(&format!("file://{}", bad.display())).unwrap();
    let broken =
        browser.eval("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length;");
    assert_eq!(broken.unwrap(), 1);
}

/// Regression (issue 19, 17): `m6rec serve` start-up errors said their cause twice (once in the message, once as
/// its source).
#[test]
fn serve_start_up_errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("no-such-checkpoint");
    let data = m6rec_testkit::fixture("demo");
    let err = fails(&m6rec(&["serve", "--checkpoint", p(&ck), "--data", p(&data)]));
    // The demo fixture is RecBole files, not a dataset: that is the cause, said once.
    assert_eq!(err.matches("not an m6rec dataset").count(), 1, "{err}");
    assert!(err.contains("m6rec import"), "{err}");
}
