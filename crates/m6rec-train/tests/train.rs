//! Training-layer integration tests: learning, resume, checkpoint safety.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::import::{import, Format};
use m6rec_data::{synth, Dataset, Split};
use m6rec_testkit::torch_rng; // tests that train take turns (the exact-resume test needs its own draws)
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::eval::{evaluate, EvalOptions, Stage};
use m6rec_train::{Popularity, RunConfig, Silent, Trainer};
use tch::Device;

fn small_demo(n_users: usize) -> Dataset {
    let dir = tempfile::tempdir().unwrap();
    let (inter, items) = synth::generate(&synth::SynthConfig { n_users, ..synth::SynthConfig::demo() });
    std::fs::write(dir.path().join("demo.inter"), inter).unwrap();
    std::fs::write(dir.path().join("demo.item"), items).unwrap();
    import(Format::RecBole, dir.path()).unwrap().dataset
}

fn small_config(epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.d_model = 32;
    cfg.model.max_len = 20;
    cfg.model.dropout = 0.1;
    cfg.optim.lr = 3e-3;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 64;
    cfg.train.warmup_steps = 10;
    cfg.train.patience = 100;
    cfg
}

/// The learning test: on the generated data (planted "next part of the series" structure) the model must beat
/// popularity on test NDCG@10 by a wide margin.
#[test]
fn the_model_learns_what_popularity_cannot() {
    let _rng = torch_rng();
    let ds = small_demo(400);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut trainer = Trainer::new(small_config(12), DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    let state = trainer.fit(&split, None, &mut Silent).unwrap().clone();
    let first = state.history.first().unwrap().loss;
    let last = state.history.last().unwrap().loss;
    assert!(last < first * 0.8, "training loss must fall: {first} -> {last}");
    let opts = EvalOptions::default();
    let model = evaluate(&trainer.scorer().unwrap(), &split, Stage::Test, opts).unwrap();
    let pop = evaluate(&Popularity::fit_before_test(&split, ds.n_items()), &split, Stage::Test, opts).unwrap();
    let (m, p) = (model.get("ndcg", 10), pop.get("ndcg", 10));
    assert!(m > 2.0 * p && m > 0.2, "model NDCG@10 {m:.4} vs popularity {p:.4}");
}

/// A run interrupted after epoch 2 and resumed from its checkpoint ends exactly where an uninterrupted run does.
#[test]
fn resume_continues_exactly() {
    let _rng = torch_rng();
    let ds = small_demo(120);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let fp = DatasetFingerprint::of(&ds);
    // The default (AdamW, cosine) and a config with every stateful piece of the optimizer layer: SGD momentum,
    // gradient accumulation, a moving average of the weights and reduce-on-plateau.
    let mut other = small_config(4);
    other.optim = toml::from_str(
        "algorithm = 'sgd'\nlr = 0.05\nmomentum = 0.9\nnesterov = true\naccumulate = 2\nema = 0.9\n\
         schedule = { type = 'plateau', patience = 1, factor = 0.5 }\n",
    )
    .unwrap();
    other.train.buckets = false; // batches of exactly 64 rows, so the step count below is known
    for cfg in [small_config(4), other] {
        let dir = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));

        let mut a = Trainer::new(cfg.clone(), fp.clone(), Device::Cpu).unwrap();
        let full = a.fit(&split, Some(&a_dir), &mut Silent).unwrap().clone();

        let mut b = Trainer::new(cfg.clone(), fp.clone(), Device::Cpu).unwrap();
        b.fit_until(&split, Some(&b_dir), &mut Silent, 2).unwrap();
        drop(b);
        let mut b = Trainer::resume(&b_dir, &fp, Device::Cpu).unwrap();
        let resumed = b.fit(&split, Some(&b_dir), &mut Silent).unwrap().clone();

        let losses =
            |s: &m6rec_train::TrainState| s.history.iter().map(|r| (r.loss, r.valid_ndcg10)).collect::<Vec<_>>();
        assert_eq!(losses(&full), losses(&resumed), "{:?}", cfg.optim);
        assert_eq!(full.plateau, resumed.plateau);
        assert_eq!(full.step, resumed.step);
        let wa = std::fs::read(a_dir.join("model.safetensors")).unwrap();
        let wb = std::fs::read(b_dir.join("model.safetensors")).unwrap();
        assert!(wa == wb, "best weights differ after resume ({:?})", cfg.optim);
        if cfg.optim.accumulate == 2 {
            // Half as many optimizer steps as batches.
            let batches = m6rec_train::training_spans(&split, 20, true).len().div_ceil(64);
            assert_eq!(full.step, 4 * batches.div_ceil(2) as u64);
        }
    }
}

