//! RQ-VAE codes (Lee et al. 2022; TIGER, Rajput et al. 2023): an MLP encoder maps each item's content to a small
//! latent, a residual quantiser names the latent with one codebook entry per level, and an MLP decoder rebuilds the
//! content from the quantised latent. Trained on reconstruction plus the codebook and commitment losses
//! (straight-through gradients), with codebooks initialised by k-means on the first latents and dead codes
//! re-initialised to live residuals after every pass over the catalog.
//!
//! Every random draw (weights, batches, k-means seeds, re-initialisations) comes from the seeded generator passed
//! in, so a fit is a function of its content and seed (libtorch's own generator is never used).

use crate::codes::{assign, kmeans};
use crate::Result;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// `[semantic_ids.rqvae]`: the RQ-VAE's shape and training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RqVaeConfig {
    /// Hidden widths of the encoder (the decoder mirrors them). Default `[256, 128]`.
    #[serde(default = "d::hidden")]
    pub hidden: Vec<usize>,
    /// Width of the latent the codes quantise. Default 64.
    #[serde(default = "d::latent")]
    pub latent: usize,
    /// Optimizer steps (Adam). Default 3000.
    #[serde(default = "d::steps")]
    pub steps: usize,
    /// Items per step. Default 1024.
    #[serde(default = "d::batch")]
    pub batch: usize,
    /// Learning rate. Default 1e-3.
    #[serde(default = "d::lr")]
    pub lr: f64,
    /// Weight of the commitment loss (the encoder pulled towards its codes). Default 0.25.
    #[serde(default = "d::beta")]
    pub beta: f64,
}

mod d {
    pub fn hidden() -> Vec<usize> {
        vec![256, 128]
    }
    pub fn latent() -> usize {
        64
    }
    pub fn steps() -> usize {
        3000
    }
    pub fn batch() -> usize {
        1024
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn beta() -> f64 {
        0.25
    }
}

impl Default for RqVaeConfig {
    fn default() -> Self {
        RqVaeConfig {
            hidden: d::hidden(),
            latent: d::latent(),
            steps: d::steps(),
            batch: d::batch(),
            lr: d::lr(),
            beta: d::beta(),
        }
    }
}

impl RqVaeConfig {
    /// Checks the fields.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden.len() > 4 || self.hidden.iter().any(|&h| h == 0 || h > 4096) {
            return Err(format!("rqvae.hidden is {:?}: at most 4 layers of 1 to 4096", self.hidden));
        }
        if !(1..=1024).contains(&self.latent) {
            return Err(format!("rqvae.latent is {}, must be 1 to 1024", self.latent));
        }
        if !(1..=1_000_000).contains(&self.steps) || !(1..=65_536).contains(&self.batch) {
            return Err(format!("rqvae.steps {} / batch {}: 1 to 10^6 steps of 1 to 65536", self.steps, self.batch));
        }
        let lr_ok = self.lr > 0.0 && self.lr < 10.0;
        if !lr_ok || !(0.0..=10.0).contains(&self.beta) {
            return Err(format!("rqvae.lr {} must be in (0, 10), beta {} in [0, 10]", self.lr, self.beta));
        }
        Ok(())
    }
}

/// One dense layer of the saved encoder: `y = x · wᵀ + b`, `w` row-major `[out, in]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    /// Input width.
    pub input: usize,
    /// Output width.
    pub output: usize,
    /// `[output, input]`, row-major.
    pub w: Vec<f32>,
    /// `[output]`.
    pub b: Vec<f32>,
}

/// The trained encoder, kept with the codes so a new item's code comes from its content alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Layers, ReLU between them (none after the last).
    pub layers: Vec<Dense>,
}

impl Encoder {
    /// Width of the content it reads.
    pub fn input(&self) -> usize {
        self.layers.first().map_or(0, |l| l.input)
    }

