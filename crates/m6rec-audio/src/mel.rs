//! Log-mel spectrograms, computed as librosa computes them (`librosa.feature.melspectrogram` with its defaults:
//! periodic Hann window, centred frames with zero padding, power 2, Slaney mel scale and area normalisation; then
//! `librosa.power_to_db(ref=1.0, amin=1e-10, top_db)`).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::decode::{decode, decode_file, Mono};
use crate::resample::resample;
use crate::{Error, Result};

/// How audio becomes a spectrogram (part of a run's TOML).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MelConfig {
    /// Target sample rate; audio is resampled to it. Default 22,050 Hz (librosa's).
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    /// FFT size (and window length). Default 2048.
    #[serde(default = "default_n_fft")]
    pub n_fft: usize,
    /// Hop between frames. Default 512.
    #[serde(default = "default_hop")]
    pub hop: usize,
    /// Mel bands. Default 64.
    #[serde(default = "default_n_mels")]
    pub n_mels: usize,
    /// Lowest band edge in Hz. Default 0.
    #[serde(default)]
    pub fmin: f32,
    /// Highest band edge in Hz. Default: half the sample rate.
    #[serde(default)]
    pub fmax: Option<f32>,
    /// Clip length: the first `seconds` of a clip are used, shorter clips are padded with silence. Default 5.
    #[serde(default = "default_seconds")]
    pub seconds: f64,
    /// Floor at `max - top_db` decibels (librosa's default 80); `None` keeps the full range.
    #[serde(default = "default_top_db")]
    pub top_db: Option<f32>,
}

fn default_rate() -> u32 {
    22_050
}
fn default_n_fft() -> usize {
    2048
}
fn default_hop() -> usize {
    512
}
fn default_n_mels() -> usize {
    64
}
fn default_seconds() -> f64 {
    5.0
}
fn default_top_db() -> Option<f32> {
    Some(80.0)
}

impl Default for MelConfig {
    fn default() -> Self {
        MelConfig {
            sample_rate: default_rate(),
            n_fft: default_n_fft(),
            hop: default_hop(),
            n_mels: default_n_mels(),
            fmin: 0.0,
            fmax: None,
            seconds: default_seconds(),
            top_db: default_top_db(),
        }
    }
}

impl MelConfig {
    /// Samples in a clip after crop/pad.
    pub fn clip_samples(&self) -> usize {
        (self.seconds * f64::from(self.sample_rate)).round() as usize
    }

    /// Frames in a clip's spectrogram (centred framing: `1 + samples / hop`).
    pub fn n_frames(&self) -> usize {
        1 + self.clip_samples() / self.hop.max(1)
    }

    fn validate(&self) -> Result<()> {
        let nyquist = self.sample_rate as f32 / 2.0;
        let fmax = self.fmax.unwrap_or(nyquist);
        if self.sample_rate == 0 || self.n_fft < 2 || self.hop == 0 || self.n_mels == 0 {
            return Err(Error::Config(format!("sample_rate, n_fft (>= 2), hop and n_mels must be positive: {self:?}")));
        }
        if !(self.seconds > 0.0 && self.seconds <= 600.0) {
            return Err(Error::Config(format!("seconds must be in (0, 600], got {}", self.seconds)));
        }
        if !(0.0 <= self.fmin && self.fmin < fmax && fmax <= nyquist) {
            return Err(Error::Config(format!("need 0 <= fmin < fmax <= {nyquist} Hz, got {} and {fmax}", self.fmin)));
        }
        Ok(())
    }
}

/// A log-mel spectrogram, band-major: `data[band * n_frames + frame]`, in decibels.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    /// Mel bands.
    pub n_mels: usize,
    /// Frames.
    pub n_frames: usize,
    /// `n_mels * n_frames` values.
    pub data: Vec<f32>,
}

/// Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above.
pub fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    if hz < 1000.0 {
        hz / F_SP
    } else {
        1000.0 / F_SP + (hz / 1000.0).ln() / (6.4f64.ln() / 27.0)
    }
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    let min_log_mel = 1000.0 / F_SP;
    if mel < min_log_mel {
        mel * F_SP
    } else {
        1000.0 * ((6.4f64.ln() / 27.0) * (mel - min_log_mel)).exp()
    }
}

/// Triangular mel filters with Slaney area normalisation, `[n_mels][n_fft / 2 + 1]` (as `librosa.filters.mel`).
pub fn mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize, fmin: f32, fmax: f32) -> Vec<Vec<f32>> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * f64::from(sample_rate) / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(f64::from(fmin)), hz_to_mel(f64::from(fmax)));
    let edges: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    (0..n_mels)
        .map(|m| {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            let norm = 2.0 / (right - left);
            fft_freqs
                .iter()
                .map(|&f| {
                    let up = (f - left) / (centre - left);
                    let down = (right - f) / (right - centre);
                    (up.min(down).max(0.0) * norm) as f32
                })
                .collect()
        })
        .collect()
}

