//! A BERT-family encoder (BERT, MiniLM, …) loaded from a Hugging Face folder, post-norm as in the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The fields of Hugging Face's `config.json` that a BERT encoder needs.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Width.
    pub hidden_size: i64,
    /// Number of layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Feed-forward width.
    pub intermediate_size: i64,
    /// Longest input, in tokens.
    pub max_position_embeddings: i64,
    /// Number of segment types (usually 2).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Feed-forward activation (`gelu`, `gelu_new`, `relu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Model family, checked against what we implement.
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::BadConfig { path: path.to_path_buf(), message: e.to_string() })?;
        let bad = |message: String| Error::BadConfig { path: path.to_path_buf(), message };
        if let Some(kind) = &cfg.model_type {
            if !matches!(kind.as_str(), "bert" | "roberta" | "xlm-roberta" | "distilbert" | "mpnet" | "bert-like") {
                return Err(bad(format!("model_type {kind:?} is not a BERT-family encoder")));
            }
        }
        if cfg.hidden_size <= 0 || cfg.num_attention_heads <= 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size {} must be a positive multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if !matches!(cfg.hidden_act.as_str(), "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu") {
            return Err(bad(format!("hidden_act {:?} is not supported (gelu, gelu_new, relu)", cfg.hidden_act)));
        }
        Ok(cfg)
    }
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_ln: nn::LayerNorm,
    inter: nn::Linear,
    out: nn::Linear,
    out_ln: nn::LayerNorm,
}

