//! Residual k-means codes, their statistics, and their file.

use crate::rqvae::{Encoder, RqVaeConfig};
use crate::{Error, Result, Trie};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Rows scored per matrix product while assigning (bounds the `[chunk, codes]` distances).
const CHUNK: i64 = 8192;
/// Largest `levels` a config may ask for.
pub const MAX_LEVELS: usize = 8;
/// Largest `codes` per level (codes are `u16`; the collision level may reach `u16::MAX` too).
pub const MAX_CODES: usize = 4096;

/// How codes are fitted (`[semantic_ids]` of a run file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticIdConfig {
    /// Residual levels. Default 3.
    #[serde(default = "d::levels")]
    pub levels: usize,
    /// Centroids per level. Default 256.
    #[serde(default = "d::codes")]
    pub codes: usize,
    /// Lloyd iterations per level. Default 25.
    #[serde(default = "d::iterations")]
    pub iterations: usize,
    /// Seed of the initial centroids (and of the RQ-VAE's weights and batches). Default 0.
    #[serde(default)]
    pub seed: u64,
    /// `kmeans` (residual k-means on the content, the default) or `rqvae` (residual quantisation of a learned
    /// latent, [`RqVaeConfig`]).
    #[serde(default)]
    pub method: Method,
    /// The RQ-VAE (read with `method = "rqvae"`).
    #[serde(default)]
    pub rqvae: RqVaeConfig,
}

/// How the codes are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Residual k-means on the content itself.
    #[default]
    Kmeans,
    /// Residual quantisation of an MLP encoder's latent, trained with a decoder on reconstruction (RQ-VAE).
    Rqvae,
}

mod d {
    pub fn levels() -> usize {
        3
    }
    pub fn codes() -> usize {
        256
    }
    pub fn iterations() -> usize {
        25
    }
}

impl Default for SemanticIdConfig {
    fn default() -> Self {
        SemanticIdConfig {
            levels: d::levels(),
            codes: d::codes(),
            iterations: d::iterations(),
            seed: 0,
            method: Method::Kmeans,
            rqvae: RqVaeConfig::default(),
        }
    }
}

impl SemanticIdConfig {
    /// Checks the fields.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_LEVELS).contains(&self.levels) {
            return Err(Error::Invalid(format!("levels is {}, must be 1 to {MAX_LEVELS}", self.levels)));
        }
        if !(2..=MAX_CODES).contains(&self.codes) {
            return Err(Error::Invalid(format!("codes is {}, must be 2 to {MAX_CODES}", self.codes)));
        }
        if self.iterations == 0 || self.iterations > 1000 {
            return Err(Error::Invalid(format!("iterations is {}, must be 1 to 1000", self.iterations)));
        }
        self.rqvae.validate().map_err(Error::Invalid)
    }
}

/// How one level's codebook is used by the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelStats {
    /// `exp(entropy)` of the code distribution: the number of equally used codes it is worth (at most `codes`).
    pub perplexity: f64,
    /// Codes at least one item has.
    pub used: usize,
    /// Codes no item has after the fit.
    pub dead: usize,
    /// Empty clusters re-initialised during the fit.
    pub reinitialised: usize,
    /// Mean squared residual left after this level (relative to the content's mean squared norm).
    pub residual: f64,
}

/// Codebook use of a fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Per residual level.
    pub levels: Vec<LevelStats>,
    /// Fraction of items whose residual code another item shares (resolved by the extra level).
    pub collision_rate: f64,
    /// Most items sharing one residual code (the extra level's largest number + 1).
    pub max_collisions: usize,
}

/// Every item's code: `levels` residual k-means codes and one collision level (see the crate docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SemanticIds {
    /// How they were fitted.
    pub config: SemanticIdConfig,
    /// Per level `k × w` centroids, row-major (`k = min(codes, items)`; `w` the content width, or the RQ-VAE's
    /// latent width).
    centroids: Vec<Vec<f32>>,
    /// Embedding width.
    d: usize,
    /// The RQ-VAE's encoder (content → latent) when the codes quantise its latent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoder: Option<Encoder>,
    /// Per item, `levels + 1` codes.
    codes: Vec<Vec<u16>>,
    /// Codebook use when fitted.
    pub stats: Stats,
}

