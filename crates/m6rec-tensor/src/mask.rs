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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    }
}
