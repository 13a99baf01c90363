//! The generative pretraining objectives of m6rec, as their own layer.
//!
//! A sequence model turns a history into one *scoring state* per position; an objective turns the states of the
//! positions that carry a target, the table of candidate items and the targets into a loss. Objectives know nothing
//! of Transformers, item towers or trainers, and those know objectives only through [`Objective`]:
//!
//! - [`Targets`]: states `[n, w]`, candidate table `[rows, w]`, targets `[n]` (a table row or [`IGNORE`]), and an
//!   optional per-row correction of one logit (a model's "similarity to itself" term). [`Targets::gathered`] keeps
//!   only the rows that carry a target, so cost follows real tokens; [`Targets::restricted_to`] leaves only a subset
//!   of the catalog as candidates (items held out of training are neither pushed up nor down).
//! - [`Objective`]: `loss(&Targets) -> Tensor`. The two that exist: [`FullSoftmax`] (cross-entropy over the whole
//!   table; [`loss::full_softmax`] chunks it above 2²⁶ logits so memory stays bounded) and [`SampledSoftmax`]
//!   (uniform and in-batch negatives, `log Q` corrected, accidental hits masked).
//! - [`LossConfig`]: the serde form (`[model.loss]` of a run file); [`LossConfig::objective`] builds one.
//!
//! - [`TaskConfig`] (`[model.task]`, module [`task`]): what the model reads and predicts: next-item (causal),
//!   masked-item (bidirectional, BERT4Rec's Cloze task, optionally mixed with next-item) or M6's prefix-LM. A task
//!   turns a batch into [`View`]s (tokens, targets, [`Attention`](m6rec_tensor::mask::Attention)) for training and
//!   into one view for inference; the model only follows the view.
//!
//! A new objective implements [`Objective`] and adds a [`LossConfig`] variant; a new task adds a [`TaskConfig`]
//! variant; nothing else changes.
//!
//! ```
//! use m6rec_objective::{LossConfig, Targets};
//! use tch::{Device, Kind, Tensor};
//! let states = Tensor::randn([4, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let table = Tensor::randn([10, 8], (Kind::Float, Device::Cpu));
//! let targets = Tensor::from_slice(&[3i64, -100, 7, 0]); // -100 (IGNORE): padding, no target
//! let objective = LossConfig::FullSoftmax.objective();
//! let loss = m6rec_objective::mean_loss(objective.as_ref(), Targets::new(states, table, targets));
//! loss.backward();
//! assert!(loss.double_value(&[]) > 0.0);
//! ```
#![deny(missing_docs)]

pub mod loss;
pub mod task;

pub use m6rec_data::IGNORE;
use serde::{Deserialize, Serialize};
pub use task::{TaskConfig, View, MASK};
use tch::{Kind, Tensor};

/// What an objective scores: states of positions, the candidates, the targets.
#[derive(Debug)]
pub struct Targets {
    /// `[n, w]` scoring states.
    pub states: Tensor,
    /// `[rows, w]` candidate items (row `i` is item `i`).
    pub table: Tensor,
    /// `[n]` int64: each state's target row of `table`, or [`IGNORE`].
    pub targets: Tensor,
    /// Per state: one column of its logits (`[n]` int64) and a value added to that logit (`[n]` float). Models with
    /// similarity columns remove an item's similarity to itself this way; objectives that form logits apply it
    /// ([`Targets::corrected`]).
    pub own: Option<(Tensor, Tensor)>,
}

impl Targets {
    /// Targets without a logit correction.
    pub fn new(states: Tensor, table: Tensor, targets: Tensor) -> Targets {
        Targets { states, table, targets, own: None }
    }

    /// With a per-row logit correction (see [`Targets::own`]).
    pub fn with_own(self, own: Option<(Tensor, Tensor)>) -> Targets {
        Targets { own, ..self }
    }

