//! The feature cache end to end: good, corrupt, missing and escaping media; incremental re-runs; stale caches.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;

use m6rec_data::{Dataset, Interactions, Item};
use m6rec_features::{build, default_cache_dir, Error, FeatureConfig, Features, AUDIO, IMAGE, TEXT};

fn item(id: &str, image: Option<&str>, audio: Option<&str>) -> Item {
    Item {
        id: id.into(),
        domain: "test".into(),
        title: if id == "notext" { String::new() } else { format!("item {id}") },
        text: None,
        image: image.map(Into::into),
        audio: audio.map(Into::into),
    }
}

fn dataset() -> Dataset {
    Dataset {
        name: "media".into(),
        source: "test".into(),
        users: vec!["u".into()],
        items: vec![
            item("good", Some("media/good.png"), Some("media/good.ogg")),
            item("corrupt", Some("media/truncated.jpg"), Some("media/not_audio.mp3")),
            item("missing", Some("media/nothere.jpg"), None),
            item("escape", Some("../outside.png"), Some("/etc/passwd")),
            item("symlink", Some("media/link.png"), None),
            item("notext", None, None),
        ],
        interactions: Interactions { user: vec![0], item: vec![0], timestamp: vec![0], event: vec![None] },
    }
}

/// `<tmp>/ds` with the dataset and its media, plus `<tmp>/outside.png` that the symlink points at.
fn setup(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("ds");
    dataset().save(&dir).unwrap();
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    let fx = |p: &str| m6rec_testkit::fixture(p);
    std::fs::copy(fx("images/chelsea.png"), media.join("good.png")).unwrap();
    std::fs::copy(fx("audio/tone_22k.ogg"), media.join("good.ogg")).unwrap();
    std::fs::copy(fx("images/truncated.jpg"), media.join("truncated.jpg")).unwrap();
    std::fs::copy(fx("audio/not_audio.mp3"), media.join("not_audio.mp3")).unwrap();
    std::fs::copy(fx("images/coffee.jpg"), tmp.join("outside.png")).unwrap();
    std::os::unix::fs::symlink(tmp.join("outside.png"), media.join("link.png")).unwrap();
    dir
}

fn small() -> FeatureConfig {
    let mut cfg = FeatureConfig::default();
    cfg.image.size = 32;
    cfg.image.resize = 36;
    cfg.audio.seconds = 1.0;
    cfg
}

#[test]
fn bad_media_never_stop_the_build_and_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = setup(tmp.path());
    let ds = Dataset::load(&dir).unwrap();
    let cache = default_cache_dir(&dir);
    assert_eq!(cache, tmp.path().join("ds.features"));
    let r = build(&dir, &ds, &cache, &small(), &()).unwrap();
    assert_eq!((r.image.with_media, r.image.decoded, r.image.reused), (5, 1, 0));
    assert_eq!((r.audio.with_media, r.audio.decoded, r.audio.reused), (3, 1, 0));
    let reason = |failed: &[m6rec_features::BadMedia], id: &str| {
        failed.iter().find(|b| b.item == id).map(|b| b.reason.clone()).unwrap_or_else(|| panic!("{id} not reported"))
    };
    assert!(reason(&r.image.failed, "corrupt").contains("truncated"), "{:?}", r.image.failed);
    assert!(reason(&r.image.failed, "missing").contains("does not exist"));
    assert!(reason(&r.image.failed, "escape").contains("leaves the dataset directory"));
    assert!(reason(&r.image.failed, "symlink").contains("outside the dataset directory"));
    assert!(reason(&r.audio.failed, "escape").contains("absolute"));
    assert!(reason(&r.audio.failed, "corrupt").contains("decode"));
    assert_eq!(r.image.failed.len(), 4);

    let f = Features::load(&cache, &ds).unwrap();
    assert_eq!(f.pixels.size(), vec![1, 3, 32, 32], "only decoded images are stored");
    assert_eq!(f.log_mel.size(), vec![1, 1, 64, small().audio.n_frames() as i64]);
    assert_eq!(f.images(&[0, 1, 5]).unwrap().size(), vec![3, 3, 32, 32]);
    assert_eq!(f.audio(&[2, 0]).unwrap().size(), vec![2, 1, 64, small().audio.n_frames() as i64]);
    assert!(f.images(&[6]).is_err(), "out-of-range item index");
    let has = |row: i64, col: i64| f.present.int64_value(&[row, col]) == 1;
    assert!(has(0, TEXT) && has(0, IMAGE) && has(0, AUDIO));
    for row in 1..6 {
        assert!(!has(row, IMAGE) && !has(row, AUDIO), "item {row} has no usable media");
    }
    assert!(has(1, TEXT) && !has(5, TEXT), "the title-less item has no text");
    // Cached pixels are the preprocessor's output for the good image; absent rows are zero.
    let want = m6rec_image::Preprocessor::new(&small().image).unwrap().file(&dir.join("media/good.png")).unwrap();
    let batch = f.images(&[0, 1]).unwrap();
    let got: Vec<u8> = Vec::try_from(batch.get(0).flatten(0, -1)).unwrap();
    assert_eq!(got, want.chw);
    assert_eq!(batch.get(1).sum(tch::Kind::Int64).int64_value(&[]), 0, "absent rows are zero");
}

