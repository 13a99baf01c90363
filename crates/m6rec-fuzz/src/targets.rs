//! The fuzz targets: each writes its input where the code under test reads it (a file among valid companions, or
//! the bytes themselves), runs it, and treats any `Err` as a clean refusal. Only a panic, an abort or memory over
//! the bound is a finding.

use std::path::{Path, PathBuf};

/// Runs one input; `Err` is a clean refusal (allowed), a panic is a finding.
pub type Run = Box<dyn FnMut(&[u8]) -> Result<(), String>>;

/// A fuzz target.
pub struct Target {
    /// Name (`cargo xtask fuzz NAME`).
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Tokens the mutator inserts (column names, keywords of the format).
    pub dict: &'static [&'static [u8]],
    /// The seed inputs its committed corpus starts from (also what `m6rec-fuzz seeds` writes).
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Prepares the target once (temporary folders, valid companion files) and returns its runner.
    pub make: fn(&Path) -> Result<Run, String>,
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(err)
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(m6rec_testkit::fixture(rel)).unwrap_or_default()
}

/// The first `n` lines of a fixture.
fn head(rel: &str, n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(&fixture(rel)).into_owned();
    text.lines().take(n).map(|l| format!("{l}\n")).collect::<String>().into_bytes()
}

/// A folder of companion files, with `name` replaced by each input.
fn folder_target(
    scratch: &Path,
    files: &[(&str, Vec<u8>)],
    fuzzed: &'static str,
    run: impl Fn(&Path) -> Result<(), String> + 'static,
) -> Result<Run, String> {
    let dir = scratch.join("in");
    std::fs::create_dir_all(&dir).map_err(err)?;
    for (name, bytes) in files {
        write(&dir.join(name), bytes)?;
    }
    Ok(Box::new(move |input| {
        write(&dir.join(fuzzed), input)?;
        run(&dir)
    }))
}

fn import(format: m6rec_data::import::Format) -> impl Fn(&Path) -> Result<(), String> {
    move |dir| m6rec_data::import::import(format, dir).map(|_| ()).map_err(err)
}

const MOVIELENS_ITEM: &[u8] = b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n\
2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n3|Four Rooms (1995)|||x|0\n";
const MOVIELENS_DATA: &[u8] =
    b"1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n2\t3\t2\t888550871\n1\t3\t4\t874965758\n";

fn seqtext_seed() -> Vec<Vec<u8>> {
    vec![b"u1 i1 i2 i3\nu2 i2 i3\nu3 i1 i3 i2 i4\n".to_vec(), b"1 2 3 4 5 6\n2 3 4\n".to_vec()]
}

fn unisrec_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("s.text", b"item_id:token\ttext:token_seq\ni1\tred pen\ni2\tblue ink\ni3\tpaper pad\n".to_vec()),
        ("s.item2index", b"i1\t0\ni2\t1\ni3\t2\n".to_vec()),
        ("s.user2index", b"u1\t0\nu2\t1\n".to_vec()),
        ("s.train.inter", b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0\t1\n1\t1\t2\n".to_vec()),
        ("s.valid.inter", b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1\t2\n1\t1 2\t0\n".to_vec()),
        ("s.test.inter", b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t0\n1\t1 2 0\t1\n".to_vec()),
    ]
}

const EVENTS_CSV: &[u8] = b"user_id,item_id,timestamp\nu1,i1,1700000000\nu1,i2,1700000100\nu2,i1,2024-01-02T03:04:05Z\nu2,i3,2024-01-03\n\"u,3\",i2,1700000000000\n";
const ITEMS_CSV: &[u8] = b"item_id,title,text\ni1,Pen,a red pen\ni2,Ink,\"blue, dark\"\ni3,Pad,paper\n";

fn events_jsonl() -> Vec<u8> {
    b"{\"user_id\":\"u1\",\"item_id\":\"i1\",\"timestamp\":1700000000}\n{\"user_id\":\"u1\",\"item_id\":\"i2\",\"timestamp\":\"2024-01-02T03:04:05+02:00\"}\n{\"user_id\":2,\"item_id\":\"i3\",\"timestamp\":1700000000123}\n".to_vec()
}

fn events_parquet() -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let users: ArrayRef = Arc::new(StringArray::from(vec!["u1", "u1", "u2", "u2"]));
    let items: ArrayRef = Arc::new(StringArray::from(vec!["i1", "i2", "i1", "i3"]));
    let times: ArrayRef = Arc::new(Int64Array::from(vec![1_700_000_000, 1_700_000_100, 1_700_000_050, 1_700_000_060]));
    let Ok(batch) = RecordBatch::try_from_iter([("user_id", users), ("item_id", items), ("timestamp", times)]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(mut w) = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None) {
        let _ = w.write(&batch);
        let _ = w.close();
    }
    out
}

