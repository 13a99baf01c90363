//! [`SeqRec`]: a SASRec-class causal Transformer over item sequences, with item embeddings tied to the output layer.

use crate::config::{LossConfig, SeqRecConfig};
use crate::loss;
use crate::Result;
use m6rec_data::{SeqBatch, IGNORE};
use m6rec_tensor::block::Block;
use m6rec_tensor::{mask, Mode};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The generative sequence recommender.
///
/// Variables (checkpoint keys) under the path given to [`SeqRec::init`]: `item_emb.weight` (`[n_items + 1, d_model]`,
/// row 0 is padding), `pos_emb.weight`, `blocks.{i}.{ln_attn,attn.qkv,attn.out,ln_ff,ff.in,ff.out}.*`, `ln_out.*`.
#[derive(Debug)]
pub struct SeqRec {
    item_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    blocks: Vec<Block>,
    ln_out: nn::LayerNorm,
    /// `[prompts, d]` soft prompts read before every sequence (absent when `prompts` is 0).
    prompt: Option<Tensor>,
    n_items: i64,
    cfg: SeqRecConfig,
}

impl SeqRec {
    /// Validates `cfg` and creates the variables under `vs` for a catalog of `n_items`.
    pub fn init(vs: &nn::Path<'_>, cfg: &SeqRecConfig, n_items: usize) -> Result<SeqRec> {
        cfg.validate()?;
        let n_items = m6rec_tensor::dim::to_i64("n_items", n_items)?;
        if n_items < 1 {
            return Err(crate::Error::InvalidConfig { field: "n_items", reason: "the catalog is empty".into() });
        }
        let d = cfg.d_model;
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: (d as f64).powf(-0.5) },
            ..Default::default()
        };
        let blocks = (0..cfg.n_layers)
            .map(|i| {
                Block::init_with_lora(&(vs / "blocks" / i), d, cfg.n_heads, cfg.d_ff(), cfg.dropout, cfg.lora_rank)
            })
            .collect();
        Ok(SeqRec {
            item_emb: nn::embedding(vs / "item_emb", n_items + 1, d, emb),
            pos_emb: nn::embedding(vs / "pos_emb", cfg.max_len, d, emb),
            blocks,
            ln_out: nn::layer_norm(vs / "ln_out", vec![d], Default::default()),
            prompt: (cfg.prompts > 0).then(|| vs.randn("prompt", &[cfg.prompts, d], 0.0, (d as f64).powf(-0.5))),
            n_items,
            cfg: cfg.clone(),
        })
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &SeqRecConfig {
        &self.cfg
    }

    /// Catalog size.
    pub fn n_items(&self) -> i64 {
        self.n_items
    }

    /// Hidden state at every position, reading items from the model's own id embedding table.
    ///
    /// # Shapes
    /// - `tokens`: `[b_sz, seq_len]` int64, left-padded with 0, `seq_len <= max_len`
    /// - returns `[b_sz, seq_len, d_model]`
    pub fn forward(&self, tokens: &Tensor, mode: Mode) -> Tensor {
        self.forward_with(tokens, &self.item_embeddings(), mode)
    }

    /// Hidden state at every position, reading items from an external table: row `i` embeds item `i` (token `i + 1`),
    /// for example the output of an item tower (content, id, or both). The table may hold more rows than the
    /// training catalog (items added since).
    ///
    /// The table may also be wider than `d_model`: its extra columns are *similarity features* (fixed per item, for
    /// example scaled unit text vectors). The Transformer reads only the first `d_model` columns; the state used for
    /// scoring ([`SeqRec::user_state_with`], the losses) is this hidden state followed by the extra columns of the
    /// position's own (most recent) item, so a score gains `extra(last item) · extra(candidate)`: a
    /// "more like the last one" term that needs no training on the catalog it scores. [`SeqRec::score_next_with`]
    /// and the full-softmax losses leave out an item's similarity to itself (the next item is rarely the last one
    /// again; counted, it taught the model to shrink the prior); a raw `state · row` product, as serving's index
    /// computes, includes it, which matters only where already-seen items are shown.
    ///
    /// # Shapes
    /// - `tokens`: `[b_sz, seq_len]` int64, left-padded with 0, every token `<= table rows`
    /// - `table`: `[n_rows, d_model + extra]`
    /// - returns `[b_sz, seq_len, d_model]`
    pub fn forward_with(&self, tokens: &Tensor, table: &Tensor, mode: Mode) -> Tensor {
        let (b_sz, seq_len) = tokens.size2().unwrap_or((0, 0));
        let device = tokens.device();
        let d = self.cfg.d_model;
        let valid = tokens.gt(0); // [b, L]
                                  // Padding reads row 0 of the table and is zeroed below; real tokens read row token - 1.
        let rows = (tokens - 1).clamp_min(0).view([-1]);
        let items = table.narrow(1, 0, d).index_select(0, &rows).view([b_sz, seq_len, d]);
        // Right-aligned positions: the most recent item is always position max_len - 1, whatever the padding.
        let pos = Tensor::arange_start(self.cfg.max_len - seq_len, self.cfg.max_len, (Kind::Int64, device));
        let xs = items * (d as f64).sqrt() + self.pos_emb.forward(&pos).unsqueeze(0);
        let mut xs = (xs * valid.unsqueeze(-1).to_kind(Kind::Float)).dropout(self.cfg.dropout, mode.is_train()); // [b, L, d]
                                                                                                                 // Soft prompts go first: every item attends to them (causally they precede it); their outputs are dropped.
        let (xs0, valid) = match &self.prompt {
            Some(p) => {
                let n = p.size()[0];
                let xs = Tensor::cat(&[p.unsqueeze(0).expand([b_sz, n, d], false), xs], 1);
                (xs, Tensor::cat(&[Tensor::ones([b_sz, n], (Kind::Bool, device)), valid], 1))
            }
            None => (xs, valid),
        };
        xs = xs0;
        let allowed = mask::causal_with_padding(&valid); // [b, 1, P + L, P + L]
        for block in &self.blocks {
            xs = block.forward(&xs, &allowed, mode);
        }
        let n_prompts = self.prompt.as_ref().map_or(0, |p| p.size()[0]);
        self.ln_out.forward(&xs.narrow(1, n_prompts, seq_len))
    }

    /// The scoring state at every position: [`SeqRec::forward_with`]'s hidden state, followed by the extra columns of
    /// each position's item when `table` is wider than `d_model` (zeros at padding).
    ///
    /// # Shapes
    /// - returns `[b_sz, seq_len, table width]`
    pub fn states_with(&self, tokens: &Tensor, table: &Tensor, mode: Mode) -> Tensor {
        let hidden = self.forward_with(tokens, table, mode);
        let d = self.cfg.d_model;
        let extra = table.size().get(1).copied().unwrap_or(d) - d;
        if extra <= 0 {
            return hidden;
        }
        let (b_sz, seq_len) = tokens.size2().unwrap_or((0, 0));
        let rows = (tokens - 1).clamp_min(0).view([-1]);
        let feats = table.narrow(1, d, extra).index_select(0, &rows).view([b_sz, seq_len, extra]);
        let mask = tokens.gt(0).unsqueeze(-1).to_kind(feats.kind());
        let feats = feats * mask;
        Tensor::cat(&[hidden, feats], -1)
    }

    /// Output embeddings of all items, `[n_items, d_model]` (the item embedding table without the padding row).
    pub fn item_embeddings(&self) -> Tensor {
        self.item_emb.ws.narrow(0, 1, self.n_items)
    }

    /// Scores of every catalog item for each row's next item.
    ///
    /// # Shapes
    /// - returns `[b_sz, n_items]`
    pub fn score_next(&self, batch: &SeqBatch, device: Device) -> Result<Tensor> {
        self.score_next_with(batch, &self.item_embeddings(), device)
    }

    /// [`SeqRec::score_next`] with an external item table (see [`SeqRec::forward_with`]): scores every row of it.
    ///
    /// # Shapes
    /// - `table`: `[n_rows, width]`; returns `[b_sz, n_rows]`
    pub fn score_next_with(&self, batch: &SeqBatch, table: &Tensor, device: Device) -> Result<Tensor> {
        let tokens = self.fit_len(batch.tokens_tensor(device)?);
        let state = self.states_with(&tokens, table, Mode::Eval).select(1, -1);
        let scores = state.matmul(&table.transpose(0, 1));
        Ok(match self.self_match(&tokens.select(1, -1), &state) {
            Some((col, delta)) => scores.scatter_add(1, &col.unsqueeze(1), &delta.unsqueeze(1)),
            None => scores,
        })
    }

    /// For each token (any shape) and its scoring state (same shape plus the width, from [`SeqRec::states_with`]):
    /// its item's column and `-|extra|²`, read from the state's extra part (a copy of the item's, zero at padding),
    /// the term that cancels an item's similarity to itself. `None` without extra columns.
    fn self_match(&self, tokens: &Tensor, states: &Tensor) -> Option<(Tensor, Tensor)> {
        let d = self.cfg.d_model;
        let extra = states.size().last().copied().unwrap_or(d) - d;
        if extra <= 0 {
            return None;
        }
        let col = (tokens - 1).clamp_min(0).view([-1]);
        let sq = states.narrow(-1, d, extra).square().sum_dim_intlist(-1, false, Kind::Float).view([-1]);
        Some((col, -sq))
    }

    /// Each row's state after its last item (evaluation mode): the vector whose dot product with an item's row of
    /// `table` is that item's score (see [`SeqRec::states_with`]). Serving caches it per user.
    ///
    /// # Shapes
    /// - `table`: `[n_rows, width]` (`width >= d_model`); returns `[b_sz, width]`
    pub fn user_state_with(&self, batch: &SeqBatch, table: &Tensor, device: Device) -> Result<Tensor> {
        let tokens = self.fit_len(batch.tokens_tensor(device)?);
        Ok(self.states_with(&tokens, table, Mode::Eval).select(1, -1))
    }

    /// Training loss of a batch under the configured objective (mean over non-padding positions).
    pub fn loss(&self, batch: &SeqBatch, device: Device, mode: Mode) -> Result<Tensor> {
        self.loss_with(batch, &self.item_embeddings(), device, mode)
    }

    /// [`SeqRec::loss`] with an external item table, used for both the inputs and the output layer (tied), so
    /// gradients reach whatever produced the table (an item tower's encoders, fusion and id embeddings).
    pub fn loss_with(&self, batch: &SeqBatch, table: &Tensor, device: Device, mode: Mode) -> Result<Tensor> {
        let tokens = self.fit_len(batch.tokens_tensor(device)?);
        let targets = self.fit_len(batch.targets_tensor(device)?);
        let hidden = self.states_with(&tokens, table, mode); // [b, L, width]
        let width = hidden.size()[2];
        let own = self.self_match(&tokens, &hidden);
        Ok(self.objective(&hidden.view([-1, width]), table, &targets.view([-1]), own))
    }

    /// [`SeqRec::loss_with`] where only the items in `catalog` exist as candidates (targets and negatives): the
    /// others, for example items held out of training for a cold-start evaluation, are neither pushed up nor down.
    ///
    /// # Shapes
    /// - `catalog`: `[k]` int64 item indices, distinct; every target of the batch must be one of them
    pub fn loss_over(
        &self,
        batch: &SeqBatch,
        table: &Tensor,
        catalog: &Tensor,
        device: Device,
        mode: Mode,
    ) -> Result<Tensor> {
        let tokens = self.fit_len(batch.tokens_tensor(device)?);
        let targets = self.fit_len(batch.targets_tensor(device)?).view([-1]);
        let hidden = self.states_with(&tokens, table, mode);
        let width = hidden.size()[2];
        let catalog = catalog.to_device(device);
        // Target item -> its position in `catalog` (IGNORE for items outside it and for padding).
        let rows = table.size()[0];
        let position = Tensor::full([rows], IGNORE, (Kind::Int64, device)).index_put(
            &[Some(catalog.shallow_clone())],
            &Tensor::arange(catalog.size()[0], (Kind::Int64, device)),
            false,
        );
        let known = targets.ge(0);
        let remapped = position.index_select(0, &targets.clamp_min(0));
        let targets = remapped.where_self(&known, &targets);
        // The self-match term moves to the item's position in `catalog` (dropped for items outside it).
        let own = self.self_match(&tokens, &hidden).map(|(col, delta)| {
            let at = position.index_select(0, &col);
            let inside = at.ge(0);
            (at.clamp_min(0), delta * inside.to_kind(Kind::Float))
        });
        Ok(self.objective(&hidden.view([-1, width]), &table.index_select(0, &catalog), &targets, own))
    }

    /// `own`: per row, a column of the logits and a value added to it (see [`SeqRec::self_match`]); full softmax
    /// only (sampled softmax rarely draws the last item as a negative, and scores the positive as it is).
    fn objective(
        &self,
        hidden: &Tensor,
        out_table: &Tensor,
        targets: &Tensor,
        own: Option<(Tensor, Tensor)>,
    ) -> Tensor {
        // Only positions that carry a target reach the item product: padding (and any other IGNORE row) is dropped
        // first, so the cost follows the real tokens. The mean over the kept rows is the padded loss exactly.
        let keep = targets.ne(IGNORE).nonzero().squeeze_dim(1);
        if keep.size()[0] == 0 {
            return hidden.sum(Kind::Float) * 0.0;
        }
        let hidden = &hidden.index_select(0, &keep);
        let targets = &targets.index_select(0, &keep);
        let own = own.map(|(col, delta)| (col.index_select(0, &keep), delta.index_select(0, &keep)));
        match self.cfg.loss {
            LossConfig::FullSoftmax => match own {
                Some((col, delta)) => {
                    let logits = hidden.matmul(&out_table.transpose(0, 1)).scatter_add(
                        1,
                        &col.unsqueeze(1),
                        &delta.unsqueeze(1),
                    );
                    logits.cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Mean, IGNORE, 0.0)
                }
                None => loss::full_softmax(hidden, out_table, targets),
            },
            LossConfig::SampledSoftmax { n_uniform, in_batch } => {
                loss::sampled_softmax(hidden, out_table, targets, n_uniform, in_batch)
            }
        }
    }

    /// Keeps the last `max_len` positions (batches may be built with a longer window).
    fn fit_len(&self, xs: Tensor) -> Tensor {
        let len = xs.size()[1];
        if len > self.cfg.max_len {
            xs.narrow(1, len - self.cfg.max_len, self.cfg.max_len)
        } else {
            xs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(n_items: usize) -> (nn::VarStore, SeqRec) {
        m6rec_tensor::seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 16, n_heads: 2, n_layers: 2, max_len: 8, dropout: 0.0, ..Default::default() };
        let m = SeqRec::init(&(vs.root() / "model"), &cfg, n_items).unwrap();
        (vs, m)
    }

    #[test]
    fn items_outside_the_training_catalog_get_no_gradient() {
        let (_vs, m) = model(6);
        let batch = SeqBatch::for_training(&[&[0, 1, 2, 3], &[1, 2, 0]], 8, 6).unwrap();
        let table = m.item_embeddings().detach().copy().set_requires_grad(true);
        let all = Tensor::arange(6, (Kind::Int64, Device::Cpu));
        let a = m.loss_with(&batch, &table, Device::Cpu, Mode::Eval).unwrap().double_value(&[]);
        let b = m.loss_over(&batch, &table, &all, Device::Cpu, Mode::Eval).unwrap().double_value(&[]);
        assert!((a - b).abs() < 1e-6, "the whole catalog: same loss ({a} vs {b})");
        // Items 4 and 5 are held out: never inputs or targets, and now not negatives either.
        let warm = Tensor::from_slice(&[0i64, 1, 2, 3]);
        m.loss_over(&batch, &table, &warm, Device::Cpu, Mode::Eval).unwrap().backward();
        let g = table.grad();
        assert_eq!(g.narrow(0, 4, 2).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(g.narrow(0, 0, 4).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn output_at_t_does_not_depend_on_later_items() {
        let (_vs, m) = model(20);
        let a = Tensor::from_slice(&[0i64, 3, 4, 5, 6]).view([1, 5]);
        let b = Tensor::from_slice(&[0i64, 3, 4, 9, 1]).view([1, 5]);
        let (ha, hb) = (m.forward(&a, Mode::Eval), m.forward(&b, Mode::Eval));
        let diff_prefix = (ha.narrow(1, 0, 3) - hb.narrow(1, 0, 3)).abs().max().double_value(&[]);
        let diff_after = (ha.narrow(1, 3, 2) - hb.narrow(1, 3, 2)).abs().max().double_value(&[]);
        assert!(diff_prefix < 1e-6, "prefix changed by {diff_prefix}");
        assert!(diff_after > 1e-4, "later positions must react to their own items");
    }

    #[test]
    fn padding_does_not_change_the_last_state() {
        let (_vs, m) = model(20);
        let short = Tensor::from_slice(&[3i64, 4, 5]).view([1, 3]);
        let padded = Tensor::from_slice(&[0i64, 0, 3, 4, 5]).view([1, 5]);
        let a = m.forward(&short, Mode::Eval).select(1, -1);
        let b = m.forward(&padded, Mode::Eval).select(1, -1);
        // Positions are right-aligned and padded keys are masked, so padding changes nothing.
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "padding changed the last state by {diff}");
    }

    #[test]
    fn soft_prompts_change_the_state_keep_causality_and_get_gradients() {
        m6rec_tensor::seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            max_len: 8,
            dropout: 0.0,
            prompts: 3,
            ..Default::default()
        };
        let m = SeqRec::init(&(vs.root() / "model"), &cfg, 20).unwrap();
        let a = Tensor::from_slice(&[0i64, 3, 4, 5, 6]).view([1, 5]);
        let b = Tensor::from_slice(&[0i64, 3, 4, 9, 1]).view([1, 5]);
        let (ha, hb) = (m.forward(&a, Mode::Eval), m.forward(&b, Mode::Eval));
        assert_eq!(ha.size(), vec![1, 5, 16], "prompt positions are not in the output");
        let diff_prefix = (ha.narrow(1, 0, 3) - hb.narrow(1, 0, 3)).abs().max().double_value(&[]);
        assert!(diff_prefix < 1e-6, "prefix changed by {diff_prefix}");
        let prompt = vs.variables()["model.prompt"].shallow_clone();
        let before = ha.select(1, -1);
        let _ = tch::no_grad(|| prompt.shallow_clone().g_add_(&prompt.randn_like())); // not a constant: LayerNorm removes those
        let after = m.forward(&a, Mode::Eval).select(1, -1);
        assert!((before - after).abs().max().double_value(&[]) > 1e-3, "the prompts must be read");
        // One feature, not the sum of all: the final LayerNorm's outputs sum to zero, so that sum's gradient is only
        // float noise (sometimes exactly zero).
        m.forward(&a, Mode::Train).narrow(2, 0, 1).sum(Kind::Float).backward();
        assert!(prompt.grad().abs().sum(Kind::Float).double_value(&[]) > 1e-6);
    }

    #[test]
    fn variable_names_are_the_checkpoint_format() {
        let (vs, _m) = model(10);
        let mut keys: Vec<String> = vs.variables().into_keys().collect();
        keys.sort();
        assert_eq!(keys.len(), 2 + 12 * 2 + 2);
        for k in [
            "model.item_emb.weight",
            "model.pos_emb.weight",
            "model.blocks.0.attn.qkv.weight",
            "model.blocks.1.ff.out.bias",
            "model.ln_out.weight",
        ] {
            assert!(keys.iter().any(|x| x == k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn an_external_table_drives_inputs_outputs_and_gradients() {
        let (_vs, m) = model(6);
        // The model's own table through the external path gives the same scores.
        let batch = SeqBatch::for_prediction(&[&[1, 2, 3]], 8, 6).unwrap();
        let own = m.score_next(&batch, Device::Cpu).unwrap();
        let same = m.score_next_with(&batch, &m.item_embeddings(), Device::Cpu).unwrap();
        assert!((own - &same).abs().max().double_value(&[]) < 1e-6);
        // A table with two more rows (items added after training) scores them too.
        let extra = Tensor::cat(&[m.item_embeddings(), Tensor::randn([2, 16], (Kind::Float, Device::Cpu))], 0);
        assert_eq!(m.score_next_with(&batch, &extra, Device::Cpu).unwrap().size(), vec![1, 8]);
        // Gradients reach an external table through both the inputs and the tied output layer.
        let table = Tensor::randn([6, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let train = SeqBatch::for_training(&[&[0, 1, 2, 3]], 8, 6).unwrap();
        m.loss_with(&train, &table, Device::Cpu, Mode::Train).unwrap().backward();
        let grad = table.grad();
        let touched: Vec<bool> = (0..6).map(|i| grad.get(i).abs().sum(Kind::Float).double_value(&[]) > 0.0).collect();
        assert_eq!(touched, vec![true; 6], "every row is an input or a softmax candidate");
    }

    #[test]
    fn extra_table_columns_add_the_last_items_similarity_to_every_score() {
        let (_vs, m) = model(6);
        let base = Tensor::randn([6, 16], (Kind::Float, Device::Cpu));
        let feats = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        let wide = Tensor::cat(&[&base, &feats], 1);
        let batch = SeqBatch::for_prediction(&[&[1, 2, 3], &[4]], 8, 6).unwrap();
        let plain = m.score_next_with(&batch, &base, Device::Cpu).unwrap();
        let with = m.score_next_with(&batch, &wide, Device::Cpu).unwrap();
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
        m.loss_with(&train, &table, Device::Cpu, Mode::Train).unwrap().backward();
        assert!(table.grad().narrow(1, 16, 5).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// The padded computation the gathered objective replaces: every position (padding included) times the whole
    /// table, the self-match term added, padding ignored by the cross-entropy.
    fn padded_loss(m: &SeqRec, batch: &SeqBatch, table: &Tensor) -> Tensor {
        let tokens = batch.tokens_tensor(Device::Cpu).unwrap();
        let targets = batch.targets_tensor(Device::Cpu).unwrap().view([-1]);
        let hidden = m.states_with(&tokens, table, Mode::Eval);
        let width = hidden.size()[2];
        let own = m.self_match(&tokens, &hidden);
        let hidden = hidden.view([-1, width]);
        match m.cfg.loss {
            LossConfig::FullSoftmax => {
                let mut logits = hidden.matmul(&table.transpose(0, 1));
                if let Some((col, delta)) = own {
                    logits = logits.scatter_add(1, &col.unsqueeze(1), &delta.unsqueeze(1));
                }
                logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, IGNORE, 0.0)
            }
            LossConfig::SampledSoftmax { n_uniform, in_batch } => {
                loss::sampled_softmax(&hidden, table, &targets, n_uniform, in_batch)
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
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = SeqRecConfig { d_model: 8, n_heads: 2, n_layers: 1, max_len: 8, dropout: 0.0, loss, ..Default::default() };
            let m = SeqRec::init(&(vs.root() / "model"), &cfg, 12).unwrap();
            let table = Tensor::randn([12, 8 + extra], (Kind::Float, Device::Cpu));
            let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
            let batch = SeqBatch::for_training(&refs, 8, 12).unwrap();
            m6rec_tensor::seed(seed + 1);
            let want = padded_loss(&m, &batch, &table).double_value(&[]);
            m6rec_tensor::seed(seed + 1);
            let got = m.loss_with(&batch, &table, Device::Cpu, Mode::Eval).unwrap().double_value(&[]);
            proptest::prop_assert!((want - got).abs() <= 1e-5 * want.abs().max(1.0), "padded {} vs gathered {}", want, got);
        }
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 10, n_heads: 3, ..Default::default() };
        let err = SeqRec::init(&vs.root(), &cfg, 5).unwrap_err();
        assert!(err.to_string().contains("n_heads"), "{err}");
    }
}
