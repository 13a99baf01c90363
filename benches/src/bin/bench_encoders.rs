//! Encoder throughput, the Rust side of `cargo xtask bench encoders` (the Python side is
//! `scripts/bench/encoders.py`, run on the same files with the same thread budget).
//!
//! `bench-encoders --images DIR --audio DIR --texts FILE [--threads N] [--max-texts N]` prints one JSON object:
//! images decoded and preprocessed to normalised `3x128x128` floats per second; seconds of audio decoded, resampled to
//! 16 kHz and turned into a 64-band log-mel spectrogram per second (both: median of three passes); sentences embedded
//! per second with all-MiniLM-L6-v2 (one pass over 1,000 texts).

use anyhow::{bail, Context, Result};
use m6rec_audio::{decode_file, resample, MelConfig, MelSpectrogram};
use m6rec_image::{ImageConfig, Preprocessor};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        bail!("no {exts:?} files in {}", dir.display());
    }
    Ok(out)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Images decoded, resized, cropped and normalised to floats (what a training batch needs): how many decoded, and
/// the median seconds of three passes (the first also warms the page cache and allocator, as the Python side does).
fn bench_images(pool: &rayon::ThreadPool, images: &[std::path::PathBuf]) -> Result<(usize, f64)> {
    // Images: decode, resize, crop, normalise to floats (what a training batch needs).
    let cfg = ImageConfig::default();
    let pre = Preprocessor::new(&cfg)?;
    // Median of three passes (the first also warms the page cache and allocator), as the Python side does.
    let mut image_runs = Vec::new();
    let mut done = 0;
    for _ in 0..3 {
        let t = Instant::now();
        done = pool.install(|| {
            images
                .par_iter()
                .map(|p| -> usize {
                    let Ok(px) = pre.file(p) else { return 0 };
                    let plane = px.chw.len() / 3;
                    let mut floats = Vec::with_capacity(px.chw.len());
                    for (c, bytes) in px.chw.chunks_exact(plane).enumerate() {
                        let (scale, shift) = (1.0 / (255.0 * cfg.std[c]), cfg.mean[c] / cfg.std[c]);
                        floats.extend(bytes.iter().map(|&b| f32::from(b) * scale - shift));
                    }
                    usize::from(!floats.is_empty())
                })
                .sum()
        });
        image_runs.push(t.elapsed().as_secs_f64());
    }
    let image_secs = median(&mut image_runs);
    Ok((done, image_secs))
}

/// Whole clips decoded, resampled to 16 kHz and turned into log-mel: the audio's seconds, and the median wall
/// seconds of three passes.
fn bench_audio(pool: &rayon::ThreadPool, clips: &[std::path::PathBuf]) -> Result<(f64, f64)> {
    // Audio: whole clips, decoded, resampled to 16 kHz, log-mel.
    let mel = MelSpectrogram::new(&MelConfig { sample_rate: 16_000, ..Default::default() })?;
    let mut audio_runs = Vec::new();
    let mut audio_seconds = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        audio_seconds = pool.install(|| {
            clips
                .par_iter()
                .map(|p| -> Result<f64> {
                    let mono = decode_file(p, None)?;
                    let y = resample(&mono.samples, mono.rate, 16_000)?;
                    let spec = mel.compute(&y);
                    anyhow::ensure!(spec.n_frames > 0, "empty spectrogram");
                    Ok(mono.seconds())
                })
                .collect::<Result<Vec<f64>>>()
                .map(|v| v.iter().sum::<f64>())
        })?;
        audio_runs.push(t.elapsed().as_secs_f64());
    }
    let audio_secs = median(&mut audio_runs);
    Ok((audio_seconds, audio_secs))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).with_context(|| format!("missing {name}"));
    let threads: usize = arg(&args, "--threads").map(|t| t.parse()).transpose()?.unwrap_or(2);
    let max_texts: usize = arg(&args, "--max-texts").map(|t| t.parse()).transpose()?.unwrap_or(1000);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    tch::set_num_threads(i32::try_from(threads)?);

    let images = files(Path::new(&need("--images")?), &["jpg", "jpeg", "png", "webp", "gif"])?;
    let (done, image_secs) = bench_images(&pool, &images)?;
    let clips = files(Path::new(&need("--audio")?), &["ogg", "mp3", "flac", "wav"])?;
    let (audio_seconds, audio_secs) = bench_audio(&pool, &clips)?;

    // Text: item descriptions through all-MiniLM-L6-v2, batches of 32 sorted by length.
    let text = std::fs::read_to_string(need("--texts")?)?;
    let texts: Vec<&str> =
        text.lines().skip(1).filter_map(|l| l.split_once('\t').map(|(_, t)| t)).take(max_texts).collect();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = need("--model")?;
    let enc = m6rec_text::TextEncoder::pretrained(&vs.root(), Path::new(&model), 256, true)?;
    let t = Instant::now();
    let emb = tch::no_grad(|| enc.encode_all(&texts, 32, tch::Device::Cpu, m6rec_tensor::Mode::Eval))?;
    let text_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(emb.size()[0] as usize == texts.len());

    let out = serde_json::json!({
        "threads": threads,
        "images": images.len(), "images_ok": done, "image_seconds": image_secs,
        "images_per_sec": done as f64 / image_secs,
        "audio_clips": clips.len(), "audio_seconds": audio_seconds, "audio_wall_seconds": audio_secs,
        "audio_seconds_per_sec": audio_seconds / audio_secs,
        "texts": texts.len(), "text_seconds": text_secs, "sentences_per_sec": texts.len() as f64 / text_secs,
    });
    println!("{out}");
    Ok(())
}
