//! [`CodeRec`]: a decoder-only Transformer over semantic-ID tokens, for generative retrieval (TIGER-style, without
//! the encoder): a history is read as its items' codes one token after another, and the next item is generated as
//! its code, token by token.

use crate::config::SeqRecConfig;
use crate::{Error, Result};
use m6rec_tensor::block::Block;
use m6rec_tensor::{mask, Mode};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Largest number of values one code position may take.
pub const MAX_WIDTH: usize = 1 << 16;

/// The generative retrieval model.
///
/// Tokens: `0` is padding; value `c` at code position `l` is token `offset(l) + c` (`offset(0) = 1`, each position
/// after the previous one's values). A code has [`CodeRec::code_len`] positions. Variables under the path given to
/// [`CodeRec::init`]: `tok_emb.weight` (`[vocab, d]`, tied to the output), `pos_emb.weight` (one per item of the
/// row, counted from its first: the item being generated after a history of `h` items is at position `h`),
/// `level_emb.weight` (one per code position), `blocks.{i}.*`, `ln_out.*`.
#[derive(Debug)]
pub struct CodeRec {
    tok_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    level_emb: nn::Embedding,
    blocks: Vec<Block>,
    ln_out: nn::LayerNorm,
    widths: Vec<i64>,
    offsets: Vec<i64>,
    /// `[vocab]` int64: each token's code position (0 for padding).
    level_of: Tensor,
    /// `[code_len, vocab]` bool: the tokens of each code position.
    level_tokens: Tensor,
    max_tokens: i64,
    cfg: SeqRecConfig,
}

