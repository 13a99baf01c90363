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
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Tensor};

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

/// Catalog metadata, growing as items are added.
struct Catalog {
    ids: Vec<String>,
    titles: Vec<String>,
    domain_of: Vec<i64>,
    domain_names: Vec<String>,
    index: HashMap<String, u32>,
    /// Rows of the training catalog (items below it may have id embeddings).
    n_base: usize,
    /// Interactions per item (the popularity fallback for an empty history).
    counts: Vec<f32>,
}

impl Catalog {
    fn domain_idx(&mut self, name: &str) -> i64 {
        match self.domain_names.iter().position(|d| d == name) {
            Some(i) => i64::try_from(i).unwrap_or(0),
            None => {
                self.domain_names.push(name.to_string());
                i64::try_from(self.domain_names.len() - 1).unwrap_or(0)
            }
        }
    }

    fn resolve(&self, ids: &[String], what: &str) -> Result<Vec<u32>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match self.index.get(id.as_str()) {
                Some(&i) => out.push(i),
                None => unknown.push(id.as_str()),
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(5).copied().collect();
            return Err(ApiError::invalid(
                "unknown_item",
                format!(
                    "{what}: {} unknown item id(s), for example {:?}; add them with POST /v1/items first",
                    unknown.len(),
                    shown
                ),
            ));
        }
        Ok(out)
    }
}

struct User {
    history: Vec<u32>,
    version: u64,
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

struct Query {
    history: Vec<u32>,
    key: Option<(String, u64)>,
    k: usize,
    exclude: Vec<u32>,
    domain: Option<i64>,
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
            domain_of.push(i64::try_from(i).unwrap_or(0));
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
                let _ = reply.send(self.recall(n, k).map(|r| (r, self.model.index.describe())));
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

    fn append_events(&mut self, user_id: &str, items: &[u32]) -> usize {
        let user = self.users.entry(user_id.to_string()).or_insert(User { history: Vec::new(), version: 0 });
        user.history.extend_from_slice(items);
        user.version += 1;
        for &i in items {
            if let Some(c) = self.catalog.counts.get_mut(i as usize) {
                *c += 1.0;
            }
        }
        user.history.len()
    }

    fn events(&mut self, req: EventsRequest) -> Result<EventsResponse, ApiError> {
        if req.user_id.trim().is_empty() {
            return Err(ApiError::invalid("bad_user", "user_id is empty"));
        }
        check_id("user_id", &req.user_id)?;
        if req.items.is_empty() || req.items.len() > self.limits.max_history {
            return Err(ApiError::invalid(
                "bad_events",
                format!("items has {} entries; send 1 to {} per request", req.items.len(), self.limits.max_history),
            ));
        }
        let idx = self.catalog.resolve(&req.items, "items")?;
        self.journal
            .append(&[Record::Events { user_id: req.user_id.clone(), items: req.items }])
            .map_err(|e| ApiError::internal(format!("persisting the events: {e}")))?;
        let history_len = self.append_events(&req.user_id, &idx);
        self.sync_users();
        Ok(EventsResponse { user_id: req.user_id, history_len })
    }

    fn items(&mut self, items: Vec<NewItem>) -> Result<ItemsResponse, ApiError> {
        self.model.can_embed()?;
        let mut prepared = Vec::with_capacity(items.len());
        for it in items {
            let save = |m: &Option<(Vec<u8>, String)>| -> Result<Option<String>, ApiError> {
                m.as_ref()
                    .map(|(bytes, ext)| self.journal.save_media(bytes, ext))
                    .transpose()
                    .map_err(|e| ApiError::internal(format!("storing media of item {}: {e}", it.meta.id)))
            };
            let stored = StoredItem {
                id: it.meta.id.clone(),
                title: it.meta.title.clone(),
                domain: it.prepared.domain.clone(),
                text: it.meta.text.clone(),
                image: save(&it.image)?,
                audio: save(&it.audio)?,
            };
            prepared.push((stored, it.prepared));
        }
        // Embed before persisting: a request the model cannot take leaves no trace.
        let rows = self.embed_rows(&prepared, true)?;
        let record = Record::Items { items: prepared.iter().map(|(s, _)| s.clone()).collect() };
        self.journal.append(&[record]).map_err(|e| ApiError::internal(format!("persisting the items: {e}")))?;
        self.insert(prepared, &rows)
    }

