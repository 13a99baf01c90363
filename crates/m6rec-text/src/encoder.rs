//! One config enum, one encoder type: a pretrained BERT-family model, or a small Transformer trained from scratch.

use std::path::{Path, PathBuf};

use m6rec_tensor::block::Block;
use m6rec_tensor::Mode;
use tch::nn::{self, Module};
use tch::Tensor;

use crate::bert::{l2_normalize, mean_pool, Bert, BertConfig};
use crate::tokenizer::{SubwordModel, TextTokenizer, TokenBatch};
use crate::{Error, Result};

/// Which text encoder to build (part of a run's TOML, tagged by `type`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextEncoderConfig {
    /// A pretrained BERT-family model from a Hugging Face folder, mean-pooled.
    Pretrained {
        /// Folder with `config.json`, `model.safetensors`, `tokenizer.json`.
        dir: PathBuf,
        /// Truncation length in tokens. Default 256 (sentence-transformers' setting for all-MiniLM-L6-v2).
        #[serde(default = "default_pretrained_len")]
        max_len: usize,
        /// L2-normalise the pooled embedding (sentence-transformers' `Normalize`). Default true.
        #[serde(default = "yes")]
        normalize: bool,
        /// Keep the pretrained weights fixed while the recommender trains. Default true.
        #[serde(default = "yes")]
        freeze: bool,
    },
    /// A small bidirectional Transformer trained with the recommender, over a tokenizer trained on the catalog.
    Scratch {
        /// Width (also the output size). Default 64.
        #[serde(default = "default_d_model")]
        d_model: i64,
        /// Layers. Default 2.
        #[serde(default = "default_layers")]
        n_layers: i64,
        /// Attention heads. Default 2.
        #[serde(default = "default_heads")]
        n_heads: i64,
        /// Truncation length in tokens. Default 64.
        #[serde(default = "default_scratch_len")]
        max_len: usize,
        /// Dropout. Default 0.1.
        #[serde(default = "default_dropout")]
        dropout: f64,
        /// Vocabulary size of the tokenizer trained on the catalog. Default 8000.
        #[serde(default = "default_vocab")]
        vocab_size: usize,
        /// Subword model for that tokenizer. Default WordPiece.
        #[serde(default = "default_subword")]
        subword: SubwordModel,
    },
}

fn default_pretrained_len() -> usize {
    256
}
fn yes() -> bool {
    true
}
fn default_d_model() -> i64 {
    64
}
fn default_layers() -> i64 {
    2
}
fn default_heads() -> i64 {
    2
}
fn default_scratch_len() -> usize {
    64
}
fn default_dropout() -> f64 {
    0.1
}
fn default_vocab() -> usize {
    8000
}
fn default_subword() -> SubwordModel {
    SubwordModel::WordPiece
}

impl TextEncoderConfig {
    /// A scratch encoder with every default.
    pub fn scratch() -> TextEncoderConfig {
        TextEncoderConfig::Scratch {
            d_model: default_d_model(),
            n_layers: default_layers(),
            n_heads: default_heads(),
            max_len: default_scratch_len(),
            dropout: default_dropout(),
            vocab_size: default_vocab(),
            subword: default_subword(),
        }
    }

    /// A pretrained encoder from `dir` with every default.
    pub fn pretrained(dir: impl Into<PathBuf>) -> TextEncoderConfig {
        TextEncoderConfig::Pretrained {
            dir: dir.into(),
            max_len: default_pretrained_len(),
            normalize: true,
            freeze: true,
        }
    }
}

#[derive(Debug)]
struct Scratch {
    tok_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    blocks: Vec<Block>,
    ln_out: nn::LayerNorm,
    dropout: f64,
}

#[derive(Debug)]
enum Net {
    Pretrained { bert: Bert, normalize: bool },
    Scratch(Scratch),
}

/// Texts in, one embedding per text out.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: TextTokenizer,
    net: Net,
    dim: i64,
}

impl TextEncoder {
    /// Builds the encoder under `vs`. A pretrained encoder loads its folder (and is frozen when asked); a scratch
    /// encoder trains its tokenizer on `corpus` (the catalog's texts).
    pub fn new<S: AsRef<str> + Send + Sync>(
        vs: &nn::Path<'_>,
        cfg: &TextEncoderConfig,
        corpus: &[S],
    ) -> Result<TextEncoder> {
        match cfg {
            TextEncoderConfig::Pretrained { dir, max_len, normalize, freeze } => {
                let mut enc = Self::pretrained(vs, dir, *max_len, *normalize)?;
                if *freeze {
                    enc.freeze();
                }
                Ok(enc)
            }
            TextEncoderConfig::Scratch { vocab_size, subword, max_len, .. } => {
                let tokenizer = TextTokenizer::train(
                    corpus.iter().map(|s| s.as_ref().to_owned()),
                    *subword,
                    *vocab_size,
                    *max_len,
                )?;
                Self::scratch(vs, cfg, tokenizer)
            }
        }
    }

