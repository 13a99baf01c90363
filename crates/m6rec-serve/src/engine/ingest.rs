//! Changes: events appended to users' histories, items embedded and added to the catalog, a new model swapped in.

use super::*;
use crate::model::Backend;

impl Engine {
    pub(super) fn append_events(&mut self, user_id: &str, items: &[u32]) -> usize {
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

    pub(super) fn events(&mut self, req: EventsRequest) -> Result<EventsResponse, ApiError> {
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

    pub(super) fn items(&mut self, items: Vec<NewItem>) -> Result<ItemsResponse, ApiError> {
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
        let record = Record::Items { items: prepared.iter().map(|(s, _)| s.clone()).collect() };
        if matches!(self.model.backend, Backend::Generative(_)) {
            // Codes planned before persisting: a request the model cannot take leaves no trace.
            let plan = self.plan_codes(&prepared, true)?;
            self.journal.append(&[record]).map_err(|e| ApiError::internal(format!("persisting the items: {e}")))?;
            return self.insert_coded(prepared, plan);
        }
        // Embed before persisting: a request the model cannot take leaves no trace.
        let rows = self.embed_rows(&prepared, true)?;
        self.journal.append(&[record]).map_err(|e| ApiError::internal(format!("persisting the items: {e}")))?;
        self.insert(prepared, &rows)
    }

    pub(super) fn commit_items(&mut self, prepared: Vec<(StoredItem, Prepared)>) -> Result<ItemsResponse, ApiError> {
        if matches!(self.model.backend, Backend::Generative(_)) {
            let plan = self.plan_codes(&prepared, false)?;
            return self.insert_coded(prepared, plan);
        }
        let rows = self.embed_rows(&prepared, false)?;
        self.insert(prepared, &rows)
    }

    /// The items of `prepared` new to the catalog (first occurrence of each id), in order.
    fn new_items<'a>(&self, prepared: &'a [(StoredItem, Prepared)]) -> Vec<&'a Prepared> {
        let mut seen = std::collections::HashSet::new();
        prepared
            .iter()
            .filter(|(s, _)| !self.catalog.index.contains_key(&s.id) && seen.insert(s.id.as_str()))
            .map(|(_, p)| p)
            .collect()
    }

    /// Codes for the items new to the catalog (generative models), from their text, `limits.embed_batch` items
    /// per encoder forward; planned, not added (see [`Engine::insert_coded`]).
    fn plan_codes(
        &mut self,
        prepared: &[(StoredItem, Prepared)],
        answer_between: bool,
    ) -> Result<Option<m6rec_recommender::generative::NewCodes>, ApiError> {
        let fresh: Vec<Prepared> = self.new_items(prepared).into_iter().cloned().collect();
        self.codes_for(&fresh, answer_between)
    }

    /// [`Engine::plan_codes`] for `items`, all new, in the order they are to be added.
    fn codes_for(
        &mut self,
        items: &[Prepared],
        answer_between: bool,
    ) -> Result<Option<m6rec_recommender::generative::NewCodes>, ApiError> {
        if items.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        for (k, chunk) in items.chunks(self.limits.embed_batch.max(1)).enumerate() {
            if k > 0 && answer_between {
                self.answer_waiting();
            }
            let model = &self.model;
            parts.push(caught(&self.metrics, "the text encoder panicked on these items", || {
                tch::no_grad(|| model.code_content(chunk))
            })?);
        }
        let content = Tensor::cat(&parts, 0);
        let Backend::Generative(g) = &self.model.backend else {
            return Err(ApiError::internal("codes asked of an embedding model"));
        };
        let plan = g.plan_items(&content).map_err(|e| ApiError::invalid("no_code", e.to_string()))?;
        Ok(Some(plan))
    }

    /// Adds `prepared` to the catalog of a generative model: new items with the codes of `plan` (from
    /// [`Engine::plan_codes`] on the same items), known ones keep their code and take the new title and domain.
    fn insert_coded(
        &mut self,
        prepared: Vec<(StoredItem, Prepared)>,
        plan: Option<m6rec_recommender::generative::NewCodes>,
    ) -> Result<ItemsResponse, ApiError> {
        if let (Some(plan), Backend::Generative(g)) = (plan, &mut self.model.backend) {
            if !g.commit(plan) {
                return Err(ApiError::internal("the codes were planned on another catalog"));
            }
        }
        let (mut added, mut updated) = (0, 0);
        for (stored, p) in prepared {
            let domain = self.catalog.domain_idx(&stored.domain);
            match self.catalog.index.get(&stored.id).copied() {
                Some(i) => {
                    self.catalog.titles[i as usize] = stored.title.clone();
                    self.catalog.domain_of[i as usize] = domain;
                    updated += 1;
                }
                None => {
                    self.push_item(&stored, domain)?;
                    added += 1;
                }
            }
            self.added.push((stored, p));
        }
        self.sync_catalog();
        if self.model.rows() != self.catalog.ids.len() {
            return Err(ApiError::internal("the codes and the catalog disagree on the number of items"));
        }
        Ok(ItemsResponse { added, updated, catalog_size: self.catalog.ids.len() })
    }

