//! [`CodeRec`]: generative retrieval over semantic-ID tokens (TIGER-style). A causal Transformer reads the history
//! one position per item, each item the sum of its code tokens' embeddings; a small autoregressive decoder then
//! generates the next item's code, one token per code position, from the last state and the tokens chosen so far.
//! The history is read once per user, however wide the beam (only the decoder runs per beam).

use crate::config::SeqRecConfig;
use crate::{Error, Result};
use m6rec_tensor::block::Block;
use m6rec_tensor::{mask, Mode};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Largest number of values one code position may take.
pub const MAX_WIDTH: usize = 1 << 16;

/// How the next item's code is generated from the history's state (`[generative] decoder`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeDecoder {
    /// One residual MLP step per code position over the state plus the chosen tokens' embeddings (the default).
    #[default]
    Mlp,
    /// A small causal Transformer over `[state, chosen tokens]`: each position attends to the state and every
    /// token chosen before it (`decoder_layers` blocks shared by all code positions).
    Transformer,
}

enum Decoder {
    Mlp(Vec<(nn::LayerNorm, nn::Linear, nn::Linear)>),
    Transformer { blocks: Vec<Block>, pos: nn::Embedding, ln: nn::LayerNorm },
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decoder::Mlp(steps) => write!(f, "Mlp({} steps)", steps.len()),
            Decoder::Transformer { blocks, .. } => write!(f, "Transformer({} blocks)", blocks.len()),
        }
    }
}

/// The generative retrieval model.
///
/// Tokens: `0` is padding; value `c` at code position `l` is token `offset(l) + c` (`offset(0) = 1`, each position
/// after the previous one's values). Items are given as `[.., code_len]` token rows. Variables under the path given
/// to [`CodeRec::init`]: `tok_emb.weight` (`[vocab, d]`: the input embedding of each code token, tied to the
/// output), `pos_emb.weight` (right-aligned item positions), `blocks.{i}.*`, `ln_out.*`, and per code position
/// `dec.{l}.{ln,in,out}.*` (the decoder step).
#[derive(Debug)]
pub struct CodeRec {
    tok_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    blocks: Vec<Block>,
    ln_out: nn::LayerNorm,
    dec: Decoder,
    widths: Vec<i64>,
    offsets: Vec<i64>,
    cfg: SeqRecConfig,
}

impl CodeRec {
    /// Creates the variables under `vs` for codes whose position `l` takes `widths[l]` values; the model reads up to
    /// `cfg.max_len` items of history (`d_model`, `n_layers`, `n_heads`, `dropout` as for [`crate::SeqRec`]).
    pub fn init(vs: &nn::Path<'_>, cfg: &SeqRecConfig, widths: &[usize]) -> Result<CodeRec> {
        CodeRec::init_with(vs, cfg, widths, CodeDecoder::Mlp, 1)
    }