/// Issue 19.7: a run whose item tower trains an image encoder (a cached table refreshed every few steps) resumes
/// exactly too: 3 epochs straight and 1 + resume to 3 give the same losses and the same weights.
#[test]
fn resume_is_exact_with_a_trainable_content_encoder() {
    use m6rec_train::content::{ItemContent, Modality, ModalityName};
    let _rng = torch_rng();
    let ds = small_demo(120);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let fp = DatasetFingerprint::of(&ds);
    let n = ds.n_items();
    tch::manual_seed(7);
    let pixels = tch::Tensor::randint(256, [n as i64, 3, 8, 8], (tch::Kind::Uint8, Device::Cpu));
    let row_of: Vec<i64> = (0..n as i64).collect();
    let content = || {
        let images =
            Modality::Images { pixels: pixels.shallow_clone(), row_of: row_of.clone(), mean: [0.5; 3], std: [0.25; 3] };
        let present = tch::Tensor::ones([n as i64, 1], (tch::Kind::Bool, Device::Cpu));
        ItemContent::from_modalities(vec![images], present, n).unwrap()
    };
    let mut cfg = small_config(3);
    cfg.item_tower = Some(m6rec_fusion::ItemTowerConfig {
        mode: m6rec_fusion::TowerMode::Hybrid,
        fusion: m6rec_fusion::FusionConfig::Gated,
        id_dropout: 0.3,
    });
    let mut cc = m6rec_train::content::ContentConfig { modalities: vec![ModalityName::Image], ..Default::default() };
    cc.encoder.width = 4;
    cc.encoder.depth = 1;
    cc.encoder.out_dim = 8;
    cc.grad_items = 16;
    cc.refresh_every = 3;
    cfg.content = Some(cc);
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Trainer::with_content(cfg.clone(), fp.clone(), Some(&content()), Device::Cpu).unwrap();
    let full = a.fit(&split, Some(&a_dir), &mut Silent).unwrap().clone();
    let mut b = Trainer::with_content(cfg.clone(), fp.clone(), Some(&content()), Device::Cpu).unwrap();
    b.fit_until(&split, Some(&b_dir), &mut Silent, 1).unwrap();
    drop(b);
    let mut b = Trainer::resume_with_content(&b_dir, &fp, Some(&content()), Device::Cpu).unwrap();
    let resumed = b.fit(&split, Some(&b_dir), &mut Silent).unwrap().clone();
    let losses = |s: &m6rec_train::TrainState| s.history.iter().map(|r| (r.loss, r.valid_ndcg10)).collect::<Vec<_>>();
    assert_eq!(losses(&full), losses(&resumed));
    let wa = std::fs::read(a_dir.join("last.safetensors")).unwrap();
    let wb = std::fs::read(b_dir.join("last.safetensors")).unwrap();
    assert!(wa == wb, "weights differ after resume");
}

