//! The inverted file behind [`crate::IndexKind::Ivf`]: items split into cells by k-means (libtorch matrix
//! products), each cell's rows stored together in 8 bits (one scale per row: a quarter of the memory a scan streams);
//! a query ranks the cells by its inner product with their centres, scores the rows of the best ones, and hands the
//! best of those, with a margin, to be re-ranked exactly.

use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

/// Lloyd iterations on the training sample.
const ITERATIONS: usize = 8;
/// Training rows per cell (the rest are only assigned).
const SAMPLE_PER_CELL: i64 = 32;
/// Rows scored per matrix product while assigning (bounds the `[chunk, cells]` scores).
const CHUNK: i64 = 8192;

/// Candidates returned beyond the `n` asked, so that exact re-ranking can repair the 8-bit scores' order.
pub(crate) const MARGIN: usize = 16;

struct Cell {
    ids: Vec<u32>,
    /// Per row: `max |x| / 127`; the row is `scale · codes`.
    scale: Vec<f32>,
    /// `ids.len() × d` codes, row-major.
    codes: Vec<i8>,
}

/// A row in 8 bits: its scale and codes.
fn quantize(row: &[f32]) -> (f32, impl Iterator<Item = i8> + '_) {
    let scale = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    (scale, row.iter().map(move |v| (v * inv).round().clamp(-127.0, 127.0) as i8))
}

