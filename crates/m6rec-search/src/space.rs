//! Search spaces: one distribution per run-config field.

use crate::{SearchError, Value};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One parameter's distribution, written in TOML as `{ log_uniform = [lo, hi] }`, `{ uniform = [lo, hi] }`,
/// `{ int = [lo, hi] }` (inclusive) or `{ choice = [a, b, ...] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Uniform in log space between two positive bounds.
    LogUniform([f64; 2]),
    /// Uniform between two bounds.
    Uniform([f64; 2]),
    /// A uniform integer between two bounds, both included.
    Int([i64; 2]),
    /// One of these values.
    Choice(Vec<Value>),
}

impl Dist {
    pub(crate) fn validate(&self, name: &str) -> Result<(), SearchError> {
        let bad = |r: String| Err(SearchError::Spec(format!("`{name}`: {r}")));
        match self {
            Dist::LogUniform([lo, hi]) if !(*lo > 0.0 && hi >= lo && hi.is_finite()) => {
                bad(format!("log_uniform needs 0 < low <= high, got [{lo}, {hi}]"))
            }
            Dist::Uniform([lo, hi]) if !(hi >= lo && lo.is_finite() && hi.is_finite()) => {
                bad(format!("uniform needs low <= high, got [{lo}, {hi}]"))
            }
            Dist::Int([lo, hi]) if hi < lo => bad(format!("int needs low <= high, got [{lo}, {hi}]")),
            Dist::Choice(v) if v.is_empty() => bad("choice needs at least one value".into()),
            _ => Ok(()),
        }
    }

    /// A uniform draw.
    pub fn sample(&self, rng: &mut impl Rng) -> Value {
        match self {
            Dist::LogUniform([lo, hi]) => Value::Float((lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()),
            Dist::Uniform([lo, hi]) => Value::Float(lo + rng.random::<f64>() * (hi - lo)),
            Dist::Int([lo, hi]) => Value::Integer(rng.random_range(*lo..=*hi)),
            Dist::Choice(v) => v[rng.random_range(0..v.len())].clone(),
        }
    }

    /// The value's position in the sampler's working space (log for log-uniform; index for choices).
    pub(crate) fn to_unit(&self, v: &Value) -> Option<f64> {
        match self {
            Dist::LogUniform(_) => as_f64(v).map(f64::ln),
            Dist::Uniform(_) | Dist::Int(_) => as_f64(v),
            Dist::Choice(c) => c.iter().position(|x| x == v).map(|i| i as f64),
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}
