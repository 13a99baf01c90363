//! Optimizers with parameter groups, savable state and an exponential moving average of the weights.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The update rule. Each follows PyTorch's definition (tests compare them with libtorch's own optimizers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Adam with decoupled weight decay (Loshchilov & Hutter). The default.
    #[default]
    Adamw,
    /// Adam with L2 weight decay added to the gradient.
    Adam,
    /// Stochastic gradient descent with optional (Nesterov) momentum.
    Sgd,
    /// RMSprop with optional momentum.
    Rmsprop,
    /// Adagrad.
    Adagrad,
}

impl Algorithm {
    /// Names of the per-variable state tensors.
    fn slots(self) -> &'static [&'static str] {
        match self {
            Algorithm::Adamw | Algorithm::Adam => &["m", "v"],
            Algorithm::Sgd => &["buf"],
            Algorithm::Rmsprop => &["sq", "buf"],
            Algorithm::Adagrad => &["sum"],
        }
    }
}

/// Learning-rate schedule, after the linear warm-up of `train.warmup_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Cosine decay to 0 at the last step of `train.epochs`. The default.
    #[default]
    Cosine,
    /// Linear decay to 0 at the last step.
    Linear,
    /// The peak rate throughout.
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Factor per decay. Default 0.5.
        #[serde(default = "d::half")]
        gamma: f64,
    },
    /// Constant, multiplied by `factor` whenever validation NDCG@10 has not improved for `patience` evaluations,
    /// down to `min_lr`.
    Plateau {
        /// Default 0.5.
        #[serde(default = "d::half")]
        factor: f64,
        /// Default 3.
        #[serde(default = "d::three")]
        patience: usize,
        /// Default 1e-5.
        #[serde(default = "d::min_lr")]
        min_lr: f64,
    },
}

/// Optimizer hyper-parameters: `[optim]` of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// The update rule. Default adamw.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Peak learning rate. Default 1e-3.
    #[serde(default = "d::lr")]
    pub lr: f64,
    /// Adam: first-moment decay. Default 0.9.
    #[serde(default = "d::beta1")]
    pub beta1: f64,
    /// Adam: second-moment decay. Default 0.98.
    #[serde(default = "d::beta2")]
    pub beta2: f64,
    /// Denominator epsilon (Adam, RMSprop, Adagrad). Default 1e-8.
    #[serde(default = "d::eps")]
    pub eps: f64,
    /// Weight decay: decoupled for adamw, L2 on the gradient for the others. Default 0.01.
    #[serde(default = "d::wd")]
    pub weight_decay: f64,
    /// Whether embedding tables decay too. Default false.
    #[serde(default)]
    pub decay_embeddings: bool,
    /// SGD and RMSprop momentum. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub momentum: f64,
    /// SGD: Nesterov momentum. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nesterov: bool,
    /// RMSprop: smoothing of the squared gradient. Default 0.99.
    #[serde(default = "d::alpha")]
    pub alpha: f64,
    /// Learning-rate schedule. Default cosine.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Gradient accumulation: micro-batches per optimizer step (the effective batch is this times
    /// `train.batch_size`). Default 1.
    #[serde(default = "d::one")]
    pub accumulate: usize,
    /// Exponential moving average of the weights with this decay (0: off); validation, early stopping and
    /// checkpoints then use the averaged weights. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ema: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn is_false(x: &bool) -> bool {
    !*x
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
    pub fn alpha() -> f64 {
        0.99
    }
    pub fn one() -> usize {
        1
    }
    pub fn half() -> f64 {
        0.5
    }
    pub fn three() -> usize {
        3
    }
    pub fn min_lr() -> f64 {
        1e-5
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            algorithm: Algorithm::default(),
            lr: d::lr(),
            beta1: d::beta1(),
            beta2: d::beta2(),
            eps: d::eps(),
            weight_decay: d::wd(),
            decay_embeddings: false,
            momentum: 0.0,
            nesterov: false,
            alpha: d::alpha(),
            schedule: ScheduleConfig::default(),
            accumulate: 1,
            ema: 0.0,
        }
    }
}