fn events_run(name: &'static str, items: bool) -> impl Fn(&Path) -> Result<(), String> {
    move |dir| {
        let spec = m6rec_data::import::EventsSpec::new(dir.join(name));
        let items_spec = items.then(|| {
            let mut s = m6rec_data::import::ItemsSpec::new(dir.join("items.csv"));
            s.title = Some("title".into());
            s.text = vec!["text".into()];
            s
        });
        m6rec_data::import::import_events(&spec, items_spec.as_ref()).map(|_| ()).map_err(err)
    }
}

const AMAZON_REVIEWS: &[u8] = b"{\"reviewerID\":\"A1\",\"asin\":\"B1\",\"unixReviewTime\":1400000000,\"overall\":5.0}\n{\"reviewerID\":\"A1\",\"asin\":\"B2\",\"unixReviewTime\":1400000100,\"overall\":4.0}\n{\"reviewerID\":\"A2\",\"asin\":\"B1\",\"unixReviewTime\":1400000200,\"overall\":3.0}\n";
const AMAZON_META: &[u8] = b"{\"asin\":\"B1\",\"title\":\"Blocks\",\"category\":[\"Toys\",\"Blocks\"],\"brand\":\"X\",\"description\":[\"wooden\"]}\n{\"asin\":\"B2\",\"title\":\"Kite\",\"category\":[\"Toys\"],\"imageURLHighRes\":[]}\n";
const AMAZON_2023: &[u8] = b"{\"user_id\":\"A1\",\"parent_asin\":\"B1\",\"timestamp\":1400000000000,\"rating\":5.0}\n{\"user_id\":\"A2\",\"parent_asin\":\"B2\",\"timestamp\":1400000000100,\"rating\":2.0}\n";

fn amazon_run(dir: &Path) -> Result<(), String> {
    m6rec_data::import::import_amazon(&dir.join("reviews.jsonl"), Some(&dir.join("meta.jsonl")), Some(3.0))
        .map(|_| ())
        .map_err(err)
}

fn image_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 128]));
    for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::WebP] {
        let mut buf = std::io::Cursor::new(Vec::new());
        if image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut buf, fmt).is_ok() {
            out.push(buf.into_inner());
        }
    }
    out
}

fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data = u32::try_from(samples.len() * 2).unwrap_or(0);
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

fn audio_seeds() -> Vec<Vec<u8>> {
    let tone: Vec<i16> = (0..1600).map(|i| ((i as f32 * 0.2).sin() * 8000.0) as i16).collect();
    vec![
        wav(&tone, 16_000),
        fixture("audio/tone_22k.mp3"),
        fixture("audio/tone_22k.ogg"),
        fixture("audio/tone_16k.flac"),
    ]
}

/// A tiny dataset (the demo's first users) saved under `dir`.
fn tiny_dataset(dir: &Path) -> Result<m6rec_data::Dataset, String> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(err)?;
    write(&src.join("demo.inter"), &head("demo/demo.inter", 400))?;
    write(&src.join("demo.item"), &fixture("demo/demo.item"))?;
    let ds = m6rec_data::import::import(m6rec_data::import::Format::RecBole, &src).map_err(err)?.dataset;
    Ok(ds)
}

