//! Image modality: every format we claim, torchvision's preprocessing reproduced, bad input, the encoder.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_image::{batch, Error, ImageConfig, ImageEncoder, Pixels, Preprocessor};
use proptest::prelude::*;

fn pre() -> Preprocessor {
    Preprocessor::new(&ImageConfig::default()).unwrap()
}

fn pooled(p: &Pixels) -> Vec<f64> {
    // 8x8 block means per channel, as the golden file stores them.
    let s = p.size as usize;
    let mut out = Vec::new();
    for c in 0..3 {
        for by in 0..s / 8 {
            for bx in 0..s / 8 {
                let mut sum = 0f64;
                for y in 0..8 {
                    for x in 0..8 {
                        sum += f64::from(p.chw[c * s * s + (by * 8 + y) * s + bx * 8 + x]);
                    }
                }
                out.push(sum / 64.0);
            }
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct Golden {
    images: std::collections::BTreeMap<String, Vec<f64>>,
}

#[test]
fn preprocessing_matches_torchvision() {
    let g: Golden = serde_json::from_str(
        &std::fs::read_to_string(m6rec_testkit::fixture("golden/torchvision_preprocess.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(g.images.len(), 3);
    for (name, want) in &g.images {
        let got = pooled(&pre().file(&m6rec_testkit::fixture(&format!("images/{name}"))).unwrap());
        let mean_abs = got.iter().zip(want).map(|(a, b)| (a - b).abs()).sum::<f64>() / want.len() as f64;
        let max_abs = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        eprintln!("{name}: mean |ours - torchvision| {mean_abs:.3}, max {max_abs:.3} (0-255, 8x8 block means)");
        assert!(mean_abs < 0.5 && max_abs < 2.0, "{name}: mean {mean_abs}, max {max_abs}");
    }
}

#[test]
fn every_claimed_format_decodes() {
    let jpg = pre().file(&m6rec_testkit::fixture("images/astronaut.jpg")).unwrap();
    for name in ["astronaut.webp", "astronaut.gif", "coffee.jpg", "chelsea.png"] {
        let p = pre().file(&m6rec_testkit::fixture(&format!("images/{name}"))).unwrap();
        assert_eq!((p.size, p.chw.len()), (128, 3 * 128 * 128), "{name}");
        if name.starts_with("astronaut") {
            // Same picture in another codec (the GIF's first frame, not its red second frame).
            let diff = pooled(&p).iter().zip(pooled(&jpg)).map(|(a, b)| (a - b).abs()).sum::<f64>() / 768.0;
            assert!(diff < 12.0, "{name} differs from the JPEG by {diff} on average");
        }
    }
}

#[test]
fn corrupt_and_hostile_images_are_errors_naming_the_file() {
    let path = m6rec_testkit::fixture("images/truncated.jpg");
    let Err(err) = pre().file(&path) else { panic!("a truncated JPEG decoded") };
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated.jpg"), "{err}");
    assert!(matches!(pre().bytes(b"GIF89a but not really"), Err(Error::Decode { .. })));
    assert!(matches!(pre().bytes(b"plain text"), Err(Error::Decode { .. })));
    assert!(matches!(pre().bytes(&[]), Err(Error::Decode { .. })));
    // A PNG header claiming 100,000 x 100,000 pixels is refused before any allocation.
    let mut huge = Vec::new();
    image::RgbImage::new(4, 4).write_to(&mut std::io::Cursor::new(&mut huge), image::ImageFormat::Png).unwrap();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(pre().bytes(&huge), Err(Error::Decode { .. })));
    let err = pre().file(std::path::Path::new("/nonexistent/poster.jpg")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("/nonexistent/poster.jpg"));
    assert!(Preprocessor::new(&ImageConfig { size: 200, resize: 100, ..Default::default() }).is_err());
}

#[test]
fn batch_normalises_and_the_encoder_embeds() {
    let cfg = ImageConfig::default();
    let a = pre().file(&m6rec_testkit::fixture("images/chelsea.png")).unwrap();
    let b = pre().file(&m6rec_testkit::fixture("images/coffee.jpg")).unwrap();
    let xs = batch(&[&a, &b], &cfg).unwrap();
    assert_eq!(xs.size(), vec![2, 3, 128, 128]);
    // Pixel (0, 0, 0) of image 0, by hand.
    let want = (f32::from(a.chw[0]) / 255.0 - cfg.mean[0]) / cfg.std[0];
    assert!((xs.double_value(&[0, 0, 0, 0]) as f32 - want).abs() < 1e-5);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut enc = ImageEncoder::new(&vs.root(), &Default::default());
    let emb = enc.forward(&xs);
    assert_eq!(emb.size(), vec![2, enc.dim()]);
    assert!(vs.trainable_variables().iter().all(|t| t.requires_grad()));
    enc.freeze();
    assert!(vs.trainable_variables().iter().all(|t| !t.requires_grad()));
    let small = Preprocessor::new(&ImageConfig { size: 32, resize: 36, ..Default::default() }).unwrap();
    let c = small.file(&m6rec_testkit::fixture("images/coffee.jpg")).unwrap();
    assert!(matches!(batch(&[&a, &c], &cfg), Err(Error::Shape { index: 1, got: 32, want: 128 })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// Any source size or aspect ratio gives exactly size x size, and a flat colour stays that colour.
    #[test]
    fn any_shape_gives_the_configured_square(w in 1u32..300, h in 1u32..300, r in 0u8..=255, g in 0u8..=255, b in 0u8..=255) {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(w, h, image::Rgb([r, g, b]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let cfg = ImageConfig { size: 24, resize: 28, ..Default::default() };
        let p = Preprocessor::new(&cfg).unwrap().bytes(&png).unwrap();
        prop_assert_eq!(p.size, 24);
        prop_assert_eq!(p.chw.len(), 3 * 24 * 24);
        let plane = 24 * 24;
        for (c, v) in [r, g, b].into_iter().enumerate() {
            prop_assert!(p.chw[c * plane..(c + 1) * plane].iter().all(|&x| x.abs_diff(v) <= 1));
        }
    }
}
