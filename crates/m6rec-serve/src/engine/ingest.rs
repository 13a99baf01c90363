//! Changes: events appended to users' histories, items embedded and added to the catalog, a new model swapped in.

use super::*;

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
        // Embed before persisting: a request the model cannot take leaves no trace.
        let rows = self.embed_rows(&prepared, true)?;
        let record = Record::Items { items: prepared.iter().map(|(s, _)| s.clone()).collect() };
        self.journal.append(&[record]).map_err(|e| ApiError::internal(format!("persisting the items: {e}")))?;
        self.insert(prepared, &rows)
    }

    pub(super) fn commit_items(&mut self, prepared: Vec<(StoredItem, Prepared)>) -> Result<ItemsResponse, ApiError> {
        let rows = self.embed_rows(&prepared, false)?;
        self.insert(prepared, &rows)
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

    /// Brings the top-k index up to date with table rows `touched` (any order, repeats allowed).
    pub(super) fn reindex(&mut self, mut touched: Vec<usize>) {
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return;
        }
        let idx = Tensor::from_slice(&touched.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let rows = tch::no_grad(|| self.model.table.index_select(0, &idx.to_device(self.model.table.device())));
        self.model.index.set(&touched, &rows.to_device(tch::Device::Cpu));
    }

    pub(super) fn swap(&mut self, model: Model) -> Result<ReloadResponse, ApiError> {
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
                    &Tensor::zeros([m6rec_tensor::dim::as_i64(extra), d], (Kind::Float, self.model.table.device())),
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
                    tch::no_grad(|| dst.copy_(&rows.get(m6rec_tensor::dim::as_i64(k))));
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
}
