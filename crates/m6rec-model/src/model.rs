//! [`SeqRec`]: a SASRec-class Transformer over item sequences, with item embeddings tied to the output layer.

use crate::config::SeqRecConfig;
use crate::Result;
use m6rec_objective::MASK;
use m6rec_tensor::block::Block;
use m6rec_tensor::mask::{self, Attention};
use m6rec_tensor::Mode;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The generative sequence recommender.
///
/// Variables (checkpoint keys) under the path given to [`SeqRec::init`]: `item_emb.weight` (`[n_items + 1, d_model]`,
/// row 0 is padding), `pos_emb.weight`, `blocks.{i}.{ln_attn,attn.qkv,attn.out,ln_ff,ff.in,ff.out}.*`, `ln_out.*`,
/// `prompt` (with soft prompts), `mask_emb` (`[d_model]`, for tasks that read [`MASK`] tokens).
#[derive(Debug)]
pub struct SeqRec {
    item_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    blocks: Vec<Block>,
    ln_out: nn::LayerNorm,
    /// `[prompts, d]` soft prompts read before every sequence (absent when `prompts` is 0).
    prompt: Option<Tensor>,
    /// `[d]` the input embedding of [`MASK`] (masked-item task only).
    mask_emb: Option<Tensor>,
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
            mask_emb: cfg.task.uses_mask_token().then(|| vs.randn("mask_emb", &[d], 0.0, (d as f64).powf(-0.5))),
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

    /// Hidden state at every position (the first `d_model` columns of [`SeqRec::forward`]), reading items from a
    /// table: row `i` embeds item `i` (token `i + 1`): the model's own ([`SeqRec::item_embeddings`]) or
    /// the output of an item tower (content, id, or both). The table may hold more rows than the
    /// training catalog (items added since).
    ///
    /// The table may also be wider than `d_model`: its extra columns are *similarity features* (fixed per item, for
    /// example scaled unit text vectors). The Transformer reads only the first `d_model` columns; the state used for
    /// scoring ([`SeqRec::forward`]) is this hidden state followed by the extra columns of the
    /// position's own (most recent) item, so a score gains `extra(last item) · extra(candidate)`: a
    /// "more like the last one" term that needs no training on the catalog it scores. exact scoring
    /// and the full-softmax losses leave out (with [`SeqRec::own_scores`]) an item's similarity to itself (the next item is rarely the last one
    /// again; counted, it taught the model to shrink the prior); a raw `state · row` product, as serving's index
    /// computes, includes it, which matters only where already-seen items are shown.
    ///
    /// # Shapes
    /// - `tokens`: `[b_sz, seq_len]` int64, left-padded with 0, every token `<= table rows` (or [`MASK`])
    /// - `table`: `[n_rows, d_model + extra]`
    /// - returns `[b_sz, seq_len, d_model]`
    fn hidden(&self, tokens: &Tensor, table: &Tensor, attention: &Attention, mode: Mode) -> Tensor {
        let (b_sz, seq_len) = tokens.size2().unwrap_or((0, 0));
        let device = tokens.device();
        let d = self.cfg.d_model;
        let valid = tokens.ne(0); // [b, L]: items and masks
                                  // Padding reads row 0 of the table and is zeroed below; real tokens read row token - 1; masks their embedding.
        let rows = (tokens - 1).clamp_min(0).view([-1]);
        let mut items = table.narrow(1, 0, d).index_select(0, &rows).view([b_sz, seq_len, d]);
        if let Some(m) = &self.mask_emb {
            let is_mask = tokens.eq(MASK).unsqueeze(-1);
            items = m.view([1, 1, d]).expand_as(&items).where_self(&is_mask, &items);
        }
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
        let n_prompts = self.prompt.as_ref().map_or(0, |p| p.size()[0]);
        let mut allowed = attention.mask(&valid, n_prompts); // [b, 1, P + L, P + L]
        let slope = self.cfg.task.locality();
        if slope > 0.0 && !matches!(attention, Attention::Causal) {
            allowed = mask::with_locality(&allowed, slope, self.cfg.n_heads);
        }
        for block in &self.blocks {
            xs = block.forward(&xs, &allowed, mode);
        }
        self.ln_out.forward(&xs.narrow(1, n_prompts, seq_len))
    }