/// A tiny trained checkpoint (id embeddings, one epoch) under `dir/ck`.
fn tiny_checkpoint(dir: &Path) -> Result<PathBuf, String> {
    let ds = tiny_dataset(dir)?;
    let mut cfg = m6rec_train::RunConfig::default();
    cfg.model.d_model = 16;
    cfg.model.n_layers = 1;
    cfg.model.max_len = 10;
    cfg.train.epochs = 1;
    let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
    let fp = m6rec_train::checkpoint::DatasetFingerprint::of(&ds);
    let ck = dir.join("ck");
    let mut t = m6rec_train::Trainer::new(cfg, fp, tch::Device::Cpu).map_err(err)?;
    t.fit(&split, Some(&ck), &mut m6rec_train::Silent).map_err(err)?;
    // The loader checks weights against their checksums; without the file the fuzzed bytes reach the parser.
    let _ = std::fs::remove_file(ck.join(m6rec_recommender::saved::CHECKSUMS));
    Ok(ck)
}

fn checkpoint_target(scratch: &Path, fuzzed: &'static str) -> Result<Run, String> {
    let ck = tiny_checkpoint(scratch)?;
    let original = std::fs::read(ck.join(fuzzed)).map_err(err)?;
    let _ = original;
    Ok(Box::new(move |input| {
        write(&ck.join(fuzzed), input)?;
        m6rec_recommender::Recommender::load(&ck, tch::Device::Cpu, None).map(|_| ()).map_err(err)
    }))
}

fn checkpoint_seeds(fuzzed: &str) -> Vec<Vec<u8>> {
    let Ok(tmp) = tempfile::tempdir() else { return Vec::new() };
    tch::manual_seed(0);
    tiny_checkpoint(tmp.path()).ok().and_then(|ck| std::fs::read(ck.join(fuzzed)).ok()).into_iter().collect()
}

fn features_target(scratch: &Path) -> Result<Run, String> {
    let data = scratch.join("data");
    let mut ds = tiny_dataset(scratch)?;
    let pics = scratch.join("pics");
    std::fs::create_dir_all(&pics).map_err(err)?;
    for (k, seed) in image_seeds().into_iter().take(2).enumerate() {
        write(&pics.join(format!("{}.png", ds.items[k].id)), &seed)?;
    }
    let (copies, _) = m6rec_data::media::attach(&mut ds, m6rec_data::media::MediaKind::Image, &pics).map_err(err)?;
    ds.save_with_media(&data, &copies).map_err(err)?;
    let cache = m6rec_features::default_cache_dir(&data);
    let mut cfg = m6rec_features::FeatureConfig::default();
    cfg.image.size = 8;
    cfg.image.resize = 8;
    m6rec_features::build(&data, &ds, &cache, &cfg, &()).map_err(err)?;
    Ok(Box::new(move |input| {
        write(&cache.join("manifest.json"), input)?;
        m6rec_features::Features::load(&cache, &ds).map(|_| ()).map_err(err)
    }))
}

fn features_seeds() -> Vec<Vec<u8>> {
    let Ok(tmp) = tempfile::tempdir() else { return Vec::new() };
    let Ok(_) = features_target(tmp.path()) else { return Vec::new() };
    let cache = m6rec_features::default_cache_dir(&tmp.path().join("data"));
    std::fs::read(cache.join("manifest.json")).ok().into_iter().collect()
}

const JOURNAL: &[u8] = b"{\"op\":\"events\",\"user_id\":\"u1\",\"items\":[\"i1\",\"i2\"]}\n{\"op\":\"items\",\"items\":[{\"id\":\"n1\",\"title\":\"New\",\"domain\":\"books\",\"text\":\"t\",\"image\":\"ab.png\"}]}\n{\"op\":\"events\",\"user_id\":\"u2\",\"items\":[\"n1\"]}\n";