/// `train.max_seconds` ends the epoch in progress after the step that crosses it: that partial epoch is validated
/// and checkpointed, and the checkpoint loads.
#[test]
fn the_time_cap_stops_within_an_epoch_with_a_loadable_checkpoint() {
    let _rng = torch_rng();
    let ds = small_demo(400);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let fp = DatasetFingerprint::of(&ds);
    let mut cfg = small_config(50);
    cfg.train.batch_size = 8; // over 50 batches an epoch; the first step already takes longer than the cap
    cfg.train.max_seconds = 1e-6;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("capped");
    let mut t = Trainer::new(cfg, fp.clone(), Device::Cpu).unwrap();
    let state = t.fit(&split, Some(&out), &mut Silent).unwrap().clone();
    assert!(state.finished);
    let reason = state.stop_reason.clone().unwrap();
    assert!(reason.contains("during epoch 1 (after 1 of "), "{reason}");
    assert_eq!(state.epoch, 1);
    assert_eq!(state.step, 1);
    assert!(state.history[0].valid_ndcg10.is_some(), "the partial epoch is validated");
    let back = Trainer::resume(&out, &fp, Device::Cpu).unwrap();
    let got = back.state();
    assert_eq!((got.epoch, got.step, got.finished, &got.stop_reason), (1, 1, true, &state.stop_reason));
    let a = evaluate(&back.scorer().unwrap(), &split, Stage::Valid, EvalOptions::default());
    assert!(a.unwrap().get("ndcg", 10).is_finite());
}

/// `train.replan` replaces `train.epochs` after epoch 2 by what the measured epoch time fits (never 1000: at most
/// 200), saves it in the checkpoint's config, and the run ends by that plan or the time cap.
#[test]
fn replanning_rewrites_the_epochs_from_the_measured_epoch_time() {
    let _rng = torch_rng();
    let ds = small_demo(200);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let fp = DatasetFingerprint::of(&ds);
    let mut cfg = small_config(1000);
    cfg.train.patience = 1000;
    cfg.train.replan = true;
    cfg.train.max_seconds = 3.0;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replanned");
    let mut t = Trainer::new(cfg, fp.clone(), Device::Cpu).unwrap();
    let state = t.fit(&split, Some(&out), &mut Silent).unwrap().clone();
    let planned = t.config().train.epochs;
    assert!((5..=200).contains(&planned), "{planned}");
    assert!(state.epoch <= planned && state.finished, "{state:?}");
    let saved = m6rec_train::checkpoint::load_config(&out).unwrap();
    assert_eq!(saved.run.train.epochs, planned, "the checkpoint holds the new plan");
}

