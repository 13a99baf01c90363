//! m6rec's image modality: from a file's bytes to a normalised tensor to an embedding.
//!
//! # Brief overview
//! - [`ImageConfig`] → [`Preprocessor`]: decode (JPEG incl. progressive, PNG, WebP, GIF first frame; EXIF ignored),
//!   resize the shorter side, centre-crop, as [`Pixels`] bytes (CHW).
//! - [`batch`]: bytes to `[n, 3, size, size]` floats, scaled to `[0, 1]` and normalised per channel.
//! - [`ImageEncoder`]: a small CNN trained with the recommender, with [`ImageEncoder::freeze`].
//!
//! ```
//! use m6rec_image::{batch, ImageConfig, Preprocessor};
//! let mut png = Vec::new();
//! image::RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]))
//!     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
//!     .unwrap();
//! let cfg = ImageConfig { size: 16, resize: 18, ..Default::default() };
//! let pixels = Preprocessor::new(&cfg)?.bytes(&png)?;
//! let xs = batch(&[&pixels], &cfg)?;
//! assert_eq!(xs.size(), vec![1, 3, 16, 16]);
//! # Ok::<(), m6rec_image::Error>(())
//! ```
#![deny(missing_docs)]

mod encoder;
mod error;
mod preprocess;

pub use encoder::ImageEncoder;
pub use error::{Error, Result};
pub use preprocess::{ImageConfig, Pixels, Preprocessor, IMAGENET_MEAN, IMAGENET_STD};

/// Stacks preprocessed images of one size into `[n, 3, size, size]` floats: `(byte / 255 - mean) / std`.
pub fn batch(images: &[&Pixels], cfg: &ImageConfig) -> Result<tch::Tensor> {
    let Some(first) = images.first() else {
        return Ok(tch::Tensor::zeros([0, 3, i64::from(cfg.size), i64::from(cfg.size)], tch::kind::FLOAT_CPU));
    };
    let want = first.size;
    let mut flat = Vec::with_capacity(images.len() * first.chw.len());
    for (index, img) in images.iter().enumerate() {
        if img.size != want || img.chw.len() != 3 * (want as usize) * (want as usize) {
            return Err(Error::Shape { index, got: img.size, want });
        }
        flat.extend_from_slice(&img.chw);
    }
    let n = m6rec_tensor::dim::to_i64("batch size", images.len())?;
    let side = i64::from(want);
    let bytes = tch::Tensor::from_slice(&flat).view([n, 3, side, side]);
    let mean = tch::Tensor::from_slice(&cfg.mean).view([1, 3, 1, 1]);
    let std = tch::Tensor::from_slice(&cfg.std).view([1, 3, 1, 1]);
    Ok((bytes.to_kind(tch::Kind::Float) / 255.0 - mean) / std)
}
