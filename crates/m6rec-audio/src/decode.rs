//! Decoding with symphonia (Ogg Vorbis, MP3, FLAC, WAV) to mono `f32` samples.

use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::{Error, Result};

/// Mono audio at its source's sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mono {
    /// Samples in `[-1, 1]`, channels averaged.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub rate: u32,
}

impl Mono {
    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }
}

/// Reads and decodes a file; the extension is a hint, the content decides.
pub fn decode_file(path: &Path, max_seconds: Option<f64>) -> Result<Mono> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode(bytes, ext, max_seconds).map_err(|e| match e {
        Error::Decode { message, .. } => Error::Decode { path: Some(path.to_path_buf()), message },
        Error::Empty(_) => Error::Empty(Some(path.to_path_buf())),
        other => other,
    })
}

/// Highest sample rate accepted: 768 kHz (the highest any audio interface records).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Decodes in-memory bytes (any supported container), averaging channels to mono. With `max_seconds`, decoding stops
/// once that much audio is there (the rest of the file is never read). A rate outside 1 to [`MAX_SAMPLE_RATE`] Hz is
/// an error.
pub fn decode(bytes: Vec<u8>, ext: Option<&str>, max_seconds: Option<f64>) -> Result<Mono> {
    let err = |e: SymError| Error::Decode { path: None, message: e.to_string() };
    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(err)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| Error::Decode { path: None, message: "no audio track".into() })?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| Error::Decode { path: None, message: "the audio track has no codec parameters".into() })?;
    let mut decoder =
        symphonia::default::get_codecs().make_audio_decoder(params, &AudioDecoderOptions::default()).map_err(err)?;
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut samples = Vec::new();
    let mut planes: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A truncated file ends with an I/O error: keep what decoded.
            Err(SymError::IoError(_)) if !samples.is_empty() => break,
            Err(e) => return Err(err(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // A corrupt packet inside an otherwise good stream: skip it, as players do.
            Err(SymError::DecodeError(_)) if !samples.is_empty() => continue,
            Err(e) => return Err(err(e)),
        };
        rate = buf.spec().rate();
        if rate == 0 || rate > MAX_SAMPLE_RATE {
            // A damaged header: a 436 MHz "rate" once made the resampler hold 3.5 GB (found by fuzzing).
            return Err(Error::Decode {
                path: None,
                message: format!("sample rate {rate} Hz is outside 1 to {MAX_SAMPLE_RATE} Hz (a damaged header?)"),
            });
        }
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        match planes.as_slice() {
            [mono] => samples.extend_from_slice(mono),
            [left, right] => samples.extend(left.iter().zip(right).map(|(l, r)| 0.5 * (l + r))),
            _ => {
                let n_planes = planes.len().max(1) as f32;
                samples.extend((0..buf.frames()).map(|i| planes.iter().map(|p| p[i]).sum::<f32>() / n_planes));
            }
        }
        if let Some(max) = max_seconds {
            if samples.len() as f64 >= max * f64::from(rate) {
                samples.truncate((max * f64::from(rate)).ceil() as usize);
                break;
            }
        }
    }
    if samples.is_empty() || rate == 0 {
        return Err(Error::Empty(None));
    }
    Ok(Mono { samples, rate })
}
