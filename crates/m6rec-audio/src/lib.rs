//! m6rec's audio modality: from a file's bytes to a log-mel spectrogram to an embedding.
//!
//! # Brief overview
//! - [`decode`] / [`decode_file`]: symphonia (Ogg Vorbis, MP3, FLAC, WAV) to [`Mono`] `f32` samples.
//! - [`resample`]: rubato's FFT resampler, delay removed, exact output length.
//! - [`MelConfig`] → [`MelSpectrogram`]: crop or pad to a fixed clip length, then a log-mel spectrogram computed as
//!   librosa does (checked against librosa on a real clip by a golden test).
//! - [`batch`] stacks spectrograms into `[n, 1, n_mels, n_frames]`; [`AudioEncoder`] embeds them.
//!
//! ```
//! use m6rec_audio::{MelConfig, MelSpectrogram, Mono};
//! let cfg = MelConfig { seconds: 1.0, ..Default::default() };
//! let mel = MelSpectrogram::new(&cfg)?;
//! let tone: Vec<f32> = (0..16_000).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin()).collect();
//! let spec = mel.mono(&Mono { samples: tone, rate: 16_000 })?; // resampled to 22,050 Hz
//! assert_eq!((spec.n_mels, spec.n_frames), (64, cfg.n_frames()));
//! # Ok::<(), m6rec_audio::Error>(())
//! ```
#![deny(missing_docs)]

mod decode;
mod encoder;
mod error;
mod mel;
mod resample;

pub use decode::{decode, decode_file, Mono, MAX_SAMPLE_RATE};
pub use encoder::AudioEncoder;
pub use error::{Error, Result};
pub use mel::{batch, hz_to_mel, mel_filters, mel_to_hz, LogMel, MelConfig, MelSpectrogram};
pub use resample::resample;
