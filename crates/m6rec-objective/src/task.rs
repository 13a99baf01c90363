//! Pretraining tasks: what a sequence model reads and predicts in training and at inference.
//!
//! An [`Objective`](crate::Objective) scores states against targets; a [`TaskConfig`] decides which states carry
//! which targets, what the model reads at those positions and how its positions attend to each other:
//!
//! | task | training reads | training predicts | attention | inference |
//! |---|---|---|---|---|
//! | `next_item` | the history | item `t + 1` at every position `t` | causal | the last state |
//! | `masked_item` | the sequence with a fraction of items replaced by [`MASK`] | the replaced items | bidirectional | a [`MASK`] appended to the history |
//! | `prefix_lm` | the sequence, split at a random point | every item after the split | prefix-LM | the whole history as prefix |
//!
//! Tokens are the model's: `0` is padding, item row `i` is token `i + 1`, [`MASK`] is the mask token. Targets are
//! item rows or [`IGNORE`]. Randomness comes from libtorch's generator (seeded with the run, restored on resume).

use crate::IGNORE;
use m6rec_tensor::mask::Attention;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The mask token: an input position whose item the model must infer from the others.
pub const MASK: i64 = -1;

/// The pretraining task (`[model.task]` of a run file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    /// Autoregressive next-item prediction (SASRec, HSTU): causal attention, a target at every position.
    #[default]
    NextItem,
    /// Autoencoding (BERT4Rec's Cloze task): bidirectional attention; each item is chosen with probability
    /// `mask_prob` and replaced by [`MASK`] (or, with probabilities `random_prob` / `keep_prob`, by a random item or
    /// left as it is) and predicted from the rest.
    MaskedItem {
        /// Probability that an item is chosen for prediction. Default 0.2.
        #[serde(default = "mask_prob")]
        mask_prob: f64,
        /// Probability that the last item is chosen whatever `mask_prob` says, so training also sees the inference
        /// pattern (a mask after the history). Default 0.2.
        #[serde(default = "mask_prob")]
        mask_last: f64,
        /// Of the chosen items, the fraction replaced by a random item instead of [`MASK`]. Default 0.
        #[serde(default)]
        random_prob: f64,
        /// Of the chosen items, the fraction left unchanged (still predicted). Default 0.
        #[serde(default)]
        keep_prob: f64,
        /// Weight of a next-item (causal) loss on the same batch added to the masked loss: mixing autoencoding with
        /// autoregression in one pretraining run. Default 0 (masked only).
        #[serde(default)]
        next_item_weight: f64,
        /// Slope of the attention's preference for near positions (see `m6rec_tensor::mask::with_locality`; 0:
        /// none). Default 4: on the demo data a masked model reached NDCG@10 0.08 / 0.17 / 0.20 after 30 epochs
        /// with slopes 0 / 2 / 4.
        #[serde(default = "locality")]
        locality: f64,
    },
    /// M6's prefix-LM: each sequence is split at a uniformly drawn point; the items before it (and any soft
    /// prompts) are a bidirectional prefix, every item after it is predicted autoregressively.
    PrefixLm,
}

fn mask_prob() -> f64 {
    0.2
}

fn locality() -> f64 {
    4.0
}

/// What a model reads for one loss term: inputs, targets, attention, and the term's weight.
#[derive(Debug)]
pub struct View {
    /// `[b_sz, seq_len]` int64 tokens (padding 0, item row + 1, [`MASK`]).
    pub tokens: Tensor,
    /// `[b_sz, seq_len]` int64 target rows or [`IGNORE`] (absent at inference).
    pub targets: Option<Tensor>,
    /// How positions attend.
    pub attention: Attention,
    /// Weight of this view's loss.
    pub weight: f64,
}

