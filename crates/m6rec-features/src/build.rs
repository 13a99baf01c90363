//! Building the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use m6rec_audio::MelSpectrogram;
use m6rec_data::media::{resolve, MediaKind};
use m6rec_data::Dataset;
use m6rec_image::Preprocessor;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::manifest::{Entry, FeatureConfig, ItemEntry, Manifest, FORMAT_VERSION};
use crate::{Error, Result};

/// A feature cache directory as m6rec writes it: only ever replaced by another (`.m6rec-features` marker; see
/// [`m6rec_tensor::atomic::DirKind`]).
pub const FEATURES_DIR: m6rec_tensor::atomic::DirKind =
    m6rec_tensor::atomic::DirKind { name: "features", legacy: "manifest.json" };

/// Progress of a build, for bars (implemented for `()` as "no progress shown").
pub trait Progress: Sync {
    /// A modality starts, with this many files to look at.
    fn start(&self, _modality: &str, _total: u64) {}
    /// `n` more files done.
    fn advance(&self, _n: u64) {}
    /// The modality is done.
    fn finish(&self) {}
}

impl Progress for () {}

/// One media file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMedia {
    /// The item's id.
    pub item: String,
    /// Its media path, as written in the dataset.
    pub path: String,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for BadMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "item {}: {}: {}", self.item, self.path, self.reason)
    }
}

/// What happened to one modality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModalityReport {
    /// Items whose dataset entry names a file.
    pub with_media: usize,
    /// Files decoded in this run (new or changed).
    pub decoded: usize,
    /// Usable files unchanged since the last run, taken from the cache.
    pub reused: usize,
    /// Files that could not be used, with the reason (found now, or unchanged since a run that found them).
    /// `decoded + reused + failed.len() == with_media`.
    pub failed: Vec<BadMedia>,
}

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Images.
    pub image: ModalityReport,
    /// Audio.
    pub audio: ModalityReport,
    /// Text embeddings (`with_media` = items with text; all zeros when no text encoder is configured).
    pub text: ModalityReport,
}

/// A decoded row: image bytes or spectrogram values.
enum Row {
    Image(Vec<u8>),
    Audio(Vec<f32>),
}

struct Outcome {
    entry: Entry,
    /// `Some(row)` when decoded now; `None` with `entry.row` set means "reuse that row of the previous tensor".
    row: Option<Row>,
    reused: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes what is new or changed and writes the cache directory `cache` atomically.
pub fn build(
    dataset_dir: &Path,
    dataset: &Dataset,
    cache: &Path,
    cfg: &FeatureConfig,
    progress: &dyn Progress,
) -> Result<Report> {
    let images = Preprocessor::new(&cfg.image).map_err(|e| Error::Config(e.to_string()))?;
    let mel = MelSpectrogram::new(&cfg.audio).map_err(|e| Error::Config(e.to_string()))?;
    let old = Manifest::read(cache).ok();
    let old_entries: HashMap<&str, &ItemEntry> =
        old.as_ref().map(|m| m.items.iter().map(|e| (e.id.as_str(), e)).collect()).unwrap_or_default();
    let same_image_cfg = old.as_ref().is_some_and(|m| m.config.image == cfg.image);
    let same_audio_cfg = old.as_ref().is_some_and(|m| m.config.audio == cfg.audio);

    let decode_image = |bytes: &[u8]| images.bytes(bytes).map(|p| Row::Image(p.chw)).map_err(|e| e.to_string());
    let decode_audio = |bytes: Vec<u8>, ext: Option<&str>| {
        mel.bytes(bytes, ext).map(|m| Row::Audio(m.data)).map_err(|e| e.to_string())
    };
    let ctx = Ctx { dataset_dir, dataset, old: &old_entries, progress };
    let image_out = ctx.run(MediaKind::Image, same_image_cfg, &|bytes, _| decode_image(&bytes));
    let audio_out = ctx.run(MediaKind::Audio, same_audio_cfg, &decode_audio);

    let n = dataset.items.len();
    let to_i64 = |what, v| m6rec_tensor::dim::to_i64(what, v);
    let side = i64::from(cfg.image.size);
    let (n_mels, n_frames) = (to_i64("n_mels", cfg.audio.n_mels)?, to_i64("n_frames", cfg.audio.n_frames())?);
    let old_images = load_old(cache, "images.safetensors", "pixels", old.is_some() && same_image_cfg, &image_out)?;
    let old_audio = load_old(cache, "audio.safetensors", "log_mel", old.is_some() && same_audio_cfg, &audio_out)?;
    let (mut image_out, mut audio_out) = (image_out, audio_out);
    let pixels = assemble(&mut image_out, old_images.as_ref(), &[3, side, side], tch::Kind::Uint8)?;
    let log_mel = assemble(&mut audio_out, old_audio.as_ref(), &[1, n_mels, n_frames], tch::Kind::Float)?;

    let (text_entries, text_emb, text_report) = embed_texts(cache, dataset, cfg, old.as_ref(), progress)?;
    let mut report =
        Report { image: report_of(&image_out, dataset), audio: report_of(&audio_out, dataset), text: text_report };
    let items: Vec<ItemEntry> = (0..n)
        .map(|i| ItemEntry {
            id: dataset.items[i].id.clone(),
            image: image_out[i].as_ref().map(|o| o.entry.clone()),
            audio: audio_out[i].as_ref().map(|o| o.entry.clone()),
            text: text_entries[i].clone(),
        })
        .collect();
    let manifest = Manifest { format_version: FORMAT_VERSION, config: cfg.clone(), items };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(e.to_string()))?;
    m6rec_tensor::atomic::write_dir(cache, FEATURES_DIR, |tmp| -> Result<()> {
        Tensor::write_safetensors(&[("pixels", &pixels)], tmp.join("images.safetensors"))?;
        Tensor::write_safetensors(&[("log_mel", &log_mel)], tmp.join("audio.safetensors"))?;
        Tensor::write_safetensors(&[("embeddings", &text_emb)], tmp.join("text.safetensors"))?;
        let p = tmp.join("manifest.json");
        std::fs::write(&p, &json).map_err(|source| Error::Io { path: p, source })
    })?;
    report.image.failed.sort_by(|a, b| a.item.cmp(&b.item));
    report.audio.failed.sort_by(|a, b| a.item.cmp(&b.item));
    Ok(report)
}

