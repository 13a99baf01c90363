//! Top-k over the item table: exact (one matrix product per batch, the table kept transposed so a batch streams it
//! once) or approximate for large catalogs: an inverted file (IVF: the items split into k-means cells, a query scans
//! only the cells whose centres score best for it) or an HNSW graph from `hnsw_rs`. Approximate candidates are
//! re-ranked exactly.
//!
//! IVF is the one to use on CPUs: it builds in about a minute at 1M items on one thread (HNSW took 4 to 10), its
//! recall is bought by scanning more cells (at worst every cell: exact), and [`ItemIndex::tune`] raises that number
//! until a measured recall is reached (`docs/measurements.md`, "Serving latency"). Scores are inner products, which HNSW does not search directly; items are lifted to
//! `[x, sqrt(M² - |x|²)]` and queries to `[q, 0]` (M the largest item norm), so the nearest item in L2 is the one
//! with the largest inner product (Bachrach et al., 2014). Items added later with a norm above M get a 0 lift (a
//! small approximation the exact re-ranking absorbs).

//!
//! The crate stands alone: a table in, top-k out, nothing else from m6rec needed.
//!
//! ```
//! use m6rec_index::{IndexKind, ItemIndex, IvfParams};
//! use tch::{Device, Kind, Tensor};
//! tch::manual_seed(0);
//! let items = Tensor::randn([2_000, 16], (Kind::Float, Device::Cpu));
//! let ivf = IndexKind::Ivf(IvfParams { lists: 32, probe: 8, target_recall: None });
//! let index = ItemIndex::build(&items, ivf);
//! assert!(index.is_approximate() && index.len() == 2_000);
//! let queries = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
//! let top = index.top_k(&queries, 10); // one ranked list of item rows per query
//! assert_eq!(top.len(), 4);
//! assert!(top.iter().all(|list| list.len() == 10 && list.iter().all(|&i| i < 2_000)));
//! // Scanning every cell finds (almost) all of the exact top-10: only the 8-bit pre-ranking can lose one.
//! let all = ItemIndex::build(&items, IndexKind::Ivf(IvfParams { lists: 32, probe: 32, target_recall: None }));
//! assert!(all.recall_at_k(&queries, 10) >= 0.95);
//! ```
#![deny(missing_docs)]

mod ivf;

use anndists::dist::DistL2;
use hnsw_rs::hnsw::Hnsw;
use tch::{Kind, Tensor};

/// Which index answers top-k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IndexKind {
    /// Score every item (exact).
    Exact,
    /// Inverted file over k-means cells, candidates re-ranked exactly.
    Ivf(IvfParams),
    /// HNSW graph, candidates re-ranked exactly.
    Hnsw(HnswParams),
    /// IVF from `min_items` items up, exact below.
    Auto {
        /// Catalog size from which IVF is used.
        min_items: usize,
        /// Its parameters.
        params: IvfParams,
    },
}

/// Exact: an approximate index is opt-in (`Auto` is what `m6rec serve` uses by default).
impl Default for IndexKind {
    fn default() -> Self {
        IndexKind::Exact
    }
}

/// IVF parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IvfParams {
    /// Cells (k-means centres); 0 picks `4·√n`, at least 1. More cells than the catalog has natural clusters matter
    /// most: at 1M generated items around 2,000 centres, 0.97 took 297 of 1,000 cells, 138 of 2,000, 11 of 4,000.
    pub lists: usize,
    /// Cells scanned per query (more when filters leave fewer than the results asked). Default 8.
    pub probe: usize,
    /// Recall@10 against exact top-k that [`ItemIndex::tune`] (run by the service at start-up and on reload, over
    /// known users' states) raises `probe` to reach; `None` keeps `probe`. Default 0.97.
    pub target_recall: Option<f64>,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams { lists: 0, probe: 8, target_recall: Some(0.97) }
    }
}

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HnswParams {
    /// Links per node. Default 12.
    pub m: usize,
    /// Candidate list while building. Default 48 (building 1M items with 16/100 took over 12 minutes on 2 cores).
    pub ef_construction: usize,
    /// Candidate list while searching (at least the number of results asked). Default 96.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 12, ef_construction: 48, ef_search: 96 }
    }
}