impl TaskConfig {
    /// Short name, for logs and tables.
    pub fn name(&self) -> &'static str {
        match self {
            TaskConfig::NextItem => "next_item",
            TaskConfig::MaskedItem { .. } => "masked_item",
            TaskConfig::PrefixLm => "prefix_lm",
        }
    }

    /// Slope of the non-causal attention's preference for near positions (0: none).
    pub fn locality(&self) -> f64 {
        match *self {
            TaskConfig::MaskedItem { locality, .. } => locality,
            _ => 0.0,
        }
    }

    /// Whether the model needs a learned embedding for [`MASK`].
    pub fn uses_mask_token(&self) -> bool {
        matches!(self, TaskConfig::MaskedItem { .. })
    }

    /// Checks the fields: `Err((field, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let TaskConfig::MaskedItem { mask_prob, mask_last, random_prob, keep_prob, next_item_weight, locality } =
            *self
        {
            let unit = |x: f64| (0.0..=1.0).contains(&x);
            if !(mask_prob > 0.0 && mask_prob <= 1.0) {
                return Err(("task.mask_prob", format!("{mask_prob} is not in (0, 1]")));
            }
            if !unit(mask_last) {
                return Err(("task.mask_last", format!("{mask_last} is not in [0, 1]")));
            }
            if !unit(random_prob) || !unit(keep_prob) || random_prob + keep_prob > 1.0 {
                return Err((
                    "task.random_prob",
                    "random_prob and keep_prob must be in [0, 1] and sum to at most 1".into(),
                ));
            }
            if !(next_item_weight.is_finite() && next_item_weight >= 0.0) {
                return Err(("task.next_item_weight", format!("{next_item_weight} must be finite and >= 0")));
            }
            if !(0.0..=64.0).contains(&locality) {
                return Err(("task.locality", format!("{locality} is not in [0, 64]")));
            }
        }
        Ok(())
    }

    /// The loss terms of one training batch: `tokens` `[b, L]` (left-padded) and their next-item `targets` `[b, L]`
    /// as a batch gives them, sequences at most `max_len` long after the task's changes. Random replacements are
    /// drawn from `candidates` (`[k]` int64 item rows; all `n_rows` items when `None`).
    pub fn train_views(
        &self,
        tokens: &Tensor,
        targets: &Tensor,
        max_len: i64,
        n_rows: i64,
        candidates: Option<&Tensor>,
    ) -> Vec<View> {
        let causal = |weight| View {
            tokens: tokens.shallow_clone(),
            targets: Some(targets.shallow_clone()),
            attention: Attention::Causal,
            weight,
        };
        match *self {
            TaskConfig::NextItem => vec![causal(1.0)],
            TaskConfig::MaskedItem { mask_prob, mask_last, random_prob, keep_prob, next_item_weight, .. } => {
                let full = whole_sequence(tokens, targets, max_len);
                let masked = Masking { mask_prob, mask_last, random_prob, keep_prob }.apply(&full, n_rows, candidates);
                let mut views = vec![masked];
                if next_item_weight > 0.0 {
                    views.push(causal(next_item_weight));
                }
                views
            }
            TaskConfig::PrefixLm => vec![prefix_view(tokens, targets)],
        }
    }

    /// What the model reads to predict each history's next item: `tokens` `[b, L]` left-padded histories; the
    /// prediction is the state at the last position of the returned tokens.
    pub fn infer_view(&self, tokens: &Tensor, max_len: i64) -> View {
        let (tokens, attention) = match self {
            TaskConfig::NextItem => (tokens.shallow_clone(), Attention::Causal),
            TaskConfig::MaskedItem { .. } => {
                let b = tokens.size()[0];
                let mask = Tensor::full([b, 1], MASK, (Kind::Int64, tokens.device()));
                (keep_last(Tensor::cat(&[tokens.shallow_clone(), mask], 1), max_len), Attention::Bidirectional)
            }
            TaskConfig::PrefixLm => (tokens.shallow_clone(), Attention::Bidirectional),
        };
        View { tokens, targets: None, attention, weight: 1.0 }
    }
}

/// The last `max_len` columns.
fn keep_last(xs: Tensor, max_len: i64) -> Tensor {
    let len = xs.size()[1];
    if len > max_len {
        xs.narrow(1, len - max_len, max_len)
    } else {
        xs
    }
}

/// The whole sequence behind a next-item batch: its tokens followed by the last target (as a token), the oldest
/// column dropped past `max_len`.
fn whole_sequence(tokens: &Tensor, targets: &Tensor, max_len: i64) -> Tensor {
    let len = targets.size()[1];
    let last = targets.narrow(1, len - 1, 1);
    let last = (&last + 1).where_self(&last.ge(0), &last.zeros_like());
    keep_last(Tensor::cat(&[tokens.shallow_clone(), last], 1), max_len)
}

/// BERT-style corruption of the items chosen for prediction.
#[derive(Debug, Clone, Copy)]
struct Masking {
    mask_prob: f64,
    mask_last: f64,
    random_prob: f64,
    keep_prob: f64,
}

