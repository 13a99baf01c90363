//! Import throughput and peak memory (`cargo xtask bench import [--rows N]`): a generated event log of N rows
//! (default 10 million; users = N/20, items = N/100, times in random order) written as CSV and as Parquet, each
//! imported by `m6rec_data::import::import_events` and saved as a dataset, in a child process of its own so that its
//! peak resident memory (`VmHWM`) is the import's alone.
//!
//! Reported per layout: rows/s, seconds, file size, peak memory above the process's resident size before the import
//! (the binary links libtorch), and that per row against the 40 bytes a row costs in the imported columns themselves
//! (user, item, time, event type).
//!
//! Usage: bench-import [--rows 10000000] [--json PATH]; internally bench-import --child FILE.

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use m6rec_data::import::{import_events, EventsSpec};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Rows of the generated log, in chunks: (user, item, epoch seconds).
fn rows(n: usize, chunk: usize, mut each: impl FnMut(&[(u64, u64, i64)]) -> Result<()>) -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (users, items) = ((n / 20).max(1) as u64, (n / 100).max(1) as u64);
    let mut buf = Vec::with_capacity(chunk);
    for _ in 0..n {
        // A long tail of item popularity: the square of a uniform draw.
        let u = rng.random_range(0..users);
        let x: f64 = rng.random();
        let i = ((x * x) * items as f64) as u64;
        buf.push((u, i, 1_500_000_000 + rng.random_range(0..200_000_000i64)));
        if buf.len() == chunk {
            each(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        each(&buf)?;
    }
    Ok(())
}

fn write_csv(path: &Path, n: usize) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "user_id,item_id,timestamp")?;
    rows(n, 1 << 16, |chunk| {
        for (u, i, t) in chunk {
            writeln!(w, "user{u},item{i},{t}")?;
        }
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}

fn write_parquet(path: &Path, n: usize) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    rows(n, 1 << 20, |chunk| {
        let users: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| format!("user{}", r.0))));
        let items: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| format!("item{}", r.1))));
        let times: ArrayRef = Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.2)));
        let batch = RecordBatch::try_from_iter([("user_id", users), ("item_id", items), ("timestamp", times)])?;
        if writer.is_none() {
            let f = file.take().context("the file is opened once")?;
            writer = Some(parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None)?);
        }
        writer.as_mut().context("writer made above")?.write(&batch)?;
        Ok(())
    })?;
    writer.context("no rows")?.close()?;
    Ok(())
}

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} in /proc/self/status"))?;
    Ok(kib / 1024.0)
}

/// The child: imports `file`, saves the dataset, prints one JSON line.
fn child(file: &Path) -> Result<()> {
    let base = status_mib("VmRSS:")?;
    let t0 = Instant::now();
    let imported = import_events(&EventsSpec::new(file), None)?;
    let read = t0.elapsed().as_secs_f64();
    let out = tempfile::tempdir()?;
    imported.dataset.save(&out.path().join("ds"))?;
    let total = t0.elapsed().as_secs_f64();
    let peak = status_mib("VmHWM:")?;
    let line = json!({
        "rows": imported.dataset.interactions.len(),
        "skipped": imported.report.skipped.len(),
        "users": imported.dataset.n_users(),
        "items": imported.dataset.n_items(),
        "read_s": read,
        "total_s": total,
        "peak_mib": peak,
        "baseline_mib": base,
        "import_peak_mib": peak - base,
    });
    println!("{line}");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let file = args.get(i + 1).context("--child FILE")?;
        return child(Path::new(file));
    }
    let n: usize = arg(&args, "--rows", 10_000_000);
    let json_out: Option<PathBuf> =
        args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).map(Into::into);
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    println!("generated log: {n} rows, {} users, {} items", (n / 20).max(1), (n / 100).max(1));
    println!(
        "{:<8} {:>10} {:>9} {:>12} {:>10} {:>11} {:>9}",
        "layout", "file MiB", "seconds", "rows/s", "peak MiB", "peak B/row", "x 40 B"
    );
    for (name, ext) in [("csv", "csv"), ("parquet", "parquet")] {
        let file = dir.path().join(format!("log.{ext}"));
        let t = Instant::now();
        if ext == "csv" {
            write_csv(&file, n)?;
        } else {
            write_parquet(&file, n)?;
        }
        let gen_s = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&file)?.len() as f64 / (1 << 20) as f64;
        let out = std::process::Command::new(std::env::current_exe()?).arg("--child").arg(&file).output()?;
        if !out.status.success() {
            bail!("importing {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("the child's JSON line")?;
        let (total, peak) =
            (r["total_s"].as_f64().unwrap_or(f64::NAN), r["import_peak_mib"].as_f64().unwrap_or(f64::NAN));
        let per_row = peak * (1 << 20) as f64 / n as f64;
        println!(
            "{name:<8} {size:>10.0} {total:>9.1} {:>12.0} {peak:>10.0} {per_row:>11.1} {:>9.1}",
            n as f64 / total,
            per_row / 40.0
        );
        std::fs::remove_file(&file)?;
        results.push(json!({ "layout": name, "file_mib": size, "generate_s": gen_s, "import": r, "rows_per_s": n as f64 / total, "peak_bytes_per_row": per_row }));
    }
    if let Some(p) = json_out {
        std::fs::write(&p, serde_json::to_vec_pretty(&json!({ "rows": n, "results": results }))?)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