impl CodeRec {
    /// Creates the variables under `vs` for codes whose position `l` takes `widths[l]` values; the model reads up to
    /// `cfg.max_len` items of history (`d_model`, `n_layers`, `n_heads`, `dropout` as for [`crate::SeqRec`]).
    pub fn init(vs: &nn::Path<'_>, cfg: &SeqRecConfig, widths: &[usize]) -> Result<CodeRec> {
        cfg.validate()?;
        let bad = |reason: String| Err(Error::InvalidConfig { field: "semantic_ids", reason });
        if widths.is_empty() || widths.len() > 16 {
            return bad(format!("codes of {} positions (1 to 16 supported)", widths.len()));
        }
        if let Some(w) = widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return bad(format!("a code position takes {w} values (1 to {MAX_WIDTH} supported)"));
        }
        let widths: Vec<i64> = widths.iter().map(|&w| w as i64).collect();
        let mut offsets = Vec::with_capacity(widths.len());
        let mut next = 1i64;
        for w in &widths {
            offsets.push(next);
            next += w;
        }
        let vocab = next;
        let code_len = widths.len() as i64;
        let max_tokens = (cfg.max_len + 1) * code_len;
        let max_items = cfg.max_len + 1;
        let d = cfg.d_model;
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: (d as f64).powf(-0.5) },
            ..Default::default()
        };
        let mut level_of = vec![0i64; vocab as usize];
        let mut level_tokens = vec![false; (code_len * vocab) as usize];
        for (l, (&o, &w)) in offsets.iter().zip(&widths).enumerate() {
            for t in o..o + w {
                level_of[t as usize] = l as i64;
                level_tokens[l * vocab as usize + t as usize] = true;
            }
        }
        let device = vs.device();
        Ok(CodeRec {
            tok_emb: nn::embedding(vs / "tok_emb", vocab, d, emb),
            pos_emb: nn::embedding(vs / "pos_emb", max_items, d, emb),
            level_emb: nn::embedding(vs / "level_emb", code_len, d, emb),
            blocks: (0..cfg.n_layers)
                .map(|i| Block::init(&(vs / "blocks" / i), d, cfg.n_heads, cfg.d_ff(), cfg.dropout))
                .collect(),
            ln_out: nn::layer_norm(vs / "ln_out", vec![d], Default::default()),
            level_of: Tensor::from_slice(&level_of).to_device(device),
            level_tokens: Tensor::from_slice(&level_tokens).view([code_len, vocab]).to_device(device),
            widths,
            offsets,
            max_tokens,
            cfg: cfg.clone(),
        })
    }

    /// Positions per code.
    pub fn code_len(&self) -> usize {
        self.widths.len()
    }

    /// Values each code position takes (the width of the output at that step).
    pub fn widths(&self) -> Vec<usize> {
        self.widths.iter().map(|&w| w as usize).collect()
    }

    /// Items of history read (older ones are dropped).
    pub fn max_len(&self) -> usize {
        self.cfg.max_len as usize
    }

    /// The token of value `code` at position `level`, `None` outside the vocabulary.
    pub fn token(&self, level: usize, code: u16) -> Option<i64> {
        let (&o, &w) = (self.offsets.get(level)?, self.widths.get(level)?);
        (i64::from(code) < w).then_some(o + i64::from(code))
    }

    /// The tokens of a sequence of codes, in order (`None` if a value is outside the vocabulary).
    pub fn tokens_of(&self, codes: &[&[u16]]) -> Option<Vec<i64>> {
        let mut out = Vec::with_capacity(codes.len() * self.code_len());
        for code in codes {
            if code.len() != self.code_len() {
                return None;
            }
            for (l, &c) in code.iter().enumerate() {
                out.push(self.token(l, c)?);
            }
        }
        Some(out)
    }

    /// Hidden state at every position: causal attention over left-padded tokens `[b, T]` whose real tokens start
    /// with a whole code (`T <= (max_len + 1) · code_len`; longer rows keep their last whole codes).
    pub fn hidden(&self, tokens: &Tensor, mode: Mode) -> Tensor {
        let (_, len) = tokens.size2().unwrap_or((0, 0));
        let device = tokens.device();
        let c = self.widths.len() as i64;
        let tokens = if len > self.max_tokens {
            // Drop whole codes from the front: the row's first real token stays a code's first.
            let cut = (len - self.max_tokens + c - 1) / c * c;
            tokens.narrow(1, cut, len - cut)
        } else {
            tokens.shallow_clone()
        };
        let len = tokens.size()[1];
        let valid = tokens.gt(0);
        let d = self.cfg.d_model;
        // Each token's item, counted from the row's first real token.
        let first = -valid.sum_dim_intlist(1, true, Kind::Int64) + len; // [b, 1]
        let item = (Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0) - first)
            .clamp_min(0)
            .divide_scalar_mode(c, "floor");
        let item = item.clamp_max(self.cfg.max_len);
        let levels = self.level_of.index_select(0, &tokens.reshape([-1])).view_as(&tokens);
        let xs = self.tok_emb.forward(&tokens) * (d as f64).sqrt()
            + self.pos_emb.forward(&item)
            + self.level_emb.forward(&levels);
        let mut xs = (xs * valid.unsqueeze(-1).to_kind(Kind::Float)).dropout(self.cfg.dropout, mode.is_train());
        let allowed = mask::causal_with_padding(&valid);
        for block in &self.blocks {
            xs = block.forward(&xs, &allowed, mode);
        }
        self.ln_out.forward(&xs)
    }

    /// Log-probabilities `[n, widths[level]]` of each value at code position `level` from states `[n, d]`.
    pub fn log_probs(&self, states: &Tensor, level: usize) -> Tensor {
        let (o, w) = (self.offsets[level], self.widths[level]);
        let table = self.tok_emb.ws.narrow(0, o, w);
        states.matmul(&table.tr()).log_softmax(-1, Kind::Float)
    }

    /// Mean cross-entropy of next-token prediction: `targets` `[b, T]` are tokens (or `-100` where nothing is
    /// predicted); each target is scored only against the tokens of its own code position.
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor, mode: Mode) -> Tensor {
        let h = self.hidden(tokens, mode);
        let d = self.cfg.d_model;
        let targets = targets.reshape([-1]);
        let keep = targets.ge(0).nonzero().squeeze_dim(1);
        if keep.size()[0] == 0 {
            return h.sum(Kind::Float) * 0.0;
        }
        let states = h.reshape([-1, d]).index_select(0, &keep);
        let targets = targets.index_select(0, &keep);
        let logits = states.matmul(&self.tok_emb.ws.tr()); // [n, vocab]
        let allowed = self.level_tokens.index_select(0, &self.level_of.index_select(0, &targets));
        let logits = logits.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
        logits.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, -100, 0.0)
    }

    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.level_of.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    fn model(widths: &[usize]) -> (nn::VarStore, CodeRec) {
        m6rec_tensor::seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 32, n_heads: 2, max_len: 6, dropout: 0.0, ..Default::default() };
        let m = CodeRec::init(&(vs.root() / "gen"), &cfg, widths).unwrap();
        (vs, m)
    }

    #[test]
    fn tokens_are_per_position_and_out_of_range_values_are_refused() {
        let (_vs, m) = model(&[4, 4, 3]);
        assert_eq!(m.tokens_of(&[&[0, 0, 0], &[3, 1, 2]]), Some(vec![1, 5, 9, 4, 6, 11]));
        assert_eq!(m.tokens_of(&[&[4, 0, 0]]), None);
        assert_eq!(m.tokens_of(&[&[0, 0]]), None);
    }

    #[test]
    fn a_state_never_reads_later_tokens_and_the_model_learns_a_successor_code() {
        let (vs, m) = model(&[4, 4, 2]);
        let a = Tensor::from_slice(&[0i64, 1, 5, 9, 2, 6]).view([1, 6]);
        let b = Tensor::from_slice(&[0i64, 1, 5, 9, 3, 7]).view([1, 6]);
        let (ha, hb) = (m.hidden(&a, Mode::Eval), m.hidden(&b, Mode::Eval));
        assert!((ha.narrow(1, 0, 4) - hb.narrow(1, 0, 4)).abs().max().double_value(&[]) < 1e-6);
        // Item i's code is (i % 4, i / 4, 0); the next item is always i + 1: learn it from 2-item sequences.
        let code = |i: u16| vec![i % 4, (i / 4) % 4, 0];
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let rows: Vec<Vec<i64>> = (0..15u16).map(|i| m.tokens_of(&[&code(i), &code(i + 1)]).unwrap()).collect();
        let flat: Vec<i64> = rows.iter().flat_map(|r| r[..5].to_vec()).collect();
        // Only the second item is predicted (the first one's later values are ambiguous by construction).
        let tg: Vec<i64> = rows.iter().flat_map(|r| [-100, -100].into_iter().chain(r[3..].iter().copied())).collect();
        let (x, y) = (Tensor::from_slice(&flat).view([15, 5]), Tensor::from_slice(&tg).view([15, 5]));
        for _ in 0..300 {
            let loss = m.loss(&x, &y, Mode::Train);
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
        let loss = m.loss(&x, &y, Mode::Eval).double_value(&[]);
        assert!(loss < 0.1, "loss {loss}");
        let h = m.hidden(&Tensor::from_slice(&m.tokens_of(&[&code(6)]).unwrap()).view([1, 3]), Mode::Eval);
        let first = m.log_probs(&h.select(1, -1), 0).argmax(-1, false).int64_value(&[0]);
        assert_eq!(first, 3, "item 7's first code is 3");
    }
}