impl Masking {
    fn apply(&self, full: &Tensor, n_rows: i64, candidates: Option<&Tensor>) -> View {
        let device = full.device();
        let (b, len) = full.size2().unwrap_or((0, 0));
        let float = (Kind::Float, device);
        let real = full.gt(0);
        let mut chosen = Tensor::rand([b, len], float).lt(self.mask_prob);
        if len > 0 {
            let last = Tensor::rand([b, 1], float).lt(self.mask_last);
            let at_last = Tensor::arange(len, (Kind::Int64, device)).eq(len - 1).view([1, len]);
            chosen = chosen.logical_or(&at_last.logical_and(&last));
        }
        let chosen = chosen.logical_and(&real);
        let targets = (full - 1).where_self(&chosen, &Tensor::full([b, len], IGNORE, (Kind::Int64, device)));
        let how = Tensor::rand([b, len], float);
        let to_mask = chosen.logical_and(&how.ge(self.random_prob + self.keep_prob));
        let to_random = chosen.logical_and(&how.lt(self.random_prob));
        let random = random_tokens([b, len], n_rows, candidates, device);
        let tokens = random.where_self(&to_random, full);
        let tokens = Tensor::full([b, len], MASK, (Kind::Int64, device)).where_self(&to_mask, &tokens);
        View { tokens, targets: Some(targets), attention: Attention::Bidirectional, weight: 1.0 }
    }
}

fn random_tokens(shape: [i64; 2], n_rows: i64, candidates: Option<&Tensor>, device: Device) -> Tensor {
    match candidates {
        Some(c) if c.size()[0] > 0 => {
            let k = c.size()[0];
            let pick = Tensor::randint(k, shape, (Kind::Int64, device));
            c.to_device(device).index_select(0, &pick.view([-1])).view(shape) + 1
        }
        _ => Tensor::randint(n_rows.max(1), shape, (Kind::Int64, device)) + 1,
    }
}

