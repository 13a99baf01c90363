//! Plain-text metric tables.

use m6rec_train::metrics::{Metrics, KS};

/// One row per model, columns HR/NDCG/MRR at every K.
pub fn metrics_table(rows: &[(&str, &Metrics)]) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    for name in ["HR", "NDCG", "MRR"] {
        out.push_str(&format!("{:<width$}", name));
        for k in KS {
            out.push_str(&format!("  {:>8}", format!("@{k}")));
        }
        out.push('\n');
        for (label, m) in rows {
            out.push_str(&format!("{label:<width$}"));
            for k in KS {
                out.push_str(&format!("  {:>8.4}", m.get(&name.to_lowercase(), k)));
            }
            out.push('\n');
        }
    }
    out
}