    /// Width of the latent it gives.
    pub fn output(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output)
    }

    /// Whether the layers chain and hold finite values of the declared sizes.
    pub fn is_consistent(&self) -> bool {
        !self.layers.is_empty()
            && self.layers.windows(2).all(|w| w[0].output == w[1].input)
            && self.layers.iter().all(|l| {
                l.w.len() == l.input * l.output
                    && l.b.len() == l.output
                    && l.w.iter().chain(&l.b).all(|v| v.is_finite())
            })
    }

    /// The latents `[n, output]` of content `[n, input]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            let w = Tensor::from_slice(&l.w).view([l.output as i64, l.input as i64]);
            h = h.matmul(&w.tr()) + Tensor::from_slice(&l.b);
            if i + 1 < self.layers.len() {
                h = h.relu();
            }
        }
        h
    }
}

/// What a fit gives: the encoder, per level the centroids and every item's code, and per level the codes
/// re-initialised during training.
pub(crate) struct Fitted {
    pub(crate) encoder: Encoder,
    pub(crate) centroids: Vec<Tensor>,
    pub(crate) codes: Vec<Vec<i64>>,
    pub(crate) reinitialised: Vec<usize>,
    pub(crate) latents: Tensor,
}

/// Uniform(-1/√in, 1/√in) values from `rng`, as `[out, in]` (PyTorch's default for linear layers).
fn uniform(rng: &mut ChaCha8Rng, out: usize, input: usize) -> Tensor {
    let bound = 1.0 / (input as f64).sqrt();
    let v: Vec<f32> = (0..out * input).map(|_| rng.random_range(-bound..bound) as f32).collect();
    Tensor::from_slice(&v).view([out as i64, input as i64])
}

struct Net {
    enc: Vec<(Tensor, Tensor)>,
    dec: Vec<(Tensor, Tensor)>,
}

fn mlp(layers: &[(Tensor, Tensor)], x: &Tensor) -> Tensor {
    let mut h = x.shallow_clone();
    for (i, (w, b)) in layers.iter().enumerate() {
        h = h.matmul(&w.tr()) + b;
        if i + 1 < layers.len() {
            h = h.relu();
        }
    }
    h
}

fn build(vs: &nn::VarStore, dims: &[usize], rng: &mut ChaCha8Rng) -> Net {
    let root = vs.root();
    let mut layers = |name: &str, dims: &[usize]| -> Vec<(Tensor, Tensor)> {
        dims.windows(2)
            .enumerate()
            .map(|(i, w)| {
                let p = &root / name / i;
                let weight = p.var_copy("w", &uniform(rng, w[1], w[0]));
                let bias = p.var_copy("b", &Tensor::zeros([w[1] as i64], (Kind::Float, Device::Cpu)));
                (weight, bias)
            })
            .collect()
    };
    let enc = layers("enc", dims);
    let back: Vec<usize> = dims.iter().rev().copied().collect();
    let dec = layers("dec", &back);
    Net { enc, dec }
}

/// Residual quantisation of `z` `[b, latent]` by `books`: per level the codes, the residual it was chosen for, and
/// the chosen entries; the sum of the entries is the quantised latent.
fn quantise(z: &Tensor, books: &[Tensor]) -> (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>) {
    let mut residual = z.shallow_clone();
    let (mut codes, mut residuals, mut entries) = (Vec::new(), Vec::new(), Vec::new());
    for book in books {
        let r = residual.detach();
        let dist = r.square().sum_dim_intlist(1, true, Kind::Float) - r.matmul(&book.detach().tr()) * 2.0
            + book.detach().square().sum_dim_intlist(1, false, Kind::Float).unsqueeze(0);
        let c = dist.argmin(1, false);
        let e = book.index_select(0, &c);
        residuals.push(residual.shallow_clone());
        residual = &residual - e.detach();
        codes.push(c);
        entries.push(e);
    }
    (codes, residuals, entries)
}