/// The encoder. Variable names follow Hugging Face's (`embeddings.word_embeddings.weight`,
/// `encoder.layer.{i}.attention.self.query.weight`, …), so weights load by name.
#[derive(Debug)]
pub struct Bert {
    cfg: BertConfig,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    emb_ln: nn::LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Creates the variables under `vs` (random; use [`Bert::load_weights`]).
    pub fn new(vs: &nn::Path<'_>, cfg: &BertConfig) -> Bert {
        let h = cfg.hidden_size;
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        let lin = nn::LinearConfig::default();
        let emb = vs / "embeddings";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vs / "encoder" / "layer" / i;
                Layer {
                    query: nn::linear(&l / "attention" / "self" / "query", h, h, lin),
                    key: nn::linear(&l / "attention" / "self" / "key", h, h, lin),
                    value: nn::linear(&l / "attention" / "self" / "value", h, h, lin),
                    attn_out: nn::linear(&l / "attention" / "output" / "dense", h, h, lin),
                    attn_ln: nn::layer_norm(&l / "attention" / "output" / "LayerNorm", vec![h], ln),
                    inter: nn::linear(&l / "intermediate" / "dense", h, cfg.intermediate_size, lin),
                    out: nn::linear(&l / "output" / "dense", cfg.intermediate_size, h, lin),
                    out_ln: nn::layer_norm(&l / "output" / "LayerNorm", vec![h], ln),
                }
            })
            .collect();
        Bert {
            cfg: cfg.clone(),
            word: nn::embedding(&emb / "word_embeddings", cfg.vocab_size, h, Default::default()),
            position: nn::embedding(&emb / "position_embeddings", cfg.max_position_embeddings, h, Default::default()),
            token_type: nn::embedding(&emb / "token_type_embeddings", cfg.type_vocab_size, h, Default::default()),
            emb_ln: nn::layer_norm(&emb / "LayerNorm", vec![h], ln),
            layers,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Copies weights from a Hugging Face safetensors file. Names in the file may carry a `bert.` prefix; extra
    /// tensors (pooler, heads) are ignored. Every weight must be found with its exact shape.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::BadWeight {
            path: path.to_path_buf(),
            name: "*".into(),
            message: format!("cannot read safetensors: {e}"),
        })?;
        let by_name: HashMap<String, Tensor> =
            tensors.into_iter().map(|(k, t)| (k.strip_prefix("bert.").map(str::to_owned).unwrap_or(k), t)).collect();
        let bad =
            |name: &str, message: String| Error::BadWeight { path: PathBuf::from(path), name: name.into(), message };
        tch::no_grad(|| -> Result<()> {
            for (name, var) in self.named_weights() {
                let src = by_name.get(&name).ok_or_else(|| bad(&name, "not in the file".into()))?;
                if src.size() != var.size() {
                    return Err(bad(&name, format!("shape {:?} in the file, {:?} expected", src.size(), var.size())));
                }
                var.f_copy_(&src.to_kind(var.kind()))?;
            }
            Ok(())
        })
    }

    /// Every weight with its Hugging Face name.
    fn named_weights(&mut self) -> Vec<(String, &mut Tensor)> {
        fn linear<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, l: &'a mut nn::Linear) {
            out.push((format!("{name}.weight"), &mut l.ws));
            if let Some(b) = l.bs.as_mut() {
                out.push((format!("{name}.bias"), b));
            }
        }
        fn norm<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, l: &'a mut nn::LayerNorm) {
            if let Some(w) = l.ws.as_mut() {
                out.push((format!("{name}.weight"), w));
            }
            if let Some(b) = l.bs.as_mut() {
                out.push((format!("{name}.bias"), b));
            }
        }
        let mut out = vec![
            ("embeddings.word_embeddings.weight".to_string(), &mut self.word.ws),
            ("embeddings.position_embeddings.weight".to_string(), &mut self.position.ws),
            ("embeddings.token_type_embeddings.weight".to_string(), &mut self.token_type.ws),
        ];
        norm(&mut out, "embeddings.LayerNorm", &mut self.emb_ln);
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("encoder.layer.{i}");
            linear(&mut out, &format!("{p}.attention.self.query"), &mut l.query);
            linear(&mut out, &format!("{p}.attention.self.key"), &mut l.key);
            linear(&mut out, &format!("{p}.attention.self.value"), &mut l.value);
            linear(&mut out, &format!("{p}.attention.output.dense"), &mut l.attn_out);
            norm(&mut out, &format!("{p}.attention.output.LayerNorm"), &mut l.attn_ln);
            linear(&mut out, &format!("{p}.intermediate.dense"), &mut l.inter);
            linear(&mut out, &format!("{p}.output.dense"), &mut l.out);
            norm(&mut out, &format!("{p}.output.LayerNorm"), &mut l.out_ln);
        }
        out
    }

    /// Every weight tensor (to freeze or count parameters).
    pub fn weights(&mut self) -> Vec<&mut Tensor> {
        self.named_weights().into_iter().map(|(_, t)| t).collect()
    }

    /// Token-level hidden states.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[n, len]` int64 (mask 1 at real tokens), `len <= max_position_embeddings`
    /// - returns `[n, len, hidden_size]`
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (n, len) = ids.size2()?;
        if len > self.cfg.max_position_embeddings {
            return Err(Error::Config(format!(
                "input of {len} tokens exceeds max_position_embeddings {}; lower max_len",
                self.cfg.max_position_embeddings
            )));
        }
        let device = ids.device();
        let positions = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0);
        let types = Tensor::zeros([n, len], (Kind::Int64, device));
        let mut xs = self
            .emb_ln
            .forward(&(self.word.forward(ids) + self.position.forward(&positions) + self.token_type.forward(&types)));
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let d_head = h / heads;
        let allowed = m6rec_tensor::mask::key_padding(&mask.ne(0)); // [n, 1, 1, len]
        let split = |t: Tensor| t.view([n, len, heads, d_head]).transpose(1, 2);
        for layer in &self.layers {
            // One matrix product for q, k and v (3x fewer, larger GEMMs); `cat` keeps gradients flowing to each.
            let w = Tensor::cat(&[&layer.query.ws, &layer.key.ws, &layer.value.ws], 0);
            let b = match (&layer.query.bs, &layer.key.bs, &layer.value.bs) {
                (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)),
                _ => None,
            };
            let qkv = xs.linear(&w, b.as_ref()).chunk(3, -1);
            let [q, k, v] = [0, 1, 2].map(|i| split(qkv[i].shallow_clone()));
            let att = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&allowed), 0.0, false, None, false);
            let att = att.transpose(1, 2).contiguous().view([n, len, h]);
            xs = layer.attn_ln.forward(&(att.apply(&layer.attn_out) + &xs));
            let ff = self.activate(&xs.apply(&layer.inter)).apply(&layer.out);
            xs = layer.out_ln.forward(&(ff + &xs));
        }
        Ok(xs)
    }

    fn activate(&self, xs: &Tensor) -> Tensor {
        match self.cfg.hidden_act.as_str() {
            "relu" => xs.relu(),
            "gelu_new" | "gelu_pytorch_tanh" => xs.gelu("tanh"),
            _ => xs.gelu("none"),
        }
    }
}

/// Mean of token states over real tokens.
///
/// # Shapes
/// - `states`: `[n, len, d]`; `mask`: `[n, len]` int64
/// - returns `[n, d]`
pub fn mean_pool(states: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(states.kind()).unsqueeze(-1); // [n, len, 1]
    (states * &m).sum_dim_intlist(1, false, states.kind()) / m.sum_dim_intlist(1, false, states.kind()).clamp_min(1e-9)
}

/// Row-wise L2 normalisation (as sentence-transformers' `Normalize`).
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    xs / xs.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12)
}
