//! The loss functions behind the objectives: next-item cross-entropy over hidden states and the tied item table.

use m6rec_data::IGNORE;
use tch::{Kind, Reduction, Tensor};

/// Logit-matrix size (targets × items) up to which [`full_softmax`] lets libtorch's autograd keep the whole matrix
/// (2²⁶ entries, 256 MiB of f32). On Toys (12k items) `cargo xtask bench step -- --chunk 0` and `--chunk 128` did
/// not differ beyond this machine's ±20% run-to-run noise (the same path twice: 1,309-1,930 rows/s), so the simpler
/// path stays below the bound; above it the chunks keep memory bounded whatever the catalog.
pub const WHOLE_MATRIX_MAX: i64 = 1 << 26;

/// Logit entries per chunk when [`full_softmax`] chunks (2²⁴, 64 MiB of f32).
pub const CHUNK_ENTRIES: i64 = 1 << 24;

/// Rows per chunk [`full_softmax`] uses for a catalog of `n_items`: [`CHUNK_ENTRIES`] / `n_items`, at least 1.
pub fn chunk_rows(n_items: i64) -> i64 {
    (CHUNK_ENTRIES / n_items.max(1)).max(1)
}

/// Full-softmax cross-entropy over the whole catalog: the mean over rows whose target is not [`IGNORE`].
///
/// Through libtorch's autograd while the logit matrix has at most [`WHOLE_MATRIX_MAX`] entries; in chunks of
/// [`chunk_rows`] rows ([`full_softmax_chunked`]) above, so memory stays bounded whatever the catalog.
///
/// # Shapes
/// - `hidden`: `[n, d]`, `items`: `[n_items, d]`, `targets`: `[n]` (item index or [`IGNORE`])
pub fn full_softmax(hidden: &Tensor, items: &Tensor, targets: &Tensor) -> Tensor {
    let (n, n_items) = (hidden.size()[0], items.size()[0]);
    if n.saturating_mul(n_items) <= WHOLE_MATRIX_MAX {
        let logits = hidden.matmul(&items.tr()); // [n, n_items]
        logits.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, IGNORE, 0.0)
    } else {
        full_softmax_chunked(hidden, items, targets, chunk_rows(n_items))
    }
}

/// [`full_softmax`], `chunk` rows at a time, with its gradient formed in the same pass.
///
/// Autograd would keep the whole `[n, n_items]` logit matrix for backward and stream it through memory about seven
/// times (product, log-softmax, its gradient, two products). Here each chunk's logits are made, turned into
/// `softmax − one-hot` in place and multiplied into the gradients of `hidden` and `items` while they are still in
/// cache; the returned loss carries exactly those gradients (a surrogate `Σ hidden·∂h + Σ items·∂e` whose value is
/// cancelled), so backward costs two element-wise products. Without gradients (evaluation) only the loss is formed.
///
/// # Shapes
/// - as [`full_softmax`]
pub fn full_softmax_chunked(hidden: &Tensor, items: &Tensor, targets: &Tensor, chunk: i64) -> Tensor {
    let keep = targets.ne(IGNORE).nonzero().squeeze_dim(1);
    let n = keep.size()[0];
    if n == 0 {
        return hidden.sum(Kind::Float) * 0.0;
    }
    let all = n == targets.size()[0];
    let (hidden, targets) = if all {
        (hidden.shallow_clone(), targets.shallow_clone())
    } else {
        (hidden.index_select(0, &keep), targets.index_select(0, &keep))
    };
    let need_grad = hidden.requires_grad() || items.requires_grad();
    let (h, e) = (hidden.detach(), items.detach());
    let scale = 1.0 / n as f64;
    let chunk = chunk.max(1);
    let grads = need_grad.then(|| (h.zeros_like(), e.zeros_like()));
    let total = tch::no_grad(|| {
        let mut total = Tensor::zeros([], (Kind::Float, h.device()));
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let hc = h.narrow(0, start, len);
            let yc = targets.narrow(0, start, len).unsqueeze(1);
            let mut logits = hc.matmul(&e.tr()); // [c, n_items]
            let lse = logits.logsumexp([1i64].as_slice(), true); // [c, 1]
            total += (&lse - logits.gather(1, &yc, false)).sum(Kind::Float);
            if let Some((gh, ge)) = &grads {
                // softmax − one-hot, scaled by the mean's 1/n, in place.
                let _ = logits.g_sub_(&lse).exp_();
                let minus = Tensor::full([len, 1], -1.0, (logits.kind(), logits.device()));
                let _ = logits.scatter_add_(1, &yc, &minus).g_mul_scalar_(scale);
                let _ = logits.mm_out(&gh.narrow(0, start, len), &e);
                let _ = ge.shallow_clone().addmm_(&logits.tr(), &hc);
            }
            start += len;
        }
        total * scale
    });
    match grads {
        None => total,
        Some((gh, ge)) => {
            let surrogate = (&hidden * gh).sum(Kind::Float) + (items * ge).sum(Kind::Float);
            total + &surrogate - surrogate.detach()
        }
    }
}