struct Graph {
    hnsw: Hnsw<'static, f32, DistL2>,
    max_norm: f32,
    params: HnswParams,
    /// Items whose norm exceeds `max_norm` (added after the build): scored exactly with every query.
    overflow: Vec<usize>,
}

enum Approx {
    Ivf(crate::ivf::Ivf, Option<f64>),
    Hnsw(Graph),
}

/// The searchable form of an item table `[n, d]`.
pub struct ItemIndex {
    /// `[d, n]`, contiguous.
    table_t: Tensor,
    approx: Option<Approx>,
}

impl std::fmt::Debug for ItemIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemIndex").field("items", &self.len()).field("approximate", &self.is_approximate()).finish()
    }
}

fn rows_of(table: &Tensor) -> Vec<Vec<f32>> {
    let t = table.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
    let (n, d) = t.size2().unwrap_or((0, 0));
    let flat = Vec::<f32>::try_from(t.view([-1])).unwrap_or_default();
    let d = crate::size(d);
    (0..crate::size(n)).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect()
}

fn lift(x: &[f32], max_norm: f32) -> Vec<f32> {
    let sq: f32 = x.iter().map(|v| v * v).sum();
    let mut v = x.to_vec();
    v.push((max_norm * max_norm - sq).max(0.0).sqrt());
    v
}