    fn commit_items(&mut self, prepared: Vec<(StoredItem, Prepared)>) -> Result<ItemsResponse, ApiError> {
        let rows = self.embed_rows(&prepared, false)?;
        self.insert(prepared, &rows)
    }

    /// Rows of the item table for `prepared`, `limits.embed_batch` items per encoder forward (memory stays that of
    /// one batch whatever the request's size); with `answer_between`, the recommendations queued meanwhile are
    /// answered between two batches (on the catalog as it was: the items are not acknowledged yet).
    fn embed_rows(&mut self, prepared: &[(StoredItem, Prepared)], answer_between: bool) -> Result<Tensor, ApiError> {
        let mut parts = Vec::new();
        for (k, chunk) in prepared.chunks(self.limits.embed_batch.max(1)).enumerate() {
            if k > 0 && answer_between {
                self.answer_waiting();
            }
            let ids: Vec<i64> = chunk
                .iter()
                .map(|(s, _)| match self.catalog.index.get(&s.id) {
                    Some(&i) if (i as usize) < self.catalog.n_base => i64::from(i),
                    _ => -1,
                })
                .collect();
            let items: Vec<Prepared> = chunk.iter().map(|(_, p)| p.clone()).collect();
            let model = &self.model;
            parts.push(caught(&self.metrics, "the item tower panicked on these items", || {
                tch::no_grad(|| model.embed(&items, &ids))
            })?);
        }
        if parts.is_empty() {
            return Err(ApiError::invalid("bad_items", "no items to embed"));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    /// Answers the recommendation requests waiting in the queue; other jobs wait in `deferred`, in order.
    fn answer_waiting(&mut self) {
        let Some(rx) = self.rx.clone() else { return };
        let mut recs = Vec::new();
        while recs.len() < self.limits.max_batch {
            match rx.try_recv() {
                Ok(Job::Recommend(req, reply)) => recs.push((req, reply)),
                Ok(other) => self.deferred.push_back(other),
                Err(_) => break,
            }
        }
        if !recs.is_empty() {
            self.recommend_batch(recs);
        }
    }

    fn insert(&mut self, prepared: Vec<(StoredItem, Prepared)>, rows: &Tensor) -> Result<ItemsResponse, ApiError> {
        let (mut added, mut updated) = (0, 0);
        let mut new_rows = Vec::new();
        let mut touched = Vec::new();
        for (k, (stored, p)) in prepared.into_iter().enumerate() {
            let k = i64::try_from(k).map_err(|e| ApiError::internal(e.to_string()))?;
            let row = rows.get(k);
            let domain = self.catalog.domain_idx(&stored.domain);
            match self.catalog.index.get(&stored.id).copied() {
                Some(i) => {
                    let iu = i as usize;
                    self.catalog.titles[iu] = stored.title.clone();
                    self.catalog.domain_of[iu] = domain;
                    let mut t = self.model.table.get(i64::from(i));
                    tch::no_grad(|| t.copy_(&row));
                    touched.push(iu);
                    updated += 1;
                }
                None => {
                    let i = u32::try_from(self.catalog.ids.len())
                        .map_err(|_| ApiError::invalid("catalog_full", "the catalog holds 2^32 items"))?;
                    self.catalog.ids.push(stored.id.clone());
                    self.catalog.titles.push(stored.title.clone());
                    self.catalog.domain_of.push(domain);
                    self.catalog.counts.push(0.0);
                    self.catalog.index.insert(stored.id.clone(), i);
                    touched.push(i as usize);
                    new_rows.push(row);
                    added += 1;
                }
            }
            self.added.push((stored, p));
        }
        if !new_rows.is_empty() {
            let new = Tensor::stack(&new_rows, 0);
            self.model.table = Tensor::cat(&[&self.model.table, &new], 0);
        }
        self.reindex(touched);
        if updated > 0 {
            // An item in someone's history may have changed.
            self.model.cache.clear();
        }
        self.sync_catalog();
        Ok(ItemsResponse { added, updated, catalog_size: self.catalog.ids.len() })
    }

    /// Known users with a history, every second one by id from the first, at most `n`: the half that
    /// [`Model::load`] does not tune the index on.
    fn half_of_users(&self, n: usize) -> Vec<&[u32]> {
        let mut users: Vec<(&String, &User)> = self.users.iter().filter(|(_, u)| !u.history.is_empty()).collect();
        users.sort_by(|a, b| a.0.cmp(b.0));
        users.into_iter().step_by(2).take(n).map(|(_, u)| u.history.as_slice()).collect()
    }

    fn recall(&self, n: usize, k: usize) -> Result<f64, ApiError> {
        let hist = self.half_of_users(n.max(1));
        if hist.is_empty() {
            return Err(ApiError::invalid("no_users", "no user has a history to measure recall with"));
        }
        let batch = m6rec_data::SeqBatch::for_prediction(&hist, self.model.max_len(), self.model.rows())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let states = tch::no_grad(|| self.model.loaded.user_states(&batch, &self.model.table))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(self.model.index.recall_at_k(&states.to_device(tch::Device::Cpu), k))
    }

    /// Brings the top-k index up to date with table rows `touched` (any order, repeats allowed).
    fn reindex(&mut self, mut touched: Vec<usize>) {
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return;
        }
        let idx = Tensor::from_slice(&touched.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let rows = tch::no_grad(|| self.model.table.index_select(0, &idx.to_device(self.model.table.device())));
        self.model.index.set(&touched, &rows.to_device(tch::Device::Cpu));
    }

    fn swap(&mut self, model: Model) -> Result<ReloadResponse, ApiError> {
        if model.rows() != self.catalog.n_base {
            return Err(ApiError::invalid(
                "wrong_catalog",
                format!("the new checkpoint has {} items, the served catalog {}", model.rows(), self.catalog.n_base),
            ));
        }
        let old = std::mem::replace(&mut self.model, model);
        // The items added while serving, embedded by the new model (the latest content of each wins).
        let rebuilt = (|| -> Result<(), ApiError> {
            let extra = self.catalog.ids.len() - self.catalog.n_base;
            let d = self.model.table.size()[1];
            let mut table = Tensor::cat(
                &[
                    &self.model.table,
                    &Tensor::zeros([i64::try_from(extra).unwrap_or(0), d], (Kind::Float, self.model.table.device())),
                ],
                0,
            );
            if !self.added.is_empty() {
                let added = std::mem::take(&mut self.added);
                let rows = self.embed_rows(&added, false);
                self.added = added;
                let rows = rows?;
                for (k, (s, _)) in self.added.iter().enumerate() {
                    let i = self
                        .catalog
                        .index
                        .get(&s.id)
                        .copied()
                        .ok_or_else(|| ApiError::internal("an added item lost its index"))?;
                    let mut dst = table.get(i64::from(i));
                    tch::no_grad(|| dst.copy_(&rows.get(i64::try_from(k).unwrap_or(0))));
                }
            }
            table = table.detach();
            self.model.table = table;
            let touched: Vec<usize> =
                self.added.iter().filter_map(|(s, _)| self.catalog.index.get(&s.id).map(|&i| i as usize)).collect();
            self.reindex(touched);
            Ok(())
        })();
        if let Err(e) = rebuilt {
            self.model = old; // keep serving the old one
            return Err(e);
        }
        self.metrics.generation.set(i64::try_from(self.model.generation).unwrap_or(i64::MAX));
        Ok(ReloadResponse {
            model_generation: self.model.generation,
            checkpoint: self.model.checkpoint.display().to_string(),
        })
    }

    fn query(&self, req: &RecommendRequest) -> Result<Query, ApiError> {
        let n = self.catalog.ids.len();
        if req.k == 0 || req.k > self.limits.max_k {
            return Err(ApiError::invalid("bad_k", format!("k is {}; ask for 1 to {}", req.k, self.limits.max_k)));
        }
        let (history, key) = match (&req.user_id, &req.history) {
            (Some(u), None) => {
                let user = self.users.get(u).ok_or_else(|| {
                    ApiError::not_found(
                        "unknown_user",
                        format!("user {u:?} has no history here; send `history` instead, or POST /v1/events first"),
                    )
                })?;
                (user.history.clone(), Some((u.clone(), user.version)))
            }
            (None, Some(h)) => {
                if h.len() > self.limits.max_history {
                    return Err(ApiError::invalid(
                        "history_too_long",
                        format!(
                            "history has {} items; at most {} are accepted (the model reads the last {})",
                            h.len(),
                            self.limits.max_history,
                            self.model.max_len()
                        ),
                    ));
                }
                (self.catalog.resolve(h, "history")?, None)
            }
            _ => {
                return Err(ApiError::invalid(
                    "bad_request",
                    "give exactly one of `user_id` (a known user) and `history` (item ids, oldest first)",
                ))
            }
        };
        let mut exclude = if req.exclude_seen { history.clone() } else { Vec::new() };
        // Unknown blocklist ids cannot be recommended anyway: ignore them.
        exclude.extend(req.blocklist.iter().filter_map(|id| self.catalog.index.get(id.as_str()).copied()));
        let domain = match &req.domain {
            None => None,
            Some(d) => {
                Some(self.catalog.domain_names.iter().position(|x| x == d).map(|i| i as i64).ok_or_else(|| {
                    ApiError::invalid(
                        "unknown_domain",
                        format!("domain {d:?} is not in the catalog; domains: {:?}", self.catalog.domain_names),
                    )
                })?)
            }
        };
        Ok(Query { history, key, k: req.k.min(n), exclude, domain })
    }

    fn recommend_batch(&mut self, jobs: Vec<(RecommendRequest, Reply<RecommendResponse>)>) {
        let mut queries = Vec::new();
        let mut replies = Vec::new();
        for (req, reply) in jobs {
            match self.query(&req) {
                Ok(q) => {
                    queries.push(q);
                    replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if queries.is_empty() {
            return;
        }
        self.metrics.batch_size.observe(queries.len() as f64);
        let metrics = self.metrics.clone();
        let result =
            caught(&metrics, "the model panicked on this batch; the server keeps running", || self.rank(&queries));
        match result {
            Ok(lists) => {
                for ((q, reply), items) in queries.iter().zip(replies).zip(lists) {
                    let items = items
                        .into_iter()
                        .map(|(i, score)| Recommendation {
                            item_id: self.catalog.ids[i].clone(),
                            title: self.catalog.titles[i].clone(),
                            domain: self.catalog.domain_names[usize::try_from(self.catalog.domain_of[i]).unwrap_or(0)]
                                .clone(),
                            score,
                        })
                        .collect();
                    let _ = reply.send(Ok(RecommendResponse {
                        items,
                        history_len: q.history.len(),
                        model_generation: self.model.generation,
                    }));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Top-k `(item, score)` lists, one per query, from one forward pass over the histories not in the cache.
    fn rank(&mut self, queries: &[Query]) -> Result<Vec<Vec<(usize, f32)>>, ApiError> {
        let rows = self.model.rows();
        let max_len = self.model.max_len();
        // States: cached, computed now, or none (an empty history falls back to popularity).
        let mut states: Vec<Option<Tensor>> = Vec::with_capacity(queries.len());
        let mut missing = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            let cached = q.key.as_ref().and_then(|(u, v)| match self.model.cache.get(u) {
                Some((ver, t)) if ver == v => Some(t.shallow_clone()),
                _ => None,
            });
            if cached.is_some() {
                self.metrics.cache_hits.inc();
            } else if !q.history.is_empty() {
                missing.push(qi);
            }
            states.push(cached);
        }
        if !missing.is_empty() {
            let hist: Vec<&[u32]> = missing.iter().map(|&qi| queries[qi].history.as_slice()).collect();
            let batch = m6rec_data::SeqBatch::for_prediction(&hist, max_len, rows)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let computed = tch::no_grad(|| self.model.loaded.user_states(&batch, &self.model.table))
                .map_err(|e| ApiError::internal(e.to_string()))?
                .to_device(tch::Device::Cpu);
            for (j, &qi) in missing.iter().enumerate() {
                let st = computed.get(i64::try_from(j).unwrap_or(0));
                if let Some((u, v)) = &queries[qi].key {
                    if self.model.cache.len() >= self.limits.user_cache {
                        self.model.cache.clear();
                    }
                    self.model.cache.insert(u.clone(), (*v, st.shallow_clone()));
                }
                states[qi] = Some(st);
            }
        }
        let mut out: Vec<Vec<(usize, f32)>> = vec![Vec::new(); queries.len()];
        let mut exact = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            match (&states[qi], self.model.index.is_approximate()) {
                (Some(st), true) => {
                    // The graph's candidates (history, blocklist and other domains filtered out), re-ranked exactly.
                    let excluded: std::collections::HashSet<u32> = q.exclude.iter().copied().collect();
                    let domain_of = &self.catalog.domain_of;
                    let allow = |i: usize| {
                        !excluded.contains(&(i as u32)) && q.domain.is_none_or(|d| domain_of.get(i) == Some(&d))
                    };
                    let v = Vec::<f32>::try_from(st).map_err(|e| ApiError::internal(e.to_string()))?;
                    let cand = self.model.index.candidates(&v, q.k, &allow).unwrap_or_default();
                    out[qi] = self.model.index.rerank(st, &cand, q.k);
                }
                _ => exact.push(qi),
            }
        }
        if !exact.is_empty() {
            let lists =
                self.rank_exact(&exact.iter().map(|&qi| (&queries[qi], states[qi].as_ref())).collect::<Vec<_>>())?;
            for (qi, list) in exact.into_iter().zip(lists) {
                out[qi] = list;
            }
        }
        Ok(out)
    }

    /// Exact top-k: every item scored (or popularity counts for queries without a state), filters applied as masks.
    fn rank_exact(&self, queries: &[(&Query, Option<&Tensor>)]) -> Result<Vec<Vec<(usize, f32)>>, ApiError> {
        let rows = self.model.rows();
        // The table's width: d_model, plus similarity features when the model has them.
        let d = self.model.table.size()[1];
        let zero = Tensor::zeros([d], (Kind::Float, tch::Device::Cpu));
        let stacked: Vec<Tensor> =
            queries.iter().map(|(_, s)| s.map_or_else(|| zero.shallow_clone(), Tensor::shallow_clone)).collect();
        let mut scores = self.model.index.scores(&Tensor::stack(&stacked, 0)).to_device(tch::Device::Cpu);
        // Popularity (for empty histories) is read from the counts only when a query needs it.
        let counts = queries.iter().any(|(_, s)| s.is_none()).then(|| Tensor::from_slice(&self.catalog.counts));
        let mut rows_x = Vec::new();
        let mut cols_x = Vec::new();
        for (qi, (q, state)) in queries.iter().enumerate() {
            let r = i64::try_from(qi).unwrap_or(0);
            if let (None, Some(c)) = (state, &counts) {
                scores.get(r).copy_(c);
            }
            for &i in &q.exclude {
                rows_x.push(r);
                cols_x.push(i64::from(i));
            }
            if let Some(dom) = q.domain {
                let _ = scores.get(r).masked_fill_(&self.domain_tensor.ne(dom), f64::NEG_INFINITY);
            }
        }
        if !rows_x.is_empty() {
            let idx = [Some(Tensor::from_slice(&rows_x)), Some(Tensor::from_slice(&cols_x))];
            let _ = scores.index_put_(&idx, &Tensor::from(f32::NEG_INFINITY), false);
        }
        let kmax = queries.iter().map(|(q, _)| q.k).max().unwrap_or(1).min(rows).max(1);
        let (values, indices) = scores.topk(i64::try_from(kmax).unwrap_or(1), -1, true, true);
        let values =
            Vec::<f32>::try_from(values.contiguous().view([-1])).map_err(|e| ApiError::internal(e.to_string()))?;
        let indices =
            Vec::<i64>::try_from(indices.contiguous().view([-1])).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(queries
            .iter()
            .enumerate()
            .map(|(qi, (q, _))| {
                (0..q.k.min(kmax))
                    .map(|j| qi * kmax + j)
                    .filter(|&p| values[p].is_finite())
                    .map(|p| (usize::try_from(indices[p]).unwrap_or(0), values[p]))
                    .collect()
            })
            .collect())
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