impl SemanticIds {
    /// Fits codes for the rows of `content` (`[n, d]` float, one row per item, in catalog order).
    pub fn fit(content: &Tensor, config: &SemanticIdConfig) -> Result<SemanticIds> {
        config.validate()?;
        let (n, d) =
            content.size2().map_err(|_| Error::Invalid(format!("content is {:?}, not [n, d]", content.size())))?;
        if n < 1 || d < 1 {
            return Err(Error::Invalid(format!("content is [{n}, {d}]: no items or no width")));
        }
        let x = content.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        if x.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(Error::Invalid("content holds NaN or infinite values".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let k = i64::try_from(config.codes).unwrap_or(i64::MAX).min(n);
        if config.method == Method::Rqvae {
            return Self::fit_rqvae(&x, config, k, &mut rng);
        }
        let scale = x.square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float).double_value(&[]).max(1e-12);
        let mut residual = x.shallow_clone();
        let mut centroids = Vec::with_capacity(config.levels);
        let mut level_codes: Vec<Vec<i64>> = Vec::with_capacity(config.levels);
        let mut levels = Vec::with_capacity(config.levels);
        for _ in 0..config.levels {
            let (c, assigned, reinitialised) = kmeans(&residual, k, config.iterations, &mut rng);
            residual = &residual - c.index_select(0, &Tensor::from_slice(&assigned));
            let left = residual.square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float).double_value(&[]);
            let mut stats = usage(&assigned, config.codes);
            stats.reinitialised = reinitialised;
            stats.residual = left / scale;
            levels.push(stats);
            // A catalog smaller than the codebook has fewer centroids (the rest are dead codes).
            centroids.push(Vec::<f32>::try_from(c.view([-1]))?);
            level_codes.push(assigned);
        }
        let n_items = m6rec_tensor::dim::as_usize(n);
        let mut codes: Vec<Vec<u16>> =
            (0..n_items).map(|i| level_codes.iter().map(|l| l[i] as u16).collect()).collect();
        let (collision_rate, max_collisions) = disambiguate(&mut codes)?;
        let d = m6rec_tensor::dim::as_usize(d);
        Ok(SemanticIds {
            config: config.clone(),
            centroids,
            d,
            encoder: None,
            codes,
            stats: Stats { levels, collision_rate, max_collisions },
        })
    }

