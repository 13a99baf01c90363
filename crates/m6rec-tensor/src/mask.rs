//! Attention masks. `true` means "may attend", as `scaled_dot_product_attention` expects for boolean masks.

use tch::{Device, Kind, Tensor};

/// Lower-triangular `[seq_len, seq_len]` mask: position `t` sees `0..=t`.
pub fn causal(seq_len: i64, device: Device) -> Tensor {
    Tensor::ones([seq_len, seq_len], (Kind::Bool, device)).tril(0)
}

/// Causal mask that also hides padded keys.
///
/// # Shapes
/// - `valid`: `[b_sz, seq_len]` bool, `true` at real (non-padding) positions
/// - returns `[b_sz, 1, seq_len, seq_len]` bool, broadcast over heads
///
/// Every query may always attend to itself, so rows of padding positions are never fully masked (which would give NaN).
pub fn causal_with_padding(valid: &Tensor) -> Tensor {
    let seq_len = valid.size()[1];
    let device = valid.device();
    let causal = causal(seq_len, device).unsqueeze(0); // [1, L, L]
    let keys = valid.unsqueeze(1); // [b, 1, L]
    let diag = Tensor::eye(seq_len, (Kind::Bool, device)).unsqueeze(0); // [1, L, L]
    causal.logical_and(&keys.logical_or(&diag)).unsqueeze(1) // [b, 1, L, L]
}

/// Bidirectional mask that hides padded keys (for encoders: every token sees every real token).
///
/// # Shapes
/// - `valid`: `[b_sz, seq_len]` bool, `true` at real positions; each row must have at least one real position
/// - returns `[b_sz, 1, 1, seq_len]` bool, broadcast over heads and queries
pub fn key_padding(valid: &Tensor) -> Tensor {
    valid.unsqueeze(1).unsqueeze(1)
}

/// Every real position sees every real position (and itself, so padded rows never attend to nothing).
///
/// # Shapes
/// - `valid`: `[b_sz, seq_len]` bool; returns `[b_sz, 1, seq_len, seq_len]` bool
pub fn bidirectional_with_padding(valid: &Tensor) -> Tensor {
    let seq_len = valid.size()[1];
    let diag = Tensor::eye(seq_len, (Kind::Bool, valid.device())).unsqueeze(0); // [1, L, L]
    valid.unsqueeze(1).logical_or(&diag).unsqueeze(1)
}

/// The prefix-LM mask (M6's): positions before `start` (the *prefix*) see each other in both directions; a position
/// at or after `start` sees the whole prefix and itself and earlier positions (the *autoregressive region*).
/// Padded keys are hidden, except a query's own position.
///
/// # Shapes
/// - `valid`: `[b_sz, seq_len]` bool
/// - `start`: `[b_sz]` int64, each row's first autoregressive position (`seq_len`: the whole row is prefix; `0`: causal)
/// - returns `[b_sz, 1, seq_len, seq_len]` bool
pub fn prefix_with_padding(valid: &Tensor, start: &Tensor) -> Tensor {
    let seq_len = valid.size()[1];
    let device = valid.device();
    let causal = causal(seq_len, device).unsqueeze(0); // [1, L, L]
    let keys = Tensor::arange(seq_len, (Kind::Int64, device)).view([1, 1, seq_len]);
    let in_prefix = keys.lt_tensor(&start.to_device(device).view([-1, 1, 1])); // [b, 1, L]: key k is in row b's prefix
    let diag = Tensor::eye(seq_len, (Kind::Bool, device)).unsqueeze(0);
    causal.logical_or(&in_prefix).logical_and(&valid.unsqueeze(1)).logical_or(&diag).unsqueeze(1)
}

/// A boolean mask `[b, 1, L, L]` as an additive float mask `[b, n_heads, L, L]` that also prefers near positions:
/// head `i` adds `-slope · 4^-i · |q - k|` to the score of key `k` for query `q` (ALiBi-style, Press et al. 2022),
/// `-inf` where the boolean mask forbids. Bidirectional tasks need it: a masked position must learn to read its
/// neighbours through attention alone (a causal model has its own item on the residual path), which plain position
/// embeddings learn slowly on small data.
pub fn with_locality(allowed: &Tensor, slope: f64, n_heads: i64) -> Tensor {
    let n = allowed.size().last().copied().unwrap_or(0);
    let device = allowed.device();
    let pos = Tensor::arange(n, (Kind::Float, device));
    let dist = (pos.view([n, 1]) - pos.view([1, n])).abs().view([1, 1, n, n]);
    let slopes: Vec<f32> = (0..n_heads).map(|i| (slope * 0.25f64.powi(i as i32)) as f32).collect();
    let bias = -(dist * Tensor::from_slice(&slopes).to_device(device).view([1, n_heads, 1, 1]));
    bias.where_self(allowed, &Tensor::from(f32::NEG_INFINITY).to_device(device))
}

/// Which positions a sequence model's positions may read: what a pretraining objective chooses (see
/// `m6rec-objective`'s tasks), built into a boolean mask by [`Attention::mask`].
#[derive(Debug)]
pub enum Attention {
    /// Position `t` reads `0..=t` (next-item prediction).
    Causal,
    /// Every position reads every position (masked-item prediction, BERT4Rec's Cloze task).
    Bidirectional,
    /// Prefix-LM: `[b_sz]` int64, each row's first autoregressive position (see [`prefix_with_padding`]).
    Prefix(Tensor),
}