struct Ctx<'a> {
    dataset_dir: &'a Path,
    dataset: &'a Dataset,
    old: &'a HashMap<&'a str, &'a ItemEntry>,
    progress: &'a dyn Progress,
}

type Decoder<'f> = dyn Fn(Vec<u8>, Option<&str>) -> std::result::Result<Row, String> + Sync + 'f;

impl Ctx<'_> {
    /// One outcome per item (`None`: the item names no file of this kind).
    fn run(&self, kind: MediaKind, same_cfg: bool, decode: &Decoder<'_>) -> Vec<Option<Outcome>> {
        let field = |it: &m6rec_data::Item| match kind {
            MediaKind::Image => it.image.clone(),
            MediaKind::Audio => it.audio.clone(),
        };
        let total = self.dataset.items.iter().filter(|it| field(it).is_some()).count();
        let name = match kind {
            MediaKind::Image => "images",
            MediaKind::Audio => "audio",
        };
        self.progress.start(name, total as u64);
        let out = self
            .dataset
            .items
            .par_iter()
            .map(|item| {
                let rel = field(item)?;
                let outcome = self.one(item, kind, rel, same_cfg, decode);
                self.progress.advance(1);
                Some(outcome)
            })
            .collect();
        self.progress.finish();
        out
    }

    fn one(
        &self,
        item: &m6rec_data::Item,
        kind: MediaKind,
        rel: String,
        same_cfg: bool,
        decode: &Decoder<'_>,
    ) -> Outcome {
        let fail = |sha256: Option<String>, reason: String| Outcome {
            entry: Entry { path: rel.clone(), sha256, row: None, reason: Some(reason) },
            row: None,
            reused: false,
        };
        let path: PathBuf = match resolve(self.dataset_dir, &rel) {
            Ok(p) => p,
            Err(e) => return fail(None, e.to_string()),
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return fail(None, format!("cannot read: {e}")),
        };
        let sha = sha256_hex(&bytes);
        let previous = self.old.get(item.id.as_str()).and_then(|e| match kind {
            MediaKind::Image => e.image.as_ref(),
            MediaKind::Audio => e.audio.as_ref(),
        });
        if let Some(prev) = previous.filter(|p| same_cfg && p.sha256.as_deref() == Some(sha.as_str())) {
            // Unchanged file, same preprocessing: keep the cached row (or the cached failure).
            return Outcome { entry: Entry { path: rel.clone(), ..prev.clone() }, row: None, reused: true };
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_owned);
        match decode(bytes, ext.as_deref()) {
            Ok(row) => Outcome {
                entry: Entry { path: rel.clone(), sha256: Some(sha), row: Some(0), reason: None },
                row: Some(row),
                reused: false,
            },
            Err(reason) => fail(Some(sha), reason),
        }
    }
}