impl OptimConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let unit = |name: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("optim.{name} is {x}, must be in [0, 1)"))
            }
        };
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("optim.lr is {}, must be positive", self.lr));
        }
        unit("beta1", self.beta1)?;
        unit("beta2", self.beta2)?;
        unit("momentum", self.momentum)?;
        unit("alpha", self.alpha)?;
        unit("ema", self.ema)?;
        if self.eps.is_nan() || self.eps <= 0.0 || self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(format!(
                "optim.eps ({}) must be positive and optim.weight_decay ({}) >= 0",
                self.eps, self.weight_decay
            ));
        }
        if self.accumulate == 0 {
            return Err("optim.accumulate must be at least 1".into());
        }
        if self.nesterov && (self.algorithm != Algorithm::Sgd || self.momentum == 0.0) {
            return Err("optim.nesterov needs algorithm = \"sgd\" and a momentum > 0".into());
        }
        match self.schedule {
            ScheduleConfig::Step { every_epochs: 0, .. } => {
                Err("optim.schedule.every_epochs must be at least 1".into())
            }
            ScheduleConfig::Step { gamma, .. } | ScheduleConfig::Plateau { factor: gamma, .. }
                if !(gamma > 0.0 && gamma <= 1.0) =>
            {
                Err(format!("optim.schedule factor {gamma} must be in (0, 1]"))
            }
            _ => Ok(()),
        }
    }
}

struct Param {
    name: String,
    var: Tensor,
    slots: Vec<Tensor>,
    decay: bool,
}

/// An optimizer over every trainable variable of a [`VarStore`].
pub struct Optimizer {
    cfg: OptimConfig,
    params: Vec<Param>,
    ema: Vec<Tensor>,
    step: i64,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
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

impl Optimizer {
    /// Collects the store's trainable variables (sorted by name, so state order is stable). Frozen variables
    /// (`requires_grad` false) are not touched.
    pub fn new(vs: &VarStore, cfg: &OptimConfig) -> Optimizer {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let n_slots = cfg.algorithm.slots().len();
        let ema = if cfg.ema > 0.0 { vars.iter().map(|(_, v)| v.detach().copy()).collect() } else { Vec::new() };
        let params = vars
            .into_iter()
            .map(|(name, var)| Param {
                decay: decays(&name, cfg.decay_embeddings),
                slots: (0..n_slots).map(|_| var.zeros_like()).collect(),
                name,
                var,
            })
            .collect();
        Optimizer { cfg: cfg.clone(), params, ema, step: 0 }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Elements in the variables this optimizer trains.
    pub fn n_trainable(&self) -> i64 {
        self.params.iter().map(|p| p.var.numel() as i64).sum()
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

    /// One update at learning rate `lr` (then the moving average, when on). Variables without a gradient are left
    /// alone.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let wd = if p.decay { c.weight_decay } else { 0.0 };
                // L2 decay (all but adamw) goes into the gradient, as in PyTorch.
                let g = if wd > 0.0 && c.algorithm != Algorithm::Adamw { &g + &p.var * wd } else { g };
                match c.algorithm {
                    Algorithm::Adamw | Algorithm::Adam => {
                        if wd > 0.0 && c.algorithm == Algorithm::Adamw {
                            let _ = p.var.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
                        let _ = p.slots[0].g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                        let _ = p.slots[1].g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
                        let denom = (&p.slots[1] / bc2).sqrt() + c.eps;
                        let _ = p.var.g_sub_(&((&p.slots[0] / bc1) / denom * lr));
                    }
                    Algorithm::Sgd => {
                        let update = if c.momentum > 0.0 {
                            let _ = p.slots[0].g_mul_scalar_(c.momentum).g_add_(&g);
                            if c.nesterov {
                                &g + &p.slots[0] * c.momentum
                            } else {
                                p.slots[0].shallow_clone()
                            }
                        } else {
                            g
                        };
                        let _ = p.var.g_sub_(&(update * lr));
                    }
                    Algorithm::Rmsprop => {
                        let _ = p.slots[0].g_mul_scalar_(c.alpha).g_add_(&(&g * &g * (1.0 - c.alpha)));
                        let step = &g / (p.slots[0].sqrt() + c.eps);
                        if c.momentum > 0.0 {
                            let _ = p.slots[1].g_mul_scalar_(c.momentum).g_add_(&step);
                            let _ = p.var.g_sub_(&(&p.slots[1] * lr));
                        } else {
                            let _ = p.var.g_sub_(&(step * lr));
                        }
                    }
                    Algorithm::Adagrad => {
                        let _ = p.slots[0].g_add_(&(&g * &g));
                        let _ = p.var.g_sub_(&(&g / (p.slots[0].sqrt() + c.eps) * lr));
                    }
                }
            }
            if c.ema > 0.0 {
                for (avg, p) in self.ema.iter_mut().zip(&self.params) {
                    let _ = avg.g_mul_scalar_(c.ema).g_add_(&(&p.var * (1.0 - c.ema)));
                }
            }
        });
    }

    /// Whether a moving average of the weights is kept.
    pub fn has_ema(&self) -> bool {
        !self.ema.is_empty()
    }

