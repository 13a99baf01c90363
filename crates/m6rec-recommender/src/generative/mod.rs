//! Generative retrieval over semantic IDs, ready to recommend: every item's code ([`m6rec_semantic`]), their prefix
//! trie, and the [`CodeRec`] that generates the next item's code from a history. Recommendation is beam search
//! constrained to codes that exist; items added later get codes from their content and are recommendable at once.
//!
//! Training lives in `m6rec_train::generative`, which writes the checkpoint this module reads: `generative.json`
//! (the run, the code widths, the catalog size, the training history), `semantic_ids.json`, `model.safetensors`,
//! checksums, under the [`GENERATIVE_DIR`] marker.

use crate::{saved, Error, Result};
use m6rec_model::{CodeRec, SeqRecConfig};
use m6rec_semantic::{beam_search_batch, Beam, SemanticIds, Trie};
use m6rec_tensor::atomic::DirKind;
use m6rec_tensor::Mode;
use serde::Deserialize;
use std::path::Path;
use tch::{nn, Device, Tensor};

mod config;

pub use config::GenerativeConfig;

/// Marker of a generative checkpoint directory.
pub const GENERATIVE_DIR: DirKind = DirKind { name: "generative", legacy: "generative.json" };

/// The files of a generative checkpoint, checksummed.
pub const FILES: [&str; 3] = ["model.safetensors", "semantic_ids.json", "generative.json"];

/// The part of `generative.json` inference reads (the rest is the training history).
#[derive(Deserialize)]
struct SavedView {
    run: RunView,
    n_items: usize,
    widths: Vec<usize>,
}

#[derive(Deserialize)]
struct RunView {
    #[serde(default)]
    model: SeqRecConfig,
    generative: Option<GenerativeConfig>,
}

/// New items' codes, planned by [`GenerativeModel::plan_items`].
#[derive(Debug, Clone)]
pub struct NewCodes {
    ids: SemanticIds,
    /// The new items' codes, in order.
    pub codes: Vec<Vec<u16>>,
    base: usize,
}

/// The model, its codes and their trie.
#[derive(Debug)]
pub struct GenerativeModel {
    gen: GenerativeConfig,
    ids: SemanticIds,
    trie: Trie,
    vs: nn::VarStore,
    model: CodeRec,
    n_trained: usize,
}

/// `ids`' code widths with `reserve` more collision numbers (room for items added later).
fn widths_with_reserve(ids: &SemanticIds, reserve: usize) -> Vec<usize> {
    let mut w = ids.widths();
    if let Some(last) = w.last_mut() {
        *last += reserve;
    }
    w
}

impl GenerativeModel {
    /// A fresh model (variables from libtorch's generator; seed it first) over codes `ids`, sized by `model`.
    pub fn new(model: &SeqRecConfig, gen: GenerativeConfig, ids: SemanticIds, device: Device) -> Result<Self> {
        gen.validate().map_err(Error::InvalidConfig)?;
        let vs = nn::VarStore::new(device);
        let widths = widths_with_reserve(&ids, gen.reserve);
        let model = CodeRec::init_with(&(vs.root() / "gen"), model, &widths, gen.decoder, gen.decoder_layers)?;
        let trie = ids.trie();
        let n_trained = ids.len();
        Ok(GenerativeModel { gen, ids, trie, vs, model, n_trained })
    }

    /// Whether `dir` holds a generative checkpoint.
    pub fn is_checkpoint(dir: &Path) -> bool {
        dir.join("generative.json").is_file()
    }

