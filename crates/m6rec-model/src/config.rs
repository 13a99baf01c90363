use crate::{Error, Result};
pub use m6rec_objective::{LossConfig, TaskConfig};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`crate::SeqRec`]. `n_items` comes from the dataset, everything else from the run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqRecConfig {
    /// Width of item, position and hidden vectors. Default 64.
    #[serde(default = "d::d_model")]
    pub d_model: i64,
    /// Transformer blocks. Default 2.
    #[serde(default = "d::n_layers")]
    pub n_layers: i64,
    /// Attention heads; must divide `d_model`. Default 2.
    #[serde(default = "d::n_heads")]
    pub n_heads: i64,
    /// Feed-forward width. Default `4 * d_model` when 0.
    #[serde(default)]
    pub d_ff: i64,
    /// Longest history the model reads (older items are dropped). Default 200.
    #[serde(default = "d::max_len")]
    pub max_len: i64,
    /// Dropout on embeddings, attention and feed-forward, in `Mode::Train` only. Default 0.2.
    #[serde(default = "d::dropout")]
    pub dropout: f64,
    /// Training objective ([`m6rec_objective`]).
    #[serde(default)]
    pub loss: LossConfig,
    /// Pretraining task ([`m6rec_objective::task`]): next-item (default), masked-item or prefix-LM.
    #[serde(default, skip_serializing_if = "is_next_item")]
    pub task: TaskConfig,
    /// Soft prompts: this many learned vectors read before every sequence (M6-Rec's option tuning; `m6rec adapt`
    /// trains only them on a frozen model). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompts: i64,
    /// LoRA rank of the attention and feed-forward layers (0: none). `m6rec adapt --lora R` trains only these
    /// low-rank updates (and the prompts) on a frozen model. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lora_rank: i64,
}

fn is_zero(x: &i64) -> bool {
    *x == 0
}

fn is_next_item(t: &TaskConfig) -> bool {
    *t == TaskConfig::NextItem
}

mod d {
    pub fn d_model() -> i64 {
        64
    }
    pub fn n_layers() -> i64 {
        2
    }
    pub fn n_heads() -> i64 {
        2
    }
    pub fn max_len() -> i64 {
        200
    }
    pub fn dropout() -> f64 {
        0.2
    }
}

impl Default for SeqRecConfig {
    fn default() -> Self {
        SeqRecConfig {
            d_model: d::d_model(),
            n_layers: d::n_layers(),
            n_heads: d::n_heads(),
            d_ff: 0,
            max_len: d::max_len(),
            dropout: d::dropout(),
            loss: LossConfig::default(),
            task: TaskConfig::default(),
            prompts: 0,
            lora_rank: 0,
        }
    }
}

/// Largest `d_model` (and `lora_rank`) a config may ask for.
pub const MAX_D_MODEL: i64 = 8192;
/// Largest `n_layers`.
pub const MAX_LAYERS: i64 = 256;
/// Largest `max_len` (and `prompts`).
pub const MAX_LEN: i64 = 16_384;
/// Most parameters the Transformer blocks together may hold (2³¹, 8 GiB of f32).
pub const MAX_BLOCK_PARAMS: i64 = 1 << 31;

impl SeqRecConfig {
    /// Feed-forward width after defaults.
    pub fn d_ff(&self) -> i64 {
        if self.d_ff > 0 {
            self.d_ff
        } else {
            4 * self.d_model
        }
    }

    /// Checks every field; [`crate::SeqRec::init`] calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.d_model < 1 {
            return bad("d_model", format!("is {}, must be at least 1", self.d_model));
        }
        if self.n_heads < 1 || self.d_model % self.n_heads != 0 {
            return bad("n_heads", format!("{} does not divide d_model {}", self.n_heads, self.d_model));
        }
        if self.n_layers < 0 || self.d_ff < 0 {
            return bad("n_layers", "and d_ff must not be negative".into());
        }
        if self.max_len < 1 {
            return bad("max_len", format!("is {}, must be at least 1", self.max_len));
        }
        if self.prompts < 0 || self.lora_rank < 0 {
            return bad(
                "prompts",
                format!("({}) and lora_rank ({}) must not be negative", self.prompts, self.lora_rank),
            );
        }
        // Sizes a model on one machine can hold: beyond them libtorch panics or the process is killed for memory
        // (a config.json with d_model 1e9 or n_layers 1e5) instead of an error naming the field.
        let limits = [
            ("d_model", self.d_model, MAX_D_MODEL),
            ("n_layers", self.n_layers, MAX_LAYERS),
            ("d_ff", self.d_ff, 8 * MAX_D_MODEL),
            ("max_len", self.max_len, MAX_LEN),
            ("prompts", self.prompts, MAX_LEN),
            ("lora_rank", self.lora_rank, MAX_D_MODEL),
        ];
        if let Some((field, v, max)) = limits.into_iter().find(|&(_, v, max)| v > max) {
            return bad(field, format!("is {v}, more than the supported {max}"));
        }
        let block = 4 * self.d_model * self.d_model + 2 * self.d_model * self.d_ff();
        if self.n_layers.saturating_mul(block) > MAX_BLOCK_PARAMS {
            return bad(
                "n_layers",
                format!(
                    "{} layers of d_model {} and d_ff {} hold {} parameters, more than the supported {MAX_BLOCK_PARAMS}",
                    self.n_layers,
                    self.d_model,
                    self.d_ff(),
                    self.n_layers.saturating_mul(block)
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("is {}, must be in [0, 1)", self.dropout));
        }
        if let Err((field, reason)) = self.loss.validate().and_then(|()| self.task.validate()) {
            return bad(field, reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 19, 9): sizes from a hostile or corrupt config.json are errors naming the field, not a
    /// libtorch panic or an allocation that gets the process killed.
    #[test]
    fn sizes_beyond_one_machine_are_refused_by_field() {
        let d = SeqRecConfig::default();
        for (cfg, field) in [
            (SeqRecConfig { d_model: 1_000_000_000, n_heads: 1, ..d.clone() }, "d_model"),
            (SeqRecConfig { n_layers: 100_000, ..d.clone() }, "n_layers"),
            (SeqRecConfig { max_len: 10_000_000, ..d.clone() }, "max_len"),
            (SeqRecConfig { d_model: 8192, n_heads: 1, n_layers: 256, ..d.clone() }, "n_layers"),
            (SeqRecConfig { d_ff: 100_000_000, ..d.clone() }, "d_ff"),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{cfg:?}: {err}");
        }
        assert!(SeqRecConfig::default().validate().is_ok());
        let big = SeqRecConfig { d_model: 1024, n_heads: 16, n_layers: 24, ..SeqRecConfig::default() };
        assert!(big.validate().is_ok(), "a large but real model stays allowed");
    }
}
