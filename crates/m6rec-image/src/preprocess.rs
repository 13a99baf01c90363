//! Decode, resize the shorter side, centre-crop: torchvision's `Resize(resize) + CenterCrop(size)`, done in one
//! resampling pass over the crop box (bilinear with antialiasing, as Pillow and torchvision do when shrinking).

use std::io::Cursor;
use std::path::Path;

use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageReader, Limits};

use crate::{Error, Result};

/// ImageNet channel means (torchvision's `Normalize`), for RGB in `[0, 1]`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Most pixels a source image may have (2^24, 16.8 megapixels, 4096 x 4096): decoding one holds at most about
/// 190 MB.
pub const MAX_PIXELS: u64 = 1 << 24;

/// How an image becomes a fixed-size tensor (part of a run's TOML).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Side of the square output, in pixels. Default 128.
    #[serde(default = "default_size")]
    pub size: u32,
    /// The shorter side is resized to this before the centre crop. Default 146 (= 128 * 256 / 224, the usual ratio).
    #[serde(default = "default_resize")]
    pub resize: u32,
    /// Per-channel means subtracted after scaling to `[0, 1]`. Default ImageNet's.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviations divided by. Default ImageNet's.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    /// Largest accepted width or height of a source image (decompression bombs). Default 16,384.
    #[serde(default = "default_max_side")]
    pub max_side: u32,
}

fn default_size() -> u32 {
    128
}
fn default_resize() -> u32 {
    146
}
fn default_mean() -> [f32; 3] {
    IMAGENET_MEAN
}
fn default_std() -> [f32; 3] {
    IMAGENET_STD
}
fn default_max_side() -> u32 {
    16_384
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            size: default_size(),
            resize: default_resize(),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            max_side: default_max_side(),
        }
    }
}

impl ImageConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.resize < self.size {
            return Err(Error::Config(format!(
                "need 0 < size <= resize, got size {} and resize {}",
                self.size, self.resize
            )));
        }
        if self.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(Error::Config(format!("std must be positive, got {:?}", self.std)));
        }
        Ok(())
    }
}

/// A preprocessed image: `3 x size x size` bytes, channel-major (CHW), RGB. Kept as bytes (4x smaller than floats)
/// until [`crate::batch`] normalises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Side in pixels.
    pub size: u32,
    /// `3 * size * size` values.
    pub chw: Vec<u8>,
}

/// Decodes and preprocesses images for one configuration. `Send + Sync`: share one across rayon workers.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    cfg: ImageConfig,
}

impl Preprocessor {
    /// Checks the configuration.
    pub fn new(cfg: &ImageConfig) -> Result<Preprocessor> {
        cfg.validate()?;
        Ok(Preprocessor { cfg: cfg.clone() })
    }

    /// The configuration.
    pub fn config(&self) -> &ImageConfig {
        &self.cfg
    }

    /// Reads and preprocesses a file (the format is sniffed from the content, not the extension).
    pub fn file(&self, path: &Path) -> Result<Pixels> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        self.bytes(&bytes).map_err(|e| match e {
            Error::Decode { message, .. } => Error::Decode { path: Some(path.to_path_buf()), message },
            other => other,
        })
    }

    /// Decodes (JPEG incl. progressive, PNG, WebP, GIF's first frame) and preprocesses in-memory bytes. EXIF
    /// orientation is ignored.
    pub fn bytes(&self, bytes: &[u8]) -> Result<Pixels> {
        let decode_err = |e: &dyn std::fmt::Display| Error::Decode { path: None, message: e.to_string() };
        let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| decode_err(&e))?;
        if reader.format().is_none() {
            return Err(decode_err(&"unrecognised format (JPEG, PNG, WebP and GIF are supported)"));
        }
        // Decompression bombs: a few bytes can declare a huge image. The declared size is read first and bounded in
        // pixels as well as per side (decoding a 16-bit RGBA image holds 8 bytes per pixel, then 3 more for RGB).
        let (w, h) = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| decode_err(&e))?
            .into_dimensions()
            .map_err(|e| decode_err(&e))?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > MAX_PIXELS {
            return Err(decode_err(&format!(
                "{w} x {h} is {:.1} megapixels, more than the {:.1} this decoder takes; scale the image down",
                pixels as f64 / 1e6,
                MAX_PIXELS as f64 / 1e6
            )));
        }
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.cfg.max_side);
        limits.max_image_height = Some(self.cfg.max_side);
        limits.max_alloc = Some(MAX_PIXELS * 8);
        reader.limits(limits);
        if reader.format() == Some(image::ImageFormat::Jpeg) && !ends_with_jpeg_eoi(bytes) {
            // The JPEG decoder fills a truncated scan with grey; Pillow refuses such files, and so do we.
            return Err(decode_err(&"truncated JPEG (no end-of-image marker)"));
        }
        let img = reader.decode().map_err(|e| decode_err(&e))?.into_rgb8();
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(decode_err(&"image has no pixels"));
        }
        // torchvision's geometry: the shorter side becomes `resize`, the longer `int(resize * long / short)`; the crop
        // offsets are rounded in resized pixels. That crop box, mapped back to source pixels, is resampled in one pass.
        let size = self.cfg.size;
        let r = f64::from(self.cfg.resize);
        let (new_w, new_h) = if w <= h {
            (r, (r * f64::from(h) / f64::from(w)).floor())
        } else {
            ((r * f64::from(w) / f64::from(h)).floor(), r)
        };
        let s = f64::from(size);
        let (left, top) = (((new_w - s) / 2.0).round(), ((new_h - s) / 2.0).round());
        let (sx, sy) = (f64::from(w) / new_w, f64::from(h) / new_h);
        let (left, top, side_w, side_h) = (left * sx, top * sy, s * sx, s * sy);
        let mut dst = FirImage::new(size, size, PixelType::U8x3);
        let opts = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(left, top, side_w, side_h);
        Resizer::new().resize(&img, &mut dst, &opts).map_err(|e| decode_err(&e))?;
        let hwc = dst.buffer();
        let plane = (size * size) as usize;
        let mut chw = vec![0u8; 3 * plane];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            chw[i] = px[0];
            chw[plane + i] = px[1];
            chw[2 * plane + i] = px[2];
        }
        Ok(Pixels { size, chw })
    }
}

/// Whether a JPEG's end-of-image marker (`FF D9`) is among its last bytes (writers may pad a little after it).
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