    /// Loads a generative checkpoint (checksums verified, weights finite, codes consistent with the model).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint { path: dir.to_path_buf(), reason };
        m6rec_tensor::atomic::recover(dir, Some(GENERATIVE_DIR));
        for file in FILES {
            saved::verify_checksum(dir, file)?;
        }
        let text = std::fs::read(dir.join("generative.json")).map_err(|e| bad(format!("generative.json: {e}")))?;
        let view: SavedView = serde_json::from_slice(&text).map_err(|e| bad(format!("generative.json: {e}")))?;
        let gen = view.run.generative.ok_or_else(|| bad("generative.json has no [generative] table".into()))?;
        let ids = SemanticIds::load(&dir.join("semantic_ids.json"))?;
        if ids.len() < view.n_items {
            return Err(bad(format!("semantic_ids.json has {} items, the model {}", ids.len(), view.n_items)));
        }
        let mut vs = nn::VarStore::new(device);
        let model =
            CodeRec::init_with(&(vs.root() / "gen"), &view.run.model, &view.widths, gen.decoder, gen.decoder_layers)?;
        if let Some(c) = ids.codes().find(|c| model.tokens_of(c).is_none()) {
            return Err(bad(format!("a code {c:?} of semantic_ids.json is outside the model's vocabulary")));
        }
        vs.load(dir.join("model.safetensors")).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            bad(format!("model.safetensors does not fit the model generative.json describes: {first}"))
        })?;
        saved::check_finite(&vs, dir, "model.safetensors")?;
        let trie = ids.trie();
        Ok(GenerativeModel { gen, ids, trie, vs, model, n_trained: view.n_items })
    }

    /// `[generative]`: codes, beam, reserve.
    pub fn config(&self) -> &GenerativeConfig {
        &self.gen
    }

    /// The codes.
    pub fn semantic_ids(&self) -> &SemanticIds {
        &self.ids
    }

    /// The code-token model.
    pub fn model(&self) -> &CodeRec {
        &self.model
    }

    /// Its variables.
    pub fn vs(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Items the model can recommend: the training catalog and items added since.
    pub fn n_items(&self) -> usize {
        self.ids.len()
    }

    /// Items of the training catalog.
    pub fn n_trained(&self) -> usize {
        self.n_trained
    }

    /// Width of the content new items' codes are computed from (the embedding the codes were fitted on).
    pub fn content_dim(&self) -> usize {
        self.ids.dim()
    }

    /// Gives items added to the catalog codes from their content (`[m, d]`, the encoder of the fit); they are
    /// recommendable at once, with no training. Fails, changing nothing, when a collision number would exceed the
    /// model's reserve. [`GenerativeModel::plan_items`] and [`GenerativeModel::commit`] in one.
    pub fn add_items(&mut self, content: &Tensor) -> Result<Vec<Vec<u16>>> {
        let plan = self.plan_items(content)?;
        let codes = plan.codes.clone();
        self.commit(plan);
        Ok(codes)
    }

    /// The codes new items would get (appended after the current ones, in order), checked against the model's
    /// vocabulary, without adding them: what a caller validates before it persists anything.
    pub fn plan_items(&self, content: &Tensor) -> Result<NewCodes> {
        let mut ids = self.ids.clone();
        let codes = ids.add(content)?;
        if let Some(c) = codes.iter().find(|c| self.model.tokens_of(c).is_none()) {
            return Err(Error::Content(format!(
                "a new item's code {c:?} needs a collision number past the model's reserve ({} values): retrain \
                 with a larger generative.reserve",
                self.model.widths().last().copied().unwrap_or(0)
            )));
        }
        Ok(NewCodes { ids, codes, base: self.ids.len() })
    }

    /// Adds what [`GenerativeModel::plan_items`] planned. A plan made before another change is ignored (it
    /// returns `false`): plan again.
    pub fn commit(&mut self, plan: NewCodes) -> bool {
        if plan.base != self.ids.len() {
            return false;
        }
        self.ids = plan.ids;
        self.trie = self.ids.trie();
        true
    }

    /// Items `[b, n, code_len]` (code tokens) from rows of items, left-padded with all-zero rows.
    pub fn item_rows(&self, rows: &[&[u32]]) -> Result<Tensor> {
        let c = self.model.code_len();
        let n = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut flat = vec![0i64; rows.len() * n * c];
        for (r, items) in rows.iter().enumerate() {
            let end = (r + 1) * n * c;
            let mut at = end - items.len() * c;
            for &i in *items {
                let code =
                    self.ids.get(i as usize).ok_or_else(|| Error::Content(format!("item {i} has no semantic ID")))?;
                let t = self.model.tokens_of(code).ok_or_else(|| {
                    Error::Content(format!("item {i}'s code {code:?} is outside the model's vocabulary"))
                })?;
                flat[at..at + c].copy_from_slice(&t);
                at += c;
            }
        }
        let (b, n, c) =
            (m6rec_tensor::dim::as_i64(rows.len()), m6rec_tensor::dim::as_i64(n), m6rec_tensor::dim::as_i64(c));
        Ok(Tensor::from_slice(&flat).view([b, n, c]).to_device(self.vs.device()))
    }

    /// Up to `beam` items for each history, best first (constrained beam search: every item exists, none twice).
    /// Each history is read once (its last `max_len` items); the decoder runs per beam.
    pub fn beams(&self, histories: &[&[u32]], beam: usize) -> Result<Vec<Vec<Beam>>> {
        let max_len = self.model.max_len();
        let cut: Vec<&[u32]> = histories.iter().map(|h| &h[h.len().saturating_sub(max_len)..]).collect();
        tch::no_grad(|| {
            let states = self.model.states(&self.item_rows(&cut)?, Mode::Eval).select(1, -1); // [q, d]
            let search = beam_search_batch(&self.trie, beam, histories.len(), |rows: &[(usize, Vec<u16>)]| {
                self.step_scores(&states, rows)
            });
            Ok(search?)
        })
    }

    /// Log-probabilities of the next code position for each `(query, prefix)` of a beam step.
    fn step_scores(&self, states: &Tensor, rows: &[(usize, Vec<u16>)]) -> Result<Vec<Vec<f32>>> {
        let device = states.device();
        let level = rows.first().map_or(0, |(_, p)| p.len());
        let query: Vec<i64> = rows.iter().map(|(q, _)| m6rec_tensor::dim::as_i64(*q)).collect();
        let prefix: Vec<i64> = rows
            .iter()
            .flat_map(|(_, p)| p.iter().enumerate())
            .map(|(l, &c)| {
                self.model
                    .token(l, c)
                    .ok_or_else(|| Error::Content(format!("code {c} at level {l} is outside the model's vocabulary")))
            })
            .collect::<Result<_>>()?;
        let s = states.index_select(0, &Tensor::from_slice(&query).to_device(device));
        let (r, l) = (m6rec_tensor::dim::as_i64(rows.len()), m6rec_tensor::dim::as_i64(level));
        let prefix = Tensor::from_slice(&prefix).view([r, l]).to_device(device);
        let lp = self.model.log_probs(&s, &prefix, level).to_device(Device::Cpu);
        let w = m6rec_tensor::dim::as_usize(lp.size()[1]).max(1);
        let flat = Vec::<f32>::try_from(lp.reshape([-1])).map_err(|e| Error::Torch(format!("beam scores: {e}")))?;
        Ok(flat.chunks(w).map(<[f32]>::to_vec).collect())
    }

    /// Writes `model.safetensors` (`weights`, or the current variables) and `semantic_ids.json` into `dir` (a
    /// checkpoint being assembled: the caller adds `generative.json` and the checksums of [`FILES`]).
    pub fn write_files(&self, dir: &Path, weights: Option<&[(String, Tensor)]>) -> Result<()> {
        let path = dir.join("model.safetensors");
        match weights {
            Some(vars) => Tensor::write_safetensors(vars, &path),
            None => self.vs.save(&path),
        }
        .map_err(|e| Error::Checkpoint { path: dir.to_path_buf(), reason: format!("writing the weights: {e}") })?;
        self.ids.save(&dir.join("semantic_ids.json"))?;
        Ok(())
    }
}