fn bodies() -> Vec<Vec<u8>> {
    vec![
        b"r{\"user_id\":\"u1\",\"k\":10,\"exclude_seen\":true,\"domain\":\"books\",\"blocklist\":[\"i1\"]}".to_vec(),
        b"r{\"history\":[\"i1\",\"i2\"],\"k\":5}".to_vec(),
        b"i{\"items\":[{\"id\":\"n1\",\"title\":\"T\",\"text\":\"x\",\"domain\":\"d\",\"image_base64\":\"AAAA\"}]}"
            .to_vec(),
        b"e{\"user_id\":\"u1\",\"items\":[\"i1\"]}".to_vec(),
        b"l{\"checkpoint\":\"ck\"}".to_vec(),
    ]
}

/// `r`, `i`, `e` or `l` then a JSON body of `/v1/recommend`, `/v1/items`, `/v1/events` or `/v1/admin/reload`: the
/// types the service deserialises (with `deny_unknown_fields`) and the id checks it applies before any work.
fn bodies_run(input: &[u8]) -> Result<(), String> {
    use m6rec_serve::api::*;
    let Some((&kind, body)) = input.split_first() else { return Err("empty".into()) };
    match kind {
        b'r' => {
            let r: RecommendRequest = serde_json::from_slice(body).map_err(err)?;
            if let Some(u) = &r.user_id {
                check_id("user_id", u).map_err(err)?;
            }
        }
        b'i' => {
            let r: ItemsRequest = serde_json::from_slice(body).map_err(err)?;
            for it in &r.items {
                check_id("id", &it.id).map_err(err)?;
            }
        }
        b'e' => {
            let r: EventsRequest = serde_json::from_slice(body).map_err(err)?;
            check_id("user_id", &r.user_id).map_err(err)?;
        }
        _ => {
            let _: ReloadRequest = serde_json::from_slice(body).map_err(err)?;
        }
    }
    Ok(())
}

/// Every target.
pub fn all() -> Vec<Target> {
    [catalog_importers(), sequence_importers(), log_importers(), decoders(), state()].into_iter().flatten().collect()
}

/// The catalog-and-ratings importers' files: MovieLens and RecBole.
fn catalog_importers() -> Vec<Target> {
    vec![
        Target {
            name: "movielens-data",
            about: "MovieLens u.data (ratings) beside a valid u.item",
            dict: &[b"\t", b"\n"],
            seeds: || vec![MOVIELENS_DATA.to_vec()],
            make: |s| {
                folder_target(
                    s,
                    &[("u.item", MOVIELENS_ITEM.to_vec())],
                    "u.data",
                    import(m6rec_data::import::Format::MovieLens),
                )
            },
        },
        Target {
            name: "movielens-item",
            about: "MovieLens u.item (catalog, ISO-8859-1) beside a valid u.data",
            dict: &[b"|", b"\n"],
            seeds: || vec![MOVIELENS_ITEM.to_vec()],
            make: |s| {
                folder_target(
                    s,
                    &[("u.data", MOVIELENS_DATA.to_vec())],
                    "u.item",
                    import(m6rec_data::import::Format::MovieLens),
                )
            },
        },
        Target {
            name: "recbole-inter",
            about: "RecBole .inter (typed header) beside a valid .item",
            dict: &[b"user_id:token", b"item_id:token", b"timestamp:float", b"rating:float", b"\t", b"\xef\xbb\xbf"],
            seeds: || vec![head("demo/demo.inter", 60)],
            make: |s| {
                folder_target(
                    s,
                    &[("d.item", head("demo/demo.item", 40))],
                    "d.inter",
                    import(m6rec_data::import::Format::RecBole),
                )
            },
        },
        Target {
            name: "recbole-item",
            about: "RecBole .item (titles, text, domains, media columns) beside a valid .inter",
            dict: &[b"item_id:token", b"title:token_seq", b"image:token", b"audio_path:token", b"domain:token", b"\t"],
            seeds: || vec![head("demo/demo.item", 40)],
            make: |s| {
                folder_target(
                    s,
                    &[("d.inter", head("demo/demo.inter", 60))],
                    "d.item",
                    import(m6rec_data::import::Format::RecBole),
                )
            },
        },
    ]
}

