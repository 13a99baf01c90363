//! Sample-rate conversion with rubato's FFT resampler (synchronous: exact integer ratio, band-limited).

use rubato::{FftFixedIn, Resampler};

use crate::{Error, Result};

/// Resamples mono audio from `from` Hz to `to` Hz. The output has `round(len * to / from)` samples, aligned with the
/// input (the resampler's delay is removed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        return Err(Error::Config(format!("sample rates must be positive, got {from} -> {to}")));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let bad = |e: &dyn std::fmt::Display| Error::Config(format!("resampling {from} -> {to} Hz: {e}"));
    let mut rs = FftFixedIn::<f32>::new(from as usize, to as usize, 4096, 1, 1).map_err(|e| bad(&e))?;
    let want = (samples.len() as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from);
    let want = usize::try_from(want).map_err(|e| bad(&e))?;
    let delay = rs.output_delay();
    let mut out = Vec::with_capacity(want + delay + 2048);
    let mut pos = 0;
    // After the input ends, zero-filled calls push the delayed tail out; a chunk may come back short or empty while
    // the resampler fills its buffers, so the bound is on calls, not on empty chunks.
    let mut flushes = 0;
    let max_flushes = 4 + (delay + want) / rs.output_frames_max().max(1);
    while out.len() < want + delay && flushes <= max_flushes {
        let need = rs.input_frames_next();
        let chunk = if pos + need <= samples.len() {
            let c = rs.process(&[&samples[pos..pos + need]], None).map_err(|e| bad(&e))?;
            pos += need;
            c
        } else if pos < samples.len() {
            let c = rs.process_partial(Some(&[&samples[pos..]]), None).map_err(|e| bad(&e))?;
            pos = samples.len();
            c
        } else {
            flushes += 1;
            rs.process_partial::<&[f32]>(None, None).map_err(|e| bad(&e))?
        };
        if let Some(c) = chunk.into_iter().next() {
            out.extend_from_slice(&c);
        }
    }
    let mut out = out.split_off(delay.min(out.len()));
    out.resize(want, 0.0);
    Ok(out)
}