/// The output layer's rows for `ids` with `reserve`: one padding token, then every code position's values. It
/// depends on the codebook, not on the catalog's size (the collision level aside).
pub fn output_rows(ids: &SemanticIds, reserve: usize) -> usize {
    1 + widths_with_reserve(ids, reserve).iter().sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use m6rec_semantic::SemanticIdConfig;
    use tch::Kind;

    fn model(reserve: usize) -> (GenerativeModel, Tensor) {
        let content = Tensor::arange(40, (Kind::Float, Device::Cpu)).view([20, 2]).sin();
        let ids =
            SemanticIds::fit(&content, &SemanticIdConfig { levels: 2, codes: 4, ..Default::default() }).expect("codes");
        let cfg = SeqRecConfig { d_model: 8, n_heads: 2, max_len: 5, ..Default::default() };
        let gen = GenerativeConfig { reserve, ..GenerativeConfig::default() };
        (GenerativeModel::new(&cfg, gen, ids, Device::Cpu).expect("model"), content)
    }

    #[test]
    fn new_items_past_the_reserve_change_nothing_and_stale_plans_are_refused() {
        // Reserve 0: an item with an existing item's content needs a collision number the model cannot generate.
        let (g, content) = model(0);
        // Every collision number the catalog uses is generatable, none more.
        assert_eq!(g.model().widths(), g.semantic_ids().widths());
        // An item of the largest group: its content again needs the next collision number.
        let last = g.semantic_ids().stats.max_collisions - 1;
        let full = (0..20).find(|&i| g.semantic_ids().code(i).last() == Some(&(last as u16))).expect("a full group");
        let err = g.plan_items(&content.narrow(0, full as i64, 1)).expect_err("past the reserve").to_string();
        assert!(err.contains("reserve"), "{err}");
        assert_eq!(g.n_items(), 20, "nothing was added");
        // With room, the plan is checked, then committed once; a plan made before that commit is stale.
        let (mut g, content) = model(2);
        let first = g.plan_items(&content.narrow(0, 3, 1)).expect("plan");
        let second = g.plan_items(&content.narrow(0, 4, 1)).expect("plan");
        assert_eq!(g.n_items(), 20, "planning adds nothing");
        assert!(g.commit(first));
        assert_eq!(g.n_items(), 21);
        assert!(!g.commit(second), "planned on the catalog before the first commit");
        assert_eq!(g.n_items(), 21);
        // The new item is generatable: its code is in the model's vocabulary and beams can return it.
        let beams = g.beams(&[&[0, 1]], 21).expect("beams");
        assert!(beams[0].iter().any(|b| b.item == 20), "{:?}", beams[0]);
    }
}
