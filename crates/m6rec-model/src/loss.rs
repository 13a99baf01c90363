//! Next-item objectives over hidden states and the tied item embedding table.

use m6rec_data::IGNORE;
use tch::{Kind, Reduction, Tensor};

/// Full-softmax cross-entropy over the whole catalog.
///
/// # Shapes
/// - `hidden`: `[n, d]`, `items`: `[n_items, d]`, `targets`: `[n]` (item index or [`IGNORE`])
pub fn full_softmax(hidden: &Tensor, items: &Tensor, targets: &Tensor) -> Tensor {
    let logits = hidden.matmul(&items.transpose(0, 1)); // [n, n_items]
    logits.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, IGNORE, 0.0)
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
    use tch::Device;

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
