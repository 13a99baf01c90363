//! End to end on a toy world: a sequence model whose items come from a content-only tower recommends items it never
//! saw in training, by what they are.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::SeqBatch;
use m6rec_fusion::{FusionConfig, ItemTower, ItemTowerConfig, TowerMode};
use m6rec_model::{SeqRec, SeqRecConfig};
use m6rec_objective::{FullSoftmax, Targets};
use m6rec_tensor::Mode;
use rand::{Rng, SeedableRng};
use tch::{nn, Device, Kind, Tensor};

const CATEGORIES: usize = 4;
const TRAIN_ITEMS: usize = 40; // items 0..40 appear in training sequences
const ALL_ITEMS: usize = 60; // items 40..60 are new: content only

/// Item `i` belongs to category `i % 4`; its content is a noisy one-hot of the category plus noise dimensions.
fn content(rng: &mut impl Rng) -> Tensor {
    let mut rows = Vec::new();
    for i in 0..ALL_ITEMS {
        for d in 0..12 {
            let signal = if d == i % CATEGORIES { 1.0 } else { 0.0 };
            rows.push(signal + 0.3 * (rng.random::<f32>() - 0.5));
        }
    }
    Tensor::from_slice(&rows).view([ALL_ITEMS as i64, 12])
}

#[test]
fn a_content_tower_recommends_unseen_items_of_the_right_kind() {
    tch::manual_seed(5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let feats = content(&mut rng);
    // Users stay within one category: the next item is another training item of the same category.
    let seqs: Vec<Vec<u32>> = (0..200)
        .map(|u| {
            let cat = u % CATEGORIES;
            (0..8).map(|_| (rng.random_range(0..TRAIN_ITEMS / CATEGORIES) * CATEGORIES + cat) as u32).collect()
        })
        .collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = SeqRecConfig { d_model: 16, n_heads: 2, n_layers: 1, max_len: 8, dropout: 0.0, ..Default::default() };
    let model = SeqRec::init(&(vs.root() / "model"), &cfg, TRAIN_ITEMS).unwrap();
    let tower_cfg = ItemTowerConfig { mode: TowerMode::ContentOnly, fusion: FusionConfig::Mean, id_dropout: 0.0 };
    let tower = ItemTower::new(&(vs.root() / "tower"), &tower_cfg, &[12], TRAIN_ITEMS as i64, 16).unwrap();
    let train_items = Tensor::arange(TRAIN_ITEMS as i64, (Kind::Int64, Device::Cpu));
    let train_feats = feats.narrow(0, 0, TRAIN_ITEMS as i64);
    let present = Tensor::ones([TRAIN_ITEMS as i64, 1], (Kind::Bool, Device::Cpu));
    let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, 5e-3).unwrap();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    for _ in 0..150 {
        let batch = SeqBatch::for_training(&refs, 8, TRAIN_ITEMS).unwrap();
        let table = tower.forward(&train_items, &[train_feats.shallow_clone()], &present, Mode::Train).unwrap();
        let tokens = batch.tokens_tensor(Device::Cpu).unwrap();
        let states = model.forward(&tokens, &table, Mode::Train).view([-1, 16]);
        let targets = Targets::new(states, table, batch.targets_tensor(Device::Cpu).unwrap().view([-1]));
        opt.backward_step(&m6rec_objective::mean_loss(&FullSoftmax, targets));
    }
    // Score the whole catalog, new items included, by content.
    let all_items = Tensor::arange(ALL_ITEMS as i64, (Kind::Int64, Device::Cpu));
    let all_present = Tensor::ones([ALL_ITEMS as i64, 1], (Kind::Bool, Device::Cpu));
    let table = tower.embed_all(&all_items, &[feats.shallow_clone()], &all_present, 16).unwrap();
    let mut hits = 0;
    let mut total = 0;
    for cat in 0..CATEGORIES {
        let history: Vec<u32> = (0..5).map(|k| (k * CATEGORIES + cat) as u32).collect();
        let batch = SeqBatch::for_prediction(&[&history], 8, ALL_ITEMS).unwrap();
        let tokens = batch.tokens_tensor(Device::Cpu).unwrap();
        let state = tch::no_grad(|| model.forward(&tokens, &table, Mode::Eval)).select(1, -1);
        let scores = state.matmul(&table.transpose(0, 1)).get(0);
        // Among the 20 new items only, the top 5 should be of the history's category (5 of them exist).
        let new_scores = scores.narrow(0, TRAIN_ITEMS as i64, (ALL_ITEMS - TRAIN_ITEMS) as i64);
        let top: Vec<i64> = Vec::try_from(new_scores.topk(5, 0, true, true).1).unwrap();
        hits += top.iter().filter(|&&j| (TRAIN_ITEMS + j as usize) % CATEGORIES == cat).count();
        total += 5;
    }
    let precision = hits as f64 / total as f64;
    eprintln!("precision@5 of the right category among never-trained items: {precision:.2} (chance 0.25)");
    assert!(precision >= 0.8, "precision@5 on new items {precision:.2}");
}
