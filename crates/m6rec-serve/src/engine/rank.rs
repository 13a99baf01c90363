//! Recommendation: requests turned into queries, batched through one forward pass, ranked by the top-k index or
//! exactly (with domain filters and excluded items).

use super::*;
use crate::model::Backend;
use m6rec_recommender::generative::GenerativeModel;

pub(super) struct Query {
    pub(super) history: Vec<u32>,
    pub(super) key: Option<(String, u64)>,
    pub(super) k: usize,
    pub(super) exclude: Vec<u32>,
    pub(super) domain: Option<i64>,
}

impl Engine {
    /// Known users with a history, every second one by id from the first, at most `n`: the half that
    /// [`Model::load`] does not tune the index on.
    pub(super) fn half_of_users(&self, n: usize) -> Vec<&[u32]> {
        let mut users: Vec<(&String, &User)> = self.users.iter().filter(|(_, u)| !u.history.is_empty()).collect();
        users.sort_by(|a, b| a.0.cmp(b.0));
        users.into_iter().step_by(2).take(n).map(|(_, u)| u.history.as_slice()).collect()
    }

    pub(super) fn recall(&self, n: usize, k: usize) -> Result<f64, ApiError> {
        let hist = self.half_of_users(n.max(1));
        if hist.is_empty() {
            return Err(ApiError::invalid("no_users", "no user has a history to measure recall with"));
        }
        let m = self.model.emb()?;
        let batch = m6rec_data::SeqBatch::for_prediction(&hist, m.max_len(), m.rows())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let states =
            tch::no_grad(|| m.loaded.user_states(&batch, &m.table)).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(m.index.recall_at_k(&states.to_device(tch::Device::Cpu), k))
    }

