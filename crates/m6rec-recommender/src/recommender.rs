//! [`Recommender`]: the one type every user of a model holds.

use crate::content::ItemContent;
use crate::domains::DomainEmbedding;
use crate::items::ContentItems;
use crate::saved::{self, DatasetFingerprint, SavedConfig, CHECKPOINT_VERSION};
use crate::{Error, RecommenderConfig, Result};
use m6rec_data::SeqBatch;
use m6rec_model::SeqRec;
use m6rec_objective::{Objective, Targets, View};
use m6rec_tensor::Mode;
use std::path::Path;
use tch::{nn, Device, Tensor};

/// A sequence model, its item table (the model's id embeddings, or an item tower over content: content only, or
/// hybrid with ids), domain embeddings, and its objective, with the variables they live in.
///
/// Training, evaluation, recommendation, serving, adaptation and updates all go through it: [`Recommender::init`] (a
/// fresh model), [`Recommender::load`] (a checkpoint's best weights), [`Recommender::load_zero_shot`] (a checkpoint
/// reading another catalog through its tower); then [`Recommender::item_table`] / [`Recommender::step_table`],
/// [`Recommender::user_states`], [`Recommender::score_next`], [`Recommender::loss`].
///
/// Variables (checkpoint keys): `model.*` ([`SeqRec`]), `tower.*` (the item tower and its encoders), `domains.*`.
#[derive(Debug)]
pub struct Recommender {
    /// What it is made of and the catalog it is for.
    pub config: SavedConfig,
    /// Owns every variable.
    pub vs: nn::VarStore,
    /// The sequence model.
    pub model: SeqRec,
    /// The item tower and its content (runs with `[item_tower]`); `None`: the model's own id table.
    pub items: Option<ContentItems>,
    /// Domain embeddings (runs with `[domains]` and `embed`; give the items' domains with
    /// [`Recommender::set_item_domains`]).
    pub domains: Option<DomainEmbedding>,
    objective: Box<dyn Objective>,
}

impl Recommender {
    /// A fresh recommender for `catalog` on `device`, its items read through an item tower over `content` when
    /// `config` has `[item_tower]` (the content is then required; without `[item_tower]` it must be `None`).
    /// Variables are created in a fixed order (model, tower, domains), so a seeded init is reproducible.
    pub fn init(
        config: RecommenderConfig,
        catalog: DatasetFingerprint,
        content: Option<&ItemContent>,
        device: Device,
    ) -> Result<Recommender> {
        config.validate().map_err(Error::InvalidConfig)?;
        let vs = nn::VarStore::new(device);
        let model = SeqRec::init(&(vs.root() / "model"), &config.model, catalog.n_items)?;
        let items = match (&config.item_tower, content) {
            (Some(tower), Some(content)) => Some(ContentItems::new(
                &(vs.root() / "tower"),
                tower,
                &config.content(),
                content,
                config.model.d_model,
            )?),
            (None, None) => None,
            (Some(_), None) => return Err(Error::Content(
                "the run has [item_tower] but no item content was given; build the feature cache with `m6rec features` and pass --features".into(),
            )),
            (None, Some(_)) => {
                return Err(Error::Content("item content was given but the run has no [item_tower] table".into()))
            }
        };
        let domains = domain_embedding(&vs, &config)?;
        let objective = config.model.loss.objective();
        let config = SavedConfig { format_version: CHECKPOINT_VERSION, run: config, dataset: catalog };
        Ok(Recommender { config, vs, model, items, domains, objective })
    }

