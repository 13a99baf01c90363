//! Items held out of training entirely (cold start): a tower that reads item images through a CNN trained with the
//! recommender recommends them; an id table cannot. Also: image encoders train inside the loop and round-trip
//! through checkpoints.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::import::{import, Format};
use m6rec_data::{synth, Dataset};
use m6rec_fusion::{FusionConfig, ItemTowerConfig, TowerMode};
use m6rec_testkit::torch_rng;
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::content::{ContentConfig, ItemContent, Modality, ModalityName};
use m6rec_train::eval::{evaluate, EvalOptions, Stage, Targets};
use m6rec_train::{RunConfig, Scorer, Silent, Trainer};
use tch::{Device, Kind, Tensor};

fn demo(n_users: usize) -> (Dataset, synth::SynthConfig) {
    let cfg = synth::SynthConfig { n_users, ..synth::SynthConfig::demo() };
    let dir = tempfile::tempdir().unwrap();
    let (inter, items) = synth::generate(&cfg);
    std::fs::write(dir.path().join("demo.inter"), inter).unwrap();
    std::fs::write(dir.path().join("demo.item"), items).unwrap();
    (import(Format::RecBole, dir.path()).unwrap().dataset, cfg)
}

/// Each dataset item's generated image as `[n, 3, 64, 64]` u8 (dataset item order, ids are `i<k>`).
fn images(ds: &Dataset, cfg: &synth::SynthConfig) -> ItemContent {
    let side = i64::from(synth::IMAGE_SIDE);
    let rows: Vec<Tensor> = ds
        .items
        .iter()
        .map(|it| {
            let k: usize = it.id.trim_start_matches('i').parse().unwrap();
            Tensor::from_slice(&synth::item_image(cfg, k)).view([side, side, 3]).permute([2, 0, 1])
        })
        .collect();
    let n = ds.n_items();
    let pixels = Tensor::stack(&rows, 0);
    let modality = Modality::Images { pixels, row_of: (0..n as i64).collect(), mean: [0.5; 3], std: [0.25; 3] };
    ItemContent::from_modalities(vec![modality], Tensor::ones([n as i64, 1], (Kind::Bool, Device::Cpu)), n).unwrap()
}

fn config(epochs: usize, tower: Option<TowerMode>) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.d_model = 32;
    cfg.model.max_len = 20;
    cfg.model.dropout = 0.1;
    cfg.optim.lr = 3e-3;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 64;
    cfg.train.warmup_steps = 10;
    cfg.train.patience = 100;
    cfg.train.cold_items = 0.15;
    cfg.item_tower = tower.map(|mode| ItemTowerConfig { mode, fusion: FusionConfig::Mean, id_dropout: 0.3 });
    cfg.content = tower.map(|_| ContentConfig {
        modalities: vec![ModalityName::Image],
        encoder: m6rec_tensor::cnn::ConvNetConfig { width: 8, depth: 3, out_dim: 32 },
        grad_items: 96,
        refresh_every: 10,
        center_text: false,
        similarity: false,
        similarity_scale: None,
    });
    cfg
}

#[test]
fn images_recommend_items_never_trained_on_and_ids_cannot() {
    let _rng = torch_rng();
    let (ds, synth_cfg) = demo(500);
    let content = images(&ds, &synth_cfg);
    let fp = DatasetFingerprint::of(&ds);
    let cold_opts = EvalOptions { targets: Targets::Cold, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("content");

    let run = config(10, Some(TowerMode::ContentOnly));
    let split = run.split(&ds.interactions, ds.n_users(), ds.n_items());
    assert_eq!(split.n_cold(), 54, "15% of 360 items held out");
    for u in 0..split.n_users() {
        assert!(split.train(u).iter().all(|&i| !split.is_cold(i)), "user {u} trains on a cold item");
    }
    let mut trainer = Trainer::with_content(run, fp.clone(), Some(&content), Device::Cpu).unwrap();
    trainer.fit(&split, Some(&ck), &mut Silent).unwrap();
    let from_images = evaluate(&trainer.scorer().unwrap(), &split, Stage::Test, cold_opts).unwrap();

    let mut ids = Trainer::new(config(10, None), fp, Device::Cpu).unwrap();
    ids.fit(&split, None, &mut Silent).unwrap();
    let from_ids = evaluate(&ids.scorer().unwrap(), &split, Stage::Test, cold_opts).unwrap();
    let (c, i) = (from_images.get("ndcg", 10), from_ids.get("ndcg", 10));
    eprintln!(
        "cold targets ({} users): image tower NDCG@10 {c:.4} HR@10 {:.4}; id table NDCG@10 {i:.4}",
        from_images.n_users,
        from_images.get("hr", 10)
    );
    assert!(c > 0.1 && c > 5.0 * i.max(0.005), "image tower {c:.4} vs ids {i:.4} on cold targets");

    // The checkpoint holds the CNN: loaded with the same content, it scores exactly like the trainer.
    let loaded = checkpoint::load_model_with_content(&ck, Device::Cpu, Some(&content)).unwrap();
    let histories: Vec<&[u32]> = (0..4).map(|u| split.train(u)).collect();
    let a = trainer.scorer().unwrap().score(&histories).unwrap();
    let b = loaded.scorer().unwrap().score(&histories).unwrap();
    assert!((a - b).abs().max().double_value(&[]) < 1e-4);
}

#[test]
fn content_shapes_are_checked_with_the_modality_named() {
    let bad = Modality::Images {
        pixels: Tensor::zeros([2, 3, 8, 8], (Kind::Uint8, Device::Cpu)),
        row_of: vec![0, 1, 2],
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let err = ItemContent::from_modalities(vec![bad], Tensor::ones([3, 1], (Kind::Bool, Device::Cpu)), 3).unwrap_err();
    assert!(err.to_string().contains("images") && err.to_string().contains("0..2"), "{err}");
    let gray = Modality::Images {
        pixels: Tensor::zeros([3, 1, 8, 8], (Kind::Uint8, Device::Cpu)),
        row_of: vec![0, 1, 2],
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let err = ItemContent::from_modalities(vec![gray], Tensor::ones([3, 1], (Kind::Bool, Device::Cpu)), 3).unwrap_err();
    assert!(err.to_string().contains("[3, 1, 8, 8]"), "{err}");
    let err = RunConfig::from_toml("[content]\nmodalities = []\n", std::path::Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("modalities"), "{err}");
    let err = RunConfig::from_toml("[train]\ncold_items = 1.5\n", std::path::Path::new("r.toml")).unwrap_err();
    assert!(err.to_string().contains("cold_items"), "{err}");
}