/// Computes log-mel spectrograms for one configuration (window, filters and FFT plan made once; `Send + Sync`, so
/// one instance serves every rayon worker).
pub struct MelSpectrogram {
    cfg: MelConfig,
    window: Vec<f32>,
    /// Each filter's non-zero span: `(first bin, weights)` (a band covers a few dozen of the 1,025 bins).
    filters: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpectrogram").field("cfg", &self.cfg).finish()
    }
}

impl MelSpectrogram {
    /// Checks the configuration and prepares window, filters and FFT.
    pub fn new(cfg: &MelConfig) -> Result<MelSpectrogram> {
        cfg.validate()?;
        let n = cfg.n_fft;
        // Periodic Hann (scipy's `get_window('hann', n, fftbins=True)`).
        let window =
            (0..n).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect();
        let fmax = cfg.fmax.unwrap_or(cfg.sample_rate as f32 / 2.0);
        let filters = mel_filters(cfg.sample_rate, n, cfg.n_mels, cfg.fmin, fmax)
            .into_iter()
            .map(|dense| {
                let first = dense.iter().position(|w| *w > 0.0).unwrap_or(0);
                let last = dense.iter().rposition(|w| *w > 0.0).map_or(first, |l| l + 1);
                (first, dense[first..last.max(first)].to_vec())
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        Ok(MelSpectrogram { cfg: cfg.clone(), window, filters, fft })
    }

    /// The configuration.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Decodes a file and computes its clip's spectrogram.
    pub fn file(&self, path: &std::path::Path) -> Result<LogMel> {
        let mono = decode_file(path, Some(self.source_seconds()))?;
        self.mono(&mono)
    }

    /// Decodes in-memory bytes (for example an upload) and computes its clip's spectrogram.
    pub fn bytes(&self, bytes: Vec<u8>, ext: Option<&str>) -> Result<LogMel> {
        let mono = decode(bytes, ext, Some(self.source_seconds()))?;
        self.mono(&mono)
    }

    /// A little more than a clip, so the resampler sees real samples at the clip's end.
    fn source_seconds(&self) -> f64 {
        self.cfg.seconds + 0.1
    }

    /// Resamples, crops or pads to the clip length, and computes the spectrogram.
    pub fn mono(&self, mono: &Mono) -> Result<LogMel> {
        let mut y = resample(&mono.samples, mono.rate, self.cfg.sample_rate)?;
        y.resize(self.cfg.clip_samples(), 0.0);
        Ok(self.compute(&y))
    }

    /// The spectrogram of samples already at the target rate (no crop or pad).
    pub fn compute(&self, y: &[f32]) -> LogMel {
        let n_fft = self.cfg.n_fft;
        let half = n_fft / 2;
        let n_frames = 1 + y.len() / self.cfg.hop;
        let n_bins = n_fft / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; n_bins];
        let n_mels = self.cfg.n_mels;
        let mut mel = vec![0f32; n_mels * n_frames];
        for t in 0..n_frames {
            // Frame t is centred on sample t * hop; outside the signal is zero (librosa's pad_mode="constant").
            let start = (t * self.cfg.hop) as isize - half as isize;
            for (i, slot) in input.iter_mut().enumerate() {
                let j = start + i as isize;
                let s = if j >= 0 && (j as usize) < y.len() { y[j as usize] } else { 0.0 };
                *slot = s * self.window[i];
            }
            // Sizes come from the plan itself, so this cannot fail.
            if self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                mel[m * n_frames + t] = weights.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
            }
        }
        let mut db: Vec<f32> = mel.iter().map(|&p| 10.0 * p.max(1e-10).log10()).collect();
        if let Some(top) = self.cfg.top_db {
            let max = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for v in &mut db {
                *v = v.max(max - top);
            }
        }
        LogMel { n_mels, n_frames, data: db }
    }
}

/// Stacks spectrograms of one shape into `[n, 1, n_mels, n_frames]`.
pub fn batch(mels: &[&LogMel]) -> Result<tch::Tensor> {
    let Some(first) = mels.first() else {
        return Ok(tch::Tensor::zeros([0, 1, 0, 0], (tch::Kind::Float, tch::Device::Cpu)));
    };
    let want = (first.n_mels, first.n_frames);
    let mut flat = Vec::with_capacity(mels.len() * first.data.len());
    for (index, m) in mels.iter().enumerate() {
        let got = (m.n_mels, m.n_frames);
        if got != want || m.data.len() != want.0 * want.1 {
            return Err(Error::Shape { index, got, want });
        }
        flat.extend_from_slice(&m.data);
    }
    let to = m6rec_tensor::dim::to_i64;
    let shape = [to("batch size", mels.len())?, 1, to("mel bands", want.0)?, to("frames", want.1)?];
    Ok(tch::Tensor::from_slice(&flat).view(shape))
}
