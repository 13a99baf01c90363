//! The hostile-client soak (`cargo xtask bench soak`): the service (m6rec-serve, 10k generated items, random weights)
//! runs in this process on 127.0.0.1 while a second process (this binary with `--clients`) holds, for `--seconds`,
//! about 1,000 hostile connections: slow-header clients (one byte a second of a head that never ends), idle sockets,
//! oversized bodies (a declared 64 MiB POST streamed until refused), and bursts of a few hundred connections at once;
//! beside them one steady client sends `--rate` top-10 requests per second on fresh connections and times each.
//! Reports the steady client's p50/p99/max latency and errors, what the hostile clients saw, and the server's
//! resident memory each few seconds. Goal: p99 under 50 ms, no errors, memory flat.
//!
//! Usage: bench-soak [--seconds 60] [--rate 50] [--slow 300] [--idle 300] [--oversized 20] [--burst 300]
//!        [--json PATH]

use anyhow::{Context, Result};
use m6rec_benches::rss_mib;
use m6rec_data::{Dataset, Interactions, Item};
use m6rec_serve::{Limits, ModelSource, ServeConfig, Service};
use m6rec_train::checkpoint::DatasetFingerprint;
use m6rec_train::{RunConfig, Trainer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

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
        source: "bench-soak".into(),
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

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    refused_413: AtomicU64,
    burst_ok: AtomicU64,
    burst_failed: AtomicU64,
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new().stack_size(128 << 10).spawn(f);
}

/// Waits until the server closes `s` (or `stop`); true when the server closed it.
fn until_closed(s: &mut TcpStream, stop: &AtomicBool, mut every_second: impl FnMut(&mut TcpStream) -> bool) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !every_second(s) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
    false
}

fn hostile(addr: &str, seconds: f64, slow: usize, idle: usize, oversized: usize, burst: usize) -> serde_json::Value {
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counts::default());
    let keep = |kind: &'static str, n: usize| {
        for _ in 0..n {
            let (stop, c, addr) = (stop.clone(), c.clone(), addr.to_string());
            spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    c.opened.fetch_add(1, Ordering::Relaxed);
                    let mut sent = 0usize;
                    let head = b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                    let closed = until_closed(&mut s, &stop, |s| match kind {
                        "slow" => {
                            let b = head.get(sent).copied().unwrap_or(b'a');
                            sent += 1;
                            s.write_all(&[b]).is_ok()
                        }
                        _ => true,
                    });
                    if closed {
                        c.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    };
    keep("slow", slow);
    keep("idle", idle);
    oversized_clients(addr, oversized, &stop, &c);
    burst_clients(addr, burst, &stop, &c);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    serde_json::json!({
        "connections_opened": c.opened.load(Ordering::Relaxed),
        "closed_by_server": c.closed_by_server.load(Ordering::Relaxed),
        "oversized_refused_413": c.refused_413.load(Ordering::Relaxed),
        "burst_requests_ok": c.burst_ok.load(Ordering::Relaxed),
        "burst_requests_failed": c.burst_failed.load(Ordering::Relaxed),
    })
}

