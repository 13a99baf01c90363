//! The recommender's scores and losses over an id table or an external one (items added since training, similarity
//! columns), and the objective seeing only target positions. (Moved from `m6rec-model` when `SeqRec` kept one
//! forward; the assertions are unchanged.)
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::{SeqBatch, IGNORE};
use m6rec_model::{LossConfig, SeqRecConfig};
use m6rec_recommender::saved::DatasetFingerprint;
use m6rec_recommender::{Recommender, RecommenderConfig};
use m6rec_tensor::Mode;
use tch::{Device, Kind, Tensor};

fn recommender(model: SeqRecConfig, n_items: usize) -> Recommender {
    let catalog = DatasetFingerprint { name: "test".into(), n_items, items_hash: "0".into(), path: None };
    Recommender::init(RecommenderConfig { model, ..Default::default() }, catalog, None, Device::Cpu).unwrap()
}

fn model(n_items: usize) -> Recommender {
    m6rec_tensor::seed(1);
    let cfg = SeqRecConfig { d_model: 16, n_heads: 2, n_layers: 2, max_len: 8, dropout: 0.0, ..Default::default() };
    recommender(cfg, n_items)
}

#[test]
fn items_outside_the_training_catalog_get_no_gradient() {
    let m = model(6);
    let batch = SeqBatch::for_training(&[&[0, 1, 2, 3], &[1, 2, 0]], 8, 6).unwrap();
    let table = m.model.item_embeddings().detach().copy().set_requires_grad(true);
    let all = Tensor::arange(6, (Kind::Int64, Device::Cpu));
    let a = m.loss(&batch, &table, None, Mode::Eval).unwrap().double_value(&[]);
    let b = m.loss(&batch, &table, Some(&all), Mode::Eval).unwrap().double_value(&[]);
    assert!((a - b).abs() < 1e-6, "the whole catalog: same loss ({a} vs {b})");
    // Items 4 and 5 are held out: never inputs or targets, and now not negatives either.
    let warm = Tensor::from_slice(&[0i64, 1, 2, 3]);
    m.loss(&batch, &table, Some(&warm), Mode::Eval).unwrap().backward();
    let g = table.grad();
    assert_eq!(g.narrow(0, 4, 2).abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(g.narrow(0, 0, 4).abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn an_external_table_drives_inputs_outputs_and_gradients() {
    let m = model(6);
    // The model's own table through the external path gives the same scores.
    let batch = SeqBatch::for_prediction(&[&[1, 2, 3]], 8, 6).unwrap();
    let own = m.score_next(&batch, &m.model.item_embeddings()).unwrap();
    let same = m.score_next(&batch, &m.model.item_embeddings()).unwrap();
    assert!((own - &same).abs().max().double_value(&[]) < 1e-6);
    // A table with two more rows (items added after training) scores them too.
    let extra = Tensor::cat(&[m.model.item_embeddings(), Tensor::randn([2, 16], (Kind::Float, Device::Cpu))], 0);
    assert_eq!(m.score_next(&batch, &extra).unwrap().size(), vec![1, 8]);
    // Gradients reach an external table through both the inputs and the tied output layer.
    let table = Tensor::randn([6, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let train = SeqBatch::for_training(&[&[0, 1, 2, 3]], 8, 6).unwrap();
    m.loss(&train, &table, None, Mode::Train).unwrap().backward();
    let grad = table.grad();
    let touched: Vec<bool> = (0..6).map(|i| grad.get(i).abs().sum(Kind::Float).double_value(&[]) > 0.0).collect();
    assert_eq!(touched, vec![true; 6], "every row is an input or a softmax candidate");
}

#[test]
fn extra_table_columns_add_the_last_items_similarity_to_every_score() {
    let m = model(6);
    let base = Tensor::randn([6, 16], (Kind::Float, Device::Cpu));
    let feats = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
    let wide = Tensor::cat(&[&base, &feats], 1);
    let batch = SeqBatch::for_prediction(&[&[1, 2, 3], &[4]], 8, 6).unwrap();
    let plain = m.score_next(&batch, &base).unwrap();
    let with = m.score_next(&batch, &wide).unwrap();
    // Row 0's last item is 3, row 1's is 4: the gain is that item's features times every candidate's.
    let last = Tensor::from_slice(&[3i64, 4]);
    let mut gain = feats.index_select(0, &last).mm(&feats.transpose(0, 1));
    // ... except with itself: an item's similarity to itself is left out.
    let own = gain.gather(1, &last.unsqueeze(1), false);
    let _ = gain.scatter_(1, &last.unsqueeze(1), &own.zeros_like());
    assert!((with - plain - gain).abs().max().double_value(&[]) < 1e-4);
    // Training reads the same wide table: its feature columns get gradients through the scores.
    let table = wide.set_requires_grad(true);
    let train = SeqBatch::for_training(&[&[0, 1, 2, 3]], 8, 6).unwrap();
    m.loss(&train, &table, None, Mode::Train).unwrap().backward();
    assert!(table.grad().narrow(1, 16, 5).abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

/// The padded computation the gathered objective replaces: every position (padding included) times the whole
/// table, the self-match term added, padding ignored by the cross-entropy.
fn padded_loss(m: &Recommender, batch: &SeqBatch, table: &Tensor) -> Tensor {
    let tokens = batch.tokens_tensor(Device::Cpu).unwrap();
    let targets = batch.targets_tensor(Device::Cpu).unwrap().view([-1]);
    let hidden = m.model.forward(&tokens, table, Mode::Eval);
    let width = hidden.size()[2];
    let own = m.model.own_scores(&tokens, &hidden);
    let hidden = hidden.view([-1, width]);
    match m.config.run.model.loss {
        LossConfig::FullSoftmax => {
            let mut logits = hidden.matmul(&table.transpose(0, 1));
            if let Some((col, delta)) = own {
                logits = logits.scatter_add(1, &col.unsqueeze(1), &delta.unsqueeze(1));
            }
            logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, IGNORE, 0.0)
        }
        LossConfig::SampledSoftmax { n_uniform, in_batch } => {
            m6rec_objective::loss::sampled_softmax(&hidden, table, &targets, n_uniform, in_batch)
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Gathering the target positions before the item product changes no loss value, for full and sampled
    /// softmax, with and without similarity columns, whatever the padding.
    #[test]
    fn gathering_targets_changes_no_loss(
        seqs in proptest::collection::vec(proptest::collection::vec(0u32..12, 2..9), 1..6),
        sampled in proptest::bool::ANY,
        extra in 0i64..3,
        seed in 0u64..1000,
    ) {
        m6rec_tensor::seed(seed);
        // In-batch negatives only: uniform ones come from libtorch's process-global generator, which the other
        // tests of this binary draw from concurrently, so two draws could differ whatever the seed.
        let loss = if sampled {
            LossConfig::SampledSoftmax { n_uniform: 0, in_batch: true }
        } else {
            LossConfig::FullSoftmax
        };
        let cfg = SeqRecConfig { d_model: 8, n_heads: 2, n_layers: 1, max_len: 8, dropout: 0.0, loss, ..Default::default() };
        let m = recommender(cfg, 12);
        let table = Tensor::randn([12, 8 + extra], (Kind::Float, Device::Cpu));
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let batch = SeqBatch::for_training(&refs, 8, 12).unwrap();
        m6rec_tensor::seed(seed + 1);
        let want = padded_loss(&m, &batch, &table).double_value(&[]);
        m6rec_tensor::seed(seed + 1);
        let got = m.loss(&batch, &table, None, Mode::Eval).unwrap().double_value(&[]);
        proptest::prop_assert!((want - got).abs() <= 1e-5 * want.abs().max(1.0), "padded {} vs gathered {}", want, got);
    }
}
