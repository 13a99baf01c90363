//! Generative retrieval over semantic IDs, end to end on the generated demo data.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::import::{import, Format};
use m6rec_data::{synth, Dataset, Split};
use m6rec_semantic::SemanticIdConfig;
use m6rec_testkit::torch_rng;
use m6rec_train::eval::{evaluate, EvalOptions, Stage};
use m6rec_train::generative::{Generative, GenerativeConfig, Progress};
use m6rec_train::{Popularity, RunConfig, Scorer};
use tch::{Device, Tensor};

fn demo(n_users: usize) -> Dataset {
    let dir = tempfile::tempdir().unwrap();
    let (inter, items) = synth::generate(&synth::SynthConfig { n_users, ..synth::SynthConfig::demo() });
    std::fs::write(dir.path().join("demo.inter"), inter).unwrap();
    std::fs::write(dir.path().join("demo.item"), items).unwrap();
    import(Format::RecBole, dir.path()).unwrap().dataset
}

fn titles(ds: &Dataset) -> Tensor {
    let titles: Vec<&str> = ds.items.iter().map(|it| it.title.as_str()).collect();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let enc = m6rec_text::TextEncoder::pretrained(&vs.root(), &m6rec_testkit::text_model(), 32, true).unwrap();
    tch::no_grad(|| enc.encode_all(&titles, 64, Device::Cpu, m6rec_tensor::Mode::Eval)).unwrap()
}

fn config(epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.d_model = 64;
    cfg.model.max_len = 20;
    cfg.model.dropout = 0.1;
    cfg.optim.lr = 3e-3;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 64;
    cfg.train.warmup_steps = 10;
    cfg.train.patience = 100;
    cfg.generative = Some(GenerativeConfig {
        semantic_ids: SemanticIdConfig { levels: 3, codes: 16, iterations: 20, seed: 0, ..Default::default() },
        beam: 20,
        ..GenerativeConfig::default()
    });
    cfg
}

