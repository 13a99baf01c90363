//! [`SeqBatch`]: left-padded item sequences with their lengths and next-item targets, validated at construction.
//!
//! Tokens are `item_idx + 1`; token 0 is padding. Sequences are left-padded so that the last position of every row is
//! the most recent item, the one whose output predicts the next item.

use crate::{Error, Result};
use tch::{Device, Tensor};

/// Target value at positions that carry no loss (padding).
pub const IGNORE: i64 = -100;

/// A validated batch. After construction, every token is in `0..=n_items` and every target in `0..n_items` or [`IGNORE`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeqBatch {
    b_sz: usize,
    seq_len: usize,
    tokens: Vec<i64>,
    targets: Vec<i64>,
    lengths: Vec<usize>,
}

impl SeqBatch {
    /// Builds a batch from raw parts, checking every invariant.
    ///
    /// - `tokens`, `targets`: row-major `[b_sz, seq_len]`
    /// - `lengths[b]`: real (non-padding) positions of row `b`, all at the right end of the row
    pub fn new(
        tokens: Vec<i64>,
        targets: Vec<i64>,
        lengths: Vec<usize>,
        seq_len: usize,
        n_items: usize,
    ) -> Result<SeqBatch> {
        let b_sz = lengths.len();
        if seq_len == 0 || tokens.len() != b_sz * seq_len || targets.len() != tokens.len() {
            return Err(Error::InvalidBatch(format!(
                "{} tokens and {} targets for {b_sz} rows of length {seq_len}",
                tokens.len(),
                targets.len()
            )));
        }
        let n = n_items as i64;
        for (b, &len) in lengths.iter().enumerate() {
            if len == 0 || len > seq_len {
                return Err(Error::InvalidBatch(format!("row {b}: length {len} not in 1..={seq_len}")));
            }
            let row = &tokens[b * seq_len..(b + 1) * seq_len];
            let tgt = &targets[b * seq_len..(b + 1) * seq_len];
            let pad = seq_len - len;
            for (t, (&tok, &y)) in row.iter().zip(tgt).enumerate() {
                let ok_tok = if t < pad { tok == 0 } else { (1..=n).contains(&tok) };
                if !ok_tok {
                    return Err(Error::InvalidBatch(format!(
                        "row {b} position {t}: token {tok} (padding 0 first, then 1..={n})"
                    )));
                }
                let ok_y = y == IGNORE || (t >= pad && (0..n).contains(&y));
                if !ok_y {
                    return Err(Error::InvalidBatch(format!(
                        "row {b} position {t}: target {y} not in 0..{n} or {IGNORE}"
                    )));
                }
            }
        }
        Ok(SeqBatch { b_sz, seq_len, tokens, targets, lengths })
    }

    /// Next-item training rows: for each sequence `s` (length ≥ 2), inputs `s[..n-1]` and targets `s[1..]`,
    /// keeping the last `max_len` positions.
    pub fn for_training(seqs: &[&[u32]], max_len: usize, n_items: usize) -> Result<SeqBatch> {
        let seq_len = seqs.iter().map(|s| s.len().saturating_sub(1).min(max_len)).max().unwrap_or(0);
        let mut tokens = vec![0i64; seqs.len() * seq_len];
        let mut targets = vec![IGNORE; seqs.len() * seq_len];
        let mut lengths = Vec::with_capacity(seqs.len());
        for (b, s) in seqs.iter().enumerate() {
            if s.len() < 2 {
                return Err(Error::InvalidBatch(format!(
                    "row {b}: a training sequence needs at least 2 items, got {}",
                    s.len()
                )));
            }
            let len = (s.len() - 1).min(max_len);
            let start = s.len() - 1 - len;
            let off = b * seq_len + (seq_len - len);
            for k in 0..len {
                tokens[off + k] = i64::from(s[start + k]) + 1;
                targets[off + k] = i64::from(s[start + k + 1]);
            }
            lengths.push(len);
        }
        SeqBatch::new(tokens, targets, lengths, seq_len.max(1), n_items)
    }

