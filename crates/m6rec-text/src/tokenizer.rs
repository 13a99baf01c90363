//! Tokenization: load a Hugging Face `tokenizer.json`, or train a WordPiece/BPE tokenizer on the catalog's text.

use std::path::{Path, PathBuf};

use tch::Tensor;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationParams, TruncationStrategy};

use crate::{Error, Result};

/// The special tokens of every tokenizer we train, in id order: padding is id 0.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Which subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubwordModel {
    /// BERT's WordPiece (`##` continuation prefix).
    WordPiece,
    /// Byte-pair encoding.
    Bpe,
}

/// Token ids of a batch of texts, padded on the right to the longest text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// `n * len` token ids, row-major; padding is the tokenizer's pad id.
    pub ids: Vec<i64>,
    /// `n * len`, 1 at real tokens and 0 at padding.
    pub mask: Vec<i64>,
    /// Number of texts.
    pub n: usize,
    /// Padded length (at least 1).
    pub len: usize,
}

impl TokenBatch {
    /// `([n, len] int64 ids, [n, len] int64 attention mask)`.
    pub fn tensors(&self) -> Result<(Tensor, Tensor)> {
        let shape = [m6rec_tensor::dim::to_i64("batch size", self.n)?, m6rec_tensor::dim::to_i64("tokens", self.len)?];
        Ok((Tensor::from_slice(&self.ids).view(shape), Tensor::from_slice(&self.mask).view(shape)))
    }
}

/// A tokenizer plus the truncation length and padding id the encoders use.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

fn tok_err(path: Option<&Path>, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer { path: path.map(Path::to_path_buf), message: e.to_string() }
}

impl TextTokenizer {
    /// Loads any Hugging Face `tokenizer.json`; texts are truncated to `max_len` tokens (special tokens included).
    pub fn from_file(path: &Path, max_len: usize) -> Result<TextTokenizer> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such tokenizer file"),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| tok_err(Some(path), e))?;
        Self::wrap(inner, max_len, Some(path))
    }

    fn wrap(mut inner: Tokenizer, max_len: usize, path: Option<&Path>) -> Result<TextTokenizer> {
        if max_len < 2 {
            return Err(Error::Config(format!("max_len must be at least 2 (room for [CLS] and [SEP]), got {max_len}")));
        }
        // We pad ourselves (to the batch's longest text); truncation is ours too, whatever the file says.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| tok_err(path, e))?;
        let pad_id = inner.token_to_id("[PAD]").or_else(|| inner.token_to_id("<pad>")).unwrap_or(0);
        Ok(TextTokenizer { inner, pad_id, max_len })
    }

    /// Trains a BERT-style tokenizer (lower-casing normaliser, whitespace/punctuation pre-tokenizer, `[CLS] … [SEP]`)
    /// on `texts`, with at most `vocab_size` tokens including [`SPECIAL_TOKENS`].
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        model: SubwordModel,
        vocab_size: usize,
        max_len: usize,
    ) -> Result<TextTokenizer> {
        if vocab_size <= SPECIAL_TOKENS.len() {
            return Err(Error::Config(format!("vocab_size must exceed the {} special tokens", SPECIAL_TOKENS.len())));
        }
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
        // Only the subword model and its trainer differ; the BERT pipeline around them is shared.
        let (mut tokenizer, mut trainer): (Tokenizer, TrainerWrapper) = match model {
            SubwordModel::WordPiece => (
                Tokenizer::new(WordPiece::builder().unk_token("[UNK]".into()).build().map_err(|e| tok_err(None, e))?),
                WordPieceTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(2)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .into(),
            ),
            SubwordModel::Bpe => (
                Tokenizer::new(BPE::builder().unk_token("[UNK]".into()).build().map_err(|e| tok_err(None, e))?),
                BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(2)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .into(),
            ),
        };
        setup_bert_pipeline(&mut tokenizer)?;
        tokenizer.train(&mut trainer, texts).map_err(|e| tok_err(None, e))?;
        let cls = tokenizer.token_to_id("[CLS]").unwrap_or(2);
        let sep = tokenizer.token_to_id("[SEP]").unwrap_or(3);
        tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::wrap(tokenizer, max_len, None)
    }

    /// Saves as a standard `tokenizer.json` (atomically), loadable by [`TextTokenizer::from_file`] and by Python.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| tok_err(Some(path), e))?;
        Ok(m6rec_tensor::atomic::write_bytes(path, json.as_bytes())?)
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The padding id (`[PAD]`'s id, or 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Truncation length in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokens of `text` as the encoder reads it: special tokens included, truncated to `max_len` (what encoding it
    /// costs, known before any encoder work).
    pub fn count(&self, text: &str) -> Result<usize> {
        let enc = self.inner.encode(text, true).map_err(|e| tok_err(None, e))?;
        Ok(enc.get_ids().len().min(self.max_len))
    }

    /// Encodes a batch with special tokens, truncated to `max_len` and right-padded to the longest text.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self.inner.encode_batch(inputs, true).map_err(|e| tok_err(None, e))?;
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let n = encodings.len();
        let mut ids = vec![i64::from(self.pad_id); n * len];
        let mut mask = vec![0i64; n * len];
        for (row, enc) in encodings.iter().enumerate() {
            for (col, &id) in enc.get_ids().iter().enumerate() {
                ids[row * len + col] = i64::from(id);
                mask[row * len + col] = 1;
            }
        }
        Ok(TokenBatch { ids, mask, n, len })
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

fn setup_bert_pipeline(t: &mut Tokenizer) -> Result<()> {
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(|e| tok_err(None, e))?;
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    Ok(())
}

/// The default tokenizer file inside a model folder.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}