    /// Appends an item to the catalog; returns its index.
    fn push_item(&mut self, stored: &StoredItem, domain: i64) -> Result<u32, ApiError> {
        let i = u32::try_from(self.catalog.ids.len())
            .map_err(|_| ApiError::invalid("catalog_full", "the catalog holds 2^32 items"))?;
        self.catalog.ids.push(stored.id.clone());
        self.catalog.titles.push(stored.title.clone());
        self.catalog.domain_of.push(domain);
        self.catalog.counts.push(0.0);
        self.catalog.index.insert(stored.id.clone(), i);
        Ok(i)
    }

    /// Rows of the item table for `prepared`, `limits.embed_batch` items per encoder forward (memory stays that of
    /// one batch whatever the request's size); with `answer_between`, the recommendations queued meanwhile are
    /// answered between two batches (on the catalog as it was: the items are not acknowledged yet).
    pub(super) fn embed_rows(
        &mut self,
        prepared: &[(StoredItem, Prepared)],
        answer_between: bool,
    ) -> Result<Tensor, ApiError> {
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
    pub(super) fn answer_waiting(&mut self) {
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

    pub(super) fn insert(
        &mut self,
        prepared: Vec<(StoredItem, Prepared)>,
        rows: &Tensor,
    ) -> Result<ItemsResponse, ApiError> {
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
                    let mut t = self.model.emb()?.table.get(i64::from(i));
                    tch::no_grad(|| t.copy_(&row));
                    touched.push(iu);
                    updated += 1;
                }
                None => {
                    let i = self.push_item(&stored, domain)?;
                    touched.push(i as usize);
                    new_rows.push(row);
                    added += 1;
                }
            }
            self.added.push((stored, p));
        }
        let m = self.model.emb_mut()?;
        if !new_rows.is_empty() {
            let new = Tensor::stack(&new_rows, 0);
            m.table = Tensor::cat(&[&m.table, &new], 0);
        }
        if updated > 0 {
            // An item in someone's history may have changed.
            m.cache.clear();
        }
        self.reindex(touched)?;
        self.sync_catalog();
        Ok(ItemsResponse { added, updated, catalog_size: self.catalog.ids.len() })
    }

    /// Brings the top-k index up to date with table rows `touched` (any order, repeats allowed).
    pub(super) fn reindex(&mut self, mut touched: Vec<usize>) -> Result<(), ApiError> {
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return Ok(());
        }
        let m = self.model.emb_mut()?;
        let idx = Tensor::from_slice(&touched.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let rows = tch::no_grad(|| m.table.index_select(0, &idx.to_device(m.table.device())));
        m.index.set(&touched, &rows.to_device(tch::Device::Cpu));
        Ok(())
    }

    pub(super) fn swap(&mut self, model: Model) -> Result<ReloadResponse, ApiError> {
        if model.rows() != self.catalog.n_base {
            return Err(ApiError::invalid(
                "wrong_catalog",
                format!("the new checkpoint has {} items, the served catalog {}", model.rows(), self.catalog.n_base),
            ));
        }
        let old = std::mem::replace(&mut self.model, model);
        // The items added while serving, embedded (or coded) by the new model; the latest content of each wins.
        let rebuilt = match self.model.backend {
            Backend::Embedding(_) => self.rebuild_table(),
            Backend::Generative(_) => self.rebuild_codes(),
        };
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

    /// The new embedding model's table extended by the items added while serving.
    fn rebuild_table(&mut self) -> Result<(), ApiError> {
        let extra = self.catalog.ids.len() - self.catalog.n_base;
        let m = self.model.emb()?;
        let d = m.table.size()[1];
        let table = Tensor::cat(
            &[&m.table, &Tensor::zeros([m6rec_tensor::dim::as_i64(extra), d], (Kind::Float, m.table.device()))],
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
                tch::no_grad(|| dst.copy_(&rows.get(m6rec_tensor::dim::as_i64(k))));
            }
        }
        self.model.emb_mut()?.table = table.detach();
        let touched: Vec<usize> =
            self.added.iter().filter_map(|(s, _)| self.catalog.index.get(&s.id).map(|&i| i as usize)).collect();
        self.reindex(touched)
    }

    /// Codes from the new generative model for the items added while serving, in catalog order (each from its
    /// latest content).
    fn rebuild_codes(&mut self) -> Result<(), ApiError> {
        let mut latest: HashMap<&str, &Prepared> = HashMap::new();
        for (s, p) in &self.added {
            latest.insert(s.id.as_str(), p);
        }
        let items = self.catalog.ids[self.catalog.n_base..]
            .iter()
            .map(|id| latest.get(id.as_str()).map(|p| (*p).clone()))
            .collect::<Option<Vec<Prepared>>>()
            .ok_or_else(|| ApiError::internal("an added item lost its content"))?;
        let plan = self.codes_for(&items, false)?;
        if let (Some(plan), Backend::Generative(g)) = (plan, &mut self.model.backend) {
            if !g.commit(plan) {
                return Err(ApiError::internal("the codes were planned on another catalog"));
            }
        }
        Ok(())
    }
}
