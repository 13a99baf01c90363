//! Samplers: which configuration to try next (random, TPE).

use crate::{Dist, Trial, Value};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which configurations to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Independent uniform draws.
    #[default]
    Random,
    /// Tree-structured Parzen estimator (Bergstra et al. 2011) once `startup` trials have results; random before.
    Tpe,
}

/// TPE: splits scored trials into the best `gamma` and the rest, models each parameter under both with Parzen
/// windows (Gaussian kernels in the working space; smoothed frequencies for choices), and keeps, among 24 draws from
/// the good model, the one with the highest good/bad density ratio. Parameters are treated independently.
pub(crate) fn tpe(
    space: &BTreeMap<String, Dist>,
    scored: &[(&Trial, f64)],
    rng: &mut ChaCha8Rng,
) -> BTreeMap<String, Value> {
    let mut sorted: Vec<&(&Trial, f64)> = scored.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let n_good = ((sorted.len() as f64 * 0.25).ceil() as usize).clamp(1, sorted.len() - 1);
    let (good, bad) = sorted.split_at(n_good);
    let mut out = BTreeMap::new();
    for (name, dist) in space {
        let xs = |set: &[&(&Trial, f64)]| -> Vec<f64> {
            set.iter().filter_map(|(t, _)| t.params.get(name).and_then(|v| dist.to_unit(v))).collect()
        };
        let (g, b) = (xs(good), xs(bad));
        let value = match dist {
            Dist::Choice(options) => tpe_choice(options, &g, &b, rng),
            _ => tpe_numeric(dist, &g, &b, rng),
        };
        out.insert(name.clone(), value);
    }
    out
}

/// TPE's pick for a choice: among 24 draws from the good trials' smoothed frequencies, the best good/bad ratio.
fn tpe_choice(options: &[Value], g: &[f64], b: &[f64], rng: &mut ChaCha8Rng) -> Value {
    let weights = |xs: &[f64]| -> Vec<f64> {
        let mut w = vec![1.0; options.len()];
        for &x in xs {
            w[x as usize] += 1.0;
        }
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    };
    let (wg, wb) = (weights(g), weights(b));
    let mut best = (f64::NEG_INFINITY, 0);
    for _ in 0..24 {
        let i = draw_weighted(&wg, rng);
        let ratio = wg[i] / wb[i];
        if ratio > best.0 {
            best = (ratio, i);
        }
    }
    options[best.1].clone()
}

/// TPE's pick for a numeric parameter (working space: log for log-uniform, integers widened by half a step).
fn tpe_numeric(dist: &Dist, g: &[f64], b: &[f64], rng: &mut ChaCha8Rng) -> Value {
    let (lo, hi) = match dist {
        Dist::LogUniform([lo, hi]) => (lo.ln(), hi.ln()),
        Dist::Uniform([lo, hi]) => (*lo, *hi),
        Dist::Int([lo, hi]) => (*lo as f64 - 0.5, *hi as f64 + 0.5),
        Dist::Choice(_) => (0.0, 1.0),
    };
    let width = (hi - lo).max(1e-12);
    let bw = |n: usize| width / (n.max(1) as f64).powf(0.2) / 2.0;
    let density = |xs: &[f64], x: f64| -> f64 {
        // A uniform prior component keeps the density positive everywhere.
        let h = bw(xs.len());
        let kern: f64 = xs.iter().map(|&m| (-0.5 * ((x - m) / h).powi(2)).exp() / h).sum();
        (kern / (2.0 * std::f64::consts::PI).sqrt() + 1.0 / width) / (xs.len() as f64 + 1.0)
    };
    let mut best = (f64::NEG_INFINITY, lo);
    for _ in 0..24 {
        let x = if g.is_empty() || rng.random::<f64>() < 1.0 / (g.len() as f64 + 1.0) {
            lo + rng.random::<f64>() * width
        } else {
            // A draw from one good trial's kernel, truncated to the range by redrawing (clamping would
            // pile candidates onto the bounds, where the density ratio is often largest).
            let m = g[rng.random_range(0..g.len())];
            let mut x = lo + rng.random::<f64>() * width;
            for _ in 0..16 {
                let u: f64 = rng.random::<f64>().max(1e-12);
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * rng.random::<f64>()).cos();
                let y = m + z * bw(g.len());
                if (lo..=hi).contains(&y) {
                    x = y;
                    break;
                }
            }
            x
        };
        let ratio = density(g, x) / density(b, x);
        if ratio > best.0 {
            best = (ratio, x);
        }
    }
    match dist {
        Dist::LogUniform(_) => Value::Float(best.1.exp()),
        Dist::Int([lo, hi]) => Value::Integer((best.1.round() as i64).clamp(*lo, *hi)),
        _ => Value::Float(best.1),
    }
}

fn draw_weighted(w: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
    for (i, &x) in w.iter().enumerate() {
        if u < x {
            return i;
        }
        u -= x;
    }
    w.len() - 1
}