/// The previous run's tensor, when some rows are reused from it.
fn load_old(cache: &Path, file: &str, name: &str, usable: bool, out: &[Option<Outcome>]) -> Result<Option<Tensor>> {
    let needed = out.iter().flatten().any(|o| o.reused && o.entry.row.is_some());
    if !(usable && needed) {
        return Ok(None);
    }
    let path = cache.join(file);
    let tensors = Tensor::read_safetensors(&path)
        .map_err(|e| Error::Stale { path: path.clone(), reason: format!("{e}; delete the cache and rebuild") })?;
    Ok(tensors.into_iter().find(|(n, _)| n == name).map(|(_, t)| t))
}

/// Stacks the decoded rows (new, or reused from the previous tensor) in item order and numbers them in the entries.
fn assemble(out: &mut [Option<Outcome>], old: Option<&Tensor>, row_shape: &[i64], kind: tch::Kind) -> Result<Tensor> {
    let mut rows = Vec::new();
    for o in out.iter_mut().flatten() {
        let Some(previous) = o.entry.row else { continue };
        let row = match (&o.row, old) {
            (Some(Row::Image(bytes)), _) => Tensor::from_slice(bytes).view(row_shape),
            (Some(Row::Audio(values)), _) => Tensor::from_slice(values).view(row_shape),
            (None, Some(old)) => old.get(m6rec_tensor::dim::to_i64("cached row", previous)?),
            (None, None) => return Err(Error::Config("a reused row without its previous tensor".into())),
        };
        o.entry.row = Some(rows.len());
        rows.push(row.to_kind(kind));
    }
    if rows.is_empty() {
        let mut shape = vec![0];
        shape.extend_from_slice(row_shape);
        return Ok(Tensor::zeros(shape.as_slice(), (kind, tch::Device::Cpu)));
    }
    Ok(Tensor::stack(&rows, 0))
}

fn report_of(out: &[Option<Outcome>], dataset: &Dataset) -> ModalityReport {
    let mut r = ModalityReport::default();
    for (i, o) in out.iter().enumerate() {
        let Some(o) = o else { continue };
        // Three disjoint counts that add up to `with_media`: a cached failure is a failure, not a reuse.
        r.with_media += 1;
        if o.entry.row.is_some() && o.reused {
            r.reused += 1;
        } else if o.entry.row.is_some() {
            r.decoded += 1;
        } else {
            r.failed.push(BadMedia {
                item: dataset.items[i].id.clone(),
                path: o.entry.path.clone(),
                reason: o.entry.reason.clone().unwrap_or_default(),
            });
        }
    }
    r
}

/// The text an item is embedded from: its title, then its free text.
pub fn item_text(item: &m6rec_data::Item) -> String {
    match item.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if !item.title.trim().is_empty() => format!("{}. {t}", item.title.trim()),
        Some(t) => t.to_string(),
        None => item.title.trim().to_string(),
    }
}

/// Old cache rows by (item id, text SHA-256).
type ReusableRows<'m> = HashMap<(&'m str, &'m str), usize>;

/// Rows of the old cache's text embeddings that can be reused, by (item id, text SHA-256), and those embeddings
/// (none when the text config changed or nothing is reusable).
fn reusable_text_rows<'m>(
    cache: &Path,
    tcfg: &crate::manifest::TextFeatureConfig,
    old: Option<&'m Manifest>,
) -> Result<(ReusableRows<'m>, Option<Tensor>)> {
    let same_cfg = old.is_some_and(|m| m.config.text.as_ref() == Some(tcfg));
    let old_rows: HashMap<(&str, &str), usize> = match old.filter(|_| same_cfg) {
        Some(m) => m
            .items
            .iter()
            .filter_map(|e| {
                let t = e.text.as_ref()?;
                Some(((e.id.as_str(), t.sha256.as_deref()?), t.row?))
            })
            .collect(),
        None => HashMap::new(),
    };
    if old_rows.is_empty() {
        return Ok((old_rows, None));
    }
    let path = cache.join("text.safetensors");
    let tensors = Tensor::read_safetensors(&path)
        .map_err(|e| Error::Stale { path: path.clone(), reason: format!("{e}; delete the cache and rebuild") })?;
    let emb = tensors.into_iter().find(|(name, _)| name == "embeddings").map(|(_, t)| t);
    Ok((old_rows, emb))
}

