//! `m6rec synth` (a generated dataset, with media) and `m6rec doctor` (what this build and machine can do).

use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use std::path::Path;

pub fn synth(out: &Path, media: bool, media_only: bool) -> Result<()> {
    use m6rec_data::synth;
    let cfg = synth::SynthConfig::demo();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if !media_only {
        let (inter, items) = synth::generate(&cfg);
        for (name, text) in [("demo.inter", inter), ("demo.item", items)] {
            let p = out.join(name);
            m6rec_tensor::atomic::write_bytes(&p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        println!("wrote {}/demo.inter and demo.item", out.display());
    }
    if media {
        let (images, audio) = (out.join("images"), out.join("audio"));
        for d in [&images, &audio] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let n = synth::n_items(&cfg);
        (0..n).into_par_iter().try_for_each(|idx| -> Result<()> {
            let side = synth::IMAGE_SIDE;
            let img = image::RgbImage::from_raw(side, side, synth::item_image(&cfg, idx))
                .ok_or_else(|| anyhow!("item {idx}: image buffer of the wrong size"))?;
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            let p = images.join(format!("i{idx}.png"));
            m6rec_tensor::atomic::write_bytes(&p, &png).with_context(|| format!("writing {}", p.display()))?;

            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: synth::AUDIO_RATE,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut wav = std::io::Cursor::new(Vec::new());
            let mut w = hound::WavWriter::new(&mut wav, spec)?;
            for x in synth::item_audio(&cfg, idx) {
                w.write_sample((x.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)?;
            }
            w.finalize()?;
            let p = audio.join(format!("i{idx}.wav"));
            m6rec_tensor::atomic::write_bytes(&p, wav.get_ref()).with_context(|| format!("writing {}", p.display()))
        })?;
        println!("wrote {n} images to {} and {n} clips to {}", images.display(), audio.display());
    }
    Ok(())
}

pub fn doctor(threads: usize) -> Result<()> {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0]).sum(tch::Kind::Float).double_value(&[]);
    println!("libtorch: linked and working (1 + 2 = {t})");
    println!("cuda available: {} ({} devices)", tch::Cuda::is_available(), tch::Cuda::device_count());
    println!("threads: {threads} (libtorch reports {})", tch::get_num_threads());
    Ok(())
}