/// The sequence importers' files: sequence text and UniSRec.
fn sequence_importers() -> Vec<Target> {
    vec![
        Target {
            name: "seqtext",
            about: "one user per line: `user item item ...`",
            dict: &[b" ", b"\n"],
            seeds: seqtext_seed,
            make: |s| {
                folder_target(s, &[], "seq.txt", |dir| {
                    m6rec_data::import::import(m6rec_data::import::Format::SeqText, &dir.join("seq.txt"))
                        .map(|_| ())
                        .map_err(err)
                })
            },
        },
        Target {
            name: "unisrec-index",
            about: "UniSRec .item2index (id, dense index) beside valid companions",
            dict: &[b"\t", b"\n", b"18446744073709551615"],
            seeds: || vec![b"i1\t0\ni2\t1\ni3\t2\n".to_vec()],
            make: |s| folder_target(s, &unisrec_files(), "s.item2index", import(m6rec_data::import::Format::UniSRec)),
        },
        Target {
            name: "unisrec-inter",
            about: "UniSRec .train.inter (leave-one-out rows) beside valid companions",
            dict: &[b"\t", b" ", b"user_id:token", b"item_id_list:token_seq"],
            seeds: || vec![unisrec_files()[3].1.clone()],
            make: |s| folder_target(s, &unisrec_files(), "s.train.inter", import(m6rec_data::import::Format::UniSRec)),
        },
    ]
}

/// The event-log importers' files: CSV, JSON lines, Parquet, item tables, Amazon reviews and metadata.
fn log_importers() -> Vec<Target> {
    vec![
        Target {
            name: "events-csv",
            about: "an event log in CSV (RFC 4180 quoting, mixed time formats) with a valid item table",
            dict: &[b",", b"\"", b"\n", b"\r\n", b"user_id", b"item_id", b"timestamp", b"T00:00:00Z", b"+05:30"],
            seeds: || vec![EVENTS_CSV.to_vec()],
            make: |s| folder_target(s, &[("items.csv", ITEMS_CSV.to_vec())], "log.csv", events_run("log.csv", true)),
        },
        Target {
            name: "events-items",
            about: "the item table of an event log (titles, joined text columns)",
            dict: &[b",", b"\"", b"\n", b"item_id", b"title", b"text"],
            seeds: || vec![ITEMS_CSV.to_vec()],
            make: |s| folder_target(s, &[("log.csv", EVENTS_CSV.to_vec())], "items.csv", events_run("log.csv", true)),
        },
        Target {
            name: "events-jsonl",
            about: "an event log in JSON lines (numbers, strings, nested values)",
            dict: &[b"{", b"}", b"\"user_id\"", b"\"item_id\"", b"\"timestamp\"", b"null", b"[1,2]"],
            seeds: || vec![events_jsonl()],
            make: |s| folder_target(s, &[], "log.jsonl", events_run("log.jsonl", false)),
        },
        Target {
            name: "events-parquet",
            about: "an event log in Parquet (footer, row groups, pages)",
            dict: &[b"PAR1"],
            seeds: || vec![events_parquet()],
            make: |s| folder_target(s, &[], "log.parquet", events_run("log.parquet", false)),
        },
        Target {
            name: "amazon-reviews",
            about: "Amazon reviews JSON lines (2018 and 2023 layouts) with valid metadata",
            dict: &[
                b"\"reviewerID\"",
                b"\"asin\"",
                b"\"overall\"",
                b"\"unixReviewTime\"",
                b"\"parent_asin\"",
                b"\"rating\"",
            ],
            seeds: || vec![AMAZON_REVIEWS.to_vec(), AMAZON_2023.to_vec()],
            make: |s| folder_target(s, &[("meta.jsonl", AMAZON_META.to_vec())], "reviews.jsonl", amazon_run),
        },
        Target {
            name: "amazon-meta",
            about: "Amazon metadata JSON lines (title, categories, brand, description)",
            dict: &[b"\"asin\"", b"\"title\"", b"\"category\"", b"\"description\"", b"[]", b"null"],
            seeds: || vec![AMAZON_META.to_vec()],
            make: |s| folder_target(s, &[("reviews.jsonl", AMAZON_REVIEWS.to_vec())], "meta.jsonl", amazon_run),
        },
    ]
}

