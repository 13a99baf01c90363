//! Two-process runs of `c10d-check` on 127.0.0.1, launched the way torchrun launches workers (environment
//! variables), each bounded in time.

use m6rec_testkit::process::{finish, free_port, launch_env, Done};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn spawn(rank: usize, world: usize, port: u16, args: &[&str]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_c10d-check"));
    c.args(args);
    launch_env(&mut c, rank, world, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting c10d-check")
}

fn run_pair(args: &[&str]) -> (Done, Done) {
    let port = free_port();
    let a = spawn(0, 2, port, args);
    let b = spawn(1, 2, port, args);
    (finish(a, Duration::from_secs(60)), finish(b, Duration::from_secs(60)))
}

#[test]
fn collectives_give_the_same_answer_on_both_ranks() {
    let (a, b) = run_pair(&["collectives"]);
    for d in [&a, &b] {
        assert!(d.ok, "stdout: {}\nstderr: {}", d.stdout, d.stderr);
        assert!(d.stdout.contains("\"sum\":[3.0]") && d.stdout.contains("\"gather\":[0.0, 10.0]"), "{}", d.stdout);
        assert!(d.stdout.contains("\"ok\":true"), "{}", d.stdout);
    }
}

fn max_diff(stdout: &str) -> f64 {
    let v = stdout.split("\"max_diff_vs_single\":").nth(1).expect("rank 0 reports the difference");
    v.trim_end_matches(['}', '\n']).parse().expect("a number")
}

#[test]
fn ddp_reducer_equals_single_process_full_batch_training() {
    for extra in [None, Some("--find-unused")] {
        let args: Vec<&str> = std::iter::once("ddp").chain(extra).collect();
        let (a, b) = run_pair(&args);
        assert!(a.ok && b.ok, "{}\n{}\n{}\n{}", a.stdout, a.stderr, b.stdout, b.stderr);
        assert!(a.stdout.contains("\"ranks_identical\":true"), "{}", a.stdout);
        let d = max_diff(&a.stdout);
        assert!(d < 1e-5, "2-rank DDP vs single process: max parameter difference {d} ({extra:?})");
    }
}

#[test]
fn a_killed_rank_is_named_by_the_survivor() {
    for victim in [1usize, 0] {
        let port = free_port();
        let mut ranks =
            vec![spawn(0, 2, port, &["loop", "--timeout", "20"]), spawn(1, 2, port, &["loop", "--timeout", "20"])];
        std::thread::sleep(Duration::from_secs(2));
        ranks[victim].kill().expect("killing a rank");
        let _ = ranks[victim].wait();
        let survivor = finish(ranks.remove(1 - victim), Duration::from_secs(20));
        assert!(!survivor.ok, "the survivor must fail: {}", survivor.stderr);
        assert!(
            survivor.stderr.contains(&format!("lost rank {victim}")),
            "the message must name rank {victim}: {}",
            survivor.stderr
        );
        assert!(survivor.secs < 15.0, "reported after {:.1} s", survivor.secs);
    }
}

#[test]
fn a_hung_rank_is_named_after_the_collective_timeout() {
    let port = free_port();
    let survivor = spawn(0, 2, port, &["loop", "--timeout", "3"]);
    let mut hung = spawn(1, 2, port, &["loop", "--timeout", "3"]);
    std::thread::sleep(Duration::from_secs(2));
    // Stopped, not dead: its sockets stay open, so only the timeout and the heartbeat can tell.
    let stopped = Command::new("kill").args(["-STOP", &hung.id().to_string()]).status().expect("kill -STOP");
    assert!(stopped.success());
    let d = finish(survivor, Duration::from_secs(30));
    let _ = hung.kill();
    let _ = hung.wait();
    assert!(!d.ok, "the survivor must fail: {}", d.stderr);
    assert!(d.stderr.contains("lost rank 1") && d.stderr.contains("heartbeat stopped"), "{}", d.stderr);
    assert!(d.secs < 20.0, "reported after {:.1} s", d.secs);
}

#[test]
fn a_peer_that_never_arrives_ends_in_a_clear_error_within_the_timeout() {
    let port = free_port();
    let lonely = finish(spawn(0, 2, port, &["collectives", "--timeout", "2"]), Duration::from_secs(30));
    assert!(!lonely.ok);
    assert!(lonely.stderr.contains("could not form the process group"), "{}", lonely.stderr);
    assert!(lonely.stderr.contains("1/2 clients joined"), "{}", lonely.stderr);
    assert!(lonely.secs < 15.0, "gave up after {:.1} s", lonely.secs);
}

#[test]
fn ranks_join_a_store_hosted_by_a_launcher_agent() {
    use std::io::BufRead;
    // What torchrun does: its agent hosts the store, every rank is a client.
    let mut host = Command::new(env!("CARGO_BIN_EXE_c10d-check"))
        .args(["host-store", "--seconds", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the store host");
    let mut line = String::new();
    std::io::BufReader::new(host.stdout.take().expect("stdout")).read_line(&mut line).expect("reading the port");
    let port: u16 = line.trim().strip_prefix("port ").expect("`port N`").parse().expect("a port");
    let agent = |rank: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_c10d-check"));
        c.arg("collectives");
        launch_env(&mut c, rank, 2, port)
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env("TORCHELASTIC_RESTART_COUNT", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("starting a rank")
    };
    let (a, b) = (agent(0), agent(1));
    let (a, b) = (finish(a, Duration::from_secs(60)), finish(b, Duration::from_secs(60)));
    let _ = host.kill();
    let _ = host.wait();
    for d in [&a, &b] {
        assert!(d.ok && d.stdout.contains("\"ok\":true"), "stdout: {}\nstderr: {}", d.stdout, d.stderr);
    }
}

#[test]
fn bad_launch_variables_are_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_c10d-check"))
        .env("WORLD_SIZE", "2")
        .env("RANK", "5")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "1")
        .output()
        .expect("running c10d-check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RANK=\"5\"") && err.contains("below WORLD_SIZE=2"), "{err}");
}
