//! Learning-rate schedules over optimizer steps, and the validation-driven plateau rule.

use crate::optimizer::ScheduleConfig;
use serde::{Deserialize, Serialize};

/// A learning-rate schedule over optimizer steps (all with a linear warm-up from 0 over `warmup` steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The peak rate throughout.
    Constant,
    /// Linear warm-up, then constant.
    Warmup {
        /// Warm-up steps.
        warmup: u64,
    },
    /// Linear warm-up, then cosine decay to 0 at `total` steps.
    WarmupCosine {
        /// Warm-up steps.
        warmup: u64,
        /// Total steps.
        total: u64,
    },
    /// Linear warm-up, then linear decay to 0 at `total` steps.
    WarmupLinear {
        /// Warm-up steps.
        warmup: u64,
        /// Total steps.
        total: u64,
    },
    /// Linear warm-up, then the rate times `gamma` every `every` steps.
    WarmupStep {
        /// Warm-up steps.
        warmup: u64,
        /// Steps between decays.
        every: u64,
        /// Factor per decay.
        gamma: f64,
    },
}

impl Schedule {
    /// The schedule a config asks for, for a run of `total` steps with `steps_per_epoch` (plateau: warm-up then
    /// constant; the [`Plateau`] rule scales it).
    pub fn from_config(cfg: &ScheduleConfig, warmup: u64, total: u64, steps_per_epoch: u64) -> Schedule {
        match *cfg {
            ScheduleConfig::Cosine => Schedule::WarmupCosine { warmup, total },
            ScheduleConfig::Linear => Schedule::WarmupLinear { warmup, total },
            ScheduleConfig::Constant | ScheduleConfig::Plateau { .. } => Schedule::Warmup { warmup },
            ScheduleConfig::Step { every_epochs, gamma } => {
                Schedule::WarmupStep { warmup, every: (every_epochs as u64 * steps_per_epoch).max(1), gamma }
            }
        }
    }

    /// Rate at (0-based) `step` for peak rate `peak`.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        let warm = |w: u64| if w > 0 && step < w { (step + 1) as f64 / w as f64 } else { 1.0 };
        let frac = |warmup: u64, total: u64| {
            let span = total.saturating_sub(warmup).max(1) as f64;
            (step.saturating_sub(warmup) as f64 / span).min(1.0)
        };
        match *self {
            Schedule::Constant => peak,
            Schedule::Warmup { warmup } => peak * warm(warmup),
            Schedule::WarmupCosine { warmup, total } if step >= warmup => {
                peak * 0.5 * (1.0 + (std::f64::consts::PI * frac(warmup, total)).cos())
            }
            Schedule::WarmupLinear { warmup, total } if step >= warmup => peak * (1.0 - frac(warmup, total)),
            Schedule::WarmupStep { warmup, every, gamma } if step >= warmup => {
                peak * gamma.powi(((step - warmup) / every.max(1)).min(i32::MAX as u64) as i32)
            }
            Schedule::WarmupCosine { warmup, .. }
            | Schedule::WarmupLinear { warmup, .. }
            | Schedule::WarmupStep { warmup, .. } => peak * warm(warmup),
        }
    }
}

/// Reduce-on-plateau: the learning rate is scaled by `factor` after `patience` validations without a better metric,
/// never below `min_lr`. Plain data, saved with the training state so a resumed run keeps its scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// Current multiplier of the scheduled rate.
    pub scale: f64,
    /// Best metric seen (none yet: `None`; JSON has no infinities).
    pub best: Option<f64>,
    /// Validations since it improved.
    pub bad: usize,
}

impl Default for Plateau {
    fn default() -> Self {
        Plateau { scale: 1.0, best: None, bad: 0 }
    }
}

impl Plateau {
    /// Records a validation metric (higher is better); returns whether the rate was reduced.
    pub fn observe(&mut self, metric: f64, factor: f64, patience: usize, peak: f64, min_lr: f64) -> bool {
        if self.best.is_none_or(|b| metric > b) {
            self.best = Some(metric);
            self.bad = 0;
            return false;
        }
        self.bad += 1;
        if self.bad >= patience.max(1) && peak * self.scale > min_lr {
            self.scale = (self.scale * factor).max(min_lr / peak);
            self.bad = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedules() {
        let s = Schedule::WarmupCosine { warmup: 10, total: 110 };
        assert!((s.lr(1.0, 0) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60) - 0.5).abs() < 1e-12);
        assert!(s.lr(1.0, 200).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 5), 0.3);
        let l = Schedule::WarmupLinear { warmup: 0, total: 100 };
        assert!((l.lr(1.0, 25) - 0.75).abs() < 1e-12);
        let st = Schedule::from_config(&ScheduleConfig::Step { every_epochs: 2, gamma: 0.5 }, 0, 100, 10);
        assert_eq!((st.lr(1.0, 19), st.lr(1.0, 20), st.lr(1.0, 45)), (1.0, 0.5, 0.25));
    }

    #[test]
    fn plateau_reduces_after_patience_and_stops_at_the_floor() {
        let mut p = Plateau::default();
        assert_eq!(serde_json::from_str::<Plateau>(&serde_json::to_string(&p).unwrap()).unwrap(), p);
        assert!(!p.observe(0.5, 0.5, 2, 1e-3, 2e-4));
        assert!(!p.observe(0.4, 0.5, 2, 1e-3, 2e-4));
        assert!(p.observe(0.4, 0.5, 2, 1e-3, 2e-4));
        assert_eq!(p.scale, 0.5);
        assert!(!p.observe(0.6, 0.5, 2, 1e-3, 2e-4), "an improvement resets the count");
        for _ in 0..10 {
            p.observe(0.1, 0.5, 2, 1e-3, 2e-4);
        }
        assert!((p.scale * 1e-3 - 2e-4).abs() < 1e-12, "floor at min_lr: {}", p.scale);
    }

    proptest! {
        #[test]
        fn rates_stay_between_zero_and_the_peak(warmup in 0u64..50, total in 0u64..500, step in 0u64..1000, every in 1u64..50, gamma in 0.01f64..1.0) {
            for s in [
                Schedule::Constant,
                Schedule::Warmup { warmup },
                Schedule::WarmupCosine { warmup, total },
                Schedule::WarmupLinear { warmup, total },
                Schedule::WarmupStep { warmup, every, gamma },
            ] {
                let lr = s.lr(2.0, step);
                prop_assert!((0.0..=2.0 + 1e-12).contains(&lr), "{s:?} at {step}: {lr}");
            }
        }
    }
}
