//! Adapting a pretrained model to a new domain (catalog), what `m6rec adapt` runs.
//!
//! - [`Method::Prompt`] (M6-Rec's option tuning): the pretrained model is frozen; only soft prompts read before every
//!   sequence (and, with a LoRA rank, low-rank updates of its attention and feed-forward layers) train, with what the
//!   new catalog needs that the pretrained model cannot give (catalog-sized tables, which `init_from` leaves fresh).
//! - [`Method::Full`]: every weight starts from the pretrained model and trains.
//! - [`Method::Scratch`]: the same config from random weights, for comparison.

use crate::{Error, Result, RunConfig, Trainer};
use std::path::Path;

/// How to adapt.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Soft prompts (`prompts`), LoRA updates of rank `lora`, and the variables whose names start with a prefix of
    /// `also` train; everything else the pretrained model gives stays frozen.
    Prompt {
        /// Soft prompts (0 with a LoRA rank: LoRA only).
        prompts: i64,
        /// LoRA rank (0: none).
        lora: i64,
        /// Name prefixes also trained, for example `tower.`.
        also: Vec<String>,
    },
    /// Fine-tune every weight.
    Full,
    /// Train from scratch (same config).
    Scratch,
}

/// An adaptation run.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapt {
    /// How.
    pub method: Method,
    /// Learning rate (`None`: the pretrained run's).
    pub lr: Option<f64>,
    /// `train.epochs` (`None`: the pretrained run's).
    pub epochs: Option<usize>,
    /// `train.max_seconds` (`None`: the pretrained run's).
    pub max_seconds: Option<f64>,
}

/// What [`Adapt::start`] did to the trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// Variables copied from the pretrained checkpoint.
    pub copied: Vec<String>,
    /// Variables left at their fresh initialisation (the new catalog's tables).
    pub fresh: Vec<String>,
    /// With [`Method::Prompt`]: (trainable, total) parameters.
    pub trainable: Option<(i64, i64)>,
}

impl Adapt {
    /// The run config for a new catalog whose items have `domains`: the pretrained `run` with the method's sizes
    /// and the overrides, no cold items, and the new catalog's domain vocabulary (its domain table then trains).
    pub fn config<'a>(&self, run: &RunConfig, domains: impl Iterator<Item = &'a str>) -> Result<RunConfig> {
        let mut cfg = run.clone();
        if let Method::Prompt { prompts, lora, .. } = self.method {
            if prompts < 0 || lora < 0 || prompts + lora == 0 {
                return Err(Error::InvalidInput(
                    "prompt tuning needs soft prompts or a LoRA rank (or both) above 0".into(),
                ));
            }
            cfg.model.prompts = prompts;
            cfg.model.lora_rank = lora;
        }
        if let Some(lr) = self.lr {
            cfg.optim.lr = lr;
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(s) = self.max_seconds {
            cfg.train.max_seconds = s;
        }
        cfg.train.cold_items = 0.0;
        if let Some(d) = &mut cfg.domains {
            d.vocab.clear();
        }
        cfg.fill_domain_vocab(domains);
        cfg.validate(Path::new("adapt"))?;
        Ok(cfg)
    }

    /// Loads the pretrained weights from `from` into `trainer` (not for [`Method::Scratch`]) and, for
    /// [`Method::Prompt`], freezes all but the prompts, the LoRA updates, the fresh tables and `also`.
    pub fn start(&self, trainer: &mut Trainer, from: &Path) -> Result<Started> {
        if self.method == Method::Scratch {
            return Ok(Started { copied: Vec::new(), fresh: Vec::new(), trainable: None });
        }
        let (copied, fresh) = trainer.init_from(from)?;
        let trainable = match &self.method {
            Method::Prompt { also, .. } => Some(trainer.freeze_except(|name| prompt_trains(name, &fresh, also))),
            _ => None,
        };
        Ok(Started { copied, fresh, trainable })
    }
}

/// Whether prompt tuning trains variable `name`.
fn prompt_trains(name: &str, fresh: &[String], also: &[String]) -> bool {
    name == "model.prompt"
        || name.contains(".lora_")
        || fresh.iter().any(|f| f == name)
        || also.iter().any(|p| name.starts_with(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tuning_needs_prompts_or_lora_and_trains_only_its_own_variables() -> Result<()> {
        let prompt = |prompts, lora| Adapt {
            method: Method::Prompt { prompts, lora, also: Vec::new() },
            lr: Some(1e-2),
            epochs: Some(3),
            max_seconds: None,
        };
        let err = prompt(0, 0).config(&RunConfig::default(), std::iter::empty()).expect_err("nothing to train");
        assert!(err.to_string().contains("soft prompts or a LoRA rank"), "{err}");
        assert!(prompt(-1, 4).config(&RunConfig::default(), std::iter::empty()).is_err());
        let cfg = prompt(8, 2).config(&RunConfig::default(), ["books"].into_iter())?;
        assert_eq!((cfg.model.prompts, cfg.model.lora_rank, cfg.optim.lr, cfg.train.epochs), (8, 2, 1e-2, 3));
        let fresh = vec!["model.item_emb.weight".to_string()];
        let also = vec!["tower.".to_string()];
        for (name, trains) in [
            ("model.prompt", true),
            ("model.blocks.0.attn.lora_a", true),
            ("model.item_emb.weight", true),
            ("tower.text.weight", true),
            ("model.blocks.0.attn.qkv.weight", false),
            ("model.pos_emb.weight", false),
        ] {
            assert_eq!(prompt_trains(name, &fresh, &also), trains, "{name}");
        }
        Ok(())
    }
}