    /// [`SemanticIds::fit`] with an RQ-VAE: the codes quantise a learned latent of the content.
    fn fit_rqvae(x: &Tensor, config: &SemanticIdConfig, k: i64, rng: &mut ChaCha8Rng) -> Result<SemanticIds> {
        let fitted = crate::rqvae::fit(x, config.levels, k, &config.rqvae, rng)?;
        let lat = &fitted.latents;
        let scale = lat.square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float).double_value(&[]).max(1e-12);
        let mut residual = lat.shallow_clone();
        let mut levels = Vec::with_capacity(config.levels);
        let mut centroids = Vec::with_capacity(config.levels);
        for (l, (c, assigned)) in fitted.centroids.iter().zip(&fitted.codes).enumerate() {
            residual = &residual - c.index_select(0, &Tensor::from_slice(assigned));
            let left = residual.square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float).double_value(&[]);
            let mut stats = usage(assigned, config.codes);
            stats.reinitialised = fitted.reinitialised[l];
            stats.residual = left / scale;
            levels.push(stats);
            centroids.push(Vec::<f32>::try_from(c.contiguous().view([-1]))?);
        }
        let n_items = m6rec_tensor::dim::as_usize(x.size()[0]);
        let mut codes: Vec<Vec<u16>> =
            (0..n_items).map(|i| fitted.codes.iter().map(|l| l[i] as u16).collect()).collect();
        let (collision_rate, max_collisions) = disambiguate(&mut codes)?;
        Ok(SemanticIds {
            config: config.clone(),
            centroids,
            d: m6rec_tensor::dim::as_usize(x.size()[1]),
            encoder: Some(fitted.encoder),
            codes,
            stats: Stats { levels, collision_rate, max_collisions },
        })
    }

    /// Width of the centroids: the content's, or the RQ-VAE's latent.
    fn code_dim(&self) -> usize {
        self.encoder.as_ref().map_or(self.d, Encoder::output)
    }

    /// Items with a code.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether no item has a code.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Item `item`'s code (`levels + 1` tokens). Panics past [`SemanticIds::len`]; see [`SemanticIds::get`].
    pub fn code(&self, item: usize) -> &[u16] {
        &self.codes[item]
    }

    /// Item `item`'s code, `None` past the catalog.
    pub fn get(&self, item: usize) -> Option<&[u16]> {
        self.codes.get(item).map(Vec::as_slice)
    }

    /// Every item's code, in catalog order.
    pub fn codes(&self) -> impl Iterator<Item = &[u16]> {
        self.codes.iter().map(Vec::as_slice)
    }

    /// Width of the content the codes were fitted on (what [`SemanticIds::add`] takes).
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Tokens per code: the residual levels and the collision level.
    pub fn code_len(&self) -> usize {
        self.config.levels + 1
    }

    /// How many values each code position takes: `codes` at the residual levels, the largest collision number + 1
    /// at the last (it grows as items are added).
    pub fn widths(&self) -> Vec<usize> {
        let extra = self.codes.iter().map(|c| c.last().map_or(0, |&x| x as usize + 1)).max().unwrap_or(1);
        let mut w = vec![self.config.codes; self.config.levels];
        w.push(extra.max(1));
        w
    }

    /// Codes for new items from their content alone (`[m, d]`, the same encoder as the fit): nearest centroid
    /// level by level, then the next free number among items with the same residual code. The items are appended
    /// (their indices continue the catalog); returns their codes.
    pub fn add(&mut self, content: &Tensor) -> Result<Vec<Vec<u16>>> {
        let (m, d) =
            content.size2().map_err(|_| Error::Invalid(format!("content is {:?}, not [m, d]", content.size())))?;
        if usize::try_from(d).ok() != Some(self.d) {
            return Err(Error::Invalid(format!(
                "new content is {d} wide, the codes were fitted on {} columns",
                self.d
            )));
        }
        let mut residual = content.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        if residual.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(Error::Invalid("new content holds NaN or infinite values".into()));
        }
        if let Some(enc) = &self.encoder {
            residual = tch::no_grad(|| enc.forward(&residual));
        }
        let w = m6rec_tensor::dim::as_i64(self.code_dim());
        let mut per_level = Vec::with_capacity(self.config.levels);
        for c in &self.centroids {
            let c = Tensor::from_slice(c).view([-1, w]);
            let nearest = Tensor::from_slice(&assign(&residual, &c));
            residual = &residual - c.index_select(0, &nearest);
            per_level.push(Vec::<i64>::try_from(nearest)?);
        }
        let mut next: HashMap<Vec<u16>, u16> = HashMap::new();
        for code in &self.codes {
            let (head, last) = code.split_at(self.config.levels);
            let slot = next.entry(head.to_vec()).or_insert(0);
            *slot = (*slot).max(last[0].saturating_add(1));
        }
        let mut out = Vec::with_capacity(m6rec_tensor::dim::as_usize(m));
        for i in 0..m6rec_tensor::dim::as_usize(m) {
            let head: Vec<u16> = per_level.iter().map(|l| l[i] as u16).collect();
            let slot = next.entry(head.clone()).or_insert(0);
            if *slot == u16::MAX {
                return Err(Error::Invalid(format!("more than {} items share the code {head:?}", u16::MAX)));
            }
            let mut code = head;
            code.push(*slot);
            *slot += 1;
            self.codes.push(code.clone());
            out.push(code);
        }
        Ok(out)
    }

    /// The prefix trie of every item's code.
    pub fn trie(&self) -> Trie {
        let mut t = Trie::new(self.widths());
        for (item, code) in self.codes.iter().enumerate() {
            t.insert(code, item as u32);
        }
        t
    }

    /// Writes the codes and centroids to `path` (JSON, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = |reason: String| Error::File { path: path.to_path_buf(), reason };
        let bytes = serde_json::to_vec(self).map_err(|e| file(e.to_string()))?;
        m6rec_tensor::atomic::write_bytes(path, &bytes).map_err(|e| file(e.to_string()))
    }

    /// Reads what [`SemanticIds::save`] wrote, checking that it is whole and consistent.
    pub fn load(path: &Path) -> Result<SemanticIds> {
        let file = |reason: String| Error::File { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| file(e.to_string()))?;
        let ids: SemanticIds =
            serde_json::from_slice(&bytes).map_err(|e| file(format!("not a semantic ID file: {e}")))?;
        ids.config.validate().map_err(|e| file(e.to_string()))?;
        if let Some(enc) = &ids.encoder {
            if !enc.is_consistent() || enc.input() != ids.d {
                return Err(file(format!("the RQ-VAE encoder does not chain from {} columns to a latent", ids.d)));
            }
        }
        let w = ids.code_dim();
        let most = ids.config.codes * w;
        let bad_level = |c: &Vec<f32>| w == 0 || c.is_empty() || !c.len().is_multiple_of(w) || c.len() > most;
        if ids.centroids.len() != ids.config.levels || ids.centroids.iter().any(bad_level) {
            return Err(file(format!(
                "expected {} levels of at most {} centroids {} wide",
                ids.config.levels, ids.config.codes, w
            )));
        }
        if ids.centroids.iter().flatten().any(|v| !v.is_finite()) {
            return Err(file("a centroid is not finite".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in ids.codes.iter().enumerate() {
            let fits = c.len() == ids.config.levels + 1
                && c[..ids.config.levels].iter().zip(&ids.centroids).all(|(&x, l)| (x as usize) < l.len() / w);
            if !fits {
                return Err(file(format!(
                    "item {i}'s code {c:?} does not fit {} levels of {} codes",
                    ids.config.levels, ids.config.codes
                )));
            }
            if !seen.insert(c.as_slice()) {
                return Err(file(format!("item {i}'s code {c:?} is not unique")));
            }
        }
        Ok(ids)
    }
}

/// Nearest centroid (L2) of each row of `x`.
pub(crate) fn assign(x: &Tensor, centroids: &Tensor) -> Vec<i64> {
    let neg_half = centroids.square().sum_dim_intlist(1, false, Kind::Float) / -2.0;
    let ct = centroids.transpose(0, 1).contiguous();
    let n = x.size()[0];
    let mut out = Vec::with_capacity(m6rec_tensor::dim::as_usize(n));
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let best = neg_half.addmm(&x.narrow(0, start, len), &ct).argmax(1, false);
        out.extend(Vec::<i64>::try_from(best).unwrap_or_default());
        start += len;
    }
    out
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007): the first centroid a uniformly drawn row, each next one a row
/// drawn with probability proportional to its squared distance to the nearest centroid so far.
fn seed_centroids(x: &Tensor, k: i64, rng: &mut ChaCha8Rng) -> Tensor {
    let n = x.size()[0];
    let first = rng.random_range(0..n);
    let mut chosen = vec![first];
    let mut nearest = (x - x.get(first)).square().sum_dim_intlist(1, false, Kind::Float);
    while (chosen.len() as i64) < k {
        let d2: Vec<f32> = Vec::try_from(&nearest).unwrap_or_default();
        let total: f64 = d2.iter().map(|&v| f64::from(v.max(0.0))).sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &v) in d2.iter().enumerate() {
                target -= f64::from(v.max(0.0));
                if target <= 0.0 {
                    pick = i as i64;
                    break;
                }
            }
            pick
        } else {
            // Every row sits on a centroid: any row not chosen yet (its cluster will empty and be re-initialised).
            (0..n).find(|i| !chosen.contains(i)).unwrap_or(0)
        };
        chosen.push(next);
        nearest = nearest.minimum(&(x - x.get(next)).square().sum_dim_intlist(1, false, Kind::Float));
    }
    x.index_select(0, &Tensor::from_slice(&chosen))
}