    /// The best weights of checkpoint `dir` on `device`; a run with `[item_tower]` reads `content` (the content it was
    /// trained with: the feature cache of its dataset).
    pub fn load(dir: &Path, device: Device, content: Option<&ItemContent>) -> Result<Recommender> {
        let saved = saved::read_config(dir)?;
        if saved.run.item_tower.is_some() && content.is_none() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason:
                    "this model reads items through an item tower: give it the dataset's feature cache (--features)"
                        .into(),
            });
        }
        let content = content.filter(|_| saved.run.item_tower.is_some());
        let mut rec = Recommender::init(saved.run.clone(), saved.dataset.clone(), content, device)?;
        rec.config = saved;
        saved::load_weights(&mut rec.vs, dir, "model.safetensors")?;
        Ok(rec)
    }

    /// Checkpoint `dir` scoring **another catalog** with no training (zero-shot transfer): the run must read items
    /// through a content tower (`content_only`, or `hybrid`, whose id embeddings are then unused), and `content` is
    /// the new catalog's content, with the modalities the run was trained on. Checks nothing about the catalog.
    pub fn load_zero_shot(dir: &Path, device: Device, content: &ItemContent) -> Result<Recommender> {
        let config = saved::read_config(dir)?;
        let Some(tower) = &config.run.item_tower else {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: "this model has an id table and no item tower: it cannot score items it was not trained on; pretrain with [item_tower] mode = \"content_only\" or \"hybrid\"".into(),
            });
        };
        let run = &config.run;
        let mut vs = nn::VarStore::new(device);
        let model = SeqRec::init(&(vs.root() / "model"), &run.model, config.dataset.n_items)?;
        let trained = m6rec_tensor::dim::to_i64("n_items", config.dataset.n_items)?;
        let mut items = ContentItems::for_new_catalog(
            &(vs.root() / "tower"),
            tower,
            &run.content(),
            content,
            run.model.d_model,
            trained,
        )?;
        let domains = domain_embedding(&vs, run)?;
        saved::load_weights(&mut vs, dir, "model.safetensors")?;
        items.set_seen(&[]);
        let objective = run.model.loss.objective();
        Ok(Recommender { config, vs, model, items: Some(items), domains, objective })
    }

    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Longest history the model reads.
    pub fn max_len(&self) -> Result<usize> {
        Ok(m6rec_tensor::dim::to_usize("max_len", self.config.run.model.max_len)?)
    }

    /// The training objective.
    pub fn objective(&self) -> &dyn Objective {
        self.objective.as_ref()
    }

    /// Gives each catalog item's domain name; domains the model was not trained on share the "unknown" embedding.
    pub fn set_item_domains(&mut self, names: &[&str]) {
        let device = self.device();
        if let (Some(d), Some(cfg)) = (&mut self.domains, &self.config.run.domains) {
            d.set_items(&cfg.index(names), device);
        }
    }

    /// The item table `[n_items, d_model (+ similarity columns)]` the model scores against (item tower output or id
    /// embeddings, plus domain embeddings), without gradients: evaluation, recommendation, serving.
    pub fn item_table(&self) -> Result<Tensor> {
        tch::no_grad(|| {
            let table = match &self.items {
                Some(items) => items.table_eval()?,
                None => self.model.item_embeddings().detach(),
            };
            match &self.domains {
                Some(d) => d.add(&table),
                None => Ok(table),
            }
        })
    }

    /// The item table for one training step, with gradients: `batch_items` are the items the batch uses (an item
    /// tower re-encodes up to `grad_items` of them, see [`ContentItems::table_for_step`]).
    pub fn step_table(&mut self, batch_items: &Tensor) -> Result<Tensor> {
        let table = match &mut self.items {
            Some(items) => items.table_for_step(batch_items)?,
            None => self.model.item_embeddings(),
        };
        match &self.domains {
            Some(d) => d.add(&table),
            None => Ok(table),
        }
    }

    /// Each row's scoring state after its last item (evaluation mode): the vector whose dot product with an item's
    /// row of `table` is that item's score. Serving caches it per user.
    ///
    /// # Shapes
    /// - `table`: `[n_rows, width]` (`width >= d_model`); returns `[b_sz, width]`
    pub fn user_states(&self, batch: &SeqBatch, table: &Tensor) -> Result<Tensor> {
        let view = self.predicting(batch)?;
        Ok(self.model.forward_with(&view.tokens, table, &view.attention, Mode::Eval).select(1, -1))
    }

    /// What the model reads to predict each history's next item (the task's inference view, see
    /// [`m6rec_objective::TaskConfig::infer_view`]).
    fn predicting(&self, batch: &SeqBatch) -> Result<View> {
        let tokens = self.model.fit_len(batch.tokens_tensor(self.device())?);
        Ok(self.config.run.model.task.infer_view(&tokens, self.config.run.model.max_len))
    }

    /// Scores of every row of `table` as each history's next item, an item's similarity to itself left out (see
    /// [`SeqRec::own_scores`]).
    ///
    /// # Shapes
    /// - `table`: `[n_rows, width]`; returns `[b_sz, n_rows]`
    pub fn score_next(&self, batch: &SeqBatch, table: &Tensor) -> Result<Tensor> {
        let view = self.predicting(batch)?;
        let state = self.model.forward_with(&view.tokens, table, &view.attention, Mode::Eval).select(1, -1);
        let scores = state.matmul(&table.transpose(0, 1));
        Ok(match self.model.own_scores(&view.tokens.select(1, -1), &state) {
            Some((col, delta)) => scores.scatter_add(1, &col.unsqueeze(1), &delta.unsqueeze(1)),
            None => scores,
        })
    }

    /// The objective's mean loss over a training batch's target positions (as the task chooses them: every next
    /// item, the masked items, or the autoregressive region; a weighted sum when the task mixes two), `table` serving
    /// as both the inputs and the output layer (tied), so gradients reach whatever produced it. With `catalog` (`[k]`
    /// distinct item indices, every target among them) only those items are candidates: the others, for example
    /// items held out for a cold-start evaluation, are neither pushed up nor down (nor drawn as random inputs).
    pub fn loss(&self, batch: &SeqBatch, table: &Tensor, catalog: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let device = self.device();
        let tokens = self.model.fit_len(batch.tokens_tensor(device)?);
        let targets = self.model.fit_len(batch.targets_tensor(device)?);
        let run = &self.config.run.model;
        let rows = table.size()[0];
        let mut total: Option<Tensor> = None;
        for view in run.task.train_views(&tokens, &targets, run.max_len, rows, catalog) {
            let Some(targets) = view.targets else { continue };
            let states = self.model.forward_with(&view.tokens, table, &view.attention, mode); // [b, L, width]
            let width = states.size()[2];
            let own = self.model.own_scores(&view.tokens, &states);
            let t = Targets::new(states.view([-1, width]), table.shallow_clone(), targets.reshape([-1])).with_own(own);
            let t = match catalog {
                Some(c) => t.restricted_to(c),
                None => t,
            };
            let term = m6rec_objective::mean_loss(self.objective.as_ref(), t) * view.weight;
            total = Some(match total {
                Some(sum) => sum + term,
                None => term,
            });
        }
        total.ok_or_else(|| Error::InvalidConfig(format!("task {} gave no loss term", run.task.name())))
    }

    /// Embeddings `[n, width]` of items added after training (see [`ContentItems::embed_new`]), in domains `domains`
    /// (one name per item). [`Error::NoItemTower`] for a model without an item tower: ids alone cannot represent a
    /// new item.
    pub fn embed_new_items(&self, content: &ItemContent, ids: &[i64], domains: &[&str]) -> Result<Tensor> {
        let Some(items) = &self.items else { return Err(Error::NoItemTower) };
        let rows = items.embed_new(content, ids)?;
        Ok(match (&self.domains, &self.config.run.domains) {
            (Some(d), Some(cfg)) => tch::no_grad(|| d.add_indexed(&rows, &cfg.index(domains))),
            _ => rows,
        })
    }

    /// Copies every variable of checkpoint `dir`'s best weights whose name and shape match (see
    /// [`saved::init_from`]). Returns `(copied, skipped)` names.
    pub fn init_from(&self, dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
        saved::init_from(&self.vs, dir)
    }
}

