//! Audio modality: the log-mel pipeline against librosa on a real clip, every container we claim, resampling.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_audio::{batch, decode_file, resample, AudioEncoder, Error, MelConfig, MelSpectrogram, Mono};
use proptest::prelude::*;

#[derive(serde::Deserialize)]
struct Golden {
    config: GoldenConfig,
    first_samples: Vec<f32>,
    shape: (usize, usize),
    log_mel: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct GoldenConfig {
    sample_rate: u32,
    n_fft: usize,
    hop: usize,
    n_mels: usize,
    seconds: f64,
    top_db: f32,
}

#[test]
fn log_mel_matches_librosa_on_a_real_clip() {
    let g: Golden =
        serde_json::from_str(&std::fs::read_to_string(m6rec_testkit::fixture("golden/logmel_brahms.json")).unwrap())
            .unwrap();
    let clip = m6rec_testkit::fixture("audio/brahms.ogg");
    let mono = decode_file(&clip, None).unwrap();
    assert_eq!(mono.rate, 22_050);
    assert!((mono.seconds() - 45.84).abs() < 0.05, "duration {}", mono.seconds());
    // Decoding: symphonia's Vorbis decoder against libvorbis (via libsndfile), sample for sample.
    let first_diff = mono.samples.iter().zip(&g.first_samples).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(first_diff < 1e-4, "first samples differ by {first_diff}");

    let cfg = MelConfig {
        sample_rate: g.config.sample_rate,
        n_fft: g.config.n_fft,
        hop: g.config.hop,
        n_mels: g.config.n_mels,
        seconds: g.config.seconds,
        top_db: Some(g.config.top_db),
        ..Default::default()
    };
    let spec = MelSpectrogram::new(&cfg).unwrap().file(&clip).unwrap();
    assert_eq!((spec.n_mels, spec.n_frames), g.shape);
    let mut max_diff = 0f32;
    for (band, row) in g.log_mel.iter().enumerate() {
        for (frame, want) in row.iter().enumerate() {
            max_diff = max_diff.max((spec.data[band * spec.n_frames + frame] - want).abs());
        }
    }
    eprintln!("max |ours - librosa| = {max_diff:.4} dB over {} values", g.shape.0 * g.shape.1);
    assert!(max_diff < 0.01, "log-mel differs from librosa by up to {max_diff} dB");
}

#[test]
fn every_claimed_container_decodes() {
    // (file, rate, seconds): WAV stereo 16-bit, FLAC, MP3, Ogg Vorbis.
    for (name, rate) in
        [("tone_44k_stereo.wav", 44_100), ("tone_16k.flac", 16_000), ("tone_22k.mp3", 22_050), ("tone_22k.ogg", 22_050)]
    {
        let mono = decode_file(&m6rec_testkit::fixture(&format!("audio/{name}")), None).unwrap();
        assert_eq!(mono.rate, rate, "{name}");
        assert!((mono.seconds() - 1.0).abs() < 0.1, "{name}: {} s", mono.seconds());
        // The 440 Hz tone dominates: count zero crossings over the middle half second.
        let mid = &mono.samples[mono.samples.len() / 4..mono.samples.len() * 3 / 4];
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count() as f64;
        let hz = crossings / 2.0 / (mid.len() as f64 / f64::from(rate));
        let tol = if name.ends_with(".wav") { 120.0 } else { 5.0 }; // the WAV's second channel adds 1 kHz
        assert!((hz - 440.0).abs() < tol, "{name}: dominant frequency {hz:.1} Hz");
    }
    // Stereo is averaged: the 0.5-amplitude left tone and 0.25 right tone cannot exceed 0.75 together.
    let wav = decode_file(&m6rec_testkit::fixture("audio/tone_44k_stereo.wav"), None).unwrap();
    let peak = wav.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak < 0.4 && peak > 0.3, "mono mix peak {peak}");
}

#[test]
fn bad_audio_is_an_error_naming_the_file() {
    let path = m6rec_testkit::fixture("audio/not_audio.mp3");
    let err = decode_file(&path, None).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("not_audio.mp3"), "{err}");
    let err = decode_file(std::path::Path::new("/nonexistent/clip.ogg"), None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("/nonexistent/clip.ogg"), "{err}");
    // A truncated Ogg file keeps what decoded.
    let bytes = std::fs::read(m6rec_testkit::fixture("audio/brahms.ogg")).unwrap();
    let half = m6rec_audio::decode(bytes[..bytes.len() / 2].to_vec(), Some("ogg"), None).unwrap();
    assert!(half.seconds() > 15.0 && half.seconds() < 30.0, "{}", half.seconds());
    assert!(MelSpectrogram::new(&MelConfig { fmin: 20_000.0, ..Default::default() }).is_err());
}

