//! m6rec's text modality: tokenize item text and embed it.
//!
//! # Brief overview
//! - [`TextTokenizer`]: load any Hugging Face `tokenizer.json`, or [train](TextTokenizer::train) a WordPiece/BPE
//!   tokenizer on the catalog's text and [save](TextTokenizer::save) it; batches are truncated and right-padded.
//! - [`TextEncoderConfig`] → [`TextEncoder::new`]: either a pretrained BERT-family model from a Hugging Face folder
//!   (`config.json`, `model.safetensors`, `tokenizer.json`; mean pooling, optional L2 normalisation, as
//!   sentence-transformers computes sentence embeddings), or a small Transformer trained from scratch.
//! - [`bert`]: the BERT encoder itself and its pooling functions.
//!
//! ```
//! use m6rec_text::{TextEncoder, TextEncoderConfig};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let corpus = ["a quiet film about the sea", "a loud film about cars", "the sea, the sea"];
//! let enc = TextEncoder::new(&(vs.root() / "text"), &TextEncoderConfig::scratch(), &corpus)?;
//! let emb = enc.encode(&corpus, tch::Device::Cpu, m6rec_tensor::Mode::Eval)?;
//! assert_eq!(emb.size(), vec![3, enc.dim()]);
//! # Ok::<(), m6rec_text::Error>(())
//! ```
#![deny(missing_docs)]

pub mod bert;
mod encoder;
mod error;
mod tokenizer;

pub use encoder::{TextEncoder, TextEncoderConfig};
pub use error::{Error, Result};
pub use tokenizer::{tokenizer_path, SubwordModel, TextTokenizer, TokenBatch, SPECIAL_TOKENS};
