//! A small convolutional encoder: the image and audio towers both use it.
//!
//! `depth` stages of `3x3 conv (stride 2) → GroupNorm → GELU`, channels doubling from `width`, then global average
//! pooling and a linear projection to `out_dim`. Small on purpose: it trains with the recommender on 2 cores.

use tch::nn::{self, Module};
use tch::Tensor;

/// Shape of a [`ConvNet`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvNetConfig {
    /// Channels of the first stage (doubled at each stage). Default 16.
    #[serde(default = "default_width")]
    pub width: i64,
    /// Number of stride-2 stages. Default 4.
    #[serde(default = "default_depth")]
    pub depth: i64,
    /// Output size. Default 64.
    #[serde(default = "default_out")]
    pub out_dim: i64,
}

fn default_width() -> i64 {
    16
}
fn default_depth() -> i64 {
    4
}
fn default_out() -> i64 {
    64
}

impl Default for ConvNetConfig {
    fn default() -> Self {
        ConvNetConfig { width: default_width(), depth: default_depth(), out_dim: default_out() }
    }
}

/// The network; variables `stages.{i}.{conv,norm}.*` and `proj.*` under the path it was created at.
#[derive(Debug)]
pub struct ConvNet {
    stages: Vec<(nn::Conv2D, nn::GroupNorm)>,
    proj: nn::Linear,
}

impl ConvNet {
    /// Creates the variables for inputs with `in_channels` channels.
    pub fn new(vs: &nn::Path<'_>, in_channels: i64, cfg: &ConvNetConfig) -> ConvNet {
        let mut c_in = in_channels;
        let mut stages = Vec::new();
        for i in 0..cfg.depth.max(1) {
            let c_out = cfg.width.max(1) << i.min(6);
            let conv_cfg = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
            let conv = nn::conv2d(vs / "stages" / i / "conv", c_in, c_out, 3, conv_cfg);
            let groups = if c_out % 8 == 0 { 8 } else { 1 };
            let norm = nn::group_norm(vs / "stages" / i / "norm", groups, c_out, Default::default());
            stages.push((conv, norm));
            c_in = c_out;
        }
        ConvNet { stages, proj: nn::linear(vs / "proj", c_in, cfg.out_dim, Default::default()) }
    }

    /// # Shapes
    /// - `xs`: `[n, in_channels, h, w]` float
    /// - returns `[n, out_dim]`
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let mut h = xs.shallow_clone();
        for (conv, norm) in &self.stages {
            h = norm.forward(&conv.forward(&h)).gelu("none");
        }
        h.mean_dim([-2i64, -1].as_slice(), false, h.kind()).apply(&self.proj)
    }

    /// Every trainable tensor (to freeze, or to count parameters).
    pub fn weights(&mut self) -> Vec<&mut Tensor> {
        let mut out = Vec::new();
        for (conv, norm) in &mut self.stages {
            out.push(&mut conv.ws);
            if let Some(b) = conv.bs.as_mut() {
                out.push(b);
            }
            if let Some(w) = norm.ws.as_mut() {
                out.push(w);
            }
            if let Some(b) = norm.bs.as_mut() {
                out.push(b);
            }
        }
        out.push(&mut self.proj.ws);
        if let Some(b) = self.proj.bs.as_mut() {
            out.push(b);
        }
        out
    }

    /// Stops gradients into every weight.
    pub fn freeze(&mut self) {
        for w in self.weights() {
            let _ = w.requires_grad_(false);
        }
    }
}