/// Sampled softmax with `log Q` correction.
///
/// Candidates per row: the row's positive, the batch's distinct targets (when `in_batch`; `Q ∝` their count in the
/// batch) and `n_uniform` items drawn uniformly with replacement (shared by the batch; `Q = n_uniform / n_items`).
/// Every candidate's logit, the positive's included, has `log Q` subtracted; a negative equal to the row's positive is masked out.
///
/// # Shapes
/// - as [`full_softmax`]
pub fn sampled_softmax(hidden: &Tensor, items: &Tensor, targets: &Tensor, n_uniform: i64, in_batch: bool) -> Tensor {
    let device = hidden.device();
    let keep = targets.ne(IGNORE).nonzero().squeeze_dim(1);
    let h = hidden.index_select(0, &keep); // [n, d]
    let y = targets.index_select(0, &keep); // [n]
    let n = y.size()[0];
    if n == 0 {
        return hidden.sum(Kind::Float) * 0.0;
    }
    let n_items = items.size()[0];
    let pos_logit = (&h * items.index_select(0, &y)).sum_dim_intlist(-1, true, Kind::Float); // [n, 1]
    let uniform_log_q = (n_uniform.max(1) as f64 / n_items as f64).ln();
    let mut blocks = Vec::new();
    let mut masks = vec![Tensor::ones([n, 1], (Kind::Bool, device))];
    if in_batch {
        let (uniq, inverse, counts) = y.unique_dim(0, true, true, true);
        let log_q = (counts.to_kind(Kind::Float) / n as f64).log(); // [u]
                                                                    // The positive is corrected by its own in-batch probability, like every other candidate.
        blocks.push(pos_logit - log_q.index_select(0, &inverse).unsqueeze(1));
        let logits = h.matmul(&items.index_select(0, &uniq).transpose(0, 1)) - log_q.unsqueeze(0); // [n, u]
        masks.push(y.unsqueeze(1).ne_tensor(&uniq.unsqueeze(0)));
        blocks.push(logits);
    } else {
        blocks.push(pos_logit - uniform_log_q);
    }
    if n_uniform > 0 {
        let neg = Tensor::randint(n_items, [n_uniform], (Kind::Int64, device));
        let logits = h.matmul(&items.index_select(0, &neg).transpose(0, 1)) - uniform_log_q; // [n, k]
        masks.push(y.unsqueeze(1).ne_tensor(&neg.unsqueeze(0)));
        blocks.push(logits);
    }
    let logits = Tensor::cat(&blocks, 1);
    let allowed = Tensor::cat(&masks, 1);
    let logits = logits.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
    let labels = Tensor::zeros([n], (Kind::Int64, device));
    logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, IGNORE, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::Device;

    /// The autograd reference: the whole logit matrix, libtorch's cross-entropy.
    fn reference(hidden: &Tensor, items: &Tensor, targets: &Tensor) -> Tensor {
        hidden.matmul(&items.tr()).cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, IGNORE, 0.0)
    }

    #[test]
    fn chunks_hold_a_bounded_number_of_entries() {
        assert_eq!(chunk_rows(12_000), CHUNK_ENTRIES / 12_000);
        assert_eq!(chunk_rows(1 << 30), 1, "at least one row");
        assert!(chunk_rows(1_000_000) * 1_000_000 <= CHUNK_ENTRIES);
    }

    fn value_and_grads(f: impl Fn(&Tensor, &Tensor) -> Tensor, h: &Tensor, e: &Tensor) -> (f64, Tensor, Tensor) {
        let (h, e) = (h.detach().set_requires_grad(true), e.detach().set_requires_grad(true));
        // Through a product, as in the model: items reach the loss as a function of a parameter.
        let table = &e * 1.0;
        let loss = f(&h, &table);
        loss.backward();
        (loss.double_value(&[]), h.grad(), e.grad())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Chunking and the formed gradient change neither the loss nor its gradients, whatever the chunk, the
        /// ignored rows and the catalog.
        #[test]
        fn chunked_full_softmax_equals_autograd(
            n in 1i64..40, n_items in 2i64..300, d in 1i64..12, chunk in 1i64..50, seed in 0i64..1000,
            ignore_every in 0i64..4,
        ) {
            tch::manual_seed(seed);
            let h = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
            let e = Tensor::randn([n_items, d], (Kind::Float, Device::Cpu));
            let mut y: Vec<i64> = (0..n).map(|i| (i * 7 + seed) % n_items).collect();
            if ignore_every > 0 {
                for (i, v) in y.iter_mut().enumerate() {
                    if i as i64 % (ignore_every + 1) == 1 { *v = IGNORE; }
                }
            }
            let t = Tensor::from_slice(&y);
            let (v0, gh0, ge0) = value_and_grads(|h, e| reference(h, e, &t), &h, &e);
            let (v1, gh1, ge1) = value_and_grads(|h, e| full_softmax_chunked(h, e, &t, chunk), &h, &e);
            prop_assert!((v0 - v1).abs() < 1e-4 * (1.0 + v0.abs()), "loss {} vs {}", v0, v1);
            let dh = (&gh0 - &gh1).abs().max().double_value(&[]);
            let de = (&ge0 - &ge1).abs().max().double_value(&[]);
            prop_assert!(dh < 1e-5 && de < 1e-5, "gradients differ by {} and {}", dh, de);
        }
    }

    #[test]
    fn without_gradients_only_the_loss_is_formed() {
        let h = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let e = Tensor::randn([7, 3], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 1, 2, 3, 4]);
        let got = tch::no_grad(|| full_softmax_chunked(&h, &e, &t, 2));
        assert!(!got.requires_grad());
        assert!((got.double_value(&[]) - reference(&h, &e, &t).double_value(&[])).abs() < 1e-5);
    }

    #[test]
    fn full_softmax_matches_a_hand_computed_case() {
        // One row, two items: logits [1, 0] → loss for target 0 is ln(1 + e^-1).
        let h = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let items = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let t = Tensor::from_slice(&[0i64]);
        let got = full_softmax(&h, &items, &t).double_value(&[]);
        assert!((got - (1.0f64 + (-1.0f64).exp()).ln()).abs() < 1e-6, "{got}");
        let ignored = Tensor::from_slice(&[0i64, IGNORE]);
        let h2 = Tensor::cat(&[&h, &h], 0);
        assert!(
            (full_softmax(&h2, &items, &ignored).double_value(&[]) - got).abs() < 1e-6,
            "IGNORE rows must not count"
        );
    }

    #[test]
    fn sampled_softmax_with_all_items_in_batch_equals_full_softmax_up_to_log_q() {
        // When every item is a target exactly once, in-batch log Q is constant and the candidates are the catalog.
        tch::manual_seed(0);
        let items = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let h = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let full = full_softmax(&h, &items, &t).double_value(&[]);
        let sampled = sampled_softmax(&h, &items, &t, 0, true).double_value(&[]);
        assert!((full - sampled).abs() < 1e-5, "{full} vs {sampled}");
    }

    #[test]
    fn sampled_softmax_is_finite_and_learns() {
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let items = vs.root().randn("items", &[50, 8], 0.0, 0.1);
        let h = vs.root().randn("h", &[32, 8], 0.0, 0.1);
        let t = Tensor::randint(50, [32], (Kind::Int64, Device::Cpu));
        let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Adam::default(), &vs, 0.05).unwrap();
        let first = sampled_softmax(&h, &items, &t, 16, true);
        let mut last = first.double_value(&[]);
        for _ in 0..50 {
            let l = sampled_softmax(&h, &items, &t, 16, true);
            opt.backward_step(&l);
            last = l.double_value(&[]);
        }
        assert!(last.is_finite() && last < first.double_value(&[]) * 0.5, "{} -> {last}", first.double_value(&[]));
    }
}
