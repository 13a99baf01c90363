//! The fusion modules.

use m6rec_tensor::Mode;
use tch::nn;
use tch::{Kind, Tensor};

/// What can go wrong building or running a fusion module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("fusion config: {0}")]
    Config(String),
    /// Inputs of the wrong shape.
    #[error("fusion input: {0}")]
    Shape(String),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which fusion module (the `[fusion]` table of a run's TOML, tagged by `type`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FusionConfig {
    /// Average of the present modalities' embeddings.
    Mean,
    /// A learned score per modality embedding (plus a per-modality bias); softmax over the present ones.
    Gated,
    /// A learned query attends over the present modalities (each tagged with a learned type embedding) and a
    /// learned "nothing" slot, then a linear projection.
    CrossAttention {
        /// Attention heads (must divide the width). Default 2.
        #[serde(default = "default_heads")]
        n_heads: i64,
    },
    /// Absent modalities replaced by learned placeholders, then concatenation and a two-layer MLP.
    ConcatMlp {
        /// Hidden width of the MLP. Default: twice the width.
        #[serde(default)]
        hidden: Option<i64>,
    },
}

fn default_heads() -> i64 {
    2
}

#[derive(Debug)]
enum Inner {
    Mean,
    Gated { score: nn::Linear, bias: Tensor },
    CrossAttention { query: Tensor, null: Tensor, types: Tensor, qkv: nn::Linear, out: nn::Linear, n_heads: i64 },
    ConcatMlp { missing: Tensor, hidden: nn::Linear, out: nn::Linear },
}

/// A fusion module over `n_modalities` embeddings of width `dim`.
#[derive(Debug)]
pub struct Fusion {
    module: Inner,
    n_modalities: i64,
    dim: i64,
}