    /// [`CodeRec::init`] with the decoder of choice (`layers` blocks for [`CodeDecoder::Transformer`]; variables
    /// `dec_tf.{blocks.{i}, pos, ln}.*` instead of `dec.{l}.*`).
    pub fn init_with(
        vs: &nn::Path<'_>,
        cfg: &SeqRecConfig,
        widths: &[usize],
        decoder: CodeDecoder,
        layers: usize,
    ) -> Result<CodeRec> {
        cfg.validate()?;
        if !(1..=8).contains(&layers) {
            return Err(Error::InvalidConfig { field: "decoder_layers", reason: format!("{layers}, must be 1 to 8") });
        }
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
        let d = cfg.d_model;
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: (d as f64).powf(-0.5) },
            padding_idx: 0,
            ..Default::default()
        };
        let dec = match decoder {
            CodeDecoder::Mlp => Decoder::Mlp(
                (0..widths.len())
                    .map(|l| {
                        let p = vs / "dec" / l;
                        (
                            nn::layer_norm(&p / "ln", vec![d], Default::default()),
                            nn::linear(&p / "in", d, 2 * d, Default::default()),
                            nn::linear(&p / "out", 2 * d, d, Default::default()),
                        )
                    })
                    .collect(),
            ),
            CodeDecoder::Transformer => {
                let p = vs / "dec_tf";
                Decoder::Transformer {
                    blocks: (0..layers)
                        .map(|i| Block::init(&(&p / "blocks" / i), d, cfg.n_heads, cfg.d_ff(), cfg.dropout))
                        .collect(),
                    pos: nn::embedding(&p / "pos", widths.len() as i64, d, emb),
                    ln: nn::layer_norm(&p / "ln", vec![d], Default::default()),
                }
            }
        };
        Ok(CodeRec {
            tok_emb: nn::embedding(vs / "tok_emb", next, d, emb),
            pos_emb: nn::embedding(vs / "pos_emb", cfg.max_len, d, emb),
            blocks: (0..cfg.n_layers)
                .map(|i| Block::init(&(vs / "blocks" / i), d, cfg.n_heads, cfg.d_ff(), cfg.dropout))
                .collect(),
            ln_out: nn::layer_norm(vs / "ln_out", vec![d], Default::default()),
            dec,
            widths,
            offsets,
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

    /// The tokens of one code (`None` if it has the wrong length or a value outside the vocabulary).
    pub fn tokens_of(&self, code: &[u16]) -> Option<Vec<i64>> {
        if code.len() != self.code_len() {
            return None;
        }
        code.iter().enumerate().map(|(l, &c)| self.token(l, c)).collect()
    }

    /// The state after each item: `items` `[b, n, code_len]` token rows, left-padded with all-zero rows (`n <=
    /// max_len`; longer histories keep their last items); returns `[b, n, d]`.
    pub fn states(&self, items: &Tensor, mode: Mode) -> Tensor {
        let n = items.size()[1];
        let items = if n > self.cfg.max_len {
            items.narrow(1, n - self.cfg.max_len, self.cfg.max_len)
        } else {
            items.shallow_clone()
        };
        let n = items.size()[1];
        let device = items.device();
        let d = self.cfg.d_model;
        let valid = items.select(2, 0).gt(0); // [b, n]
        let pos = Tensor::arange_start(self.cfg.max_len - n, self.cfg.max_len, (Kind::Int64, device));
        let xs = self.tok_emb.forward(&items).sum_dim_intlist(2, false, Kind::Float) * (d as f64).sqrt()
            + self.pos_emb.forward(&pos).unsqueeze(0);
        let mut xs = (xs * valid.unsqueeze(-1).to_kind(Kind::Float)).dropout(self.cfg.dropout, mode.is_train());
        let allowed = mask::causal_with_padding(&valid);
        for block in &self.blocks {
            xs = block.forward(&xs, &allowed, mode);
        }
        self.ln_out.forward(&xs)
    }

    /// The decoder's query for code position `level` from states `[r, d]` and the tokens already chosen, `prefix`
    /// `[r, level]`: `x + out(gelu(in(ln(x))))` with `x` the state plus the prefix tokens' embeddings.
    fn query(&self, states: &Tensor, prefix: &Tensor, level: usize, mode: Mode) -> Tensor {
        let steps = match &self.dec {
            Decoder::Mlp(steps) => steps,
            Decoder::Transformer { .. } => return self.decode(states, prefix, mode).select(1, level as i64),
        };
        let x = if prefix.size()[1] > 0 {
            states + self.tok_emb.forward(prefix).sum_dim_intlist(1, false, Kind::Float)
        } else {
            states.shallow_clone()
        };
        let (ln, w_in, w_out) = &steps[level];
        let h = ln.forward(&x).apply(w_in).gelu("none").dropout(self.cfg.dropout, mode.is_train()).apply(w_out);
        x + h
    }

    /// The Transformer decoder's output at every position of `[state, prefix tokens]`: `[r, prefix + 1, d]`;
    /// position `l` is the query for code position `l`.
    fn decode(&self, states: &Tensor, prefix: &Tensor, mode: Mode) -> Tensor {
        let Decoder::Transformer { blocks, pos, ln } = &self.dec else {
            return states.unsqueeze(1);
        };
        let d = self.cfg.d_model as f64;
        let mut parts = vec![states.unsqueeze(1)];
        if prefix.size()[1] > 0 {
            parts.push(self.tok_emb.forward(prefix) * d.sqrt());
        }
        let xs = Tensor::cat(&parts, 1);
        let (n, device) = (xs.size()[1], xs.device());
        let mut xs = xs + pos.forward(&Tensor::arange(n, (Kind::Int64, device))).unsqueeze(0);
        let allowed = mask::causal(n, device);
        for block in blocks {
            xs = block.forward(&xs, &allowed, mode);
        }
        ln.forward(&xs)
    }

    fn logits(&self, states: &Tensor, prefix: &Tensor, level: usize, mode: Mode) -> Tensor {
        let (o, w) = (self.offsets[level], self.widths[level]);
        self.query(states, prefix, level, mode).matmul(&self.tok_emb.ws.narrow(0, o, w).tr())
    }

    /// Log-probabilities `[r, widths[level]]` of each value at code position `level`, from states `[r, d]` and the
    /// tokens chosen before it, `prefix` `[r, level]` int64.
    pub fn log_probs(&self, states: &Tensor, prefix: &Tensor, level: usize) -> Tensor {
        self.logits(states, prefix, level, Mode::Eval).log_softmax(-1, Kind::Float)
    }

    /// Mean cross-entropy of generating each next item's code, teacher-forced: `items` `[b, n + 1, code_len]` token
    /// rows (left-padded); the state after item `t` predicts item `t + 1`, token by token. Padded targets count
    /// nothing.
    pub fn loss(&self, items: &Tensor, mode: Mode) -> Tensor {
        let (b, n1, c) = items.size3().unwrap_or((0, 0, 0));
        let d = self.cfg.d_model;
        let states = self.states(&items.narrow(1, 0, n1 - 1), mode);
        let n = states.size()[1];
        let targets = items.narrow(1, n1 - n, n).reshape([-1, c]); // [b·n, C]
        let keep = targets.select(1, 0).gt(0).nonzero().squeeze_dim(1);
        if keep.size()[0] == 0 || b == 0 {
            return states.sum(Kind::Float) * 0.0;
        }
        let states = states.reshape([-1, d]).index_select(0, &keep);
        let targets = targets.index_select(0, &keep);
        let mut total = Tensor::zeros([], (Kind::Float, states.device()));
        // The Transformer decoder reads every position in one causal pass (teacher forcing).
        let decoded = matches!(self.dec, Decoder::Transformer { .. })
            .then(|| self.decode(&states, &targets.narrow(1, 0, c - 1), mode));
        for level in 0..self.code_len() {
            let lvl = level as i64;
            let logits = match &decoded {
                Some(q) => {
                    let (o, w) = (self.offsets[level], self.widths[level]);
                    q.select(1, lvl).matmul(&self.tok_emb.ws.narrow(0, o, w).tr())
                }
                None => self.logits(&states, &targets.narrow(1, 0, lvl), level, mode),
            };
            let y = targets.select(1, lvl) - self.offsets[level];
            total += logits.cross_entropy_for_logits(&y);
        }
        total / self.code_len() as f64
    }

    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.tok_emb.ws.device()
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

    /// 200 Adam steps on `batch`; the loss after them.
    fn fit(vs: &nn::VarStore, m: &CodeRec, batch: &Tensor) -> f64 {
        let mut opt = nn::Adam::default().build(vs, 1e-2).unwrap();
        for _ in 0..200 {
            let loss = m.loss(batch, Mode::Train);
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
        m.loss(batch, Mode::Eval).double_value(&[])
    }

    fn rows(m: &CodeRec, codes: &[Vec<u16>]) -> Tensor {
        let flat: Vec<i64> = codes.iter().flat_map(|c| m.tokens_of(c).unwrap()).collect();
        Tensor::from_slice(&flat).view([1, codes.len() as i64, m.code_len() as i64])
    }

    #[test]
    fn tokens_are_per_position_and_out_of_range_values_are_refused() {
        let (_vs, m) = model(&[4, 4, 3]);
        assert_eq!(m.tokens_of(&[3, 1, 2]), Some(vec![4, 6, 11]));
        assert_eq!(m.tokens_of(&[4, 0, 0]), None);
        assert_eq!(m.tokens_of(&[0, 0]), None);
    }

    #[test]
    fn a_state_never_reads_later_items_and_the_model_learns_a_successor_code() {
        let (vs, m) = model(&[4, 4, 2]);
        let code = |i: u16| vec![i % 4, (i / 4) % 4, 0];
        let a = rows(&m, &[code(1), code(2), code(3)]);
        let b = rows(&m, &[code(1), code(2), code(9)]);
        let (sa, sb) = (m.states(&a, Mode::Eval), m.states(&b, Mode::Eval));
        assert!((sa.narrow(1, 0, 2) - sb.narrow(1, 0, 2)).abs().max().double_value(&[]) < 1e-6);
        // The next item is always i + 1: learn it from 2-item sequences.
        let batch = Tensor::cat(&(0..15u16).map(|i| rows(&m, &[code(i), code(i + 1)])).collect::<Vec<_>>(), 0);
        let loss = fit(&vs, &m, &batch);
        assert!(loss < 0.05, "loss {loss}");
        let s = m.states(&rows(&m, &[code(6)]), Mode::Eval).select(1, -1);
        let none = Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu));
        assert_eq!(m.log_probs(&s, &none, 0).argmax(-1, false).int64_value(&[0]), 3, "item 7's first value is 3");
        let first = Tensor::from_slice(&[m.token(0, 3).unwrap()]).view([1, 1]);
        assert_eq!(m.log_probs(&s, &first, 1).argmax(-1, false).int64_value(&[0]), 1, "and its second 1");
    }

    /// The Transformer decoder: the teacher-forced loss (one causal pass over all code positions) equals the
    /// step-by-step log-probabilities beam search uses, and it learns a successor code.
    #[test]
    fn the_transformer_decoder_trains_in_one_pass_and_decodes_step_by_step_alike() {
        m6rec_tensor::seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SeqRecConfig { d_model: 32, n_heads: 2, max_len: 6, dropout: 0.0, ..Default::default() };
        let m = CodeRec::init_with(&(vs.root() / "gen"), &cfg, &[4, 4, 2], CodeDecoder::Transformer, 2).unwrap();
        let code = |i: u16| vec![i % 4, (i / 4) % 4, 0];
        let batch = Tensor::cat(&(0..15u16).map(|i| rows(&m, &[code(i), code(i + 1)])).collect::<Vec<_>>(), 0);
        // One pass against three incremental steps, on the untrained model.
        let one_pass = m.loss(&batch, Mode::Eval).double_value(&[]);
        let states = m.states(&batch.narrow(1, 0, 1), Mode::Eval).select(1, 0); // [15, d]
        let targets = batch.select(1, 1); // [15, 3] tokens
        let mut stepwise = 0.0;
        for level in 0..3 {
            let lp = m.log_probs(&states, &targets.narrow(1, 0, level as i64), level);
            let y = (targets.select(1, level as i64) - m.offsets[level]).unsqueeze(1);
            stepwise -= lp.gather(1, &y, false).mean(Kind::Float).double_value(&[]);
        }
        assert!((one_pass - stepwise / 3.0).abs() < 1e-5, "one pass {one_pass} vs step by step {}", stepwise / 3.0);
        let loss = fit(&vs, &m, &batch);
        assert!(loss < 0.05, "loss {loss}");
    }
}