    pub(super) fn query(&self, req: &RecommendRequest) -> Result<Query, ApiError> {
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

    pub(super) fn recommend_batch(&mut self, jobs: Vec<(RecommendRequest, Reply<RecommendResponse>)>) {
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
                            domain: self.catalog.domain_names[m6rec_tensor::dim::as_usize(self.catalog.domain_of[i])]
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

    /// Top-k `(item, score)` lists, one per query: from one forward pass over the histories not in the cache
    /// (embedding models), or from one batched beam search (generative models).
    pub(super) fn rank(&mut self, queries: &[Query]) -> Result<Vec<Vec<(usize, f32)>>, ApiError> {
        if let Backend::Generative(g) = &self.model.backend {
            let scores = self.beam_scores(g, queries)?;
            let all: Vec<&Query> = queries.iter().collect();
            return self.top_k(scores, &all);
        }
        let states = self.states(queries)?;
        let m = self.model.emb()?;
        let mut out: Vec<Vec<(usize, f32)>> = vec![Vec::new(); queries.len()];
        let mut exact = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            match (&states[qi], m.index.is_approximate()) {
                (Some(st), true) => {
                    // The graph's candidates (history, blocklist and other domains filtered out), re-ranked exactly.
                    let excluded: std::collections::HashSet<u32> = q.exclude.iter().copied().collect();
                    let domain_of = &self.catalog.domain_of;
                    let allow = |i: usize| {
                        !excluded.contains(&(i as u32)) && q.domain.is_none_or(|d| domain_of.get(i) == Some(&d))
                    };
                    let v = Vec::<f32>::try_from(st).map_err(|e| ApiError::internal(e.to_string()))?;
                    let cand = m.index.candidates(&v, q.k, &allow).unwrap_or_default();
                    out[qi] = m.index.rerank(st, &cand, q.k);
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

    /// Each query's user state (embedding models): cached, computed now in one forward pass, or none (an empty
    /// history falls back to popularity).
    fn states(&mut self, queries: &[Query]) -> Result<Vec<Option<Tensor>>, ApiError> {
        let (user_cache, metrics) = (self.limits.user_cache, self.metrics.clone());
        let m = self.model.emb_mut()?;
        let mut states: Vec<Option<Tensor>> = Vec::with_capacity(queries.len());
        let mut missing = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            let cached = q.key.as_ref().and_then(|(u, v)| match m.cache.get(u) {
                Some((ver, t)) if ver == v => Some(t.shallow_clone()),
                _ => None,
            });
            if cached.is_some() {
                metrics.cache_hits.inc();
            } else if !q.history.is_empty() {
                missing.push(qi);
            }
            states.push(cached);
        }
        if missing.is_empty() {
            return Ok(states);
        }
        let hist: Vec<&[u32]> = missing.iter().map(|&qi| queries[qi].history.as_slice()).collect();
        let batch = m6rec_data::SeqBatch::for_prediction(&hist, m.max_len(), m.rows())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let computed = tch::no_grad(|| m.loaded.user_states(&batch, &m.table))
            .map_err(|e| ApiError::internal(e.to_string()))?
            .to_device(tch::Device::Cpu);
        for (j, &qi) in missing.iter().enumerate() {
            let st = computed.get(m6rec_tensor::dim::as_i64(j));
            if let Some((u, v)) = &queries[qi].key {
                if m.cache.len() >= user_cache {
                    m.cache.clear();
                }
                m.cache.insert(u.clone(), (*v, st.shallow_clone()));
            }
            states[qi] = Some(st);
        }
        Ok(states)
    }

    /// Scores `[q, catalog]` of a generative model: each query's beam items their beam log-probability, every
    /// other item `-inf`; popularity for an empty history. The beam is wide enough for `k` plus the excluded items
    /// (at least `generative.beam`, at most 1000): a domain filter may leave fewer than `k`.
    fn beam_scores(&self, g: &GenerativeModel, queries: &[Query]) -> Result<Tensor, ApiError> {
        let n = self.catalog.ids.len();
        let mut scores = vec![f32::NEG_INFINITY; queries.len() * n];
        let with_history: Vec<usize> = (0..queries.len()).filter(|&qi| !queries[qi].history.is_empty()).collect();
        let beam = with_history
            .iter()
            .map(|&qi| queries[qi].k + queries[qi].exclude.len())
            .max()
            .unwrap_or(0)
            .max(g.config().beam)
            .min(1000);
        let histories: Vec<&[u32]> = with_history.iter().map(|&qi| queries[qi].history.as_slice()).collect();
        let beams = if histories.is_empty() {
            Vec::new()
        } else {
            g.beams(&histories, beam).map_err(|e| ApiError::internal(format!("beam search: {e}")))?
        };
        for (&qi, b) in with_history.iter().zip(&beams) {
            for it in b.iter().filter(|it| it.score.is_finite()) {
                if let Some(s) = scores.get_mut(qi * n + it.item as usize) {
                    *s = it.score;
                }
            }
        }
        for (qi, q) in queries.iter().enumerate() {
            if q.history.is_empty() {
                scores[qi * n..(qi + 1) * n].copy_from_slice(&self.catalog.counts);
            }
        }
        Ok(Tensor::from_slice(&scores).view([m6rec_tensor::dim::as_i64(queries.len()), m6rec_tensor::dim::as_i64(n)]))
    }

    /// Exact top-k: every item scored (or popularity counts for queries without a state), filters applied as masks.
    pub(super) fn rank_exact(&self, queries: &[(&Query, Option<&Tensor>)]) -> Result<Vec<Vec<(usize, f32)>>, ApiError> {
        let m = self.model.emb()?;
        // The table's width: d_model, plus similarity features when the model has them.
        let d = m.table.size()[1];
        let zero = Tensor::zeros([d], (Kind::Float, tch::Device::Cpu));
        let stacked: Vec<Tensor> =
            queries.iter().map(|(_, s)| s.map_or_else(|| zero.shallow_clone(), Tensor::shallow_clone)).collect();
        let scores = m.index.scores(&Tensor::stack(&stacked, 0)).to_device(tch::Device::Cpu);
        // Popularity (for empty histories) is read from the counts only when a query needs it.
        let counts = queries.iter().any(|(_, s)| s.is_none()).then(|| Tensor::from_slice(&self.catalog.counts));
        for (qi, (_, state)) in queries.iter().enumerate() {
            if let (None, Some(c)) = (state, &counts) {
                scores.get(m6rec_tensor::dim::as_i64(qi)).copy_(c);
            }
        }
        let qs: Vec<&Query> = queries.iter().map(|(q, _)| *q).collect();
        self.top_k(scores, &qs)
    }

    /// Each query's top `k` of `scores` (`[q, catalog]`) after its exclusions and domain filter; items scored
    /// `-inf` are never returned.
    fn top_k(&self, mut scores: Tensor, queries: &[&Query]) -> Result<Vec<Vec<(usize, f32)>>, ApiError> {
        let rows = m6rec_tensor::dim::as_usize(scores.size()[1]);
        let mut rows_x = Vec::new();
        let mut cols_x = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            let r = m6rec_tensor::dim::as_i64(qi);
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
        let kmax = queries.iter().map(|q| q.k).max().unwrap_or(1).min(rows).max(1);
        let (values, indices) = scores.topk(i64::try_from(kmax).unwrap_or(1), -1, true, true);
        let values =
            Vec::<f32>::try_from(values.contiguous().view([-1])).map_err(|e| ApiError::internal(e.to_string()))?;
        let indices =
            Vec::<i64>::try_from(indices.contiguous().view([-1])).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(queries
            .iter()
            .enumerate()
            .map(|(qi, q)| {
                (0..q.k.min(kmax))
                    .map(|j| qi * kmax + j)
                    .filter(|&p| values[p].is_finite())
                    .map(|p| (m6rec_tensor::dim::as_usize(indices[p]), values[p]))
                    .collect()
            })
            .collect())
    }
}