#[test]
fn clips_are_cropped_and_padded_to_one_shape_and_encoded() {
    let cfg = MelConfig { seconds: 2.0, ..Default::default() };
    let mel = MelSpectrogram::new(&cfg).unwrap();
    let long = mel.file(&m6rec_testkit::fixture("audio/brahms.ogg")).unwrap(); // 45 s, cropped
    let short = mel.file(&m6rec_testkit::fixture("audio/tone_16k.flac")).unwrap(); // 1 s at 16 kHz, padded
    assert_eq!((long.n_frames, short.n_frames), (cfg.n_frames(), cfg.n_frames()));
    // The padded second half of the short clip is silence: the floor of the top_db range.
    let floor = short.data.iter().copied().fold(f32::INFINITY, f32::min);
    let last = short.data[short.n_frames - 1];
    assert!((last - floor).abs() < 1e-3, "padding is silent: {last} vs floor {floor}");
    let xs = batch(&[&long, &short]).unwrap();
    assert_eq!(xs.size(), vec![2, 1, 64, cfg.n_frames() as i64]);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut enc = AudioEncoder::new(&vs.root(), &Default::default());
    let emb = enc.forward(&xs);
    assert_eq!(emb.size(), vec![2, enc.dim()]);
    assert!(emb.isfinite().all().int64_value(&[]) == 1);
    enc.freeze();
    assert!(vs.trainable_variables().iter().all(|t| !t.requires_grad()));
    let wrong = m6rec_audio::LogMel { n_mels: 64, n_frames: 3, data: vec![0.0; 192] };
    assert!(matches!(batch(&[&long, &wrong]), Err(Error::Shape { index: 1, .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Resampling keeps a tone's frequency and gives exactly round(len * to / from) samples.
    #[test]
    fn resampling_keeps_pitch_and_length(
        from in prop::sample::select(vec![8_000u32, 16_000, 22_050, 44_100, 48_000]),
        to in prop::sample::select(vec![16_000u32, 22_050, 44_100]),
        hz in 200.0f64..2_000.0,
        len in 4_000usize..20_000,
    ) {
        let x: Vec<f32> = (0..len).map(|i| (std::f64::consts::TAU * hz * i as f64 / f64::from(from)).sin() as f32).collect();
        let y = resample(&x, from, to).unwrap();
        let want = ((len as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from)) as usize;
        prop_assert_eq!(y.len(), want);
        let mid = &y[y.len() / 4..y.len() * 3 / 4];
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count() as f64;
        let est = crossings / 2.0 / (mid.len() as f64 / f64::from(to));
        prop_assert!((est - hz).abs() < hz * 0.03 + 20.0, "{} Hz came out as {:.1} Hz ({} -> {})", hz, est, from, to);
        // Amplitude survives (no gain error, delay removed so the middle is real signal).
        let peak = mid.iter().fold(0f32, |m, s| m.max(s.abs()));
        prop_assert!(peak > 0.9 && peak < 1.1, "peak {}", peak);
    }

    /// Mel filters: non-negative, each band non-empty, and Slaney's scale inverts.
    #[test]
    fn mel_scale_inverts(hz in 0.0f64..20_000.0) {
        let back = m6rec_audio::mel_to_hz(m6rec_audio::hz_to_mel(hz));
        prop_assert!((back - hz).abs() < 1e-6 * hz.max(1.0));
    }
}

#[test]
fn mel_filters_cover_every_band() {
    let f = m6rec_audio::mel_filters(22_050, 2048, 64, 0.0, 11_025.0);
    assert_eq!(f.len(), 64);
    for (i, band) in f.iter().enumerate() {
        assert!(band.iter().all(|w| *w >= 0.0));
        assert!(band.iter().any(|w| *w > 0.0), "band {i} is empty");
    }
    let _ = Mono { samples: vec![0.0], rate: 1 };
}

#[test]
fn very_short_inputs_resample_to_real_signal() {
    // Shorter than one resampler chunk: the output must still be the signal, not the resampler's zero padding.
    for len in [1usize, 10, 100, 4_000] {
        let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.05).sin() * 0.8 + 0.1).collect();
        let y = resample(&x, 22_050, 16_000).unwrap();
        assert_eq!(y.len(), (len * 16_000 + 11_025) / 22_050, "len {len}");
        let energy: f32 = y.iter().map(|v| v * v).sum();
        assert!(y.is_empty() || energy > 0.0, "len {len}: all zeros");
    }
}
