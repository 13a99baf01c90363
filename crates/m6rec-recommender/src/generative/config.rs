//! `[generative]` of a run file.

use m6rec_semantic::SemanticIdConfig;
use serde::{Deserialize, Serialize};

/// `[generative]`: semantic IDs and the beam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerativeConfig {
    /// How codes are fitted (`[generative.semantic_ids]`: levels, codes, iterations, seed).
    #[serde(default)]
    pub semantic_ids: SemanticIdConfig,
    /// Beam width of recommendation and evaluation (the most items a ranking holds). Default 20.
    #[serde(default = "d::beam")]
    pub beam: usize,
    /// Collision-level values reserved beyond those the catalog uses, so items added later (codes from their
    /// content) can be generated without retraining. Default 16.
    #[serde(default = "d::reserve")]
    pub reserve: usize,
    /// Users validated after each epoch (a seeded sample). Default 1000.
    #[serde(default = "d::valid_users")]
    pub valid_users: usize,
    /// How the next item's code is generated: `mlp` (a residual MLP step per code position, the default) or
    /// `transformer` (a causal Transformer over the state and the tokens chosen so far).
    #[serde(default)]
    pub decoder: m6rec_model::CodeDecoder,
    /// Blocks of the `transformer` decoder. Default 2.
    #[serde(default = "d::decoder_layers")]
    pub decoder_layers: usize,
}

mod d {
    pub fn beam() -> usize {
        20
    }
    pub fn reserve() -> usize {
        16
    }
    pub fn valid_users() -> usize {
        1000
    }
    pub fn decoder_layers() -> usize {
        2
    }
}

impl Default for GenerativeConfig {
    fn default() -> Self {
        GenerativeConfig {
            semantic_ids: SemanticIdConfig::default(),
            beam: d::beam(),
            reserve: d::reserve(),
            valid_users: d::valid_users(),
            decoder: m6rec_model::CodeDecoder::Mlp,
            decoder_layers: d::decoder_layers(),
        }
    }
}

impl GenerativeConfig {
    /// Checks the fields.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.semantic_ids.validate().map_err(|e| e.to_string())?;
        if !(1..=1000).contains(&self.beam) {
            return Err(format!("generative.beam is {}, must be 1 to 1000", self.beam));
        }
        if !(1..=8).contains(&self.decoder_layers) {
            return Err(format!("generative.decoder_layers is {}, must be 1 to 8", self.decoder_layers));
        }
        if self.reserve > 4096 {
            return Err(format!("generative.reserve is {}, at most 4096", self.reserve));
        }
        Ok(())
    }
}