/// Lloyd's k-means from k-means++ seeds drawn with `rng`; an empty cluster takes the row farthest from its
/// centroid. Returns the centroids `[k, d]`, each row's cluster, and how many empty clusters were re-initialised.
pub(crate) fn kmeans(x: &Tensor, k: i64, iterations: usize, rng: &mut ChaCha8Rng) -> (Tensor, Vec<i64>, usize) {
    let n = x.size()[0];
    let mut c = seed_centroids(x, k, rng);
    let mut assigned = assign(x, &c);
    let mut reinitialised = 0;
    for _ in 0..iterations {
        let idx = Tensor::from_slice(&assigned);
        let counts = Tensor::zeros([k], (Kind::Float, Device::Cpu)).index_add(
            0,
            &idx,
            &Tensor::ones([n], (Kind::Float, Device::Cpu)),
        );
        let sums = Tensor::zeros_like(&c).index_add(0, &idx, x);
        let empty = counts.eq(0.0);
        c = (sums / counts.clamp_min(1.0).unsqueeze(1)).where_self(&empty.logical_not().unsqueeze(1), &c);
        let dead: Vec<i64> = Vec::try_from(empty.nonzero().view([-1])).unwrap_or_default();
        if !dead.is_empty() {
            // The rows worst explained by their centroid become the empty clusters' centroids.
            let err = (x - c.index_select(0, &idx)).square().sum_dim_intlist(1, false, Kind::Float);
            let worst = err.topk(dead.len() as i64, 0, true, true).1;
            let _ = c.index_copy_(0, &Tensor::from_slice(&dead), &x.index_select(0, &worst));
            reinitialised += dead.len();
        }
        let next = assign(x, &c);
        let done = next == assigned && dead.is_empty();
        assigned = next;
        if done {
            break;
        }
    }
    (c, assigned, reinitialised)
}