    /// Number of states.
    pub fn len(&self) -> i64 {
        self.states.size()[0]
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Only the rows whose target is not [`IGNORE`] (padding dropped before any item product); `None` when no row
    /// carries a target.
    pub fn gathered(self) -> Option<Targets> {
        let keep = self.targets.ne(IGNORE).nonzero().squeeze_dim(1);
        if keep.size()[0] == 0 {
            return None;
        }
        let pick = |t: &Tensor| t.index_select(0, &keep);
        Some(Targets {
            states: pick(&self.states),
            table: self.table,
            targets: pick(&self.targets),
            own: self.own.map(|(col, delta)| (pick(&col), pick(&delta))),
        })
    }

    /// Only the items in `catalog` (`[k]` int64, distinct table rows) remain candidates: the table becomes those rows
    /// in that order, targets are renumbered into it (targets outside it become [`IGNORE`]) and the logit correction
    /// moves with its item (dropped for items outside it).
    pub fn restricted_to(self, catalog: &Tensor) -> Targets {
        let device = self.table.device();
        let catalog = catalog.to_device(device);
        let rows = self.table.size()[0];
        // Item -> its position in `catalog`, IGNORE for items outside it.
        let position = Tensor::full([rows], IGNORE, (Kind::Int64, device)).index_put(
            &[Some(catalog.shallow_clone())],
            &Tensor::arange(catalog.size()[0], (Kind::Int64, device)),
            false,
        );
        let known = self.targets.ge(0);
        let targets = position.index_select(0, &self.targets.clamp_min(0)).where_self(&known, &self.targets);
        let own = self.own.map(|(col, delta)| {
            let at = position.index_select(0, &col);
            let inside = at.ge(0);
            (at.clamp_min(0), delta * inside.to_kind(Kind::Float))
        });
        Targets { table: self.table.index_select(0, &catalog), states: self.states, targets, own }
    }

    /// `states · tableᵀ` with the logit correction applied: `[n, rows]`.
    pub fn corrected(&self) -> Tensor {
        let logits = self.states.matmul(&self.table.transpose(0, 1));
        match &self.own {
            Some((col, delta)) => logits.scatter_add(1, &col.unsqueeze(1), &delta.unsqueeze(1)),
            None => logits,
        }
    }
}

/// A training objective over [`Targets`].
pub trait Objective: std::fmt::Debug + Send {
    /// Short name, for logs and tables.
    fn name(&self) -> &'static str;
    /// The mean loss over `t`'s rows; every row carries a target (see [`Targets::gathered`]).
    fn loss(&self, t: &Targets) -> Tensor;
}

/// `objective`'s mean loss over the rows of `t` that carry a target (0, still attached to the graph, when none does).
pub fn mean_loss(objective: &dyn Objective, t: Targets) -> Tensor {
    let zero = t.states.sum(Kind::Float) * 0.0;
    match t.gathered() {
        Some(t) => objective.loss(&t),
        None => zero,
    }
}

/// Cross-entropy over every candidate (exact; cost grows with the catalog).
#[derive(Debug, Clone, Copy, Default)]
pub struct FullSoftmax;

impl Objective for FullSoftmax {
    fn name(&self) -> &'static str {
        "full_softmax"
    }
    fn loss(&self, t: &Targets) -> Tensor {
        match t.own {
            Some(_) => t.corrected().cross_entropy_loss::<Tensor>(&t.targets, None, tch::Reduction::Mean, IGNORE, 0.0),
            None => loss::full_softmax(&t.states, &t.table, &t.targets),
        }
    }
}

/// The positive against sampled negatives, `log Q` corrected (see [`loss::sampled_softmax`]). The logit correction
/// is not applied: sampled softmax rarely draws the last item as a negative, and scores the positive as it is.
#[derive(Debug, Clone, Copy)]
pub struct SampledSoftmax {
    /// Uniform negatives per step, shared by the batch.
    pub n_uniform: i64,
    /// Also the batch's other targets as negatives.
    pub in_batch: bool,
}

impl Objective for SampledSoftmax {
    fn name(&self) -> &'static str {
        "sampled_softmax"
    }
    fn loss(&self, t: &Targets) -> Tensor {
        loss::sampled_softmax(&t.states, &t.table, &t.targets, self.n_uniform, self.in_batch)
    }
}

