//! One pre-norm Transformer block: `x + Attn(LN(x))`, then `x + FF(LN(x))`.
//!
//! Shared by the sequence model (causal mask) and the text encoder trained from scratch (key-padding mask): the mask
//! decides what attends to what, the block does not care.
//!
//! LoRA ([`Block::init_with_lora`], Hu et al. 2021): each of the four linear layers gets a low-rank update
//! `x A^T B^T * (alpha / r)` with `A` random and `B` zero, so a new block computes exactly what the block without it
//! does until `B` trains; parameter-efficient tuning trains only the `lora_a` / `lora_b` variables.

use crate::Mode;
use tch::nn::{self, Module};
use tch::Tensor;

/// A linear layer with an optional low-rank (LoRA) update.
#[derive(Debug)]
struct Linear {
    base: nn::Linear,
    /// `(A [r, in], B [out, r], alpha / r)`.
    lora: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    fn new(vs: nn::Path<'_>, d_in: i64, d_out: i64, rank: i64) -> Linear {
        let lora = (rank > 0).then(|| {
            let a = vs.randn("lora_a", &[rank, d_in], 0.0, (d_in as f64).powf(-0.5));
            let b = vs.zeros("lora_b", &[d_out, rank]);
            // alpha = 2 * rank, the common default: the update's scale does not depend on the rank.
            (a, b, 2.0)
        });
        Linear { base: nn::linear(vs, d_in, d_out, nn::LinearConfig::default()), lora }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let y = xs.apply(&self.base);
        match &self.lora {
            Some((a, b, scale)) => y + xs.matmul(&a.tr()).matmul(&b.tr()) * *scale,
            None => y,
        }
    }
}

#[derive(Debug)]
/// A pre-norm Transformer block (self-attention and feed-forward, each residual).
pub struct Block {
    ln_attn: nn::LayerNorm,
    qkv: Linear,
    out: Linear,
    ln_ff: nn::LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    n_heads: i64,
    dropout: f64,
}

impl Block {
    /// Creates the block's variables under `vs`: `ln_attn`, `attn/{qkv,out}`, `ln_ff`, `ff/{in,out}`.
    pub fn init(vs: &nn::Path<'_>, d_model: i64, n_heads: i64, d_ff: i64, dropout: f64) -> Block {
        Block::init_with_lora(vs, d_model, n_heads, d_ff, dropout, 0)
    }

    /// [`Block::init`] with LoRA updates of rank `lora_rank` (0: none) on the four linear layers, as variables
    /// `<layer>/lora_a` and `<layer>/lora_b`.
    pub fn init_with_lora(
        vs: &nn::Path<'_>,
        d_model: i64,
        n_heads: i64,
        d_ff: i64,
        dropout: f64,
        lora_rank: i64,
    ) -> Block {
        let ln = nn::LayerNormConfig::default();
        Block {
            ln_attn: nn::layer_norm(vs / "ln_attn", vec![d_model], ln),
            qkv: Linear::new(vs / "attn" / "qkv", d_model, 3 * d_model, lora_rank),
            out: Linear::new(vs / "attn" / "out", d_model, d_model, lora_rank),
            ln_ff: nn::layer_norm(vs / "ln_ff", vec![d_model], ln),
            ff_in: Linear::new(vs / "ff" / "in", d_model, d_ff, lora_rank),
            ff_out: Linear::new(vs / "ff" / "out", d_ff, d_model, lora_rank),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn lora_starts_as_the_plain_block_and_trains_its_own_variables() {
        crate::seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let plain = Block::init(&(vs.root() / "p"), 8, 2, 16, 0.0);
        let lora = Block::init_with_lora(&(vs.root() / "l"), 8, 2, 16, 0.0, 2);
        // Same base weights in both.
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, v) in &vars {
                if let Some(rest) = name.strip_prefix("p.") {
                    let mut dst = vars[&format!("l.{rest}")].shallow_clone();
                    dst.copy_(v);
                }
            }
        });
        let xs = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        let allowed = Tensor::ones([2, 1, 5, 5], (Kind::Bool, Device::Cpu));
        let (a, b) = (plain.forward(&xs, &allowed, Mode::Eval), lora.forward(&xs, &allowed, Mode::Eval));
        assert!((&a - &b).abs().max().double_value(&[]) < 1e-6, "B = 0: the same function");
        let names: Vec<&String> = vars.keys().filter(|n| n.contains("lora_")).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        lora.forward(&xs, &allowed, Mode::Train).sum(Kind::Float).backward();
        let g = vars["l.attn.qkv.lora_b"].grad();
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "B gets a gradient");
        tch::no_grad(|| {
            let _ = vars["l.ff.out.lora_b"].shallow_clone().g_add_(&vars["l.ff.out.lora_b"].randn_like());
        });
        let c = lora.forward(&xs, &allowed, Mode::Eval);
        assert!((&a - &c).abs().max().double_value(&[]) > 1e-4, "a trained B changes the output");
    }
}