/// The media decoders.
fn decoders() -> Vec<Target> {
    vec![
        Target {
            name: "image",
            about: "image bytes (PNG, JPEG, GIF, WebP) through the preprocessor the feature cache and the service use",
            dict: &[b"\x89PNG\r\n\x1a\n", b"IHDR", b"\xff\xd8\xff", b"GIF89a", b"RIFF", b"WEBPVP8"],
            seeds: image_seeds,
            make: |_| {
                let cfg = m6rec_image::ImageConfig { size: 16, resize: 16, ..Default::default() };
                let p = m6rec_image::Preprocessor::new(&cfg).map_err(err)?;
                Ok(Box::new(move |input| p.bytes(input).map(|_| ()).map_err(err)))
            },
        },
        Target {
            name: "audio",
            about: "audio bytes (WAV, MP3, Ogg Vorbis, FLAC) through decoding, resampling and the log-mel spectrogram",
            dict: &[b"RIFF", b"WAVEfmt ", b"data", b"OggS", b"fLaC", b"ID3", b"\xff\xfb"],
            seeds: audio_seeds,
            make: |_| {
                let m = m6rec_audio::MelSpectrogram::new(&m6rec_audio::MelConfig::default()).map_err(err)?;
                Ok(Box::new(move |input| m.bytes(input.to_vec(), None).map(|_| ()).map_err(err)))
            },
        },
    ]
}

/// What m6rec reads back from its own state: feature caches, checkpoints, the journal, request bodies.
fn state() -> Vec<Target> {
    vec![
        Target {
            name: "features-manifest",
            about: "a feature cache's manifest.json, loaded against its dataset",
            dict: &[b"\"items\"", b"\"image\"", b"\"row\"", b"\"sha256\"", b"null", b"-1"],
            seeds: features_seeds,
            make: features_target,
        },
        Target {
            name: "checkpoint-config",
            about: "a checkpoint's config.json (model sizes, the catalog fingerprint), loaded",
            dict: &[
                b"\"d_model\"",
                b"\"n_layers\"",
                b"\"max_len\"",
                b"\"n_items\"",
                b"1000000000",
                b"\"format_version\"",
            ],
            seeds: || checkpoint_seeds("config.json"),
            make: |s| checkpoint_target(s, "config.json"),
        },
        Target {
            name: "checkpoint-weights",
            about: "a checkpoint's model.safetensors (header, shapes, data), loaded and checked",
            dict: &[b"\"dtype\"", b"\"shape\"", b"\"data_offsets\"", b"F32", b"F16", b"I64"],
            seeds: || checkpoint_seeds("model.safetensors"),
            make: |s| checkpoint_target(s, "model.safetensors"),
        },
        Target {
            name: "journal",
            about: "the service's journal.jsonl, replayed at start",
            dict: &[b"{\"op\":\"events\"", b"{\"op\":\"items\"", b"\"user_id\"", b"\"items\"", b"\n"],
            seeds: || vec![JOURNAL.to_vec()],
            make: |s| {
                let dir = s.join("state");
                Ok(Box::new(move |input| {
                    std::fs::create_dir_all(&dir).map_err(err)?;
                    write(&dir.join(m6rec_serve::journal::JOURNAL), input)?;
                    m6rec_serve::journal::Journal::open(&dir).map(|_| ()).map_err(err)
                }))
            },
        },
        Target {
            name: "http-bodies",
            about: "request bodies of every route, as the service deserialises and checks them",
            dict: &[b"\"user_id\"", b"\"history\"", b"\"k\"", b"\"items\"", b"\"image_base64\"", b"\"checkpoint\""],
            seeds: bodies,
            make: |_| Ok(Box::new(bodies_run)),
        },
    ]
}