#[test]
fn reruns_decode_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = setup(tmp.path());
    let ds = Dataset::load(&dir).unwrap();
    let cache = default_cache_dir(&dir);
    build(&dir, &ds, &cache, &small(), &()).unwrap();
    let first = Features::load(&cache, &ds).unwrap().pixels;

    // Nothing changed: everything readable is reused, failures included (the bad file is not decoded again). The
    // counts add up (issue 19.17: a cached failure was once counted as reused and as unusable).
    let r = build(&dir, &ds, &cache, &small(), &()).unwrap();
    assert_eq!(
        (r.image.decoded, r.image.reused),
        (0, 1),
        "good.png is reused, truncated.jpg is read and hashed but not decoded again"
    );
    assert_eq!((r.audio.decoded, r.audio.reused), (0, 1));
    assert_eq!(r.image.failed.len(), 4, "failures stay reported");
    for m in [&r.image, &r.audio] {
        assert_eq!(m.decoded + m.reused + m.failed.len(), m.with_media, "{m:?}");
    }
    assert!(Features::load(&cache, &ds).unwrap().pixels.equal(&first));

    // One image replaced: only it is decoded.
    std::fs::copy(m6rec_testkit::fixture("images/coffee.jpg"), dir.join("media/good.png")).unwrap();
    let r = build(&dir, &ds, &cache, &small(), &()).unwrap();
    assert_eq!((r.image.decoded, r.image.reused), (1, 0));
    assert_eq!((r.audio.decoded, r.audio.reused), (0, 1));
    assert!(!Features::load(&cache, &ds).unwrap().pixels.equal(&first));

    // Another preprocessing config: every image again, audio untouched.
    let mut cfg = small();
    cfg.image.size = 16;
    cfg.image.resize = 18;
    let r = build(&dir, &ds, &cache, &cfg, &()).unwrap();
    assert_eq!((r.image.decoded, r.image.reused), (1, 0));
    assert_eq!((r.audio.decoded, r.audio.reused), (0, 1));
    assert_eq!(Features::load(&cache, &ds).unwrap().pixels.size(), vec![1, 3, 16, 16]);
}

#[test]
fn a_cache_for_another_item_list_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = setup(tmp.path());
    let mut ds = Dataset::load(&dir).unwrap();
    let cache = default_cache_dir(&dir);
    let err = Features::load(&cache, &ds).unwrap_err();
    assert!(matches!(err, Error::Stale { .. }) && err.to_string().contains("m6rec features"), "{err}");
    build(&dir, &ds, &cache, &small(), &()).unwrap();
    ds.items.push(item("new", None, None));
    let err = Features::load(&cache, &ds).unwrap_err();
    assert!(err.to_string().contains("built for 6 items, the dataset has 7"), "{err}");
}

#[test]
fn text_embeddings_are_cached_and_reused_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = setup(tmp.path());
    let mut ds = Dataset::load(&dir).unwrap();
    ds.items[1].text = Some("A truncated photo of coffee.".into());
    let cache = default_cache_dir(&dir);
    let mut cfg = small();
    cfg.text =
        Some(m6rec_features::TextFeatureConfig { model: m6rec_testkit::text_model(), max_len: 64, batch_size: 4 });
    let r = build(&dir, &ds, &cache, &cfg, &()).unwrap();
    assert_eq!((r.text.with_media, r.text.decoded, r.text.reused), (5, 5, 0), "the title-less item has no text");
    let f = Features::load(&cache, &ds).unwrap();
    assert_eq!(f.text_emb.size(), vec![5, 384]);
    assert!(f.present.int64_value(&[1, TEXT]) == 1 && f.present.int64_value(&[5, TEXT]) == 0);
    // Row 1 is exactly what the encoder gives for "title. text".
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let enc = m6rec_text::TextEncoder::pretrained(&vs.root(), &m6rec_testkit::text_model(), 64, true).unwrap();
    let want = tch::no_grad(|| {
        enc.encode(&["item corrupt. A truncated photo of coffee."], tch::Device::Cpu, m6rec_tensor::Mode::Eval)
    })
    .unwrap();
    let got = f.texts(&[1, 5]).unwrap();
    assert!((got.get(0) - want.get(0)).abs().max().double_value(&[]) < 1e-5);
    assert_eq!(got.get(1).abs().sum(tch::Kind::Float).double_value(&[]), 0.0);

    // Unchanged texts are reused; one changed title is re-embedded.
    ds.items[0].title = "a new title".into();
    let r = build(&dir, &ds, &cache, &cfg, &()).unwrap();
    assert_eq!((r.text.decoded, r.text.reused), (1, 4));
    let f2 = Features::load(&cache, &ds).unwrap();
    assert!(f2.texts(&[2]).unwrap().equal(&f.texts(&[2]).unwrap()));
    assert!(!f2.texts(&[0]).unwrap().equal(&f.texts(&[0]).unwrap()));
}