    /// The causal [`SeqRec::forward_with`] (next-item prediction).
    pub fn forward(&self, tokens: &Tensor, table: &Tensor, mode: Mode) -> Tensor {
        self.forward_with(tokens, table, &Attention::Causal, mode)
    }

    /// The scoring state at every position: the model's one forward. The Transformer's hidden state (see below for
    /// `table`), its positions attending as `attention` says (the task's choice, see [`m6rec_objective::task`]),
    /// followed by the extra columns of each position's item when `table` is wider than `d_model` (zeros at padding
    /// and at [`MASK`]). A candidate's score is `state · its table row`.
    ///
    /// # Shapes
    /// - `tokens`: `[b_sz, seq_len]` int64, left-padded with 0, every token `<= table rows`, or [`MASK`] when the
    ///   task uses one
    /// - `table`: `[n_rows, d_model + extra]`
    /// - returns `[b_sz, seq_len, table width]`
    pub fn forward_with(&self, tokens: &Tensor, table: &Tensor, attention: &Attention, mode: Mode) -> Tensor {
        let hidden = self.hidden(tokens, table, attention, mode);
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

    /// For each token (any shape) and its scoring state (same shape plus the width, from [`SeqRec::forward`]):
    /// its item's column and `-|extra|²`, read from the state's extra part (a copy of the item's, zero at padding),
    /// the term that cancels an item's similarity to itself. `None` without extra columns.
    pub fn own_scores(&self, tokens: &Tensor, states: &Tensor) -> Option<(Tensor, Tensor)> {
        let d = self.cfg.d_model;
        let extra = states.size().last().copied().unwrap_or(d) - d;
        if extra <= 0 {
            return None;
        }
        let col = (tokens - 1).clamp_min(0).view([-1]);
        let sq = states.narrow(-1, d, extra).square().sum_dim_intlist(-1, false, Kind::Float).view([-1]);
        Some((col, -sq))
    }

    /// Keeps the last `max_len` positions (batches may be built with a longer window).
    pub fn fit_len(&self, xs: Tensor) -> Tensor {
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
    use tch::Device;

    fn model(n_items: usize) -> (nn::VarStore, SeqRec) {
        m6rec_tensor::seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 16, n_heads: 2, n_layers: 2, max_len: 8, dropout: 0.0, ..Default::default() };
        let m = SeqRec::init(&(vs.root() / "model"), &cfg, n_items).unwrap();
        (vs, m)
    }

    #[test]
    fn output_at_t_does_not_depend_on_later_items() {
        let (_vs, m) = model(20);
        let a = Tensor::from_slice(&[0i64, 3, 4, 5, 6]).view([1, 5]);
        let b = Tensor::from_slice(&[0i64, 3, 4, 9, 1]).view([1, 5]);
        let (ha, hb) =
            (m.forward(&a, &m.item_embeddings(), Mode::Eval), m.forward(&b, &m.item_embeddings(), Mode::Eval));
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
        let a = m.forward(&short, &m.item_embeddings(), Mode::Eval).select(1, -1);
        let b = m.forward(&padded, &m.item_embeddings(), Mode::Eval).select(1, -1);
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
        let (ha, hb) =
            (m.forward(&a, &m.item_embeddings(), Mode::Eval), m.forward(&b, &m.item_embeddings(), Mode::Eval));
        assert_eq!(ha.size(), vec![1, 5, 16], "prompt positions are not in the output");
        let diff_prefix = (ha.narrow(1, 0, 3) - hb.narrow(1, 0, 3)).abs().max().double_value(&[]);
        assert!(diff_prefix < 1e-6, "prefix changed by {diff_prefix}");
        let prompt = vs.variables()["model.prompt"].shallow_clone();
        let before = ha.select(1, -1);
        let _ = tch::no_grad(|| prompt.shallow_clone().g_add_(&prompt.randn_like())); // not a constant: LayerNorm removes those
        let after = m.forward(&a, &m.item_embeddings(), Mode::Eval).select(1, -1);
        assert!((before - after).abs().max().double_value(&[]) > 1e-3, "the prompts must be read");
        // One feature, not the sum of all: the final LayerNorm's outputs sum to zero, so that sum's gradient is only
        // float noise (sometimes exactly zero).
        m.forward(&a, &m.item_embeddings(), Mode::Train).narrow(2, 0, 1).sum(Kind::Float).backward();
        assert!(prompt.grad().abs().sum(Kind::Float).double_value(&[]) > 1e-6);
    }

    #[test]
    fn tasks_choose_the_attention_and_the_mask_token_is_learned() {
        m6rec_tensor::seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let task = m6rec_objective::TaskConfig::MaskedItem {
            mask_prob: 0.2,
            mask_last: 0.2,
            random_prob: 0.0,
            keep_prob: 0.0,
            next_item_weight: 0.0,
            locality: 4.0,
        };
        let cfg = SeqRecConfig { d_model: 16, n_heads: 2, max_len: 8, dropout: 0.0, task, ..Default::default() };
        let m = SeqRec::init(&(vs.root() / "model"), &cfg, 20).unwrap();
        let table = m.item_embeddings();
        let a = Tensor::from_slice(&[0i64, 3, 4, 5, MASK]).view([1, 5]);
        let b = Tensor::from_slice(&[0i64, 3, 9, 1, MASK]).view([1, 5]);
        let bi = |t: &Tensor| m.forward_with(t, &table, &Attention::Bidirectional, Mode::Eval);
        let moved = (bi(&a).select(1, 1) - bi(&b).select(1, 1)).abs().max().double_value(&[]);
        assert!(moved > 1e-4, "bidirectional: an early position reads later items");
        // Prefix-LM with the autoregressive region from position 3: positions 2.. (the predicting ones) never read
        // what comes after them; position 1 (in the prefix) does.
        let start = Attention::Prefix(Tensor::from_slice(&[3i64]));
        let c = Tensor::from_slice(&[0i64, 3, 4, 5, 6]).view([1, 5]);
        let e = Tensor::from_slice(&[0i64, 3, 4, 9, 1]).view([1, 5]);
        let (hc, he) = (m.forward_with(&c, &table, &start, Mode::Eval), m.forward_with(&e, &table, &start, Mode::Eval));
        assert!((hc.select(1, 2) - he.select(1, 2)).abs().max().double_value(&[]) < 1e-6);
        let g = Tensor::from_slice(&[0i64, 3, 8, 5, 6]).view([1, 5]);
        let hg = m.forward_with(&g, &table, &start, Mode::Eval);
        assert!(
            (hc.select(1, 1) - hg.select(1, 1)).abs().max().double_value(&[]) > 1e-4,
            "the prefix is bidirectional"
        );
        m.forward_with(&a, &table, &Attention::Bidirectional, Mode::Train)
            .select(1, 4)
            .narrow(1, 0, 1)
            .sum(Kind::Float)
            .backward();
        let mask = vs.variables()["model.mask_emb"].shallow_clone();
        assert!(mask.grad().abs().sum(Kind::Float).double_value(&[]) > 1e-6, "the mask embedding is trained");
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
    fn bad_configs_are_rejected_with_the_field() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 10, n_heads: 3, ..Default::default() };
        let err = SeqRec::init(&vs.root(), &cfg, 5).unwrap_err();
        assert!(err.to_string().contains("n_heads"), "{err}");
    }
}