/// Codes from MiniLM titles, a code-token model trained on the histories, beam search over existing codes: test
/// NDCG@10 (full-ranking-equivalent) beats popularity by a clear margin; every recommended item exists; the saved
/// checkpoint recommends the same; a new item gets a code from its content and can be recommended at once.
#[test]
fn generative_retrieval_learns_round_trips_and_takes_new_items() {
    let _rng = torch_rng();
    let ds = demo(400);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let content = titles(&ds);
    let mut g = Generative::init(config(15), &content, Device::Cpu).unwrap();
    let stats = &g.semantic_ids().stats;
    eprintln!("codebook: {stats:?}");
    assert!(stats.levels[0].perplexity > 4.0, "the first level is used: {stats:?}");
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("gen");
    let mut epochs = 0;
    g.fit(&split, Some(&ck), &mut |p| {
        if let Progress::Epoch(e) = p {
            epochs += 1;
            assert!(e.loss.is_finite());
        }
    })
    .unwrap();
    assert_eq!(epochs, 15);
    let first = g.history.first().unwrap().loss;
    let last = g.history.last().unwrap().loss;
    assert!(last < first * 0.8, "training loss must fall: {first} -> {last}");
    let opts = EvalOptions::default();
    let m = evaluate(&g.scorer(), &split, Stage::Test, opts).unwrap().get("ndcg", 10);
    let p = evaluate(&Popularity::fit_before_test(&split, ds.n_items()), &split, Stage::Test, opts)
        .unwrap()
        .get("ndcg", 10);
    eprintln!("generative retrieval: test NDCG@10 {m:.4}, popularity {p:.4}");
    assert!(m > 2.0 * p, "generative NDCG@10 {m:.4} vs popularity {p:.4}");

    let histories: Vec<&[u32]> = (0..8).map(|u| split.train(u)).collect();
    let beams = g.beams(&histories, 10).unwrap();
    for b in &beams {
        assert_eq!(b.len(), 10);
        for beam in b {
            assert_eq!(g.semantic_ids().code(beam.item as usize), beam.code.as_slice(), "a beam is an item");
        }
    }
    let loaded = Generative::load(&ck, Device::Cpu).unwrap();
    let again = loaded.beams(&histories, 10).unwrap();
    assert_eq!(
        beams.iter().map(|b| b.iter().map(|x| x.item).collect::<Vec<_>>()).collect::<Vec<_>>(),
        again.iter().map(|b| b.iter().map(|x| x.item).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "the checkpoint recommends what the trained model does"
    );

    // A damaged copy is refused, naming the file: one flipped byte in the weights, then NaN weights.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&ck).unwrap().flatten() {
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let weights = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x40;
    std::fs::write(&weights, &bytes).unwrap();
    let err = Generative::load(&copy, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("corrupt"), "{err}");
    std::fs::remove_file(copy.join("checksums.json")).unwrap();
    let vars: Vec<(String, Tensor)> = loaded_vars(&ck).into_iter().map(|(n, t)| (n, t.full_like(f64::NAN))).collect();
    Tensor::write_safetensors(&vars, &weights).unwrap();
    let err = Generative::load(&copy, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");

    // A new item with the content of the item most recommended after user 0's history: its code shares that item's
    // residual code, so it can be generated, and it is in a wide enough beam.
    let mut g = loaded;
    let top = beams[0][0].item as i64;
    let code = g.add_items(&content.narrow(0, top, 1)).unwrap().remove(0);
    let new_item = (g.n_items() - 1) as u32;
    assert_eq!(&code[..3], &g.semantic_ids().code(top as usize)[..3]);
    let wide = g.beams(&histories[..1], 40).unwrap();
    assert!(wide[0].iter().any(|b| b.item == new_item), "the new item is retrievable without retraining");
    assert_eq!(g.scorer().score(&histories[..1]).unwrap().size(), vec![1, g.n_items() as i64]);
}

fn loaded_vars(dir: &std::path::Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap()
}

/// A run paused after epoch 2 and resumed from its checkpoint takes the same steps as one that never stopped (the
/// same losses, validation and final weights); a finished run refuses to resume, naming why.
#[test]
fn a_paused_generative_run_resumes_exactly() {
    let _rng = torch_rng();
    let ds = demo(150);
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let content = titles(&ds);
    let mut cfg = config(4);
    cfg.model.d_model = 32;
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Generative::init(cfg.clone(), &content, Device::Cpu).unwrap();
    a.fit(&split, Some(&a_dir), &mut |_| {}).unwrap();
    let mut b = Generative::init(cfg.clone(), &content, Device::Cpu).unwrap();
    b.fit_until(&split, Some(&b_dir), Some(2), &mut |_| {}).unwrap();
    assert!(b.stop_reason.as_deref().unwrap_or("").contains("paused"), "{:?}", b.stop_reason);
    assert_eq!(b.history.len(), 2);
    drop(b);
    let mut b = Generative::resume(&b_dir, Device::Cpu).unwrap();
    b.fit_until(&split, Some(&b_dir), None, &mut |_| {}).unwrap();
    assert_eq!(b.history.len(), 4);
    for (x, y) in a.history.iter().zip(&b.history) {
        assert!((x.loss - y.loss).abs() < 1e-6, "epoch {}: loss {} vs {}", x.epoch, x.loss, y.loss);
        assert_eq!(x.valid_ndcg10, y.valid_ndcg10, "epoch {}", x.epoch);
    }
    assert_eq!(a.best_epoch, b.best_epoch);
    let read = |d: &std::path::Path| {
        let mut w = Tensor::read_safetensors(d.join("model.safetensors")).unwrap();
        w.sort_by(|x, y| x.0.cmp(&y.0));
        w
    };
    let (wa, wb) = (read(&a_dir), read(&b_dir));
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{na} differs by {diff}");
    }
    let err = Generative::resume(&a_dir, Device::Cpu)
        .and_then(|mut g| g.fit_until(&split, Some(&a_dir), None, &mut |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
}