    /// Runs `f` with the moving-average weights in the variables, then puts the trained weights back. Without a
    /// moving average, just runs `f`.
    pub fn with_ema<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.ema.is_empty() {
            return f();
        }
        let live: Vec<Tensor> = self.params.iter().map(|p| p.var.detach().copy()).collect();
        let swap = |from: &[Tensor]| {
            tch::no_grad(|| {
                for (p, src) in self.params.iter().zip(from) {
                    let mut v = p.var.shallow_clone();
                    v.copy_(src);
                }
            })
        };
        swap(&self.ema);
        let out = f();
        swap(&live);
        out
    }

    /// Named state tensors (`<var>.<slot>`, `ema.<var>`, and `step`) for saving.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let slots = self.cfg.algorithm.slots();
        let mut out = Vec::with_capacity(3 * self.params.len() + 1);
        for p in &self.params {
            for (slot, t) in slots.iter().zip(&p.slots) {
                out.push((format!("{}.{slot}", p.name), t.shallow_clone()));
            }
        }
        for (p, avg) in self.params.iter().zip(&self.ema) {
            out.push((format!("ema.{}", p.name), avg.shallow_clone()));
        }
        out.push(("step".to_string(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores state saved by [`Optimizer::state`], checking names and shapes.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let find = |k: &str| state.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        let slots = self.cfg.algorithm.slots();
        let copy = |key: String, dst: &mut Tensor| -> Result<()> {
            let src = find(&key).ok_or_else(|| {
                Error::StateMismatch(format!("`{key}` missing (was the optimizer or its ema setting changed?)"))
            })?;
            if src.size() != dst.size() {
                return Err(Error::StateMismatch(format!(
                    "`{key}` has shape {:?}, model wants {:?}",
                    src.size(),
                    dst.size()
                )));
            }
            tch::no_grad(|| dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind())));
            Ok(())
        };
        for p in &mut self.params {
            for (slot, dst) in slots.iter().zip(p.slots.iter_mut()) {
                copy(format!("{}.{slot}", p.name), dst)?;
            }
        }
        for (p, avg) in self.params.iter().zip(self.ema.iter_mut()) {
            copy(format!("ema.{}", p.name), avg)?;
        }
        let step = find("step").ok_or_else(|| Error::StateMismatch("`step` missing".into()))?;
        self.step = step.int64_value(&[0]);
        Ok(())
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
    use tch::nn::OptimizerConfig;
    use tch::Device;

    #[test]
    fn parameter_groups() {
        assert!(decays("model.blocks.0.attn.qkv.weight", false));
        assert!(!decays("model.blocks.0.attn.qkv.bias", false));
        assert!(!decays("model.blocks.0.ln_attn.weight", false));
        assert!(!decays("model.item_emb.weight", false));
        assert!(decays("model.item_emb.weight", true));
    }

    fn loss(w: &Tensor) -> Tensor {
        // Not quadratic, so that gradients change shape from step to step; bounded below, so no rule diverges.
        (w * w).sum(Kind::Float) + (w * 3.0).sin().sum(Kind::Float)
    }

    fn ours(cfg: &OptimConfig, steps: usize) -> Vec<f32> {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5, 0.1]));
        let mut opt = Optimizer::new(&vs, cfg);
        for _ in 0..steps {
            opt.zero_grad();
            loss(&w).backward();
            opt.step(cfg.lr);
        }
        Vec::<f32>::try_from(&w).unwrap_or_default()
    }

    fn libtorch(make: impl OptimizerConfig, lr: f64, steps: usize) -> Vec<f32> {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5, 0.1]));
        let mut opt = make.build(&vs, lr).expect("libtorch optimizer");
        for _ in 0..steps {
            opt.zero_grad();
            loss(&w).backward();
            opt.step();
        }
        Vec::<f32>::try_from(&w).unwrap_or_default()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "ours {a:?} vs libtorch {b:?}");
        }
    }

    #[test]
    fn every_algorithm_matches_libtorch() {
        let base = OptimConfig { lr: 0.05, weight_decay: 0.1, ..Default::default() };
        let adamw = OptimConfig { beta2: 0.999, ..base.clone() };
        close(
            &ours(&adamw, 20),
            &libtorch(tch::nn::AdamW { beta1: 0.9, beta2: 0.999, wd: 0.1, eps: 1e-8, amsgrad: false }, 0.05, 20),
        );
        let adam = OptimConfig { algorithm: Algorithm::Adam, ..adamw.clone() };
        close(
            &ours(&adam, 20),
            &libtorch(tch::nn::Adam { beta1: 0.9, beta2: 0.999, wd: 0.1, eps: 1e-8, amsgrad: false }, 0.05, 20),
        );
        for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
            let sgd = OptimConfig { algorithm: Algorithm::Sgd, momentum, nesterov, ..base.clone() };
            let theirs = tch::nn::Sgd { momentum, dampening: 0.0, wd: 0.1, nesterov };
            close(&ours(&sgd, 20), &libtorch(theirs, 0.05, 20));
        }
        for momentum in [0.0, 0.5] {
            let rms = OptimConfig { algorithm: Algorithm::Rmsprop, momentum, lr: 0.01, ..base.clone() };
            let theirs = tch::nn::RmsProp { alpha: 0.99, eps: 1e-8, wd: 0.1, momentum, centered: false };
            close(&ours(&rms, 20), &libtorch(theirs, 0.01, 20));
        }
    }

    #[test]
    fn adagrad_follows_its_definition() {
        let cfg = OptimConfig { algorithm: Algorithm::Adagrad, lr: 0.1, weight_decay: 0.0, ..Default::default() };
        let got = ours(&cfg, 2);
        // By hand, for each weight: g1, sum = g1^2, w1 = w0 - lr*g1/|g1|; g2 at w1, w2 = w1 - lr*g2/sqrt(g1^2+g2^2).
        let grad = |w: f64| 2.0 * w + 3.0 * (3.0 * w).cos();
        for (w0, got) in [1.0f64, -2.0, 0.5, 0.1].iter().zip(got) {
            let g1 = grad(*w0);
            let w1 = w0 - 0.1 * g1 / (g1 * g1).sqrt();
            let g2 = grad(w1);
            let w2 = w1 - 0.1 * g2 / (g1 * g1 + g2 * g2).sqrt();
            assert!((w2 - f64::from(got)).abs() < 1e-4, "{w2} vs {got}");
        }
    }

    #[test]
    fn state_round_trips_and_resumed_steps_match_for_every_algorithm() {
        for algorithm in [Algorithm::Adamw, Algorithm::Adam, Algorithm::Sgd, Algorithm::Rmsprop, Algorithm::Adagrad] {
            let cfg = OptimConfig { algorithm, momentum: 0.5, ema: 0.9, lr: 0.01, ..Default::default() };
            let run = |split: bool| -> (Vec<f32>, Vec<f32>) {
                let vs = VarStore::new(Device::Cpu);
                let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
                let mut opt = Optimizer::new(&vs, &cfg);
                for i in 0..6 {
                    if split && i == 3 {
                        let saved: Vec<(String, Tensor)> =
                            opt.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
                        opt = Optimizer::new(&vs, &cfg);
                        opt.load_state(&saved).unwrap();
                    }
                    opt.zero_grad();
                    loss(&w).backward();
                    opt.step(0.01);
                }
                let avg = opt.with_ema(|| Vec::<f32>::try_from(&w).unwrap());
                (Vec::<f32>::try_from(&w).unwrap(), avg)
            };
            let (whole, split) = (run(false), run(true));
            assert_eq!(whole, split, "{algorithm:?}");
            assert_ne!(whole.0, whole.1, "the average lags the weights");
        }
    }

    #[test]
    fn a_changed_algorithm_is_refused_on_resume() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32]));
        let saved = Optimizer::new(&vs, &OptimConfig::default()).state();
        let mut sgd = Optimizer::new(&vs, &OptimConfig { algorithm: Algorithm::Sgd, ..Default::default() });
        let err = sgd.load_state(&saved).unwrap_err();
        assert!(err.to_string().contains("w.buf"), "{err}");
    }

    #[test]
    fn first_adamw_step_matches_the_closed_form() {
        // After one step, AdamW moves each weight by lr * sign(g) (bias-corrected m/sqrt(v) = g/|g|), plus decay.
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let cfg = OptimConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() };
        let mut opt = Optimizer::new(&vs, &cfg);
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
    fn frozen_variables_are_not_trained() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]));
        let frozen = vs.root().var_copy("frozen", &Tensor::from_slice(&[3.0f32])).set_requires_grad(false);
        let mut opt = Optimizer::new(&vs, &OptimConfig::default());
        assert_eq!(opt.n_trainable(), 2);
        opt.zero_grad();
        ((&w * &w).sum(Kind::Float) + (&frozen * 2.0).sum(Kind::Float)).backward();
        opt.step(0.1);
        assert_eq!(frozen.double_value(&[0]), 3.0);
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

    #[test]
    fn bad_configs_name_the_field() {
        let bad = OptimConfig { momentum: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("optim.momentum"));
        let bad = OptimConfig { nesterov: true, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("nesterov"));
        let bad = OptimConfig { accumulate: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("accumulate"));
        let bad = OptimConfig { schedule: ScheduleConfig::Step { every_epochs: 0, gamma: 0.5 }, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("every_epochs"));
    }
}
