//! The image tower: a small CNN trained with the recommender, optionally frozen.

use m6rec_tensor::cnn::{ConvNet, ConvNetConfig};
use tch::nn;
use tch::Tensor;

/// The image encoder (variables under the path it is created at: see [`ConvNet`]).
#[derive(Debug)]
pub struct ImageEncoder {
    net: ConvNet,
    dim: i64,
}

impl ImageEncoder {
    /// A new encoder.
    pub fn new(vs: &nn::Path<'_>, cfg: &ConvNetConfig) -> ImageEncoder {
        ImageEncoder { net: ConvNet::new(vs, 3, cfg), dim: cfg.out_dim }
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
    /// - `images`: `[n, 3, size, size]` normalised floats (see [`crate::batch`])
    /// - returns `[n, dim]`
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.net.forward(images)
    }
}