/// `n` clients that declare a 64 MiB body and count the server's 413s.
fn oversized_clients(addr: &str, n: usize, stop: &Arc<AtomicBool>, c: &Arc<Counts>) {
    for _ in 0..n {
        let (stop, c, addr) = (stop.clone(), c.clone(), addr.to_string());
        spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(&addr) else { continue };
                c.opened.fetch_add(1, Ordering::Relaxed);
                let _ = s.write_all(b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{\"items\":[");
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                // A first piece of the body, then the answer: a declared size over the limit is refused at once.
                let _ = s.write_all(&chunk);
                let mut buf = [0u8; 512];
                if let Ok(n) = s.read(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains(" 413 ") {
                        c.refused_413.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
}

/// Every 2 s, `burst` requests at once, each on its own connection.
fn burst_clients(addr: &str, burst: usize, stop: &Arc<AtomicBool>, c: &Arc<Counts>) {
    let (stop, c, addr) = (stop.clone(), c.clone(), addr.to_string());
    spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let handles: Vec<_> = (0..burst)
                .map(|k| {
                    let (c, addr) = (c.clone(), addr.clone());
                    std::thread::Builder::new().stack_size(128 << 10).spawn(move || {
                        let ok = request(&addr, &format!("u{}", k % 5000)).is_ok();
                        let counter = if ok { &c.burst_ok } else { &c.burst_failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for h in handles.into_iter().flatten() {
                let _ = h.join();
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

/// One top-10 request on a fresh connection; the status must be 200.
fn request(addr: &str, user: &str) -> Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = format!("{{\"user_id\":\"{user}\",\"k\":10}}");
    let req = format!(
        "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "answer: {}", text.lines().next().unwrap_or(""));
    Ok(())
}

fn steady(addr: &str, seconds: f64, rate: f64) -> serde_json::Value {
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let due = Duration::from_secs_f64(k as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        match request(addr, &format!("u{}", k % 5000)) {
            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e3),
            Err(e) => errors.push(e.to_string()),
        }
        k += 1;
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| lat.get(((lat.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(f64::NAN);
    errors.truncate(5);
    serde_json::json!({"requests": k, "ok": lat.len(), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lat.last().copied().unwrap_or(f64::NAN), "errors": errors})
}

/// The client process: hostile connections, and after 2 s a steady client whose latency is the measurement.
fn clients(args: &[String], seconds: f64) -> Result<()> {
    let addr: String = arg(args, "--addr", String::new());
    let (slow, idle, over, burst) =
        (arg(args, "--slow", 300), arg(args, "--idle", 300), arg(args, "--oversized", 20), arg(args, "--burst", 300));
    let rate: f64 = arg(args, "--rate", 50.0);
    let a2 = addr.clone();
    let h = std::thread::spawn(move || hostile(&a2, seconds, slow, idle, over, burst));
    std::thread::sleep(Duration::from_secs(2)); // the hostile load is in place first
    let s = steady(&addr, seconds - 2.0, rate);
    let hostile = h.join().map_err(|_| anyhow::anyhow!("hostile clients panicked"))?;
    println!("{}", serde_json::json!({"steady": s, "hostile": hostile}));
    Ok(())
}

/// A service over an untrained 10,000-item model, its state in `dir`.
fn open_service(dir: &std::path::Path) -> Result<Arc<Service>> {
    let ds = dataset(10_000, 5000);
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
    let source = ModelSource {
        checkpoint: ckpt,
        data,
        features: None,
        text_model: None,
        device: tch::Device::Cpu,
        index: m6rec_serve::index::IndexKind::Exact,
    };
    Ok(Service::open(ServeConfig {
        source,
        state_dir: dir.join("state"),
        media_root: None,
        limits: Limits::default(),
        admin_token: None,
    })?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg(&args, "--seconds", 60.0);
    if args.iter().any(|a| a == "--clients") {
        return clients(&args, seconds);
    }
    tch::set_num_threads(1);
    let dir = tempfile::tempdir()?;
    let svc = open_service(dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = svc.clone();
    let server = rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        s.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["--clients", "--addr", &addr, "--seconds", &seconds.to_string()])
        .args(args.iter().skip(1).filter(|a| *a != "--json"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the client process")?;
    let start = Instant::now();
    let mut memory = Vec::new();
    while child.try_wait()?.is_none() {
        memory.push((start.elapsed().as_secs_f64().round(), rss_mib()));
        std::thread::sleep(Duration::from_secs(5));
    }
    let mut out = String::new();
    child.stdout.take().map(|mut o| o.read_to_string(&mut out));
    let _ = stop.send(());
    let _ = rt.block_on(server);
    let clients: serde_json::Value = serde_json::from_str(out.trim()).context("reading the clients' report")?;
    drop(svc);
    let report = serde_json::json!({"seconds": seconds, "server_rss_mib": memory, "clients": clients});
    println!("{}", serde_json::to_string_pretty(&report)?);
    let json_out: String = arg(&args, "--json", String::new());
    if !json_out.is_empty() {
        std::fs::write(&json_out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