/// With a token budget the batches hold more short rows; the run still learns, and the epoch's padding share is
/// recorded and small.
#[test]
fn a_token_budget_trains_with_little_padding() {
    let _rng = torch_rng();
    let ds = small_demo(400);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut cfg = small_config(3);
    cfg.train.batch_tokens = 640;
    let mut t = Trainer::new(cfg, DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    let state = t.fit(&split, None, &mut Silent).unwrap().clone();
    let first = &state.history[0];
    assert!(first.padding < 0.1 && first.padding >= 0.0, "padding {}", first.padding);
    assert!(first.tokens_per_sec > first.seqs_per_sec, "{first:?}");
    assert!(state.history[2].loss < first.loss, "{:?}", state.history);
}

/// Prompt tuning (`m6rec adapt --method prompt`): on a pretrained model, only the soft prompts change.
#[test]
fn prompt_tuning_trains_the_prompts_and_nothing_else() {
    let _rng = torch_rng();
    let ds = small_demo(120);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let fp = DatasetFingerprint::of(&ds);
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("pre");
    Trainer::new(small_config(2), fp.clone(), Device::Cpu).unwrap().fit(&split, Some(&pre), &mut Silent).unwrap();
    let mut cfg = small_config(2);
    cfg.model.prompts = 4;
    let mut t = Trainer::new(cfg, fp, Device::Cpu).unwrap();
    let (_, fresh) = t.init_from(&pre).unwrap();
    assert!(fresh.is_empty(), "same catalog: every pretrained tensor fits ({fresh:?}); the prompts are new");
    let (trainable, total) = t.freeze_except(|n| n == "model.prompt");
    assert_eq!(trainable, 4 * 32);
    assert!(total > 100 * trainable, "{trainable} of {total}");
    let before = tch::Tensor::read_safetensors(pre.join("model.safetensors")).unwrap();
    let out = dir.path().join("adapted");
    t.fit(&split, Some(&out), &mut Silent).unwrap();
    let after = tch::Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
    let mut changed = Vec::new();
    for (name, tensor) in &after {
        match before.iter().find(|(n, _)| n == name) {
            Some((_, old)) => assert!(old.equal(tensor), "{name} changed although frozen"),
            None => changed.push(name.clone()),
        }
    }
    assert_eq!(changed, ["model.prompt"]);
}

#[test]
fn checkpoints_refuse_another_dataset_and_name_what_is_wrong() {
    let _rng = torch_rng();
    let ds = small_demo(60);
    let other = small_demo(61);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut t = Trainer::new(small_config(1), DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    t.fit(&split, Some(&ck), &mut Silent).unwrap();
    let expected: Vec<&str> = vec![
        ".m6rec-checkpoint",
        "checksums.json",
        "config.json",
        "curves.svg",
        "last.safetensors",
        "model.safetensors",
        "optim.safetensors",
        "state.json",
    ];
    let mut files: Vec<String> =
        std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, expected);

    // Same catalog (the generator's items are fixed) but a different dataset name still loads: the catalog is what matters.
    assert!(checkpoint::load_config(&ck).unwrap().dataset.check(&DatasetFingerprint::of(&other), &ck).is_ok());
    // A different catalog is refused.
    let mut shrunk = ds.clone();
    shrunk.items.pop();
    let err = Trainer::resume(&ck, &DatasetFingerprint::of(&shrunk), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("360 items") && err.contains("359 items"), "{err}");
    // Weights from another config are refused with the file named.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).unwrap()).unwrap();
    cfg["run"]["model"]["d_model"] = serde_json::json!(16);
    std::fs::write(ck.join("config.json"), cfg.to_string()).unwrap();
    let err = checkpoint::load_model(&ck, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("another config"), "{err}");
    // A missing checkpoint says how to make one.
    let err = checkpoint::load_model(&dir.path().join("nope"), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("m6rec train"), "{err}");
}

/// Issue 19.5: weights are checked when they load. A flipped bit fails the checksum written at save time, NaN weights
/// (even with a matching checksum, as a diverged run would save them) are refused with the variable named, and a
/// checkpoint from before checksums existed still loads.
#[test]
fn corrupt_or_non_finite_weights_are_refused_at_load() {
    let _rng = torch_rng();
    let ds = small_demo(60);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut t = Trainer::new(small_config(1), DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    t.fit(&split, Some(&ck), &mut Silent).unwrap();
    assert!(checkpoint::load_model(&ck, Device::Cpu).is_ok());
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for e in std::fs::read_dir(&ck).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    // One bit flipped near the end (inside a tensor's data, past the header).
    let flipped = copy("flipped");
    let mut bytes = std::fs::read(flipped.join("model.safetensors")).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x10;
    std::fs::write(flipped.join("model.safetensors"), &bytes).unwrap();
    let err = checkpoint::load_model(&flipped, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors is not the file that was saved") && err.contains("sha256"), "{err}");
    let err = Trainer::resume(&flipped, &DatasetFingerprint::of(&ds), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not the file that was saved"), "{err}");
    // NaN weights with a checksum that matches them.
    let nan = copy("nan");
    let weights = tch::Tensor::read_safetensors(nan.join("model.safetensors")).unwrap();
    let victim = weights.iter().position(|(n, _)| n.contains("item_emb")).unwrap();
    let _ = weights[victim].1.get(3).get(0).fill_(f64::NAN);
    tch::Tensor::write_safetensors(&weights, nan.join("model.safetensors")).unwrap();
    m6rec_recommender::saved::write_checksums(&nan, &["model.safetensors", "last.safetensors", "optim.safetensors"])
        .unwrap();
    let err = checkpoint::load_model(&nan, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("hold NaN or infinity") && err.contains(&weights[victim].0), "{err}");
    // Before checksums: the file is simply absent, and the checkpoint loads.
    let old = copy("old");
    std::fs::remove_file(old.join("checksums.json")).unwrap();
    assert!(checkpoint::load_model(&old, Device::Cpu).is_ok());
}

/// The sampled-softmax objective trains the same model end to end and also beats popularity.
#[test]
fn sampled_softmax_training_learns_too() {
    let _rng = torch_rng();
    let ds = small_demo(300);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut cfg = small_config(12);
    cfg.model.loss = m6rec_model::LossConfig::SampledSoftmax { n_uniform: 128, in_batch: true };
    let mut trainer = Trainer::new(cfg, DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    trainer.fit(&split, None, &mut Silent).unwrap();
    let opts = EvalOptions::default();
    let m = evaluate(&trainer.scorer().unwrap(), &split, Stage::Test, opts).unwrap().get("ndcg", 10);
    let p = evaluate(&Popularity::fit_before_test(&split, ds.n_items()), &split, Stage::Test, opts)
        .unwrap()
        .get("ndcg", 10);
    eprintln!("sampled softmax: model NDCG@10 {m:.4}, popularity {p:.4}");
    assert!(m > 1.5 * p, "sampled softmax model NDCG@10 {m:.4} vs popularity {p:.4}");
}

/// Trains `task` on the generated data; returns (model, popularity) test NDCG@10 and checks that a saved checkpoint
/// scores exactly as the trained model does (the mask embedding and the task travel with it).
fn train_task(task: m6rec_model::TaskConfig, epochs: usize) -> (f64, f64) {
    let _rng = torch_rng();
    let ds = small_demo(300);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let mut cfg = small_config(epochs);
    cfg.model.task = task.clone();
    let mut trainer = Trainer::new(cfg, DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    trainer.fit(&split, None, &mut Silent).unwrap();
    let opts = EvalOptions::default();
    let m = evaluate(&trainer.scorer().unwrap(), &split, Stage::Test, opts).unwrap().get("ndcg", 10);
    let p = evaluate(&Popularity::fit_before_test(&split, ds.n_items()), &split, Stage::Test, opts)
        .unwrap()
        .get("ndcg", 10);
    let dir = tempfile::tempdir().unwrap();
    trainer.save(dir.path()).unwrap();
    let loaded = m6rec_recommender::Recommender::load(dir.path(), Device::Cpu, None).unwrap();
    assert_eq!(loaded.config.run.model.task, task, "the task is saved with the checkpoint");
    let histories: [&[u32]; 2] = [&[1, 2, 3], &[4]];
    let a = trainer.recommender().scorer().unwrap().score_histories(&histories).unwrap();
    let b = loaded.scorer().unwrap().score_histories(&histories).unwrap();
    assert!((a - b).abs().max().double_value(&[]) < 1e-5, "a loaded {} model scores as the trained one", task.name());
    eprintln!("{}: model NDCG@10 {m:.4}, popularity {p:.4}", task.name());
    (m, p)
}

/// Masked-item (BERT4Rec-style) pretraining learns the planted structure and beats popularity by a clear margin. It
/// needs more epochs than next-item prediction (a third of the positions carry a target, and a masked position reads
/// its neighbours only through attention): 30 here, against 12.
#[test]
fn the_masked_item_task_learns() {
    let task = m6rec_model::TaskConfig::MaskedItem {
        mask_prob: 0.3,
        mask_last: 0.2,
        random_prob: 0.0,
        keep_prob: 0.0,
        next_item_weight: 0.0,
        locality: 4.0,
    };
    let (m, p) = train_task(task, 30);
    assert!(m > 2.0 * p, "masked-item NDCG@10 {m:.4} vs popularity {p:.4}");
}

/// Masked items mixed with next-item prediction (one model, two loss terms) learns too.
#[test]
fn masked_items_mixed_with_next_item_learn() {
    let task = m6rec_model::TaskConfig::MaskedItem {
        mask_prob: 0.2,
        mask_last: 0.2,
        random_prob: 0.1,
        keep_prob: 0.1,
        next_item_weight: 0.5,
        locality: 4.0,
    };
    let (m, p) = train_task(task, 30);
    assert!(m > 2.0 * p, "mixed NDCG@10 {m:.4} vs popularity {p:.4}");
}

/// M6's prefix-LM (bidirectional history, autoregressive continuation) learns and beats popularity.
#[test]
fn the_prefix_lm_task_learns() {
    let (m, p) = train_task(m6rec_model::TaskConfig::PrefixLm, 12);
    assert!(m > 2.0 * p, "prefix-LM NDCG@10 {m:.4} vs popularity {p:.4}");
}

/// Items from a content-only tower over frozen MiniLM title embeddings: the model learns from what items are, and the
/// checkpoint (tower included) scores the same after loading with the same content.
#[test]
fn a_content_tower_over_titles_learns_and_round_trips() {
    use m6rec_train::content::ItemContent;
    let _rng = torch_rng();
    let ds = small_demo(400);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let titles: Vec<&str> = ds.items.iter().map(|it| it.title.as_str()).collect();
    let text_vs = tch::nn::VarStore::new(Device::Cpu);
    let enc = m6rec_text::TextEncoder::pretrained(&text_vs.root(), &m6rec_testkit::text_model(), 32, true).unwrap();
    let emb = tch::no_grad(|| enc.encode_all(&titles, 64, Device::Cpu, m6rec_tensor::Mode::Eval)).unwrap();
    let n = ds.n_items();
    let present = tch::Tensor::ones([n as i64, 1], (tch::Kind::Bool, Device::Cpu));
    let content = ItemContent::new(vec![emb], present, n).unwrap();
    let mut cfg = small_config(8);
    cfg.item_tower = Some(m6rec_fusion::ItemTowerConfig {
        mode: m6rec_fusion::TowerMode::ContentOnly,
        fusion: m6rec_fusion::FusionConfig::Mean,
        id_dropout: 0.0,
    });
    let fp = DatasetFingerprint::of(&ds);
    assert!(Trainer::new(cfg.clone(), fp.clone(), Device::Cpu).unwrap_err().to_string().contains("m6rec features"));
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut trainer = Trainer::with_content(cfg, fp, Some(&content), Device::Cpu).unwrap();
    trainer.fit(&split, Some(&ck), &mut Silent).unwrap();
    let opts = EvalOptions::default();
    let model = evaluate(&trainer.scorer().unwrap(), &split, Stage::Test, opts).unwrap();
    let pop = evaluate(&Popularity::fit_before_test(&split, n), &split, Stage::Test, opts).unwrap();
    let (m, p) = (model.get("ndcg", 10), pop.get("ndcg", 10));
    eprintln!("content-only tower over MiniLM titles: test NDCG@10 {m:.4}, popularity {p:.4}");
    assert!(m > 2.0 * p, "content tower NDCG@10 {m:.4} vs popularity {p:.4}");

    let err = checkpoint::load_model(&ck, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("item tower"), "{err}");
    let loaded = checkpoint::load_model_with_content(&ck, Device::Cpu, Some(&content)).unwrap();
    let histories: Vec<&[u32]> = (0..5).map(|u| split.train(u)).collect();
    use m6rec_train::Scorer;
    let a = trainer.scorer().unwrap().score(&histories).unwrap();
    let b = loaded.scorer().unwrap().score(&histories).unwrap();
    assert!((a - b).abs().max().double_value(&[]) < 1e-4, "the loaded checkpoint scores like the trainer");
}