impl ItemIndex {
    /// Indexes `table` (`[n, d]`).
    pub fn build(table: &Tensor, kind: IndexKind) -> ItemIndex {
        let table_t = tch::no_grad(|| table.detach().transpose(0, 1).contiguous());
        let n = crate::size(table.size()[0]);
        let ivf = |p: IvfParams| {
            let ivf = crate::ivf::Ivf::build(&table.detach().to_device(tch::Device::Cpu), p.lists, p.probe);
            Approx::Ivf(ivf, p.target_recall)
        };
        let approx = match kind {
            IndexKind::Exact => None,
            IndexKind::Ivf(p) => Some(ivf(p)),
            IndexKind::Auto { min_items, params } => (n >= min_items).then(|| ivf(params)),
            IndexKind::Hnsw(p) => {
                let rows = rows_of(table);
                let max_norm = rows.iter().map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).fold(0.0f32, f32::max);
                let lifted: Vec<Vec<f32>> = rows.iter().map(|r| lift(r, max_norm)).collect();
                let layers = 16.min(((n.max(2)) as f32).ln().ceil() as usize);
                let hnsw = Hnsw::new(p.m, n.max(1), layers, p.ef_construction, DistL2 {});
                let data: Vec<(&[f32], usize)> = lifted.iter().enumerate().map(|(i, v)| (v.as_slice(), i)).collect();
                hnsw.parallel_insert_slice(&data);
                Some(Approx::Hnsw(Graph { hnsw, max_norm, params: p, overflow: Vec::new() }))
            }
        };
        ItemIndex { table_t, approx }
    }

    /// Items indexed.
    pub fn len(&self) -> usize {
        crate::size(self.table_t.size()[1])
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether top-k is approximate (IVF or an HNSW graph).
    pub fn is_approximate(&self) -> bool {
        self.approx.is_some()
    }

    /// What answers top-k, in words: "exact", "IVF, 2000 cells, probe 32" or "HNSW, M 12, ef 96".
    pub fn describe(&self) -> String {
        match &self.approx {
            None => "exact".into(),
            Some(Approx::Ivf(ivf, _)) => format!("IVF, {} cells, probe {}", ivf.cells(), ivf.probe),
            Some(Approx::Hnsw(g)) => format!("HNSW, M {}, ef {}", g.params.m, g.params.ef_search),
        }
    }

    /// Exact scores `[b, n]` of every item for `states` (`[b, d]`).
    pub fn scores(&self, states: &Tensor) -> Tensor {
        tch::no_grad(|| states.to_kind(Kind::Float).mm(&self.table_t))
    }

    /// Sets rows `first..first + rows.size()[0]` to `rows` (`[m, d]`): rows past the end are appended, others
    /// replaced. IVF moves it to the cell of its nearest centre (centres stay where the build put them); in the graph,
    /// a replaced item is inserted again (the stale node remains; exact re-ranking makes it harmless).
    pub fn set(&mut self, idx: &[usize], rows: &Tensor) {
        let rows = rows.detach().to_kind(Kind::Float);
        let mut append = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let row = rows.get(k as i64);
            if i < self.len() {
                let mut col = self.table_t.select(1, i as i64);
                tch::no_grad(|| col.copy_(&row));
            } else {
                append.push(row);
            }
        }
        if !append.is_empty() {
            let new = Tensor::stack(&append, 1); // [d, m]
            self.table_t = Tensor::cat(&[&self.table_t, &new], 1).contiguous();
        }
        if let Some(Approx::Ivf(ivf, _)) = &mut self.approx {
            for (r, &i) in rows_of(&rows).iter().zip(idx) {
                ivf.set(i, r);
            }
        }
        if let Some(Approx::Hnsw(g)) = &mut self.approx {
            for (r, &i) in rows_of(&rows).iter().zip(idx) {
                let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > g.max_norm {
                    if !g.overflow.contains(&i) {
                        g.overflow.push(i);
                    }
                } else {
                    g.hnsw.insert_slice((&lift(r, g.max_norm), i));
                }
            }
        }
    }

    /// Candidates for one state (`[d]` values) from the approximate index: up to `n` item indices for which `allow`
    /// holds, best first by the index's measure (re-rank them with [`ItemIndex::rerank`]). `None` for an exact index.
    pub fn candidates(&self, state: &[f32], n: usize, allow: &dyn Fn(usize) -> bool) -> Option<Vec<usize>> {
        let g = match self.approx.as_ref()? {
            Approx::Ivf(ivf, _) => return Some(ivf.search(state, n, allow)),
            Approx::Hnsw(g) => g,
        };
        // Scaled to the items' largest norm: argmax of the inner product is unchanged, and the query then sits among
        // the lifted items instead of far from all of them (where every item is at nearly the same distance and the
        // greedy graph search cannot tell them apart: recall@10 was 0.06 at 1M items with user states of norm ~8).
        let norm = state.iter().map(|v| v * v).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { g.max_norm / norm } else { 1.0 };
        let mut q: Vec<f32> = state.iter().map(|v| v * scale).collect();
        q.push(0.0);
        let filter = |id: &usize| allow(*id);
        let found = g.hnsw.search_filter(&q, n, g.params.ef_search.max(n), Some(&filter));
        let mut seen = std::collections::HashSet::new();
        let extra = g.overflow.iter().copied().filter(|&i| allow(i));
        Some(found.into_iter().map(|nb| nb.d_id).chain(extra).filter(|&i| i < self.len() && seen.insert(i)).collect())
    }

    /// Top-`k` item indices for each row of `states` (`[b, d]`), through the approximate index when there is one
    /// (candidates re-ranked exactly), else exactly (64 states per matrix product, so that memory stays bounded).
    pub fn top_k(&self, states: &Tensor, k: usize) -> Vec<Vec<usize>> {
        if self.approx.is_none() {
            let kk = k.min(self.len()) as i64;
            let mut out = Vec::new();
            for chunk in states.split(64, 0) {
                let (_, idx) = self.scores(&chunk).topk(kk, -1, true, true);
                out.extend((0..chunk.size()[0]).map(|r| {
                    Vec::<i64>::try_from(idx.get(r)).unwrap_or_default().into_iter().map(|i| i as usize).collect()
                }));
            }
            return out;
        }
        let rows = rows_of(states);
        rows.iter()
            .enumerate()
            .map(|(r, s)| {
                let cand = self.candidates(s, k, &|_| true).unwrap_or_default();
                self.rerank(&states.get(r as i64), &cand, k).into_iter().map(|(i, _)| i).collect()
            })
            .collect()
    }

    /// Exact scores of `cand` for one state, best first, at most `k`.
    pub fn rerank(&self, state: &Tensor, cand: &[usize], k: usize) -> Vec<(usize, f32)> {
        if cand.is_empty() {
            return Vec::new();
        }
        let idx = Tensor::from_slice(&cand.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let s = tch::no_grad(|| state.to_kind(Kind::Float).unsqueeze(0).mm(&self.table_t.index_select(1, &idx)));
        let s = Vec::<f32>::try_from(s.view([-1])).unwrap_or_default();
        let mut pairs: Vec<(usize, f32)> = cand.iter().copied().zip(s).collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
        pairs.truncate(k);
        pairs
    }

    /// Recall@k of this index against exact top-k over `states` (`[b, d]`): the mean fraction of the exact top-k
    /// that it returns (1 for an exact index).
    pub fn recall_at_k(&self, states: &Tensor, k: usize) -> f64 {
        let exact = ItemIndex { table_t: self.table_t.shallow_clone(), approx: None }.top_k(states, k);
        self.recall_against(&exact, states, k)
    }

    fn recall_against(&self, exact: &[Vec<usize>], states: &Tensor, k: usize) -> f64 {
        let approx = self.top_k(states, k);
        exact
            .iter()
            .zip(&approx)
            .map(|(e, a)| e.iter().filter(|i| a.contains(i)).count() as f64 / e.len().max(1) as f64)
            .sum::<f64>()
            / exact.len().max(1) as f64
    }

    /// For IVF with a target recall: finds the fewest cells to probe (from the configured number up to all of them:
    /// doubling, then bisecting) for which recall@`k` over `states` (`[b, d]`, say known users' states) reaches the
    /// target. Returns the recall reached; `None` when there is nothing to tune (exact, HNSW, no target, no states).
    ///
    /// When that takes more than a third of the cells the index becomes exact (recall 1): scanning so much of the
    /// catalog one query at a time costs more than exact products over a batch (at 1M random, unclustered items
    /// 0.97 took 931 of 2,000 cells and served 77 requests/s against exact's 100).
    pub fn tune(&mut self, states: &Tensor, k: usize) -> Option<f64> {
        let (target, start, cells) = match &self.approx {
            Some(Approx::Ivf(ivf, Some(t))) if states.size()[0] > 0 => (*t, ivf.probe, ivf.cells()),
            _ => return None,
        };
        let exact = ItemIndex { table_t: self.table_t.shallow_clone(), approx: None }.top_k(states, k);
        let mut at = |probe: usize| {
            if let Some(Approx::Ivf(ivf, _)) = &mut self.approx {
                ivf.probe = probe;
            }
            self.recall_against(&exact, states, k)
        };
        // Doubling: `good` reaches the target (or is every cell), `bad` (below it) does not.
        let (mut bad, mut good) = (0, start.min(cells));
        let mut recall = at(good);
        while recall < target && good < cells {
            bad = good;
            good = (good * 2).min(cells);
            recall = at(good);
        }
        while good - bad > 1 && recall >= target {
            let mid = bad + (good - bad) / 2;
            let r = at(mid);
            if r >= target {
                (good, recall) = (mid, r);
            } else {
                bad = mid;
            }
        }
        at(good);
        if good * 3 > cells {
            self.approx = None;
            return Some(1.0);
        }
        Some(recall)
    }
}

