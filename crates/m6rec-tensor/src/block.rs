//! One pre-norm Transformer block: `x + Attn(LN(x))`, then `x + FF(LN(x))`.
//!
//! Shared by the sequence model (causal mask) and the text encoder trained from scratch (key-padding mask): the mask
//! decides what attends to what, the block does not care.

use crate::Mode;
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
/// A pre-norm Transformer block (self-attention and feed-forward, each residual).
pub struct Block {
    ln_attn: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    ln_ff: nn::LayerNorm,
    ff_in: nn::Linear,
    ff_out: nn::Linear,
    n_heads: i64,
    dropout: f64,
}

impl Block {
    /// Creates the block's variables under `vs`: `ln_attn`, `attn/{qkv,out}`, `ln_ff`, `ff/{in,out}`.
    pub fn init(vs: &nn::Path<'_>, d_model: i64, n_heads: i64, d_ff: i64, dropout: f64) -> Block {
        let ln = nn::LayerNormConfig::default();
        let lin = nn::LinearConfig::default();
        Block {
            ln_attn: nn::layer_norm(vs / "ln_attn", vec![d_model], ln),
            qkv: nn::linear(vs / "attn" / "qkv", d_model, 3 * d_model, lin),
            out: nn::linear(vs / "attn" / "out", d_model, d_model, lin),
            ln_ff: nn::layer_norm(vs / "ln_ff", vec![d_model], ln),
            ff_in: nn::linear(vs / "ff" / "in", d_model, d_ff, lin),
            ff_out: nn::linear(vs / "ff" / "out", d_ff, d_model, lin),
            n_heads,
            dropout,
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// - `xs`: `[b_sz, seq_len, d_model]`; `allowed`: bool, broadcastable to `[b_sz, 1, seq_len, seq_len]`
    ///   (true = may attend), for example `[b_sz, 1, 1, seq_len]` for key padding only
    /// - returns `[b_sz, seq_len, d_model]`
    pub fn forward(&self, xs: &Tensor, allowed: &Tensor, mode: Mode) -> Tensor {
        let (b_sz, seq_len, d_model) = xs.size3().unwrap_or((0, 0, 0));
        let d_head = d_model / self.n_heads;
        let qkv = self.ln_attn.forward(xs).apply(&self.qkv); // [b, L, 3d]
        let heads = |t: Tensor| t.view([b_sz, seq_len, self.n_heads, d_head]).transpose(1, 2); // [b, h, L, dh]
        let mut parts = qkv.chunk(3, -1).into_iter();
        let (q, k, v) = match (parts.next(), parts.next(), parts.next()) {
            (Some(q), Some(k), Some(v)) => (heads(q), heads(k), heads(v)),
            _ => unreachable!("chunk(3) returns three parts"),
        };
        let p = if mode.is_train() { self.dropout } else { 0.0 };
        let att = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(allowed), p, false, None, false); // [b, h, L, dh]
        let att = att.transpose(1, 2).contiguous().view([b_sz, seq_len, d_model]);
        let xs = xs + att.apply(&self.out).dropout(self.dropout, mode.is_train());
        let ff = self
            .ln_ff
            .forward(&xs)
            .apply(&self.ff_in)
            .gelu("none")
            .dropout(self.dropout, mode.is_train())
            .apply(&self.ff_out);
        &xs + ff.dropout(self.dropout, mode.is_train())
    }
}