/// The generative next-item objective (`[model.loss]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossConfig {
    /// Cross-entropy over the whole catalog at every position (exact; cost grows with the catalog).
    #[default]
    FullSoftmax,
    /// Sampled softmax for catalogs too large for a full softmax: the positive against `n_uniform` uniformly sampled
    /// items (shared by the batch) and, when `in_batch`, the batch's other targets; logits are corrected by
    /// `log Q` (the sampling probability), and accidental hits are masked.
    SampledSoftmax {
        /// Uniform negatives per step. Default 256.
        #[serde(default = "n_uniform")]
        n_uniform: i64,
        /// Also use the batch's targets as negatives. Default true.
        #[serde(default = "yes")]
        in_batch: bool,
    },
}

fn n_uniform() -> i64 {
    256
}

fn yes() -> bool {
    true
}

impl LossConfig {
    /// The objective this config names.
    pub fn objective(&self) -> Box<dyn Objective> {
        match *self {
            LossConfig::FullSoftmax => Box::new(FullSoftmax),
            LossConfig::SampledSoftmax { n_uniform, in_batch } => Box::new(SampledSoftmax { n_uniform, in_batch }),
        }
    }

    /// Checks the fields: `Err((field, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let LossConfig::SampledSoftmax { n_uniform, in_batch } = *self {
            if n_uniform < 0 || (n_uniform == 0 && !in_batch) {
                return Err(("loss.n_uniform", "must be positive (or in_batch true)".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn gathering_drops_ignored_rows_and_keeps_the_mean() {
        let states = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let table = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
        let targets = Tensor::from_slice(&[1i64, IGNORE, 5, IGNORE, 0]);
        let padded =
            states.matmul(&table.tr()).cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, IGNORE, 0.0);
        let t = Targets::new(states, table, targets).gathered().expect("three rows carry a target");
        assert_eq!(t.len(), 3);
        let got = FullSoftmax.loss(&t);
        assert!((got - padded).abs().double_value(&[]) < 1e-6);
        let none = Targets::new(
            Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)),
            Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[IGNORE, IGNORE]),
        );
        assert!(none.gathered().is_none());
    }

    #[test]
    fn restricting_renumbers_targets_and_moves_the_correction() {
        let states = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let table = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
        let targets = Tensor::from_slice(&[4i64, 1, 5]);
        let own = (Tensor::from_slice(&[4i64, 5, 2]), Tensor::from_slice(&[-1.0f32, -2.0, -3.0]));
        let t = Targets::new(states, table.shallow_clone(), targets).with_own(Some(own));
        let r = t.restricted_to(&Tensor::from_slice(&[1i64, 4]));
        assert_eq!(Vec::<i64>::try_from(&r.targets).unwrap(), vec![1, 0, IGNORE]);
        assert!(r.table.equal(&table.index_select(0, &Tensor::from_slice(&[1i64, 4]))));
        let (col, delta) = r.own.unwrap();
        assert_eq!(Vec::<i64>::try_from(&col).unwrap()[0], 1, "item 4 is now column 1");
        assert_eq!(Vec::<f32>::try_from(&delta).unwrap(), vec![-1.0, 0.0, 0.0], "items outside lose it");
    }

    #[test]
    fn configs_build_their_objective_and_refuse_no_negatives() {
        assert_eq!(LossConfig::FullSoftmax.objective().name(), "full_softmax");
        let s = LossConfig::SampledSoftmax { n_uniform: 8, in_batch: true };
        assert_eq!(s.objective().name(), "sampled_softmax");
        assert!(LossConfig::SampledSoftmax { n_uniform: 0, in_batch: false }.validate().is_err());
        let parsed: LossConfig = serde_json::from_str(r#"{"type":"sampled_softmax"}"#).unwrap();
        assert_eq!(parsed, LossConfig::SampledSoftmax { n_uniform: 256, in_batch: true });
    }
}