    /// Loads a Hugging Face folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn pretrained(vs: &nn::Path<'_>, dir: &Path, max_len: usize, normalize: bool) -> Result<TextEncoder> {
        let file = |name: &'static str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::MissingFile { dir: dir.to_path_buf(), file: name })
            }
        };
        let cfg = BertConfig::load(&file("config.json")?)?;
        let weights = file("model.safetensors")?;
        let tokenizer = TextTokenizer::from_file(&file("tokenizer.json")?, max_len)?;
        if i64::try_from(max_len).map_or(true, |l| l > cfg.max_position_embeddings) {
            return Err(Error::Config(format!(
                "max_len {max_len} exceeds the model's max_position_embeddings {}",
                cfg.max_position_embeddings
            )));
        }
        let mut bert = Bert::new(vs, &cfg);
        bert.load_weights(&weights)?;
        Ok(TextEncoder { tokenizer, dim: cfg.hidden_size, net: Net::Pretrained { bert, normalize } })
    }

    /// A scratch encoder over a given tokenizer (its `max_len` bounds the positions).
    pub fn scratch(vs: &nn::Path<'_>, cfg: &TextEncoderConfig, tokenizer: TextTokenizer) -> Result<TextEncoder> {
        let TextEncoderConfig::Scratch { d_model, n_layers, n_heads, dropout, .. } = cfg else {
            return Err(Error::Config("TextEncoder::scratch needs a Scratch config".into()));
        };
        let (d_model, n_heads) = (*d_model, *n_heads);
        if d_model <= 0 || n_heads <= 0 || d_model % n_heads != 0 {
            return Err(Error::Config(format!("d_model {d_model} must be a positive multiple of n_heads {n_heads}")));
        }
        let vocab = m6rec_tensor::dim::to_i64("vocab_size", tokenizer.vocab_size())?;
        let max_len = m6rec_tensor::dim::to_i64("max_len", tokenizer.max_len())?;
        let scratch = Scratch {
            tok_emb: nn::embedding(vs / "tok_emb", vocab, d_model, Default::default()),
            pos_emb: nn::embedding(vs / "pos_emb", max_len, d_model, Default::default()),
            blocks: (0..*n_layers)
                .map(|i| Block::init(&(vs / "blocks" / i), d_model, n_heads, 4 * d_model, *dropout))
                .collect(),
            ln_out: nn::layer_norm(vs / "ln_out", vec![d_model], Default::default()),
            dropout: *dropout,
        };
        Ok(TextEncoder { tokenizer, dim: d_model, net: Net::Scratch(scratch) })
    }

    /// Stops gradients into the pretrained weights (a scratch encoder is left trainable).
    pub fn freeze(&mut self) {
        if let Net::Pretrained { bert, .. } = &mut self.net {
            for w in bert.weights() {
                let _ = w.requires_grad_(false);
            }
        }
    }

    /// Output size.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Embeds texts (tokenize, encode, pool).
    ///
    /// # Shapes
    /// - returns `[texts.len(), dim]` float, on `device`
    pub fn encode<S: AsRef<str>>(&self, texts: &[S], device: tch::Device, mode: Mode) -> Result<Tensor> {
        let batch = self.tokenizer.encode_batch(texts)?;
        self.encode_tokens(&batch, device, mode)
    }

    /// Embeds any number of texts in batches of `batch_size`, grouping texts of similar length (as
    /// sentence-transformers does, so little compute goes to padding); rows come back in input order.
    pub fn encode_all<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
        device: tch::Device,
        mode: Mode,
    ) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim], (tch::Kind::Float, device)));
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
        let mut parts = Vec::new();
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_ref()).collect();
            parts.push(self.encode(&batch, device, mode)?);
        }
        let sorted = Tensor::cat(&parts, 0);
        let mut inverse = vec![0i64; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = m6rec_tensor::dim::to_i64("text index", pos)?;
        }
        Ok(sorted.index_select(0, &Tensor::from_slice(&inverse).to_device(device)))
    }

    /// Embeds an already tokenized batch.
    pub fn encode_tokens(&self, batch: &TokenBatch, device: tch::Device, mode: Mode) -> Result<Tensor> {
        let (ids, mask) = batch.tensors()?;
        let (ids, mask) = (ids.to_device(device), mask.to_device(device));
        match &self.net {
            Net::Pretrained { bert, normalize } => {
                let pooled = mean_pool(&bert.forward(&ids, &mask)?, &mask);
                Ok(if *normalize { l2_normalize(&pooled) } else { pooled })
            }
            Net::Scratch(s) => {
                let len = ids.size()[1];
                let positions = Tensor::arange(len, (tch::Kind::Int64, device)).unsqueeze(0);
                let mut xs =
                    (s.tok_emb.forward(&ids) + s.pos_emb.forward(&positions)).dropout(s.dropout, mode.is_train());
                let allowed = m6rec_tensor::mask::key_padding(&mask.ne(0));
                for block in &s.blocks {
                    xs = block.forward(&xs, &allowed, mode);
                }
                Ok(mean_pool(&s.ln_out.forward(&xs), &mask))
            }
        }
    }
}
