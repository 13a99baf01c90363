//! Training rows and batches: users' sequences cut into [`Span`]s, weighted by domain, shuffled per epoch and
//! grouped by length so that padding stays small.

use m6rec_data::{SeqBatch, Split};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// The epoch's rows under per-domain sampling weights: each span appears `floor(w)` times plus once more with
/// probability `w - floor(w)`, `w` being the weight of its newest item's domain. Without weights, `spans` as is.
fn weighted_spans(spans: &[Span], seqs: &[Vec<u32>], item_weight: &[f64], rng: &mut ChaCha8Rng) -> Vec<Span> {
    use rand::Rng;
    if item_weight.iter().all(|&w| w == 1.0) {
        return spans.to_vec();
    }
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let item = seqs[s.user][s.end - 1] as usize;
        let w = item_weight.get(item).copied().unwrap_or(1.0);
        let extra = usize::from(rng.random::<f64>() < w.fract());
        for _ in 0..(w.floor() as usize + extra) {
            out.push(*s);
        }
    }
    out
}

/// Pools of this many batches are sorted by length before they are cut (see [`plan_batches`]).
const POOL_BATCHES: usize = 100;

/// The batches of one epoch: rows weighted and shuffled by a generator seeded with `seed + epoch` (every rank and
/// every resume plans the same), then grouped by [`plan_batches`].
pub(crate) fn epoch_batches(
    spans: &[Span],
    seqs: &[Vec<u32>],
    item_weight: &[f64],
    t: &crate::config::TrainConfig,
    max_len: usize,
    epoch: usize,
) -> Vec<Vec<Span>> {
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed.wrapping_add(epoch as u64));
    let mut order = weighted_spans(spans, seqs, item_weight, &mut rng);
    order.shuffle(&mut rng);
    plan_batches(&order, max_len, t.batch_size, t.batch_tokens, t.buckets, &mut rng)
}

