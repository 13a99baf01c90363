//! m6rec's fusion layer: one embedding per item from the embeddings of the modalities it has.
//!
//! # Brief overview
//! - [`FusionConfig`] (serde, tagged by `type`) → [`Fusion::new`] → [`Fusion::forward`]`(embs [n, M, d], present [n, M])`
//!   → `[n, d]`.
//! - Four modules: `mean` (average of present modalities, the baseline), `gated` (a learned score per modality, softmax
//!   over the present ones), `cross_attention` (a learned query attends over the present modalities and a learned
//!   "nothing" slot), `concat_mlp` (each absent modality replaced by a learned placeholder, then concatenation and an
//!   MLP).
//! - [`ItemTowerConfig`] → [`ItemTower`]: per-modality projections to the model width, fusion, and an optional id
//!   embedding; [`TowerMode`] `id_only`, `content_only` (inductive: unseen items have embeddings) or `hybrid` (unseen
//!   items fall back to content). [`ItemTower::embed_all`] embeds a catalog in batches.
//! - **Invariant:** an absent modality never contributes its values: whatever its row holds, the output is the same
//!   (property-tested for every module). An item with no modality present gets a defined, finite output (zero for
//!   `mean` and `gated`, learned for the others): the item tower adds the id embedding or handles it.
//!
//! ```
//! use m6rec_fusion::{Fusion, FusionConfig};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let fusion = Fusion::new(&(vs.root() / "fusion"), &FusionConfig::Gated, 3, 8)?;
//! let embs = tch::Tensor::randn([4, 3, 8], tch::kind::FLOAT_CPU);
//! let present = tch::Tensor::from_slice(&[true, true, false, true, false, false, false, false, false, true, true, true])
//!     .view([4, 3]);
//! assert_eq!(fusion.forward(&embs, &present, m6rec_tensor::Mode::Eval)?.size(), vec![4, 8]);
//! # Ok::<(), m6rec_fusion::Error>(())
//! ```
#![deny(missing_docs)]

mod fusion;
mod tower;

pub use fusion::{Error, Fusion, FusionConfig, Result};
pub use tower::{ItemTower, ItemTowerConfig, TowerMode};