/// Embeddings of `texts[i]` for every `i` of `to_encode`, in that order (`None`: nothing to encode). The encoder
/// (90 MB of weights for MiniLM) is loaded only when some text is new or changed.
fn encode_texts(
    tcfg: &crate::manifest::TextFeatureConfig,
    texts: &[String],
    to_encode: &[usize],
    progress: &dyn Progress,
) -> Result<Option<Tensor>> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let encoder = if to_encode.is_empty() {
        None
    } else {
        Some(
            m6rec_text::TextEncoder::pretrained(&vs.root(), &tcfg.model, tcfg.max_len, true)
                .map_err(|e| Error::Config(format!("text encoder {}: {e}", tcfg.model.display())))?,
        )
    };
    progress.start("text", to_encode.len() as u64);
    let mut fresh = Vec::new();
    if let Some(encoder) = &encoder {
        for chunk in to_encode.chunks(tcfg.batch_size.max(1) * 8) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let emb = tch::no_grad(|| {
                encoder.encode_all(&batch, tcfg.batch_size, tch::Device::Cpu, m6rec_tensor::Mode::Eval)
            })
            .map_err(|e| Error::Config(format!("embedding text: {e}")))?;
            fresh.push(emb);
            progress.advance(chunk.len() as u64);
        }
    }
    progress.finish();
    Ok(if fresh.is_empty() { None } else { Some(Tensor::cat(&fresh, 0)) })
}

type TextOut = (Vec<Option<Entry>>, Tensor, ModalityReport);

/// Embeds item texts with the configured frozen encoder, reusing rows whose text (SHA-256) and config are unchanged.
fn embed_texts(
    cache: &Path,
    dataset: &Dataset,
    cfg: &FeatureConfig,
    old: Option<&Manifest>,
    progress: &dyn Progress,
) -> Result<TextOut> {
    let n = dataset.items.len();
    let Some(tcfg) = &cfg.text else {
        return Ok((vec![None; n], Tensor::zeros([0, 0], tch::kind::FLOAT_CPU), ModalityReport::default()));
    };
    let texts: Vec<String> = dataset.items.iter().map(item_text).collect();
    let hashes: Vec<String> = texts.iter().map(|t| sha256_hex(t.as_bytes())).collect();
    let (old_rows, old_emb) = reusable_text_rows(cache, tcfg, old)?;
    // Items with text: reuse or encode.
    let mut to_encode = Vec::new();
    let mut source: Vec<Option<(bool, usize)>> = vec![None; n]; // (reused, index into old rows or to_encode)
    for i in 0..n {
        if texts[i].is_empty() {
            continue;
        }
        match (old_rows.get(&(dataset.items[i].id.as_str(), hashes[i].as_str())), &old_emb) {
            (Some(&r), Some(_)) => source[i] = Some((true, r)),
            _ => {
                source[i] = Some((false, to_encode.len()));
                to_encode.push(i);
            }
        }
    }
    let fresh = encode_texts(tcfg, &texts, &to_encode, progress)?;
    let mut rows = Vec::new();
    let mut entries = vec![None; n];
    let mut report = ModalityReport::default();
    for i in 0..n {
        let Some((reused, j)) = source[i] else { continue };
        let j = m6rec_tensor::dim::to_i64("text row", j)?;
        let row = match (reused, &old_emb, &fresh) {
            (true, Some(old), _) => old.get(j),
            (false, _, Some(fresh)) => fresh.get(j),
            _ => return Err(Error::Config("text row without its tensor".into())),
        };
        report.with_media += 1;
        if reused {
            report.reused += 1;
        } else {
            report.decoded += 1;
        }
        entries[i] =
            Some(Entry { path: String::new(), sha256: Some(hashes[i].clone()), row: Some(rows.len()), reason: None });
        rows.push(row);
    }
    let emb = if rows.is_empty() { Tensor::zeros([0, 0], tch::kind::FLOAT_CPU) } else { Tensor::stack(&rows, 0) };
    Ok((entries, emb, report))
}