    /// Prediction rows: each history (non-empty) as input, last `max_len` items, no targets.
    pub fn for_prediction(histories: &[&[u32]], max_len: usize, n_items: usize) -> Result<SeqBatch> {
        let seq_len = histories.iter().map(|s| s.len().min(max_len)).max().unwrap_or(0);
        let mut tokens = vec![0i64; histories.len() * seq_len];
        let mut lengths = Vec::with_capacity(histories.len());
        for (b, h) in histories.iter().enumerate() {
            if h.is_empty() {
                return Err(Error::InvalidBatch(format!("row {b}: empty history")));
            }
            let len = h.len().min(max_len);
            let off = b * seq_len + (seq_len - len);
            for (k, &it) in h[h.len() - len..].iter().enumerate() {
                tokens[off + k] = i64::from(it) + 1;
            }
            lengths.push(len);
        }
        let targets = vec![IGNORE; tokens.len()];
        SeqBatch::new(tokens, targets, lengths, seq_len.max(1), n_items)
    }

    /// Rows.
    pub fn b_sz(&self) -> usize {
        self.b_sz
    }
    /// Positions per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// Real positions per row.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }
    /// Row-major tokens.
    pub fn tokens(&self) -> &[i64] {
        &self.tokens
    }
    /// Row-major targets.
    pub fn targets(&self) -> &[i64] {
        &self.targets
    }

    /// `[b_sz, seq_len]` int64 tokens on `device`.
    pub fn tokens_tensor(&self, device: Device) -> Result<Tensor> {
        self.tensor(&self.tokens, device)
    }
    /// `[b_sz, seq_len]` int64 targets (or [`IGNORE`]) on `device`.
    pub fn targets_tensor(&self, device: Device) -> Result<Tensor> {
        self.tensor(&self.targets, device)
    }

    fn tensor(&self, xs: &[i64], device: Device) -> Result<Tensor> {
        let shape =
            [m6rec_tensor::dim::to_i64("b_sz", self.b_sz)?, m6rec_tensor::dim::to_i64("seq_len", self.seq_len)?];
        Ok(Tensor::from_slice(xs).view(shape).to_device(device))
    }

    /// Per row, the real input items (`item_idx`) and their targets: the inverse of [`SeqBatch::for_training`].
    pub fn unbatch(&self) -> Vec<(Vec<u32>, Vec<i64>)> {
        (0..self.b_sz)
            .map(|b| {
                let lo = b * self.seq_len + self.seq_len - self.lengths[b];
                let hi = (b + 1) * self.seq_len;
                (self.tokens[lo..hi].iter().map(|&t| (t - 1) as u32).collect(), self.targets[lo..hi].to_vec())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn left_pads_and_shifts_targets() {
        let b = SeqBatch::for_training(&[&[4, 5, 6], &[1, 2]], 10, 10).unwrap();
        assert_eq!(b.seq_len(), 2);
        assert_eq!(b.tokens(), &[5, 6, 0, 2]);
        assert_eq!(b.targets(), &[5, 6, IGNORE, 2]);
        assert_eq!(b.lengths(), &[2, 1]);
    }

    #[test]
    fn rejects_bad_parts_with_location() {
        let err = SeqBatch::new(vec![0, 11], vec![IGNORE, 3], vec![1], 2, 10).unwrap_err();
        assert!(err.to_string().contains("row 0 position 1: token 11"), "{err}");
        let err = SeqBatch::new(vec![3, 4], vec![IGNORE, 3], vec![1], 2, 10).unwrap_err();
        assert!(err.to_string().contains("position 0: token 3"), "{err}");
        assert!(SeqBatch::for_prediction(&[&[]], 5, 10).is_err());
    }

    proptest! {
        /// Batching then un-batching returns each sequence's (truncated) inputs and shifted targets exactly once.
        #[test]
        fn batching_round_trips(seqs in proptest::collection::vec(proptest::collection::vec(0u32..50, 2..30), 1..10), max_len in 1usize..40) {
            let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
            let b = SeqBatch::for_training(&refs, max_len, 50).unwrap();
            for (s, (inp, tgt)) in seqs.iter().zip(b.unbatch()) {
                let len = (s.len() - 1).min(max_len);
                prop_assert_eq!(&inp[..], &s[s.len() - 1 - len..s.len() - 1]);
                let expect: Vec<i64> = s[s.len() - len..].iter().map(|&x| i64::from(x)).collect();
                prop_assert_eq!(tgt, expect);
            }
        }
    }
}