/// A recommender with its item table computed once: scores whole catalogs for batches of histories (evaluation,
/// recommendation). The table's rows are the catalog it scores (another one in zero-shot transfer).
#[derive(Debug)]
pub struct CatalogScorer<'a> {
    rec: &'a Recommender,
    table: Tensor,
}

impl CatalogScorer<'_> {
    /// `[histories.len(), n_items]` scores (higher is better) of every table row as each history's next item.
    pub fn score_histories(&self, histories: &[&[u32]]) -> Result<Tensor> {
        let batch = SeqBatch::for_prediction(histories, self.rec.max_len()?, self.rows())?;
        tch::no_grad(|| self.rec.score_next(&batch, &self.table))
    }

    /// Rows of the table.
    pub fn rows(&self) -> usize {
        m6rec_tensor::dim::as_usize(self.table.size()[0])
    }

    /// The table `[n_items, width]`.
    pub fn table(&self) -> &Tensor {
        &self.table
    }
}

impl Recommender {
    /// A scorer over the whole catalog (the item table is computed once, here).
    pub fn scorer(&self) -> Result<CatalogScorer<'_>> {
        Ok(CatalogScorer { rec: self, table: self.item_table()? })
    }
}

fn domain_embedding(vs: &nn::VarStore, run: &RecommenderConfig) -> Result<Option<DomainEmbedding>> {
    match &run.domains {
        Some(d) if d.embed => {
            Ok(Some(DomainEmbedding::new(&(vs.root() / "domains"), d.vocab.len(), run.model.d_model)?))
        }
        _ => Ok(None),
    }
}
