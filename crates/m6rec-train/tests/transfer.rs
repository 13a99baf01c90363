//! Open-domain pieces: zero-shot transfer to a domain never seen in training, fine-tuning from a model pretrained on
//! another catalog, and domain embeddings with per-domain sampling weights.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::import::{import, Format};
use m6rec_data::{synth, Dataset};
use m6rec_fusion::{FusionConfig, ItemTowerConfig, TowerMode};
use m6rec_testkit::torch_rng;
use m6rec_train::checkpoint::{self, DatasetFingerprint};
use m6rec_train::content::{ContentConfig, ItemContent, ModalityName};
use m6rec_train::domains::DomainConfig;
use m6rec_train::eval::{evaluate, EvalOptions, Stage};
use m6rec_train::{Popularity, RunConfig, Scorer, Silent, Trainer};
use tch::{Device, Kind, Tensor};

/// The demo data restricted to items of some domains (books 0, music 1, films 2).
fn demo_domains(n_users: usize, keep: &[usize]) -> Dataset {
    let cfg = synth::SynthConfig { n_users, ..synth::SynthConfig::demo() };
    let per_domain = cfg.series_per_domain * cfg.series_len;
    let kept = |line: &str, col: usize| {
        let id = line.split('\t').nth(col).unwrap();
        keep.contains(&(id.trim_start_matches('i').parse::<usize>().unwrap() / per_domain))
    };
    let (inter, items) = synth::generate(&cfg);
    let filter = |text: &str, col: usize| {
        let mut lines = text.lines();
        let mut out = format!("{}\n", lines.next().unwrap());
        for l in lines.filter(|l| kept(l, col)) {
            out.push_str(l);
            out.push('\n');
        }
        out
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.inter"), filter(&inter, 1)).unwrap();
    std::fs::write(dir.path().join("demo.item"), filter(&items, 0)).unwrap();
    import(Format::RecBole, dir.path()).unwrap().dataset
}

/// Frozen MiniLM embeddings of each item's title and text.
fn texts(ds: &Dataset) -> ItemContent {
    let texts: Vec<String> =
        ds.items.iter().map(|it| format!("{}. {}", it.title, it.text.clone().unwrap_or_default())).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let enc = m6rec_text::TextEncoder::pretrained(&vs.root(), &m6rec_testkit::text_model(), 64, true).unwrap();
    let emb = tch::no_grad(|| enc.encode_all(&refs, 64, Device::Cpu, m6rec_tensor::Mode::Eval)).unwrap();
    let n = ds.n_items();
    ItemContent::new(vec![emb], Tensor::ones([n as i64, 1], (Kind::Bool, Device::Cpu)), n).unwrap()
}

fn text_config(epochs: usize) -> RunConfig {
    let mut cfg = config(epochs);
    cfg.content = None;
    cfg
}

fn config(epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.d_model = 32;
    cfg.model.max_len = 20;
    cfg.model.dropout = 0.1;
    cfg.optim.lr = 3e-3;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 64;
    cfg.train.warmup_steps = 10;
    cfg.train.patience = 100;
    cfg.item_tower =
        Some(ItemTowerConfig { mode: TowerMode::ContentOnly, fusion: FusionConfig::Mean, id_dropout: 0.0 });
    cfg.content = Some(ContentConfig {
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
fn pretrained_on_books_it_recommends_music_and_films_zero_shot_and_fine_tunes() {
    let _rng = torch_rng();
    let source = demo_domains(600, &[0]);
    // The target catalog is larger than the source one (token ids beyond the source catalog must be accepted).
    let target = demo_domains(300, &[1, 2]);
    assert!(source.items.iter().all(|it| it.domain == "books") && target.items.iter().all(|it| it.domain != "books"));
    assert!(target.n_items() > source.n_items());
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("pretrained");
    let src_split = m6rec_data::Split::leave_one_out(&source.interactions, source.n_users());
    let mut pre =
        Trainer::with_content(text_config(8), DatasetFingerprint::of(&source), Some(&texts(&source)), Device::Cpu)
            .unwrap();
    pre.fit(&src_split, Some(&ck), &mut Silent).unwrap();

    // Zero-shot: the films catalog, never seen, scored through the pretrained image tower.
    let split = m6rec_data::Split::leave_one_out(&target.interactions, target.n_users());
    let target_content = texts(&target);
    let zs = checkpoint::load_model_zero_shot(&ck, Device::Cpu, &target_content).unwrap();
    let opts = EvalOptions::default();
    let zero = evaluate(&zs.scorer().unwrap(), &split, Stage::Test, opts).unwrap().get("ndcg", 10);
    let pop = evaluate(&Popularity::fit_before_test(&split, target.n_items()), &split, Stage::Test, opts).unwrap();
    let pop = pop.get("ndcg", 10);
    eprintln!("music+films zero-shot NDCG@10 {zero:.4}, popularity {pop:.4}");
    assert!(zero > 1.3 * pop, "zero-shot {zero:.4} vs popularity {pop:.4}");

    // An id model cannot be transferred, and says why.
    let ids = dir.path().join("ids");
    let mut id_cfg = config(1);
    id_cfg.item_tower = None;
    id_cfg.content = None;
    let mut t = Trainer::new(id_cfg, DatasetFingerprint::of(&source), Device::Cpu).unwrap();
    t.fit(&src_split, Some(&ids), &mut Silent).unwrap();
    let err = checkpoint::load_model_zero_shot(&ids, Device::Cpu, &target_content).unwrap_err().to_string();
    assert!(err.contains("no item tower"), "{err}");

    // Fine-tuning starts from the pretrained weights: everything but catalog-sized tables is copied, and the first
    // epoch's loss is below a fresh model's.
    let fp = DatasetFingerprint::of(&target);
    let mut tuned = Trainer::with_content(text_config(1), fp.clone(), Some(&target_content), Device::Cpu).unwrap();
    let (copied, skipped) = tuned.init_from(&ck).unwrap();
    assert!(
        copied.iter().any(|n| n.starts_with("tower.proj.0.")) && copied.iter().any(|n| n.starts_with("model.blocks"))
    );
    assert_eq!(skipped, vec!["model.item_emb.weight".to_string()]);
    let tuned_loss = tuned.fit(&split, None, &mut Silent).unwrap().history[0].loss;
    let mut fresh = Trainer::with_content(text_config(1), fp, Some(&target_content), Device::Cpu).unwrap();
    let fresh_loss = fresh.fit(&split, None, &mut Silent).unwrap().history[0].loss;
    assert!(tuned_loss < fresh_loss, "fine-tuned first-epoch loss {tuned_loss:.4} vs fresh {fresh_loss:.4}");
}

#[test]
fn a_text_similarity_prior_widens_the_table_learns_its_scale_and_transfers() {
    let _rng = torch_rng();
    let source = demo_domains(300, &[0]);
    let target = demo_domains(150, &[1]);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("pretrained");
    let mut cfg = text_config(3);
    cfg.content = Some(ContentConfig { similarity: true, ..ContentConfig::default() });
    let src_content = texts(&source);
    let split = m6rec_data::Split::leave_one_out(&source.interactions, source.n_users());
    let mut t = Trainer::with_content(cfg, DatasetFingerprint::of(&source), Some(&src_content), Device::Cpu).unwrap();
    t.fit(&split, Some(&ck), &mut Silent).unwrap();

    // The saved model's table: d_model columns from the tower, then s times each item's unit text vector.
    let loaded = checkpoint::load_model_with_content(&ck, Device::Cpu, Some(&src_content)).unwrap();
    let table = loaded.item_table().unwrap();
    assert_eq!(table.size(), vec![source.n_items() as i64, 32 + 384]);
    let s = loaded.vs.variables()["tower.sim_scale"].double_value(&[0]);
    assert!((s - 2.0).abs() > 1e-4, "the scale trained (it starts at 2): {s}");
    let norms = table.narrow(1, 32, 384).norm_scalaropt_dim(2.0, [1], false);
    assert!((norms - s.abs()).abs().max().double_value(&[]) < 1e-4, "every row is s x a unit vector");

    // Zero-shot on a catalog never trained on: its own text gives the extra columns, and the prior alone already
    // ranks what follows an item better than popularity does.
    let tsplit = m6rec_data::Split::leave_one_out(&target.interactions, target.n_users());
    let zs = checkpoint::load_model_zero_shot(&ck, Device::Cpu, &texts(&target)).unwrap();
    assert_eq!(zs.item_table().unwrap().size()[1], 32 + 384);
    let opts = EvalOptions::default();
    let zero = evaluate(&zs.scorer().unwrap(), &tsplit, Stage::Test, opts).unwrap().get("ndcg", 10);
    let pop = evaluate(&Popularity::fit_before_test(&tsplit, target.n_items()), &tsplit, Stage::Test, opts).unwrap();
    let pop = pop.get("ndcg", 10);
    eprintln!("music zero-shot with the similarity prior: NDCG@10 {zero:.4}, popularity {pop:.4}");
    assert!(zero > pop, "zero-shot {zero:.4} vs popularity {pop:.4}");

    // Without text the prior cannot work, and the configuration says so.
    let bad = ContentConfig { modalities: vec![ModalityName::Image], similarity: true, ..ContentConfig::default() };
    assert!(bad.validate().unwrap_err().contains("text"));
}

#[test]
fn domain_embeddings_train_save_and_load_and_weights_mix_domains() {
    let _rng = torch_rng();
    let ds = demo_domains(200, &[0, 1, 2]);
    let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
    let names: Vec<&str> = ds.items.iter().map(|it| it.domain.as_str()).collect();
    let mut cfg = config(2);
    cfg.item_tower = None;
    cfg.content = None;
    cfg.domains = Some(DomainConfig { weights: [("films".to_string(), 0.0)].into(), ..Default::default() });
    cfg.fill_domain_vocab(names.iter().copied());
    assert_eq!(cfg.domains.as_ref().unwrap().vocab, vec!["books", "films", "music"]);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut t = Trainer::new(cfg.clone(), DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    let err = t.fit(&split, None, &mut Silent).unwrap_err().to_string();
    assert!(err.contains("domains"), "{err}");
    assert!(t.set_item_domains(&names[1..]).is_err());
    t.set_item_domains(&names).unwrap();
    let state = t.fit(&split, Some(&ck), &mut Silent).unwrap().clone();

    // Weight 0 drops every row whose newest item is a film: the epoch is smaller than the unweighted one.
    let mut plain_cfg = cfg.clone();
    plain_cfg.domains.as_mut().unwrap().weights.clear();
    let mut plain = Trainer::new(plain_cfg, DatasetFingerprint::of(&ds), Device::Cpu).unwrap();
    plain.set_item_domains(&names).unwrap();
    let plain_state = plain.fit(&split, None, &mut Silent).unwrap().clone();
    let rows = |s: &m6rec_train::TrainState| s.step;
    assert!(rows(&state) < rows(&plain_state), "steps {} vs {}", state.step, plain_state.step);

    let mut loaded = checkpoint::load_model(&ck, Device::Cpu).unwrap();
    assert!(loaded.domains.is_some());
    loaded.set_item_domains(&names);
    let histories: Vec<&[u32]> = (0..4).map(|u| split.train(u)).collect();
    let a = t.scorer().unwrap().score(&histories).unwrap();
    let b = loaded.scorer().unwrap().score(&histories).unwrap();
    assert!((a - b).abs().max().double_value(&[]) < 1e-4, "the loaded model scores like the trainer");
}