/// Groups an epoch's shuffled rows into batches; every row lands in exactly one.
///
/// - `batch_tokens == 0`: batches of `batch_size` rows (with `buckets`: a budget of `batch_size` × the mean row
///   length positions); otherwise as many rows as fit `batch_tokens` positions (rows × the longest row's length, at
///   least one row).
/// - `buckets`: the rows are taken in pools of `POOL_BATCHES` batches, each pool sorted by length (longest first,
///   stable) and cut, and the batches of all pools shuffled with `rng`; rows of a batch then have similar lengths and
///   padding stays small: a batch at least half full also closes before a row that would make over a tenth of it
///   padding. Without it the rows are cut in order and `rng` is not used.
pub fn plan_batches(
    order: &[Span],
    max_len: usize,
    batch_size: usize,
    batch_tokens: usize,
    buckets: bool,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<Span>> {
    let len = |s: &Span| (s.end - s.start).saturating_sub(1).min(max_len).max(1);
    let batch_size = batch_size.max(1);
    // Sorted batches of `batch_size` rows would weight targets unequally (a batch of short rows averages its loss over
    // fewer targets), so buckets without a budget get the budget of an average batch: `batch_size` rows of the mean
    // length. The step count stays that of `batch_size` rows, and every target weighs the same, as in shuffled batches.
    let batch_tokens = match (buckets, batch_tokens, order.len()) {
        (true, 0, n) if n > 0 => {
            let mean = order.iter().map(len).sum::<usize>() as f64 / n as f64;
            ((batch_size as f64 * mean).round() as usize).max(max_len)
        }
        _ => batch_tokens,
    };
    let mut out = Vec::new();
    let cut = |rows: &[Span], out: &mut Vec<Vec<Span>>| {
        let (mut cur, mut widest, mut real) = (Vec::new(), 0usize, 0usize);
        for s in rows {
            let l = len(s);
            let w = widest.max(l);
            let full = match batch_tokens {
                0 => cur.len() >= batch_size,
                _ => (cur.len() + 1) * w > batch_tokens,
            };
            // Sorted rows (buckets always have a budget, see above): a batch at least half full closes before a row
            // that would make over a tenth of it padding, so a short row waits for the next batch.
            let half = cur.len() * widest * 2 >= batch_tokens;
            let padded = buckets && half && (real + l) * 10 < (cur.len() + 1) * w * 9;
            if !cur.is_empty() && (full || padded) {
                out.push(std::mem::take(&mut cur));
                (widest, real) = (0, 0);
            }
            widest = widest.max(l);
            real += l;
            cur.push(*s);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    };
    if !buckets {
        cut(order, &mut out);
        return out;
    }
    // A pool holds about POOL_BATCHES batches' worth of real positions.
    let mut start = 0;
    while start < order.len() {
        let (mut end, mut filled) = (start, 0);
        while end < order.len() && filled < POOL_BATCHES * batch_tokens {
            filled += len(&order[end]);
            end += 1;
        }
        let mut pool = order[start..end].to_vec();
        pool.sort_by_key(|s| std::cmp::Reverse(len(s)));
        cut(&pool, &mut out);
        start = end;
    }
    out.shuffle(rng);
    out
}

/// Items a training batch touches (input tokens and targets), as item indices.
pub(crate) fn batch_items(batch: &SeqBatch) -> Tensor {
    let items: Vec<i64> = batch
        .tokens()
        .iter()
        .filter(|&&t| t > 0)
        .map(|&t| t - 1)
        .chain(batch.targets().iter().copied().filter(|&y| y >= 0))
        .collect();
    Tensor::from_slice(&items)
}

/// A slice `start..end` of one user's training sequence, trained as one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Dense user index.
    pub user: usize,
    /// First event.
    pub start: usize,
    /// One past the last event.
    pub end: usize,
}

/// Rows of an epoch. Without `windows`, one row per user (the last `max_len + 1` events). With `windows`, each
/// sequence is cut from the end into rows of at most `max_len + 1` events that overlap by one, so every training
/// transition is in exactly one row.
pub fn training_spans(split: &Split, max_len: usize, windows: bool) -> Vec<Span> {
    let mut out = Vec::new();
    for user in 0..split.n_users() {
        let n = split.train(user).len();
        let mut end = n;
        while end >= 2 {
            let start = end.saturating_sub(max_len + 1);
            out.push(Span { user, start, end });
            if start == 0 || !windows {
                break;
            }
            end = start + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Rows with lengths drawn like a 5-core Amazon catalog's: most users short, a long tail up to `max_len`.
    fn long_tailed_spans(n: usize, max_len: usize, seed: u64) -> Vec<Span> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|user| {
                let mut len = 3;
                while len < max_len + 20 && rng.random::<f64>() < 0.8 {
                    len += 1;
                }
                Span { user, start: 0, end: len }
            })
            .collect()
    }

    fn padding_of(batches: &[Vec<Span>], max_len: usize) -> f64 {
        let len = |s: &Span| (s.end - s.start - 1).min(max_len);
        let real: usize = batches.iter().flatten().map(len).sum();
        let computed: usize = batches.iter().map(|b| b.len() * b.iter().map(len).max().unwrap_or(0)).sum();
        1.0 - real as f64 / computed as f64
    }

    proptest! {
        /// Whatever the sizes, every row of the epoch is in exactly one batch, and a token budget is never exceeded
        /// by a batch of more than one row.
        #[test]
        fn batches_keep_every_row_exactly_once(
            n in 0usize..400, max_len in 1usize..60, batch_size in 1usize..70, batch_tokens in 0usize..500,
            buckets in proptest::bool::ANY, seed in 0u64..1000,
        ) {
            let batch_tokens = if batch_tokens == 0 { 0 } else { batch_tokens.max(max_len) };
            let spans = long_tailed_spans(n, max_len, seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let batches = plan_batches(&spans, max_len, batch_size, batch_tokens, buckets, &mut rng);
            let len = |s: &Span| (s.end - s.start - 1).min(max_len);
            // Buckets without a budget: that of an average batch of `batch_size` rows.
            let budget = match (buckets, batch_tokens) {
                (true, 0) if n > 0 => {
                    let mean = spans.iter().map(len).sum::<usize>() as f64 / n as f64;
                    ((batch_size as f64 * mean).round() as usize).max(max_len)
                }
                _ => batch_tokens,
            };
            let mut users: Vec<usize> = batches.iter().flatten().map(|s| s.user).collect();
            users.sort_unstable();
            prop_assert_eq!(users, (0..n).collect::<Vec<_>>());
            for b in &batches {
                prop_assert!(!b.is_empty());
                if budget == 0 {
                    prop_assert!(b.len() <= batch_size);
                } else if b.len() > 1 {
                    let widest = b.iter().map(len).max().unwrap_or(0);
                    prop_assert!(b.len() * widest <= budget, "{} rows of {} > {}", b.len(), widest, budget);
                }
            }
        }
    }

    #[test]
    fn buckets_keep_padding_under_a_tenth_on_long_tailed_lengths() {
        let max_len = 50;
        let spans = long_tailed_spans(20_000, max_len, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plain = plan_batches(&spans, max_len, 128, 0, false, &mut rng);
        let by_rows = plan_batches(&spans, max_len, 128, 0, true, &mut rng);
        let by_tokens = plan_batches(&spans, max_len, 128, 2048, true, &mut rng);
        let (p0, p1, p2) =
            (padding_of(&plain, max_len), padding_of(&by_rows, max_len), padding_of(&by_tokens, max_len));
        assert!(p0 > 0.5, "the unsorted batches are mostly padding ({p0:.3}): the case this guards");
        assert!(p1 < 0.1 && p2 < 0.1, "padding with buckets: {p1:.3} (rows), {p2:.3} (tokens)");
        // Short sequences (3 to 8 training events, as on Amazon Scientific): a length boundary inside a batch of
        // 128 would pad a quarter of it; batches close there instead.
        let short: Vec<Span> = (0..8_000).map(|u| Span { user: u, start: 0, end: 4 + u * 7 % 6 }).collect();
        let short_batches = plan_batches(&short, max_len, 128, 0, true, &mut rng);
        let p3 = padding_of(&short_batches, max_len);
        assert!(p3 < 0.1, "padding on short sequences: {p3:.3}");
        // About as many steps as batches of 128 rows (a budget of 128 mean rows), plus one per length boundary.
        let steps = short_batches.len();
        assert!((8_000 / 128..8_000 / 128 + 12).contains(&steps), "{steps} batches");
        // Every batch holds about the same number of targets, so every target weighs about the same.
        let sizes: Vec<usize> = short_batches.iter().map(|b| b.iter().map(|s| s.end - s.start - 1).sum()).collect();
        let full = sizes.iter().filter(|&&t| t * 2 >= *sizes.iter().max().unwrap_or(&0)).count();
        assert!(full * 10 >= steps * 8, "most batches are at least half the largest: {sizes:?}");
        // Shuffled batches: the first batches are not all the longest rows.
        let first: Vec<usize> = by_rows.iter().take(8).map(|b| b[0].end - b[0].start).collect();
        assert!(first.iter().any(|&l| l < max_len), "{first:?}");
    }

    #[test]
    fn windows_cover_every_transition_once() {
        let split = Split::from_sequences(vec![(0..12).collect(), vec![1, 2, 3, 4], vec![7]]);
        // User 0 trains on events 0..10 (the last two are valid/test): windows of at most 4 events.
        let spans = training_spans(&split, 3, true);
        let user0: Vec<(usize, usize)> = spans.iter().filter(|s| s.user == 0).map(|s| (s.start, s.end)).collect();
        assert_eq!(user0, vec![(6, 10), (3, 7), (0, 4)]);
        let transitions: usize = user0.iter().map(|(a, b)| b - a - 1).sum();
        assert_eq!(transitions, 9);
        assert_eq!(spans.iter().filter(|s| s.user == 1).count(), 1);
        assert!(spans.iter().all(|s| s.user != 2));
        assert_eq!(training_spans(&split, 3, false).iter().filter(|s| s.user == 0).count(), 1);
    }
}
