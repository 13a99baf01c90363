//! The optimizer layer of m6rec.
//!
//! # Brief overview
//! - [`AdamWConfig`] → [`AdamW::new`]: decoupled weight decay with parameter groups (no decay on norms, biases and,
//!   by default, embeddings). Its moments are ordinary named tensors ([`AdamW::state`] / [`AdamW::load_state`]), so a
//!   checkpoint saves them and a resumed run continues exactly.
//! - [`Schedule`]: constant, linear warm-up then constant, linear warm-up then cosine decay.
//! - [`clip_grad_norm`]: clipping by global norm.
//! - [`search`]: automated strategy search (search spaces, random and TPE samplers, ASHA, a resumable study).
//!
//! ```
//! use m6rec_optim::{AdamW, AdamWConfig, Schedule};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let w = vs.root().randn("w", &[3], 0.0, 1.0);
//! let mut opt = AdamW::new(&vs, &AdamWConfig::default());
//! let loss = (&w * &w).sum(tch::Kind::Float);
//! opt.zero_grad();
//! loss.backward();
//! m6rec_optim::clip_grad_norm(&vs, 1.0);
//! opt.step(Schedule::WarmupCosine { warmup: 10, total: 100 }.lr(1e-3, 0));
//! ```
#![deny(missing_docs)]

pub mod search;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Errors of the optimizer layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Saved optimizer state does not fit the model's parameters.
    #[error("optimizer state does not match the model: {0} (was the checkpoint made with another config?)")]
    StateMismatch(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate. Default 1e-3.
    #[serde(default = "d::lr")]
    pub lr: f64,
    /// First-moment decay. Default 0.9.
    #[serde(default = "d::beta1")]
    pub beta1: f64,
    /// Second-moment decay. Default 0.98.
    #[serde(default = "d::beta2")]
    pub beta2: f64,
    /// Denominator epsilon. Default 1e-8.
    #[serde(default = "d::eps")]
    pub eps: f64,
    /// Decoupled weight decay. Default 0.01.
    #[serde(default = "d::wd")]
    pub weight_decay: f64,
    /// Whether embedding tables decay too. Default false.
    #[serde(default)]
    pub decay_embeddings: bool,
}

mod d {
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.98
    }
    pub fn eps() -> f64 {
        1e-8
    }
    pub fn wd() -> f64 {
        0.01
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: d::lr(),
            beta1: d::beta1(),
            beta2: d::beta2(),
            eps: d::eps(),
            weight_decay: d::wd(),
            decay_embeddings: false,
        }
    }
}

struct Param {
    name: String,
    var: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over every trainable variable of a [`VarStore`].
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    step: i64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("cfg", &self.cfg)
            .field("n_params", &self.params.len())
            .field("step", &self.step)
            .finish()
    }
}

/// Whether a variable named `name` gets weight decay: not norms, not biases, embeddings only if asked.
pub fn decays(name: &str, decay_embeddings: bool) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let is_norm = name.split('.').any(|p| p.starts_with("ln") || p.contains("norm"));
    let is_emb = name.split('.').any(|p| p.contains("emb"));
    !(leaf == "bias" || is_norm || (is_emb && !decay_embeddings))
}

impl AdamW {
    /// Collects the store's trainable variables (sorted by name, so state order is stable).
    pub fn new(vs: &VarStore, cfg: &AdamWConfig) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| Param {
                decay: decays(&name, cfg.decay_embeddings),
                m: var.zeros_like(),
                v: var.zeros_like(),
                name,
                var,
            })
            .collect();
        AdamW { cfg: cfg.clone(), params, step: 0 }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// One update at learning rate `lr`. Variables without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let _ = p.m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = p.v.g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
                if p.decay && c.weight_decay > 0.0 {
                    let _ = p.var.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let denom = (&p.v / bc2).sqrt() + c.eps;
                let update = (&p.m / bc1) / denom * lr;
                let _ = p.var.g_sub_(&update);
            }
        });
    }

    /// Named state tensors (`<var>.m`, `<var>.v`, and `step`) for saving.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            out.push((format!("{}.m", p.name), p.m.shallow_clone()));
            out.push((format!("{}.v", p.name), p.v.shallow_clone()));
        }
        out.push(("step".to_string(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores state saved by [`AdamW::state`], checking names and shapes.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let find = |k: &str| state.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        for p in &mut self.params {
            for (suffix, dst) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{}.{suffix}", p.name);
                let src = find(&key).ok_or_else(|| Error::StateMismatch(format!("`{key}` missing")))?;
                if src.size() != dst.size() {
                    return Err(Error::StateMismatch(format!(
                        "`{key}` has shape {:?}, model wants {:?}",
                        src.size(),
                        dst.size()
                    )));
                }
                tch::no_grad(|| dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind())));
            }
        }
        let step = find("step").ok_or_else(|| Error::StateMismatch("`step` missing".into()))?;
        self.step = step.int64_value(&[0]);
        Ok(())
    }
}

