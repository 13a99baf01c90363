//! The model thread: owns the catalog, every user's history, the journal and the model, and answers jobs from a
//! channel. Recommendation requests that arrive together (up to `max_batch`, waiting at most `max_wait` for more)
//! share one forward pass. One owner means no locks and a total order: a request sent after an acknowledged change
//! sees it, and a reload takes effect between two batches, so requests already queued finish on the old model.

use crate::api::*;
use crate::error::ApiError;
use crate::journal::{Journal, Record, StoredItem};
use crate::metrics::Metrics;
use crate::model::{Model, Prepared};
use crate::Limits;
use catalog::{Catalog, User};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Tensor};

mod catalog;
mod ingest;
mod rank;

/// Where an answer goes.
pub type Reply<T> = tokio::sync::oneshot::Sender<Result<T, ApiError>>;

/// An item of `POST /v1/items`, decoded, with the media to keep.
#[derive(Debug)]
pub struct NewItem {
    /// Id, title, domain, text.
    pub meta: ItemIn,
    /// Ready for the tower.
    pub prepared: Prepared,
    /// Bytes to store under `media/` with their extension.
    pub image: Option<(Vec<u8>, String)>,
    /// See `image`.
    pub audio: Option<(Vec<u8>, String)>,
}

/// A unit of work for the model thread.
pub enum Job {
    /// `POST /v1/recommend`.
    Recommend(RecommendRequest, Reply<RecommendResponse>),
    /// `POST /v1/events`.
    Events(EventsRequest, Reply<EventsResponse>),
    /// `POST /v1/items`.
    Items(Vec<NewItem>, Reply<ItemsResponse>),
    /// Recall@k of the top-k index against exact ranking, over the states of up to `n` known users (every second by
    /// id, the half the tuning does not use), and the index in words.
    Recall(usize, usize, Reply<(f64, String)>),
    /// Swap in a new model (loaded on another thread; the items added while serving are embedded with it here).
    Swap(Box<Model>, Reply<ReloadResponse>),
}

/// Everything the model thread owns.
pub struct Engine {
    catalog: Catalog,
    users: HashMap<String, User>,
    journal: Journal,
    model: Model,
    added: Vec<(StoredItem, Prepared)>,
    /// `catalog.domain_of` as a tensor (domain filters in exact ranking); rebuilt when items change.
    domain_tensor: Tensor,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// The job queue, while [`Engine::run`] runs: a long embedding answers the recommendations queued meanwhile.
    rx: Option<Receiver<Job>>,
    /// Changes that arrived during a long embedding, applied after it in arrival order.
    deferred: VecDeque<Job>,
}

impl Engine {
    /// State from the dataset (catalog, full histories), then the journal replayed.
    pub fn new(
        model: Model,
        ds: &m6rec_data::Dataset,
        journal: Journal,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let mut domain_names: Vec<String> = Vec::new();
        let mut domain_of = Vec::with_capacity(ds.n_items());
        for it in &ds.items {
            let i = domain_names.iter().position(|d| *d == it.domain).unwrap_or_else(|| {
                domain_names.push(it.domain.clone());
                domain_names.len() - 1
            });
            domain_of.push(m6rec_tensor::dim::as_i64(i));
        }
        let mut counts = vec![0f32; ds.n_items()];
        for &i in &ds.interactions.item {
            if let Some(c) = counts.get_mut(i as usize) {
                *c += 1.0;
            }
        }
        let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
        let users = ds
            .users
            .iter()
            .enumerate()
            .map(|(u, id)| (id.clone(), User { history: split.sequence(u).to_vec(), version: 0 }))
            .collect();
        let catalog = Catalog {
            ids: ds.items.iter().map(|it| it.id.clone()).collect(),
            titles: ds.items.iter().map(|it| it.title.clone()).collect(),
            domain_of,
            domain_names,
            index: ds.items.iter().enumerate().map(|(i, it)| (it.id.clone(), i as u32)).collect(),
            n_base: ds.n_items(),
            counts,
        };
        let mut e = Engine {
            catalog,
            users,
            journal,
            model,
            added: Vec::new(),
            domain_tensor: Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
            limits,
            metrics,
            rx: None,
            deferred: VecDeque::new(),
        };
        e.sync_catalog();
        e
    }

