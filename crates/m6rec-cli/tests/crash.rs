//! Crash consistency: `m6rec import`, `m6rec train` (through its checkpoint saves) and `m6rec serve` (while it
//! ingests events) are killed with SIGKILL at random points, and after each kill:
//! - what the command writes is absent or loads (the dataset, the checkpoint), and a later load or write leaves no
//!   temporary or old copy behind;
//! - the service restarts on its state directory (the lock died with the process) and every event it acknowledged
//!   before the kill is in the user's history.
//!
//! `M6REC_CRASH_CYCLES` cycles of each (default 3 here; `cargo xtask crashtest` runs 100).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cycles() -> usize {
    std::env::var("M6REC_CRASH_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

fn m6rec(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_m6rec"));
    c.args(args).args(["--threads", "1"]).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

/// Runs `cmd` to the end once and says how long it took (where the kills are drawn from).
fn duration_of(mut cmd: Command) -> Duration {
    let t = Instant::now();
    assert!(cmd.status().unwrap().success(), "{cmd:?} fails without a kill");
    t.elapsed()
}

fn kill_after(mut child: Child, after: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    true
}

/// The hidden siblings atomic writes use (`.NAME.tmp-PID`, `.NAME.old-PID`) left in `parent` for `name`.
fn leftovers(parent: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.tmp-")) || n.starts_with(&format!(".{name}.old-")))
        .collect()
}

#[test]
fn killed_imports_and_training_leave_a_loadable_result_or_none_and_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let demo = m6rec_testkit::fixture("demo");
    let ds = dir.path().join("ds");
    let import = || m6rec(&["import", "recbole", p(&demo), "--out", p(&ds)]);
    let took = duration_of(import());
    let (mut killed, mut loaded) = (0, 0);
    for _ in 0..cycles() {
        let at = took.mul_f64(rng.random_range(0.0..1.1));
        killed += usize::from(kill_after(import().spawn().unwrap(), at));
        // What the next command does first: recover, then load.
        match m6rec_data::Dataset::load(&ds) {
            Ok(d) => {
                assert_eq!(d.n_items(), 360);
                loaded += 1;
            }
            Err(e) => assert!(!ds.exists(), "a dataset that does not load: {e}"),
        }
        let left = leftovers(dir.path(), "ds");
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    eprintln!("import: {} cycles, {killed} killed mid-way, {loaded} loadable after", cycles());
    // A dataset that loads, for training.
    assert!(import().status().unwrap().success());
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, "[model]\nd_model = 16\nn_layers = 1\nmax_len = 20\n[train]\nepochs = 6\nbatch_size = 64\n")
        .unwrap();
    let ck = dir.path().join("ck");
    let train =
        || m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck), "--force", "--device", "cpu"]);
    let took = duration_of(train());
    let (mut killed, mut loaded) = (0, 0);
    for _ in 0..cycles() {
        let at = took.mul_f64(rng.random_range(0.05..1.1));
        killed += usize::from(kill_after(train().spawn().unwrap(), at));
        match m6rec_train::checkpoint::load_model(&ck, tch::Device::Cpu) {
            Ok(_) => {
                let state = std::fs::read_to_string(ck.join("state.json")).unwrap();
                assert!(serde_json::from_str::<serde_json::Value>(&state).is_ok(), "{state}");
                loaded += 1;
            }
            Err(e) => assert!(!ck.exists(), "a checkpoint that does not load: {e}"),
        }
        let left = leftovers(dir.path(), "ck");
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    eprintln!("train: {} cycles, {killed} killed mid-way, {loaded} loadable after", cycles());
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
}

fn start_server(ck: &Path, ds: &Path, state: &Path, addr: &str) -> Child {
    let child =
        m6rec(&["serve", "--checkpoint", p(ck), "--data", p(ds), "--state", p(state), "--addr", addr]).spawn().unwrap();
    let start = Instant::now();
    while http(addr, "GET", "/healthz", "").is_none_or(|(s, _)| s != 200) {
        assert!(start.elapsed() < Duration::from_secs(60), "the server did not come up on its state directory");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_killed_service_keeps_every_event_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, ck, state) = (dir.path().join("ds"), dir.path().join("ck"), dir.path().join("state"));
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let inter = std::fs::read_to_string(m6rec_testkit::fixture("demo/demo.inter")).unwrap();
    std::fs::write(src.join("d.inter"), inter.lines().take(3000).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    assert!(m6rec(&["import", "recbole", p(&src), "--out", p(&ds)]).status().unwrap().success());
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, "[model]\nd_model = 16\nn_layers = 1\nmax_len = 20\n[train]\nepochs = 1\n").unwrap();
    assert!(m6rec(&["train", "--data", p(&ds), "--config", p(&cfg), "--out", p(&ck)]).status().unwrap().success());
    let items: Vec<String> = m6rec_data::Dataset::load(&ds).unwrap().items.iter().map(|i| i.id.clone()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let addr = format!("127.0.0.1:{}", m6rec_testkit::process::free_port());
    let mut acked = 0usize;
    for cycle in 0..cycles() {
        let mut server = start_server(&ck, &ds, &state, &addr);
        // Every event acknowledged so far is there: one more event makes the history one longer than them.
        let body = format!("{{\"user_id\":\"crash-user\",\"items\":[\"{}\"]}}", items[cycle % items.len()]);
        let (st, v) = http(&addr, "POST", "/v1/events", &body).unwrap();
        assert_eq!(st, 200, "{v}");
        acked += 1;
        let len = v["history_len"].as_u64().unwrap() as usize;
        assert!(len >= acked, "cycle {cycle}: history {len}, but {acked} events were acknowledged");
        acked = len; // an event in flight at the kill may have been applied without its answer
                     // A writer acknowledged events until the kill at a random point.
        let writer_addr = addr.clone();
        let writer_items = items.clone();
        let writer = std::thread::spawn(move || {
            let mut n = 0usize;
            for k in 0.. {
                let body =
                    format!("{{\"user_id\":\"crash-user\",\"items\":[\"{}\"]}}", writer_items[k % writer_items.len()]);
                match http(&writer_addr, "POST", "/v1/events", &body) {
                    Some((200, _)) => n += 1,
                    _ => break,
                }
            }
            n
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(50..600)));
        let _ = server.kill();
        let _ = server.wait();
        acked += writer.join().unwrap();
    }
    // After the last kill, a clean restart holds them all.
    let mut server = start_server(&ck, &ds, &state, &addr);
    let (st, v) =
        http(&addr, "POST", "/v1/events", &format!("{{\"user_id\":\"crash-user\",\"items\":[\"{}\"]}}", items[0]))
            .unwrap();
    assert_eq!(st, 200);
    let len = v["history_len"].as_u64().unwrap() as usize;
    assert!(len > acked, "history {len} after restart, {acked} acknowledged before");
    let _ = server.kill();
    let _ = server.wait();
    eprintln!("serve: {} kills, {acked} acknowledged events, all {len} - 1 there after restart", cycles());
}