/// `q · x` for `f32` rows or 8-bit codes, in eight lanes the compiler vectorises.
fn dot<T: Copy>(q: &[f32], x: &[T]) -> f32
where
    f32: From<T>,
{
    let mut acc = [0f32; 8];
    let (cq, cx) = (q.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = cq.remainder().iter().zip(cx.remainder()).map(|(a, &b)| a * f32::from(b)).sum();
    for (a, b) in cq.zip(cx) {
        for l in 0..8 {
            acc[l] += a[l] * f32::from(b[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The `n` best `(score, id)` seen, kept as a min-heap so that most rows are rejected by one comparison.
struct Best {
    n: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Scored>>,
}

#[derive(PartialEq)]
struct Scored(f32, u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl Best {
    fn new(n: usize) -> Best {
        Best { n, heap: std::collections::BinaryHeap::with_capacity(n + 1) }
    }

    /// Whether a row scoring `s` would enter.
    fn wants(&self, s: f32) -> bool {
        self.heap.len() < self.n || self.heap.peek().is_some_and(|w| s > w.0 .0)
    }

    fn push(&mut self, s: f32, id: u32) {
        self.heap.push(std::cmp::Reverse(Scored(s, id)));
        if self.heap.len() > self.n {
            self.heap.pop();
        }
    }

    /// Ids, best first.
    fn into_ids(self) -> Vec<usize> {
        self.heap.into_sorted_vec().into_iter().map(|std::cmp::Reverse(Scored(_, id))| id as usize).collect()
    }
}

pub(crate) struct Ivf {
    d: usize,
    /// `cells × d`, row-major.
    centres: Vec<f32>,
    /// `|c|² / 2` per centre: the nearest centre in L2 maximises `x·c - |c|²/2`.
    half_norms: Vec<f32>,
    cells: Vec<Cell>,
    /// Item → (cell, position in it); `u32::MAX` cell for items not indexed.
    place: Vec<(u32, u32)>,
    pub(crate) probe: usize,
}

/// Index of the nearest centre (L2) of each row of `x` (`[n, d]`).
fn assign(x: &Tensor, centres: &Tensor) -> Vec<i64> {
    let neg_half = (centres * centres).sum_dim_intlist(1, false, Kind::Float) / -2.0;
    let ct = centres.transpose(0, 1).contiguous();
    let n = x.size()[0];
    let mut out = Vec::with_capacity(crate::size(n));
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        // `x·c - |c|²/2` in one product (the bias added by the BLAS call, not as a second pass).
        let best = neg_half.addmm(&x.narrow(0, start, len), &ct).argmax(1, false);
        out.extend(Vec::<i64>::try_from(best).unwrap_or_default());
        start += len;
    }
    out
}

/// k-means++ seeding on the rows of `x` (`m × d`, row-major): each next centre drawn with probability proportional to
/// its squared distance from the nearest centre so far.
fn seed_centres(x: &[f32], d: usize, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let m = x.len() / d.max(1);
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let sq = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum::<f32>();
    let mut centres = row(rng.random_range(0..m)).to_vec();
    let mut near: Vec<f32> = (0..m).map(|i| sq(row(i), &centres)).collect();
    while centres.len() < k * d {
        let total: f64 = near.iter().map(|&v| f64::from(v)).sum();
        let pick = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            near.iter().position(|&v| {
                r -= f64::from(v);
                r <= 0.0
            })
        } else {
            None
        };
        let c = row(pick.unwrap_or_else(|| rng.random_range(0..m))).to_vec();
        for (i, v) in near.iter_mut().enumerate() {
            *v = v.min(sq(row(i), &c));
        }
        centres.extend(c);
    }
    centres
}

/// k-means centres (`[cells, d]`) of the rows of `x`, trained on a seeded sample of at most 32 rows per cell and
/// seeded by k-means++ on at most 4 of them per cell; a cell left empty keeps its previous centre. (At 1M items and
/// 4,000 cells on one thread: seeding 4 s, 8 iterations 27 s, assigning every item 25 s.)
fn kmeans(x: &Tensor, cells: i64, seed: u64) -> Tensor {
    let n = x.size()[0];
    let d = x.size()[1];
    let m = n.min(cells * SAMPLE_PER_CELL);
    // A partial Fisher-Yates shuffle: the first m of a seeded permutation.
    let mut order: Vec<i64> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 0..crate::size(m) {
        let j = rng.random_range(i..order.len());
        order.swap(i, j);
    }
    order.truncate(crate::size(m));
    let sample = x.index_select(0, &Tensor::from_slice(&order));
    let seeding = sample.narrow(0, 0, m.min(cells * 4)).contiguous();
    let flat = Vec::<f32>::try_from(seeding.view([-1])).unwrap_or_default();
    let du = usize::try_from(d).unwrap_or(1);
    let init = seed_centres(&flat, du, usize::try_from(cells).unwrap_or(1), &mut rng);
    let mut centres = Tensor::from_slice(&init).view([cells, d]);
    let ones = Tensor::ones([m], (Kind::Float, tch::Device::Cpu));
    for _ in 0..ITERATIONS {
        let a = Tensor::from_slice(&assign(&sample, &centres));
        let sums = Tensor::zeros([cells, d], (Kind::Float, tch::Device::Cpu)).index_add(0, &a, &sample);
        let counts = Tensor::zeros([cells], (Kind::Float, tch::Device::Cpu)).index_add(0, &a, &ones);
        let mean = sums / counts.clamp_min(1.0).unsqueeze(1);
        centres = mean.where_self(&counts.gt(0.0).unsqueeze(1), &centres);
    }
    centres
}

impl Ivf {
    /// Splits the rows of `table` (`[n, d]`, float, CPU) into `cells` cells (0: `4·√n`).
    pub(crate) fn build(table: &Tensor, cells: usize, probe: usize) -> Ivf {
        tch::no_grad(|| {
            let x = table.to_kind(Kind::Float).contiguous();
            let (n, d) = x.size2().unwrap_or((0, 0));
            let want = if cells == 0 { (4.0 * (n as f64).sqrt()).round() as i64 } else { cells as i64 };
            let k = want.clamp(1, n.max(1));
            let du = crate::size(d);
            let mut ivf = Ivf {
                d: du,
                centres: Vec::new(),
                half_norms: Vec::new(),
                cells: Vec::new(),
                place: Vec::new(),
                probe: probe.max(1),
            };
            if n == 0 {
                return ivf;
            }
            let centres = kmeans(&x, k, 0x5eed);
            ivf.centres = Vec::<f32>::try_from(centres.contiguous().view([-1])).unwrap_or_default();
            ivf.half_norms = ivf.centres.chunks_exact(du.max(1)).map(|c| dot(c, c) / 2.0).collect();
            ivf.cells = (0..k).map(|_| Cell { ids: Vec::new(), scale: Vec::new(), codes: Vec::new() }).collect();
            let flat = Vec::<f32>::try_from(x.view([-1])).unwrap_or_default();
            let assigned = assign(&x, &centres);
            ivf.place = vec![(u32::MAX, 0); crate::size(n)];
            for (i, &c) in assigned.iter().enumerate() {
                ivf.push(i, crate::size(c), &flat[i * du..(i + 1) * du]);
            }
            ivf
        })
    }

    pub(crate) fn cells(&self) -> usize {
        self.cells.len()
    }

    fn push(&mut self, item: usize, cell: usize, row: &[f32]) {
        let c = &mut self.cells[cell];
        if self.place.len() <= item {
            self.place.resize(item + 1, (u32::MAX, 0));
        }
        self.place[item] = (cell as u32, c.ids.len() as u32);
        c.ids.push(item as u32);
        let (scale, codes) = quantize(row);
        c.scale.push(scale);
        c.codes.extend(codes);
    }

    fn nearest(&self, row: &[f32]) -> usize {
        let mut best = (f32::NEG_INFINITY, 0);
        for (j, c) in self.centres.chunks_exact(self.d.max(1)).enumerate() {
            let s = dot(row, c) - self.half_norms[j];
            if s > best.0 {
                best = (s, j);
            }
        }
        best.1
    }

    /// Puts item `item` (new, or replacing its old row) in the cell of the nearest centre. Centres are not moved.
    pub(crate) fn set(&mut self, item: usize, row: &[f32]) {
        if self.cells.is_empty() || row.len() != self.d {
            return;
        }
        if let Some(&(cell, pos)) = self.place.get(item).filter(|p| p.0 != u32::MAX) {
            let (cell, pos) = (cell as usize, pos as usize);
            let d = self.d;
            let c = &mut self.cells[cell];
            let last = c.ids.len() - 1;
            c.ids.swap_remove(pos);
            c.scale.swap_remove(pos);
            if pos != last {
                let (head, tail) = c.codes.split_at_mut(last * d);
                head[pos * d..(pos + 1) * d].copy_from_slice(&tail[..d]);
                let moved = c.ids[pos] as usize;
                self.place[moved] = (cell as u32, pos as u32);
            }
            c.codes.truncate(last * d);
            self.place[item] = (u32::MAX, 0);
        }
        let cell = self.nearest(row);
        self.push(item, cell, row);
    }

    /// Up to `n +` [`MARGIN`] items for which `allow` holds, best first by their 8-bit inner product with `q`, from
    /// the `probe` cells whose centres score best (and the next ones while fewer than `n` allowed items were seen).
    /// Re-ranked exactly, their best `n` are the exact best `n` of the cells scanned, up to twice the 8-bit error.
    pub(crate) fn search(&self, q: &[f32], n: usize, allow: &dyn Fn(usize) -> bool) -> Vec<usize> {
        if q.len() != self.d || self.cells.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<(f32, usize)> =
            self.centres.chunks_exact(self.d.max(1)).map(|c| dot(q, c)).zip(0..).collect();
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut best = Best::new(if n == 0 { 0 } else { n + MARGIN });
        // `allow` (a hash lookup) is asked only of rows that would enter the best.
        for (j, &(_, cell)) in order.iter().enumerate() {
            if j >= self.probe && best.heap.len() >= n {
                break;
            }
            let c = &self.cells[cell];
            for ((&id, &scale), codes) in c.ids.iter().zip(&c.scale).zip(c.codes.chunks_exact(self.d.max(1))) {
                let s = scale * dot(q, codes);
                if best.wants(s) && allow(id as usize) {
                    best.push(s, id);
                }
            }
        }
        best.into_ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(v: &[f32], d: usize) -> Tensor {
        Tensor::from_slice(v).view([(v.len() / d) as i64, d as i64])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Scanning every cell is exact search, whatever the rows, the cells and the updates.
        #[test]
        fn probing_every_cell_is_exact(
            v in proptest::collection::vec(-3.0f32..3.0, 6..240),
            q in proptest::collection::vec(-3.0f32..3.0, 3),
            cells in 1usize..9,
            updates in proptest::collection::vec((0usize..90, -3.0f32..3.0), 0..6),
        ) {
            let d = 3;
            let n = v.len() / d;
            let mut table = v[..n * d].to_vec();
            let mut ivf = Ivf::build(&rows(&table, d), cells, usize::MAX);
            for (i, x) in updates {
                let i = i % (n + 2);
                let row = [x, -x, 0.5 * x];
                ivf.set(i, &row);
                if i * d >= table.len() {
                    table.resize((i + 1) * d, f32::NEG_INFINITY);
                }
                table[i * d..(i + 1) * d].copy_from_slice(&row);
            }
            // Rows never set (a gap left by an update past the end) are not in the index.
            let scored: Vec<(f32, usize)> = table
                .chunks_exact(d)
                .enumerate()
                .filter(|(_, r)| r[0].is_finite())
                .map(|(i, r)| (dot(&q, r), i))
                .collect();
            let got = ivf.search(&q, 5, &|i| i % 7 != 3);
            prop_assert!(got.iter().all(|i| i % 7 != 3));
            let mut want: Vec<(f32, usize)> = scored.into_iter().filter(|(_, i)| i % 7 != 3).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0));
            prop_assert_eq!(got.len(), want.len().min(5 + MARGIN));
            // Re-ranked exactly, the best 5 match the exact best 5 up to twice the 8-bit error (ties in any order).
            let mut exact: Vec<f32> = got.iter().map(|g| dot(&q, &table[g * d..(g + 1) * d])).collect();
            exact.sort_by(|a, b| b.total_cmp(a));
            let err = table
                .chunks_exact(d)
                .filter(|r| r[0].is_finite())
                .map(|r| q.iter().map(|v| v.abs()).sum::<f32>() * r.iter().fold(0f32, |m, v| m.max(v.abs())) / 254.0)
                .fold(0f32, f32::max);
            for (g, w) in exact.iter().zip(&want).take(5) {
                prop_assert!((g - w.0).abs() <= 2.0 * err + 1e-4, "{} vs {} (error bound {})", g, w.0, err);
            }
        }
    }

    #[test]
    fn k_means_puts_separated_clusters_in_their_own_cells() {
        // Four tight clusters far apart: each ends up whole in one cell.
        let mut v = Vec::new();
        for i in 0..400 {
            let c = (i % 4) as f32 * 10.0;
            v.extend([c + (i as f32 * 0.001), -c, 1.0]);
        }
        let ivf = Ivf::build(&rows(&v, 3), 4, 1);
        assert_eq!(ivf.cells(), 4);
        for c in &ivf.cells {
            let kinds: std::collections::HashSet<u32> = c.ids.iter().map(|i| i % 4).collect();
            assert_eq!(kinds.len(), 1, "a cell mixes clusters: {kinds:?}");
            assert_eq!(c.ids.len(), 100);
        }
        // One probe finds the query's cluster.
        let top = ivf.search(&[31.0, -30.0, 1.0], 3, &|_| true);
        assert!(top.iter().all(|i| i % 4 == 3), "{top:?}");
    }
}