/// Learning-rate schedule over optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The peak rate throughout.
    Constant,
    /// Linear warm-up from 0 over `warmup` steps, then constant.
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
}

impl Schedule {
    /// Rate at (0-based) `step` for peak rate `peak`.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        let warm = |w: u64| if w > 0 && step < w { (step + 1) as f64 / w as f64 } else { 1.0 };
        match *self {
            Schedule::Constant => peak,
            Schedule::Warmup { warmup } => peak * warm(warmup),
            Schedule::WarmupCosine { warmup, total } => {
                if step < warmup {
                    peak * warm(warmup)
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let t = ((step - warmup) as f64 / span).min(1.0);
                    peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(vs: &VarStore, max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = vs.trainable_variables().iter().map(|v| v.grad()).filter(|g| g.defined()).collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = tch::no_grad(|| {
        let sq: Vec<Tensor> = grads.iter().map(|g| g.pow_tensor_scalar(2).sum(Kind::Float)).collect();
        Tensor::stack(&sq, 0).sum(Kind::Float).sqrt().double_value(&[])
    });
    if total.is_finite() && total > max_norm && max_norm > 0.0 {
        let scale = max_norm / (total + 1e-6);
        tch::no_grad(|| {
            for mut g in grads {
                let _ = g.g_mul_scalar_(scale);
            }
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn parameter_groups() {
        assert!(decays("model.blocks.0.attn.qkv.weight", false));
        assert!(!decays("model.blocks.0.attn.qkv.bias", false));
        assert!(!decays("model.blocks.0.ln_attn.weight", false));
        assert!(!decays("model.item_emb.weight", false));
        assert!(decays("model.item_emb.weight", true));
    }

    #[test]
    fn first_step_matches_the_closed_form() {
        // After one step, AdamW moves each weight by lr * sign(g) (bias-corrected m/sqrt(v) = g/|g|), plus decay.
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() };
        let mut opt = AdamW::new(&vs, &cfg);
        opt.zero_grad();
        (&w * &w).sum(Kind::Float).backward();
        opt.step(0.1);
        let got: Vec<f32> = Vec::<f32>::try_from(&w).unwrap();
        let expect = [1.0 * (1.0 - 0.05) - 0.1, -2.0 * (1.0 - 0.05) + 0.1];
        for (g, e) in got.iter().zip(expect) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expect:?}");
        }
    }

    #[test]
    fn state_round_trips_and_resumed_steps_match() {
        let run = |split: bool| -> Vec<f32> {
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
            let mut opt = AdamW::new(&vs, &AdamWConfig::default());
            for i in 0..6 {
                if split && i == 3 {
                    let saved: Vec<(String, Tensor)> = opt.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
                    opt = AdamW::new(&vs, &AdamWConfig::default());
                    opt.load_state(&saved).unwrap();
                }
                opt.zero_grad();
                (&w * &w * &w).sum(Kind::Float).backward();
                opt.step(0.01);
            }
            Vec::<f32>::try_from(&w).unwrap()
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn schedules() {
        let s = Schedule::WarmupCosine { warmup: 10, total: 110 };
        assert!((s.lr(1.0, 0) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60) - 0.5).abs() < 1e-12);
        assert!(s.lr(1.0, 200).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 5), 0.3);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[3.0f32, 4.0]));
        (&w * &w).sum(Kind::Float).backward(); // grad = [6, 8], norm 10
        let before = clip_grad_norm(&vs, 1.0);
        assert!((before - 10.0).abs() < 1e-4);
        let after = w.grad().norm().double_value(&[]);
        assert!((after - 1.0).abs() < 1e-3, "{after}");
    }
}
