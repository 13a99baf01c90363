//! Automated strategy search: a search space over run-config fields, samplers (random, TPE), schedulers (plain
//! trials to the full budget, or ASHA with growing epoch budgets) and a persisted study that resumes after a crash.
//!
//! This module decides *what* to run; it runs nothing. A driver (the `m6rec tune` command) asks [`Study::next_job`]
//! for work, trains, and reports with [`Study::complete`] or [`Study::fail`]. Everything here is plain data, so the
//! study is saved as JSON after every event and a restarted driver continues it ([`Study::requeue_running`]).
//!
//! ```
//! use m6rec_search::{Outcome, Study, StudySpec};
//! let spec: StudySpec = toml::from_str(r#"
//!     [study]
//!     scheduler = "asha"
//!     max_trials = 9
//!     min_epochs = 1
//!     max_epochs = 9
//!     [space]
//!     "optim.lr" = { log_uniform = [1e-4, 1e-2] }
//! "#).unwrap();
//! let mut study = Study::new(spec).unwrap();
//! while let Some(job) = study.next_job() {
//!     let lr = study.trials[job.trial].params["optim.lr"].as_float().unwrap();
//!     let score = 1.0 - (lr.log10() + 3.0).abs(); // the objective, normally a training run
//!     study.complete(job.trial, Outcome { epochs: job.until_epoch, valid: score, finished: false, seconds: 1.0 });
//! }
//! assert!(study.best().is_some());
//! ```
//!
//! Plain data and plain Rust: no libtorch, so a driver or a dashboard can depend on it alone.
#![deny(missing_docs)]

mod sampler;
mod space;
mod study;

pub use sampler::Sampler;
pub use space::Dist;
pub use study::{Job, Outcome, Scheduler, Status, Study, StudyConfig, StudySpec, Trial};

/// A value a parameter takes (as it goes into the TOML run config).
pub type Value = toml::Value;

/// Errors of the search layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The study file or search space is invalid.
    #[error("search space: {0}")]
    Spec(String),
    /// A parameter path does not fit the base configuration.
    #[error("parameter `{path}`: {reason}")]
    Apply {
        /// The dotted path, as in the space.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Sets `path` (dotted) in a TOML table to `value`, creating tables on the way; refuses to replace a table by a
/// plain value or to go through a value. (A table value, such as a choice of `{ type = "sampled_softmax" }`, replaces
/// the table whole.)
pub fn set_path(root: &mut toml::Table, path: &str, value: Value) -> Result<(), SearchError> {
    let err = |reason: String| SearchError::Apply { path: path.to_string(), reason };
    let mut parts: Vec<&str> = path.split('.').collect();
    let leaf = parts.pop().filter(|l| !l.is_empty()).ok_or_else(|| err("empty name".into()))?;
    let mut table = root;
    for p in parts {
        let next = table.entry(p.to_string()).or_insert_with(|| Value::Table(toml::Table::new()));
        table = next.as_table_mut().ok_or_else(|| err(format!("`{p}` is a value, not a table")))?;
    }
    if table.get(leaf).is_some_and(Value::is_table) && !value.is_table() {
        return Err(err(format!("`{leaf}` is a table; name one of its fields")));
    }
    table.insert(leaf.to_string(), value);
    Ok(())
}