/// Trains an RQ-VAE on `x` (`[n, d]`, float, on the CPU) with `levels` codebooks of `k` entries and returns the
/// encoder, codebooks and codes.
pub(crate) fn fit(x: &Tensor, levels: usize, k: i64, cfg: &RqVaeConfig, rng: &mut ChaCha8Rng) -> Result<Fitted> {
    let n = x.size()[0];
    let d = m6rec_tensor::dim::as_usize(x.size()[1]);
    let mut dims = vec![d];
    dims.extend(&cfg.hidden);
    dims.push(cfg.latent);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build(&vs, &dims, rng);
    // Codebooks from k-means of the untrained encoder's latents, level by level (TIGER's initialisation).
    let mut books = Vec::with_capacity(levels);
    let mut residual = tch::no_grad(|| mlp(&net.enc, x));
    for l in 0..levels {
        let (c, assigned, _) = kmeans(&residual, k, 10, rng);
        residual = &residual - c.index_select(0, &Tensor::from_slice(&assigned));
        books.push(vs.root().var_copy(&format!("book{l}"), &c));
    }
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let batch = (cfg.batch as i64).min(n).max(1);
    let steps_per_pass = (n + batch - 1) / batch;
    let mut order: Vec<i64> = (0..n).collect();
    let mut used = vec![vec![false; m6rec_tensor::dim::as_usize(k)]; levels];
    let mut reinitialised = vec![0usize; levels];
    for step in 0..cfg.steps as i64 {
        let slot = step % steps_per_pass;
        if slot == 0 {
            order.shuffle(rng);
        }
        let start = m6rec_tensor::dim::as_usize(slot * batch);
        let end = (start + m6rec_tensor::dim::as_usize(batch)).min(order.len());
        let xb = x.index_select(0, &Tensor::from_slice(&order[start..end]));
        let z = mlp(&net.enc, &xb);
        let (codes, residuals, entries) = quantise(&z, &books);
        let mut loss_q = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let mut q = Tensor::zeros_like(&z);
        for (r, e) in residuals.iter().zip(&entries) {
            loss_q += (r.detach() - e).square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float)
                + (r - e.detach()).square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float) * cfg.beta;
            q += e;
        }
        let zq = &z + (q - &z).detach();
        let recon = (mlp(&net.dec, &zq) - &xb).square().sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float);
        let loss = recon + loss_q;
        opt.zero_grad();
        loss.backward();
        opt.step();
        for (l, c) in codes.iter().enumerate() {
            for v in Vec::<i64>::try_from(c)? {
                used[l][m6rec_tensor::dim::as_usize(v)] = true;
            }
        }
        if slot == steps_per_pass - 1 {
            // After a pass over the catalog: every code no item took is moved onto a residual of this batch.
            for l in 0..levels {
                let dead: Vec<i64> = (0..k).filter(|&c| !used[l][m6rec_tensor::dim::as_usize(c)]).collect();
                if !dead.is_empty() {
                    let rows = residuals[l].size()[0];
                    let pick: Vec<i64> = dead.iter().map(|_| rng.random_range(0..rows)).collect();
                    let fresh = residuals[l].detach().index_select(0, &Tensor::from_slice(&pick));
                    tch::no_grad(|| {
                        let _ = books[l].index_copy_(0, &Tensor::from_slice(&dead), &fresh);
                    });
                    reinitialised[l] += dead.len();
                }
                used[l].iter_mut().for_each(|u| *u = false);
            }
        }
    }
    let encoder = Encoder { layers: net.enc.iter().map(dense).collect::<Result<_>>()? };
    let latents = tch::no_grad(|| mlp(&net.enc, x));
    let centroids: Vec<Tensor> = books.iter().map(|b| b.detach().copy()).collect();
    let mut residual = latents.shallow_clone();
    let mut codes = Vec::with_capacity(levels);
    for c in &centroids {
        let a = assign(&residual, c);
        residual = &residual - c.index_select(0, &Tensor::from_slice(&a));
        codes.push(a);
    }
    Ok(Fitted { encoder, centroids, codes, reinitialised, latents })
}

fn dense((w, b): &(Tensor, Tensor)) -> Result<Dense> {
    let (output, input) = w.size2()?;
    Ok(Dense {
        input: m6rec_tensor::dim::as_usize(input),
        output: m6rec_tensor::dim::as_usize(output),
        w: Vec::<f32>::try_from(w.detach().contiguous().view([-1]))?,
        b: Vec::<f32>::try_from(b.detach().contiguous())?,
    })
}