fn usage(assigned: &[i64], codes: usize) -> LevelStats {
    let mut counts = vec![0usize; codes];
    for &a in assigned {
        if let Some(c) = counts.get_mut(a as usize) {
            *c += 1;
        }
    }
    let n = assigned.len().max(1) as f64;
    let entropy: f64 = counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum();
    let used = counts.iter().filter(|&&c| c > 0).count();
    LevelStats { perplexity: entropy.exp(), used, dead: codes - used, reinitialised: 0, residual: 0.0 }
}

/// Appends the collision level: items sharing a residual code are numbered `0, 1, …` in catalog order. Returns the
/// collision rate and the largest group.
fn disambiguate(codes: &mut [Vec<u16>]) -> Result<(f64, usize)> {
    let mut groups: HashMap<Vec<u16>, u16> = HashMap::new();
    for code in codes.iter() {
        let g = groups.entry(code.clone()).or_insert(0);
        *g = g
            .checked_add(1)
            .ok_or_else(|| Error::Invalid(format!("more than {} items share the code {code:?}", u16::MAX)))?;
    }
    let colliding: usize = groups.values().filter(|&&g| g > 1).map(|&g| g as usize).sum();
    let largest = groups.values().copied().max().unwrap_or(0) as usize;
    let mut next: HashMap<Vec<u16>, u16> = HashMap::new();
    for code in codes.iter_mut() {
        let slot = next.entry(code.clone()).or_insert(0);
        code.push(*slot);
        *slot += 1;
    }
    Ok((colliding as f64 / codes.len().max(1) as f64, largest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    /// `[n, d]` standard normal values from a generator of the test's own (libtorch's is process-global, and the
    /// tests of this binary run in parallel: seeding it here would race with the other tests' draws).
    fn content(n: i64, d: i64, seed: i64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        let values: Vec<f32> = (0..n * d)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect();
        Tensor::from_slice(&values).view([n, d])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every item gets a unique code of `levels + 1` tokens inside the codebook, duplicates in the content
        /// included; the same seed gives the same codes.
        #[test]
        fn codes_are_unique_in_range_and_deterministic(
            n in 1i64..120,
            levels in 1usize..4,
            codes in 2usize..20,
            dup in 0i64..30,
            seed in 0u64..50,
        ) {
            let base = content(n, 6, seed as i64);
            // Some rows repeated exactly: their residual codes must collide and the extra level separate them.
            let dup = dup.min(n);
            let x = Tensor::cat(&[base.shallow_clone(), base.narrow(0, 0, dup)], 0);
            let cfg = SemanticIdConfig { levels, codes, iterations: 10, seed, ..Default::default() };
            let a = SemanticIds::fit(&x, &cfg).unwrap();
            let b = SemanticIds::fit(&x, &cfg).unwrap();
            prop_assert_eq!(&a.codes, &b.codes);
            let mut seen = std::collections::HashSet::new();
            for c in &a.codes {
                prop_assert_eq!(c.len(), levels + 1);
                prop_assert!(c[..levels].iter().all(|&t| (t as usize) < codes));
                prop_assert!(seen.insert(c.clone()), "code {:?} twice", c);
            }
            if dup > 0 {
                prop_assert!(a.stats.collision_rate > 0.0);
                prop_assert!(a.stats.max_collisions >= 2);
            }
        }
    }

    #[test]
    fn clustered_content_uses_the_codebook_and_residuals_shrink() {
        // 16 well-separated clusters: level 1 finds them (perplexity near 16), level 2 explains part of the rest.
        // Orthogonal centres 14 apart, noise of std 0.5: separated by construction (random centres can land close).
        let centres = Tensor::eye(16, (Kind::Float, Device::Cpu)) * 10.0;
        let pick = Tensor::arange(800, (Kind::Int64, Device::Cpu)).remainder(16);
        let x = centres.index_select(0, &pick) + content(800, 16, 5) * 0.5;
        let ids = SemanticIds::fit(
            &x,
            &SemanticIdConfig { levels: 2, codes: 16, iterations: 30, seed: 1, ..Default::default() },
        )
        .unwrap();
        let l = &ids.stats.levels;
        assert!(l[0].perplexity > 14.0, "{l:?}");
        assert_eq!(l[0].dead, 0, "{l:?}");
        assert!(l[0].residual < 0.05 && l[1].residual < l[0].residual, "{l:?}");
        // Items of one cluster share their first code (all but the odd point between two close centres).
        let first: Vec<u16> = (0..800).map(|i| ids.code(i)[0]).collect();
        let agree = (0..800).filter(|&i| first[i] == first[i % 16]).count();
        assert!(agree >= 780, "{agree} of 800 share their cluster's first code");
    }

    #[test]
    fn empty_clusters_are_reinitialised_and_counted() {
        // Two distinct points and eight codes: draws include repeats of a point, so clusters empty out; the fit
        // re-initialises them and reports how many stay dead.
        let x = Tensor::cat(
            &[Tensor::zeros([50, 4], (Kind::Float, Device::Cpu)), Tensor::ones([50, 4], (Kind::Float, Device::Cpu))],
            0,
        );
        let ids = SemanticIds::fit(
            &x,
            &SemanticIdConfig { levels: 1, codes: 8, iterations: 5, seed: 3, ..Default::default() },
        )
        .unwrap();
        let l = &ids.stats.levels[0];
        assert!(l.reinitialised > 0, "{l:?}");
        assert_eq!(l.used + l.dead, 8);
        assert!(l.used <= 2 && l.perplexity <= 2.0 + 1e-9, "{l:?}");
        assert!((ids.stats.collision_rate - 1.0).abs() < 1e-9);
        assert_eq!(ids.widths().last(), Some(&50), "the collision level numbers 50 identical items");
    }

    #[test]
    fn a_new_items_code_comes_from_its_content_alone() {
        let x = content(300, 8, 9);
        let cfg = SemanticIdConfig { levels: 3, codes: 8, iterations: 20, seed: 2, ..Default::default() };
        let mut ids = SemanticIds::fit(&x, &cfg).unwrap();
        let old: Vec<Vec<u16>> = ids.codes.clone();
        // An existing item's content, added again: same residual code, the next free collision number.
        let again = ids.add(&x.narrow(0, 5, 1)).unwrap().remove(0);
        assert_eq!(&again[..3], &old[5][..3]);
        assert!(old.iter().all(|c| c != &again), "unique");
        assert_eq!(ids.len(), 301);
        assert_eq!(&ids.codes[..300], &old[..], "existing codes never change");
        // The trie finds the new item under its code.
        assert_eq!(ids.trie().item(&again), Some(300));
        let err = ids.add(&content(1, 5, 1)).unwrap_err().to_string();
        assert!(err.contains("5 wide"), "{err}");
    }

    #[test]
    fn the_file_round_trips_and_refuses_damage() {
        let ids = SemanticIds::fit(
            &content(60, 4, 1),
            &SemanticIdConfig { levels: 2, codes: 4, iterations: 5, seed: 0, ..Default::default() },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("semantic_ids.json");
        ids.save(&path).unwrap();
        let back = SemanticIds::load(&path).unwrap();
        assert_eq!(back.codes, ids.codes);
        assert_eq!(back.stats, ids.stats);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["codes"][1] = v["codes"][0].clone();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = SemanticIds::load(&path).unwrap_err().to_string();
        assert!(err.contains("not unique") && err.contains("semantic_ids.json"), "{err}");
        let bad = SemanticIds::fit(&Tensor::from_slice(&[f32::NAN, 1.0]).view([1, 2]), &SemanticIdConfig::default());
        assert!(bad.unwrap_err().to_string().contains("NaN"));
    }

    fn rqvae(levels: usize, codes: usize, seed: u64) -> SemanticIdConfig {
        SemanticIdConfig {
            levels,
            codes,
            seed,
            method: Method::Rqvae,
            rqvae: RqVaeConfig { hidden: vec![32], latent: 8, steps: 60, batch: 64, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn rqvae_codes_are_unique_deterministic_and_use_the_codebook() {
        // 8 clusters in 16 dimensions: the learned latent keeps them apart, so level 1 uses several codes.
        let centres = Tensor::eye(16, (Kind::Float, Device::Cpu)).narrow(0, 0, 8) * 6.0;
        let pick = Tensor::arange(240, (Kind::Int64, Device::Cpu)).remainder(8);
        let x = centres.index_select(0, &pick) + content(240, 16, 4) * 0.3;
        let cfg = rqvae(2, 8, 5);
        let a = SemanticIds::fit(&x, &cfg).unwrap();
        let b = SemanticIds::fit(&x, &cfg).unwrap();
        assert_eq!(a.codes, b.codes, "the same seed gives the same codes");
        assert_eq!(a.encoder, b.encoder);
        let mut seen = std::collections::HashSet::new();
        for c in &a.codes {
            assert_eq!(c.len(), 3);
            assert!(c[..2].iter().all(|&t| t < 8));
            assert!(seen.insert(c.clone()), "code {c:?} twice");
        }
        let l = &a.stats.levels;
        assert!(l[0].perplexity > 4.0, "{l:?}");
        assert!(l[1].residual < l[0].residual && l[0].residual < 1.0, "{l:?}");
        assert_eq!(a.code_dim(), 8, "centroids live in the latent");
        let other = SemanticIds::fit(&x, &rqvae(2, 8, 6)).unwrap();
        assert_ne!(a.encoder, other.encoder, "another seed, another encoder");
    }

    #[test]
    fn an_rqvae_new_item_is_coded_through_the_saved_encoder() {
        let x = content(150, 12, 2);
        let mut ids = SemanticIds::fit(&x, &rqvae(2, 6, 1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("semantic_ids.json");
        ids.save(&path).unwrap();
        let mut back = SemanticIds::load(&path).unwrap();
        assert_eq!(back.encoder, ids.encoder);
        // An existing item's content again: its residual codes, through the loaded encoder.
        let again = back.add(&x.narrow(0, 7, 1)).unwrap().remove(0);
        assert_eq!(&again[..2], &ids.codes[7][..2]);
        assert_eq!(ids.add(&x.narrow(0, 7, 1)).unwrap().remove(0), again, "saved and fitted encoders agree");
        // A damaged encoder is refused at load.
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["encoder"]["layers"][0]["input"] = serde_json::json!(5);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = SemanticIds::load(&path).unwrap_err().to_string();
        assert!(err.contains("encoder"), "{err}");
    }
}