/// Prefix-LM view of a next-item batch: per row a prefix of `k` items, `k` uniform in `1..=n` (`n` real items), and
/// targets only from the prefix's last position on.
fn prefix_view(tokens: &Tensor, targets: &Tensor) -> View {
    let device = tokens.device();
    let (b, len) = tokens.size2().unwrap_or((0, 0));
    let n = tokens.ne(0).sum_dim_intlist(1, false, Kind::Int64); // [b]
    let first = -&n + len;
    let k = (Tensor::rand([b], (Kind::Float, device)) * n.to_kind(Kind::Float)).floor().to_kind(Kind::Int64) + 1;
    let k = k.minimum(&n.clamp_min(1));
    let start = &first + &k; // first autoregressive position
    let positions = Tensor::arange(len, (Kind::Int64, device)).view([1, len]);
    let predicts = positions.ge_tensor(&(&start - 1).view([-1, 1]));
    let targets = targets.where_self(&predicts, &Tensor::full([b, len], IGNORE, (Kind::Int64, device)));
    View { tokens: tokens.shallow_clone(), targets: Some(targets), attention: Attention::Prefix(start), weight: 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Left-padded `[1, L]` tokens and next-item targets of the sequence `items` (rows), `pad` columns of padding.
    fn batch(items: &[i64], pad: usize) -> (Tensor, Tensor) {
        let n = items.len() - 1;
        let mut tokens = vec![0i64; pad];
        let mut targets = vec![IGNORE; pad];
        tokens.extend(items[..n].iter().map(|r| r + 1));
        targets.extend(&items[1..]);
        let l = (pad + n) as i64;
        (Tensor::from_slice(&tokens).view([1, l]), Tensor::from_slice(&targets).view([1, l]))
    }

    fn masked(mask_prob: f64, mask_last: f64) -> TaskConfig {
        TaskConfig::MaskedItem {
            mask_prob,
            mask_last,
            random_prob: 0.0,
            keep_prob: 0.0,
            next_item_weight: 0.0,
            locality: 4.0,
        }
    }

    proptest! {
        /// Masked items: every predicted position reads [`MASK`], never its item; every other position reads its
        /// own item; targets are the original items.
        #[test]
        fn a_masked_position_never_reads_its_item(
            items in proptest::collection::vec(0i64..50, 2..20),
            pad in 0usize..5,
            p in 0.05f64..1.0,
            seed in 0i64..1000,
        ) {
            tch::manual_seed(seed);
            let (tokens, targets) = batch(&items, pad);
            let v = masked(p, 0.5).train_views(&tokens, &targets, 64, 50, None).remove(0);
            let got: Vec<i64> = Vec::try_from(v.tokens.view([-1])).unwrap();
            let tg: Vec<i64> = Vec::try_from(v.targets.unwrap().view([-1])).unwrap();
            prop_assert_eq!(got.len(), pad + items.len(), "the whole sequence, the last item included");
            for (t, (&x, &y)) in got.iter().zip(&tg).enumerate() {
                if t < pad {
                    prop_assert_eq!((x, y), (0, IGNORE));
                } else if y != IGNORE {
                    prop_assert_eq!(x, MASK);
                    prop_assert_eq!(y, items[t - pad]);
                } else {
                    prop_assert_eq!(x, items[t - pad] + 1);
                }
            }
            prop_assert!(matches!(v.attention, Attention::Bidirectional));
        }

        /// Prefix-LM: every position that carries a target predicts the item right after it, and the attention mask
        /// hides that item (and every later one) from it.
        #[test]
        fn a_prefix_lm_position_never_sees_what_it_predicts(
            items in proptest::collection::vec(0i64..50, 2..20),
            pad in 0usize..5,
            seed in 0i64..1000,
        ) {
            tch::manual_seed(seed);
            let (tokens, targets) = batch(&items, pad);
            let v = TaskConfig::PrefixLm.train_views(&tokens, &targets, 64, 50, None).remove(0);
            let tg: Vec<i64> = Vec::try_from(v.targets.unwrap().view([-1])).unwrap();
            let len = tg.len() as i64;
            let allowed = v.attention.mask(&tokens.ne(0), 0);
            prop_assert!(tg.iter().any(|&y| y != IGNORE), "at least the prefix's last position predicts");
            for (q, &y) in tg.iter().enumerate() {
                if y == IGNORE { continue; }
                prop_assert_eq!(y, items[q - pad + 1]);
                for k in (q as i64 + 1)..len {
                    prop_assert!(allowed.int64_value(&[0, 0, q as i64, k]) == 0, "{} sees {}", q, k);
                }
            }
            // The targets are a suffix: once a position predicts, every later one does.
            let first = tg.iter().position(|&y| y != IGNORE).unwrap_or(tg.len());
            prop_assert!(tg[first..].iter().all(|&y| y != IGNORE));
        }
    }

    #[test]
    fn inference_appends_a_mask_for_masked_models_only() {
        let tokens = Tensor::from_slice(&[0i64, 3, 4, 5]).view([1, 4]);
        let v = masked(0.2, 0.2).infer_view(&tokens, 4);
        assert_eq!(Vec::<i64>::try_from(v.tokens.view([-1])).unwrap(), vec![3, 4, 5, MASK], "oldest column dropped");
        assert!(TaskConfig::NextItem.infer_view(&tokens, 4).tokens.equal(&tokens));
        assert!(matches!(TaskConfig::PrefixLm.infer_view(&tokens, 4).attention, Attention::Bidirectional));
    }

    #[test]
    fn random_replacements_come_from_the_candidates_and_mixing_adds_a_causal_term() {
        tch::manual_seed(3);
        let items: Vec<i64> = (0..30).collect();
        let (tokens, targets) = batch(&items, 0);
        let task = TaskConfig::MaskedItem {
            mask_prob: 1.0,
            mask_last: 0.0,
            random_prob: 1.0,
            keep_prob: 0.0,
            next_item_weight: 0.5,
            locality: 4.0,
        };
        let views = task.train_views(&tokens, &targets, 64, 100, Some(&Tensor::from_slice(&[7i64, 9])));
        assert_eq!(views.len(), 2);
        let got: Vec<i64> = Vec::try_from(views[0].tokens.view([-1])).unwrap();
        assert!(got.iter().all(|&t| t == 8 || t == 10), "{got:?}");
        assert!(matches!(views[1].attention, Attention::Causal));
        assert_eq!(views[1].weight, 0.5);
    }

    #[test]
    fn bad_probabilities_name_their_field() {
        assert_eq!(masked(0.0, 0.2).validate().unwrap_err().0, "task.mask_prob");
        assert_eq!(masked(0.2, 1.5).validate().unwrap_err().0, "task.mask_last");
        let t = TaskConfig::MaskedItem {
            mask_prob: 0.2,
            mask_last: 0.2,
            random_prob: 0.6,
            keep_prob: 0.6,
            next_item_weight: 0.0,
            locality: 4.0,
        };
        assert_eq!(t.validate().unwrap_err().0, "task.random_prob");
        let parsed: TaskConfig = serde_json::from_str(r#"{"type":"masked_item"}"#).unwrap();
        assert_eq!(parsed, masked(0.2, 0.2));
        assert!(TaskConfig::PrefixLm.validate().is_ok());
    }
}