/// A size or index libtorch reports (never negative) as `usize`; panics only if libtorch broke that invariant.
pub(crate) fn size(n: i64) -> usize {
    usize::try_from(n).expect("libtorch sizes and indices are never negative")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: i64, d: i64) -> Tensor {
        tch::manual_seed(3);
        Tensor::randn([n, d], (Kind::Float, tch::Device::Cpu))
    }

    #[test]
    fn exact_top_k_is_the_argsort_of_the_scores() {
        let t = table(500, 8);
        let idx = ItemIndex::build(&t, IndexKind::Exact);
        let q = table(3, 8);
        let top = idx.top_k(&q, 5);
        let scores = q.mm(&t.transpose(0, 1));
        for (r, row) in top.iter().enumerate() {
            let s = Vec::<f32>::try_from(scores.get(r as i64)).unwrap_or_default();
            let mut order: Vec<usize> = (0..500).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            assert_eq!(row, &order[..5].to_vec());
        }
        assert!((idx.recall_at_k(&q, 10) - 1.0).abs() < 1e-12);
    }

    /// Items around centres, as trained embeddings cluster (what `bench-serve --items clustered` generates).
    fn clustered(n: i64, d: i64, centres: i64) -> Tensor {
        tch::manual_seed(5);
        let c = Tensor::randn([centres, d], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let assign = Tensor::randint(centres, [n], (Kind::Int64, tch::Device::Cpu));
        c.index_select(0, &assign) + Tensor::randn([n, d], (Kind::Float, tch::Device::Cpu)) * 0.02
    }

    #[test]
    fn ivf_tunes_its_probe_to_the_target_recall_and_takes_new_items() {
        let t = clustered(20_000, 16, 400);
        let params = IvfParams { lists: 0, probe: 1, target_recall: Some(0.95) };
        let mut idx = ItemIndex::build(&t, IndexKind::Ivf(params));
        assert!(idx.is_approximate());
        assert!(idx.describe().starts_with("IVF, 566 cells, probe 1"), "{}", idx.describe());
        let tune_q = table(100, 16) * 8.0;
        let q = table(300, 16).narrow(0, 100, 200) * 8.0; // other queries than the tuning ones
        let before = idx.recall_at_k(&q, 10);
        let tuned = idx.tune(&tune_q, 10).expect("an IVF index with a target is tuned");
        assert!(tuned >= 0.95, "tuned recall {tuned}");
        let after = idx.recall_at_k(&q, 10);
        assert!(after >= 0.93 && after > before, "recall on other queries: {before} -> {after}");
        assert!(!idx.describe().ends_with("probe 1"), "{}", idx.describe());
        // A new item aligned with a query becomes its top result; replaced by its opposite, it leaves the top.
        let q0 = q.get(0);
        let new = (&q0 * 10.0).unsqueeze(0);
        idx.set(&[20_000], &new);
        assert_eq!(idx.len(), 20_001);
        assert_eq!(idx.top_k(&q0.unsqueeze(0), 1)[0][0], 20_000);
        idx.set(&[20_000], &(-new));
        assert!(!idx.top_k(&q0.unsqueeze(0), 10)[0].contains(&20_000));
        // Filters that leave few items still give k results: cells past the probe are scanned.
        let v = Vec::<f32>::try_from(&q0).expect("state");
        let only = idx.candidates(&v, 10, &|i| i % 1000 == 7).expect("approximate");
        assert!(only.len() >= 10, "{only:?}");
        assert!(only.iter().all(|i| i % 1000 == 7));
        // An exact index has nothing to tune.
        assert_eq!(ItemIndex::build(&t, IndexKind::Exact).tune(&tune_q, 10), None);
    }

    #[test]
    fn ivf_that_must_scan_most_cells_becomes_exact() {
        // Unclustered items and a perfect recall to reach: nearly every cell must be scanned.
        let t = table(5000, 16);
        let params = IvfParams { lists: 0, probe: 1, target_recall: Some(1.0) };
        let mut idx = ItemIndex::build(&t, IndexKind::Ivf(params));
        assert!(idx.is_approximate());
        let q = table(200, 16) * 3.0;
        assert_eq!(idx.tune(&q, 10), Some(1.0));
        assert!(!idx.is_approximate());
        assert_eq!(idx.describe(), "exact");
        assert!((idx.recall_at_k(&q, 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn hnsw_finds_most_of_the_exact_top_10_and_takes_new_items() {
        let t = table(5000, 16);
        let mut idx = ItemIndex::build(&t, IndexKind::Hnsw(HnswParams::default()));
        assert!(idx.is_approximate());
        let q = table(50, 16) * 20.0; // far outside the items, as user states are
        let recall = idx.recall_at_k(&q, 10);
        assert!(recall >= 0.9, "recall@10 {recall}");
        // A new item aligned with a query becomes its top result.
        let q0 = q.get(0);
        let new = (&q0 * 10.0).unsqueeze(0);
        idx.set(&[5000], &new);
        assert_eq!(idx.len(), 5001);
        assert_eq!(idx.top_k(&q0.unsqueeze(0), 1)[0][0], 5000);
        // Replacing it with its opposite removes it from the top.
        idx.set(&[5000], &(-new));
        assert_ne!(idx.top_k(&q0.unsqueeze(0), 10)[0].first(), Some(&5000));
    }
}