impl Fusion {
    /// Creates the module's variables under `vs`.
    pub fn new(vs: &nn::Path<'_>, cfg: &FusionConfig, n_modalities: i64, dim: i64) -> Result<Fusion> {
        if n_modalities < 1 || dim < 1 {
            return Err(Error::Config(format!("need n_modalities >= 1 and dim >= 1, got {n_modalities} and {dim}")));
        }
        let lin = nn::LinearConfig::default();
        let module = match cfg {
            FusionConfig::Mean => Inner::Mean,
            FusionConfig::Gated => Inner::Gated {
                score: nn::linear(vs / "score", dim, 1, lin),
                bias: vs.zeros("modality_bias", &[n_modalities]),
            },
            FusionConfig::CrossAttention { n_heads } => {
                if *n_heads < 1 || dim % n_heads != 0 {
                    return Err(Error::Config(format!("n_heads {n_heads} must divide the width {dim}")));
                }
                let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
                Inner::CrossAttention {
                    query: vs.var("query", &[1, 1, dim], init),
                    null: vs.var("null", &[1, 1, dim], init),
                    types: vs.var("types", &[1, n_modalities, dim], init),
                    qkv: nn::linear(vs / "qkv", dim, 3 * dim, lin),
                    out: nn::linear(vs / "out", dim, dim, lin),
                    n_heads: *n_heads,
                }
            }
            FusionConfig::ConcatMlp { hidden } => {
                let hidden = hidden.unwrap_or(2 * dim);
                if hidden < 1 {
                    return Err(Error::Config(format!("hidden must be positive, got {hidden}")));
                }
                Inner::ConcatMlp {
                    missing: vs.var("missing", &[1, n_modalities, dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
                    hidden: nn::linear(vs / "hidden", n_modalities * dim, hidden, lin),
                    out: nn::linear(vs / "out", hidden, dim, lin),
                }
            }
        };
        Ok(Fusion { module, n_modalities, dim })
    }

    /// Output (and input) width.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// Fuses.
    ///
    /// # Shapes
    /// - `embs`: `[n, n_modalities, dim]` float; rows of absent modalities may hold anything
    /// - `present`: `[n, n_modalities]` bool
    /// - returns `[n, dim]`
    pub fn forward(&self, embs: &Tensor, present: &Tensor, mode: Mode) -> Result<Tensor> {
        let (n, m, d) =
            embs.size3().map_err(|_| Error::Shape(format!("embs must be [n, M, d], got {:?}", embs.size())))?;
        if m != self.n_modalities || d != self.dim || present.size() != [n, m] {
            return Err(Error::Shape(format!(
                "embs {:?} and present {:?}; expected [n, {}, {}] and [n, {}]",
                embs.size(),
                present.size(),
                self.n_modalities,
                self.dim,
                self.n_modalities
            )));
        }
        let present = present.to_kind(Kind::Bool);
        let maskf = present.to_kind(embs.kind()).unsqueeze(-1); // [n, M, 1]
                                                                // Zero absent rows first, so no module can read them (0 * NaN would still be NaN).
        let clean = embs.where_self(&present.unsqueeze(-1), &embs.zeros_like());
        Ok(match &self.module {
            Inner::Mean => {
                let count = maskf.sum_dim_intlist(1, false, embs.kind()).clamp_min(1.0); // [n, 1]
                (&clean * &maskf).sum_dim_intlist(1, false, embs.kind()) / count
            }
            Inner::Gated { score, bias } => {
                let logits = clean.apply(score).squeeze_dim(-1) + bias.unsqueeze(0); // [n, M]
                let logits = logits.masked_fill(&present.logical_not(), f64::NEG_INFINITY);
                // Rows with nothing present would be all -inf: give them zero weights instead of NaN.
                let any = present.any_dim(1, true);
                let weights = logits.where_self(&any, &logits.zeros_like()).softmax(-1, embs.kind());
                let weights = weights * present.to_kind(embs.kind());
                (weights.unsqueeze(-1) * &clean).sum_dim_intlist(1, false, embs.kind())
            }
            Inner::CrossAttention { query, null, types, qkv, out, n_heads } => {
                let keys = Tensor::cat(&[null.expand([n, 1, d], false), &clean + types], 1); // [n, 1+M, d]
                let allowed =
                    Tensor::cat(&[Tensor::ones([n, 1], (Kind::Bool, embs.device())), present.shallow_clone()], 1);
                let q_in = query.expand([n, 1, d], false);
                let w = qkv.ws.chunk(3, 0);
                let b = qkv.bs.as_ref().map(|b| b.chunk(3, 0));
                let proj = |x: &Tensor, i: usize| x.linear(&w[i], b.as_ref().map(|b| &b[i]));
                let heads = |t: Tensor, len: i64| t.view([n, len, *n_heads, d / n_heads]).transpose(1, 2);
                let q = heads(proj(&q_in, 0), 1);
                let k = heads(proj(&keys, 1), m + 1);
                let v = heads(proj(&keys, 2), m + 1);
                let mask = allowed.view([n, 1, 1, m + 1]);
                let att = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None, false);
                att.transpose(1, 2).contiguous().view([n, d]).apply(out)
            }
            Inner::ConcatMlp { missing, hidden, out } => {
                let filled = clean.where_self(&present.unsqueeze(-1), &missing.expand([n, m, d], false));
                filled.view([n, m * d]).apply(hidden).gelu("none").dropout(0.1, mode.is_train()).apply(out)
            }
        })
    }

    /// Every trainable tensor of the module.
    pub fn weights(&self) -> Vec<&Tensor> {
        match &self.module {
            Inner::Mean => Vec::new(),
            Inner::Gated { score, bias } => {
                [Some(&score.ws), score.bs.as_ref(), Some(bias)].into_iter().flatten().collect()
            }
            Inner::CrossAttention { query, null, types, qkv, out, .. } => {
                [Some(query), Some(null), Some(types), Some(&qkv.ws), qkv.bs.as_ref(), Some(&out.ws), out.bs.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Inner::ConcatMlp { missing, hidden, out } => {
                [Some(missing), Some(&hidden.ws), hidden.bs.as_ref(), Some(&out.ws), out.bs.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
        }
    }
}