    /// Applies journal records read at start: events extend histories; items are embedded in batches. Records
    /// that no longer apply (an item the model cannot embed) are skipped with a message on stderr.
    pub fn replay(&mut self, records: Vec<Record>, prepare: impl Fn(&StoredItem) -> Prepared) -> usize {
        let applied = self.replay_records(records, prepare);
        self.sync_catalog();
        applied
    }

    fn replay_records(&mut self, records: Vec<Record>, prepare: impl Fn(&StoredItem) -> Prepared) -> usize {
        let mut applied = 0;
        for rec in records {
            match rec {
                Record::Events { user_id, items } => match self.catalog.resolve(&items, "journal events") {
                    Ok(idx) => {
                        self.append_events(&user_id, &idx);
                        applied += 1;
                    }
                    Err(e) => tracing::warn!("journal: skipping events of {user_id}: {}", e.message),
                },
                Record::Items { items } => {
                    let prepared: Vec<(StoredItem, Prepared)> = items
                        .into_iter()
                        .map(|s| {
                            let p = prepare(&s);
                            (s, p)
                        })
                        .collect();
                    match self.commit_items(prepared) {
                        Ok(_) => applied += 1,
                        Err(e) => tracing::warn!("journal: skipping an items record: {}", e.message),
                    }
                }
            }
        }
        applied
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, rx: Receiver<Job>) {
        self.rx = Some(rx.clone());
        loop {
            // Changes deferred by a long embedding come first, in the order they arrived.
            let mut jobs: Vec<Job> = Vec::new();
            while jobs.len() < self.limits.max_batch {
                match self.deferred.pop_front() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
            if jobs.is_empty() {
                match rx.recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let deadline = Instant::now() + self.limits.max_wait;
            while jobs.len() < self.limits.max_batch && self.deferred.is_empty() {
                match rx.recv_deadline(deadline) {
                    Ok(j) => jobs.push(j),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let mut recs = Vec::new();
            for job in jobs {
                match job {
                    Job::Recommend(req, reply) => recs.push((req, reply)),
                    other => {
                        // Changes apply in arrival order relative to each other; queued recommendations see them.
                        self.handle(other);
                    }
                }
            }
            if !recs.is_empty() {
                self.recommend_batch(recs);
            }
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Recommend(req, reply) => self.recommend_batch(vec![(req, reply)]),
            Job::Events(req, reply) => {
                let _ = reply.send(self.events(req));
            }
            Job::Items(items, reply) => {
                let _ = reply.send(self.items(items));
            }
            Job::Recall(n, k, reply) => {
                let _ = reply.send(self.recall(n, k).map(|r| (r, self.model.describe_index())));
            }
            Job::Swap(model, reply) => {
                let _ = reply.send(self.swap(*model));
            }
        }
    }

    /// After items changed: the domain tensor and the gauges.
    fn sync_catalog(&mut self) {
        self.domain_tensor = Tensor::from_slice(&self.catalog.domain_of);
        self.metrics.catalog_items.set(i64::try_from(self.catalog.ids.len()).unwrap_or(i64::MAX));
        self.sync_users();
    }

    fn sync_users(&self) {
        self.metrics.users.set(i64::try_from(self.users.len()).unwrap_or(i64::MAX));
    }
}

/// Runs model code that may panic (libtorch errors surface as panics in tch): a panic becomes a 500 for this work
/// only, counted in `m6rec_model_panics_total`, and the model thread carries on.
fn caught<T>(metrics: &Metrics, what: &str, f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        metrics.panics.inc();
        Err(ApiError::internal(what))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_model_code_is_a_500_and_is_counted() {
        let metrics = Metrics::new();
        let r: Result<u32, ApiError> = caught(&metrics, "the model panicked", || {
            // What tch does on a libtorch error: index_select on an empty tensor.
            let empty = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu));
            let _ = empty.index_select(0, &Tensor::from_slice(&[0i64]));
            Ok(1)
        });
        let err = r.expect_err("the panic became an error");
        assert_eq!(err.status.as_u16(), 500);
        assert_eq!(metrics.panics.get(), 1);
        let ok: Result<u32, ApiError> = caught(&metrics, "unused", || Ok(7));
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(metrics.panics.get(), 1);
    }
}
