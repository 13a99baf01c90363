//! The audio tower: a small CNN over standardised log-mel spectrograms.

use m6rec_tensor::cnn::{ConvNet, ConvNetConfig};
use tch::nn;
use tch::Tensor;

/// The audio encoder (variables under the path it is created at: see [`ConvNet`]).
#[derive(Debug)]
pub struct AudioEncoder {
    net: ConvNet,
    dim: i64,
}

impl AudioEncoder {
    /// A new encoder.
    pub fn new(vs: &nn::Path<'_>, cfg: &ConvNetConfig) -> AudioEncoder {
        AudioEncoder { net: ConvNet::new(vs, 1, cfg), dim: cfg.out_dim }
    }

    /// Output size.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// Stops gradients into the encoder (it keeps encoding, it stops learning).
    pub fn freeze(&mut self) {
        self.net.freeze();
    }

    /// # Shapes
    /// - `mels`: `[n, 1, n_mels, n_frames]` decibels (see [`crate::batch`])
    /// - returns `[n, dim]`
    pub fn forward(&self, mels: &Tensor) -> Tensor {
        // Per-clip standardisation: loudness differences between recordings say little about the item.
        let mean = mels.mean_dim([1i64, 2, 3].as_slice(), true, mels.kind());
        let std = mels.std_dim([1i64, 2, 3].as_slice(), false, true).clamp_min(1e-3);
        self.net.forward(&((mels - mean) / std))
    }
}