impl Attention {
    /// The `[b_sz, 1, seq_len, seq_len]` mask for rows whose real positions are `valid` (`[b_sz, seq_len]` bool),
    /// after `lead` positions that every row has and every position reads (soft prompts: they belong to the prefix).
    pub fn mask(&self, valid: &Tensor, lead: i64) -> Tensor {
        match self {
            Attention::Causal => causal_with_padding(valid),
            Attention::Bidirectional => bidirectional_with_padding(valid),
            Attention::Prefix(start) => prefix_with_padding(valid, &(start + lead)),
        }
    }

    /// A copy sharing the tensor's storage.
    pub fn shallow_clone(&self) -> Attention {
        match self {
            Attention::Causal => Attention::Causal,
            Attention::Bidirectional => Attention::Bidirectional,
            Attention::Prefix(s) => Attention::Prefix(s.shallow_clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed(m: &Tensor, b: i64, q: i64, k: i64) -> bool {
        m.int64_value(&[b, 0, q, k]) == 1
    }

    proptest! {
        /// The causal mask never lets position t see t+1 (or later), whatever the padding.
        #[test]
        fn never_sees_the_future(len in 1i64..12, pads in proptest::collection::vec(any::<bool>(), 12)) {
            let valid: Vec<bool> = pads[..len as usize].to_vec();
            let m = causal_with_padding(&Tensor::from_slice(&valid).view([1, len]));
            for q in 0..len {
                prop_assert!(m.int64_value(&[0, 0, q, q]) == 1, "a query must see itself");
                for k in 0..len {
                    let allowed = m.int64_value(&[0, 0, q, k]) == 1;
                    if k > q { prop_assert!(!allowed, "query {} sees future key {}", q, k); }
                    if k < q { prop_assert_eq!(allowed, valid[k as usize]); }
                }
            }
        }

        /// Prefix-LM: a position in the autoregressive region (or the prefix's last, which predicts the first item
        /// after it) never sees a later position; prefix positions see the whole real prefix; padding stays hidden.
        #[test]
        fn prefix_never_lets_a_predicting_position_see_later_items(
            len in 1i64..12,
            pad in 0i64..6,
            start_at in 0i64..14,
        ) {
            let pad = pad.min(len - 1);
            let valid: Vec<bool> = (0..len).map(|t| t >= pad).collect();
            let start = start_at.clamp(pad, len);
            let m = prefix_with_padding(&Tensor::from_slice(&valid).view([1, len]), &Tensor::from_slice(&[start]));
            for q in 0..len {
                prop_assert!(allowed(&m, 0, q, q), "a query must see itself");
                for k in 0..len {
                    let a = allowed(&m, 0, q, k);
                    if k != q && !valid[k as usize] { prop_assert!(!a, "query {} sees padded key {}", q, k); }
                    if q + 1 >= start && k > q { prop_assert!(!a, "predicting query {} sees later key {}", q, k); }
                    if q < start && k < start && valid[k as usize] { prop_assert!(a, "prefix query {} misses prefix key {}", q, k); }
                    if k <= q && valid[k as usize] { prop_assert!(a, "query {} misses earlier key {}", q, k); }
                }
            }
            // A prefix of the whole row is bidirectional; an empty one is causal.
            let v = Tensor::from_slice(&valid).view([1, len]);
            prop_assert!(prefix_with_padding(&v, &Tensor::from_slice(&[len])).equal(&bidirectional_with_padding(&v)));
            prop_assert!(prefix_with_padding(&v, &Tensor::from_slice(&[0i64])).equal(&causal_with_padding(&v)));
        }
    }

    #[test]
    fn locality_keeps_what_is_forbidden_forbidden_and_prefers_neighbours() {
        let valid = Tensor::from_slice(&[false, true, true, true]).view([1, 4]);
        let allowed = bidirectional_with_padding(&valid);
        let bias = with_locality(&allowed, 2.0, 2);
        assert_eq!(bias.size(), vec![1, 2, 4, 4]);
        assert!(bias.double_value(&[0, 0, 2, 0]).is_infinite(), "a padded key stays hidden");
        assert_eq!(bias.double_value(&[0, 0, 2, 2]), 0.0);
        assert_eq!(bias.double_value(&[0, 0, 2, 3]), -2.0);
        assert_eq!(bias.double_value(&[0, 1, 1, 3]), -1.0, "the second head's slope is a quarter");
    }

    #[test]
    fn leading_prompts_join_the_prefix() {
        let valid = Tensor::from_slice(&[true, true, true, true]).view([1, 4]);
        // Two prompts then two items; the prefix is the first item (start 1 in item positions, 3 after the prompts).
        let m = Attention::Prefix(Tensor::from_slice(&[1i64])).mask(&valid, 2);
        assert!(allowed(&m, 0, 0, 2), "a prompt reads the prefix item");
        assert!(!allowed(&m, 0, 2, 3), "the prefix's last item does not read the item after it");
        assert!(allowed(&m, 0, 3, 0), "items read the prompts");
    }
}
