//! The generator of the embedded demo dataset (`fixtures/demo/`): several domains, readable titles, and planted
//! sequential structure that a sequence model can learn and popularity cannot.
//!
//! Items come in *series* (a book saga, an album's tracks, a film franchise), each a chain of [`SynthConfig::series_len`]
//! items within one domain. A user starts a series in a preferred domain and mostly continues it in order; sometimes
//! jumps to the start of another series; sometimes picks a globally popular item (Zipf). So "the next part of the
//! series you are in" is the signal, and it is invisible to a popularity ranking.
//!
//! The generator is deterministic for a seed (ChaCha8), so the committed fixture can be checked against it.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;

/// Generator settings; [`SynthConfig::demo`] is the committed fixture's.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Users to generate.
    pub n_users: usize,
    /// Series per domain.
    pub series_per_domain: usize,
    /// Items per series.
    pub series_len: usize,
    /// Events per user, inclusive range.
    pub min_len: usize,
    /// Maximum events per user.
    pub max_len: usize,
    /// Probability of continuing the current series.
    pub p_continue: f64,
    /// Probability of a popular (Zipf) item; the rest jumps to another series start.
    pub p_popular: f64,
    /// Seed.
    pub seed: u64,
}

impl SynthConfig {
    /// The settings of `fixtures/demo`.
    pub fn demo() -> SynthConfig {
        SynthConfig {
            n_users: 1000,
            series_per_domain: 20,
            series_len: 6,
            min_len: 15,
            max_len: 45,
            p_continue: 0.65,
            p_popular: 0.15,
            seed: 20261128,
        }
    }
}

const DOMAINS: [(&str, &str); 3] = [("books", "Book"), ("music", "Track"), ("films", "Part")];
const ADJ: [&str; 20] = [
    "Crimson",
    "Silent",
    "Golden",
    "Hidden",
    "Broken",
    "Electric",
    "Frozen",
    "Wandering",
    "Midnight",
    "Velvet",
    "Iron",
    "Paper",
    "Distant",
    "Burning",
    "Quiet",
    "Hollow",
    "Bright",
    "Secret",
    "Wild",
    "Last",
];
const NOUN: [&str; 20] = [
    "Harbor", "Garden", "Empire", "River", "Signal", "Orchard", "Lantern", "Summit", "Compass", "Tide", "Kingdom",
    "Echo", "Meadow", "Engine", "Citadel", "Voyage", "Mirror", "Forest", "Station", "Crown",
];
const GENRES: [&str; 6] = ["adventure", "mystery", "romance", "science fiction", "comedy", "history"];

/// RecBole atomic files: `(demo.inter, demo.item)` contents.
pub fn generate(cfg: &SynthConfig) -> (String, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let per_domain = cfg.series_per_domain * cfg.series_len;
    let n_items = DOMAINS.len() * per_domain;

    let mut item_file = String::from("item_id:token\ttitle:token_seq\tdomain:token\ttext:token_seq\n");
    for d in 0..DOMAINS.len() {
        for s in 0..cfg.series_per_domain {
            let name = format!("{} {}", ADJ[(s + 7 * d) % ADJ.len()], NOUN[(3 * s + d) % NOUN.len()]);
            let genre = GENRES[(s + d) % GENRES.len()];
            for k in 0..cfg.series_len {
                let idx = d * per_domain + s * cfg.series_len + k;
                let (domain, part) = DOMAINS[d];
                let _ = writeln!(
                    item_file,
                    "i{idx}\tThe {name}, {part} {}\t{domain}\t{genre} {domain} from the {name} series, number {} of {}",
                    k + 1,
                    k + 1,
                    cfg.series_len
                );
            }
        }
    }

    // Zipf-like popularity over a random permutation of all items.
    let mut perm: Vec<usize> = (0..n_items).collect();
    for i in (1..n_items).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let weights: Vec<f64> = (0..n_items).map(|r| 1.0 / (r as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let popular = |rng: &mut ChaCha8Rng| {
        let mut x = rng.random::<f64>() * total;
        for (r, w) in weights.iter().enumerate() {
            x -= w;
            if x <= 0.0 {
                return perm[r];
            }
        }
        perm[n_items - 1]
    };
    let series_start = |rng: &mut ChaCha8Rng, domain: usize| {
        domain * per_domain + rng.random_range(0..cfg.series_per_domain) * cfg.series_len
    };

    let mut inter_file = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    let domain_ids: Vec<usize> = (0..DOMAINS.len()).collect();
    for u in 0..cfg.n_users {
        let favourite = u % DOMAINS.len();
        let len = rng.random_range(cfg.min_len..=cfg.max_len);
        let mut ts: i64 = 1_700_000_000 + rng.random_range(0..5_000_000);
        let mut cur = series_start(&mut rng, favourite);
        for step in 0..len {
            if step > 0 {
                let x = rng.random::<f64>();
                let at_end = (cur % per_domain) % cfg.series_len == cfg.series_len - 1;
                cur = if x < cfg.p_continue && !at_end {
                    cur + 1
                } else if x < cfg.p_continue + cfg.p_popular {
                    popular(&mut rng)
                } else {
                    let d =
                        if rng.random::<f64>() < 0.7 { favourite } else { *domain_ids.choose(&mut rng).unwrap_or(&0) };
                    series_start(&mut rng, d)
                };
                // Some events share a second (to exercise the tie rule); most are minutes to a day apart.
                ts += if rng.random::<f64>() < 0.15 { 0 } else { rng.random_range(60..86_400) };
            }
            let _ = writeln!(inter_file, "u{u}\ti{cur}\t{ts}");
        }
    }
    (inter_file, item_file)
}

/// The latent identity of demo item `idx`: `(domain, series within the domain, part within the series)`.
pub fn latent(cfg: &SynthConfig, idx: usize) -> (usize, usize, usize) {
    let per_domain = cfg.series_per_domain * cfg.series_len;
    (idx / per_domain, (idx % per_domain) / cfg.series_len, idx % cfg.series_len)
}

/// Number of demo items.
pub fn n_items(cfg: &SynthConfig) -> usize {
    DOMAINS.len() * cfg.series_per_domain * cfg.series_len
}

/// Side of the square demo images.
pub const IMAGE_SIDE: u32 = 64;

/// The demo image of item `idx`: `IMAGE_SIDE`² RGB bytes, row-major. The background hue names the item's series,
/// the number of white bars its part (1 bar = part 1), and the shape of the bars its domain (plain, dashed, thin);
/// a little deterministic noise keeps images of one series from being identical.
pub fn item_image(cfg: &SynthConfig, idx: usize) -> Vec<u8> {
    let (d, s, k) = latent(cfg, idx);
    let n_series = DOMAINS.len() * cfg.series_per_domain;
    let hue = (d * cfg.series_per_domain + s) as f64 / n_series as f64;
    let bg = hsv(hue, 0.75, 0.85);
    let side = IMAGE_SIDE as usize;
    let bars = k + 1;
    let slot = side / (cfg.series_len + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (idx as u64).wrapping_mul(0x9E37_79B9));
    let mut out = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let bar = (x / slot.max(1)).checked_sub(1).filter(|&b| b < bars && x % slot.max(1) < slot / 2 + 1);
            let on = bar.is_some()
                && match d {
                    0 => (8..side - 8).contains(&y),
                    1 => (8..side - 8).contains(&y) && (y / 6) % 2 == 0,
                    _ => (8..side - 8).contains(&y) && x % slot.max(1) < 2,
                };
            let px = if on { [250.0, 250.0, 250.0] } else { bg };
            for c in px {
                let noise: f64 = rng.random_range(-12.0..12.0);
                out.push((c + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    let rgb = match (i as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|c| c * 255.0)
}

/// Sample rate of the demo audio clips.
pub const AUDIO_RATE: u32 = 16_000;

/// The demo audio clip of item `idx`: one second of mono samples in -1..1 at [`AUDIO_RATE`]. The pitch names the
/// item's series (a quarter-tone scale from 220 Hz), the number of note onsets its part, and the timbre its domain
/// (sine, square-ish, with an octave); light noise on top.
pub fn item_audio(cfg: &SynthConfig, idx: usize) -> Vec<f32> {
    let (d, s, k) = latent(cfg, idx);
    let series = (d * cfg.series_per_domain + s) as f64;
    let f0 = 220.0 * 2f64.powf(series / 24.0);
    let beats = (k + 1) as f64;
    let rate = f64::from(AUDIO_RATE);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xA0D1 ^ (idx as u64).wrapping_mul(0x9E37_79B9));
    (0..AUDIO_RATE as usize)
        .map(|n| {
            let t = n as f64 / rate;
            let phase = 2.0 * std::f64::consts::PI * f0 * t;
            let tone = match d {
                0 => phase.sin(),
                1 => (phase.sin() * 4.0).tanh(),
                _ => 0.7 * phase.sin() + 0.3 * (2.0 * phase).sin(),
            };
            // `beats` notes per second, each decaying from its onset.
            let env = (-((t * beats).fract()) * 6.0).exp();
            let noise: f64 = rng.random_range(-0.02..0.02);
            (0.6 * tone * env + noise) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let cfg = SynthConfig { n_users: 30, ..SynthConfig::demo() };
        let (a, items) = generate(&cfg);
        assert_eq!(generate(&cfg).0, a);
        assert_eq!(items.lines().count(), 1 + 3 * 20 * 6);
        let n = a.lines().count() - 1;
        assert!((30 * 15..=30 * 45).contains(&n), "{n} events");
    }

    #[test]
    fn media_carry_the_latent_series_and_part() {
        let cfg = SynthConfig::demo();
        let side = IMAGE_SIDE as usize;
        let mean = |img: &[u8]| {
            let mut m = [0f64; 3];
            for px in img.chunks(3) {
                for c in 0..3 {
                    m[c] += f64::from(px[c]) / (side * side) as f64;
                }
            }
            m
        };
        let bright = |img: &[u8]| img.chunks(3).filter(|p| p.iter().all(|&c| c > 235)).count();
        let (a1, a2, b1) = (item_image(&cfg, 0), item_image(&cfg, 1), item_image(&cfg, cfg.series_len));
        assert_eq!(a1.len(), side * side * 3);
        // Part 2 has more bar pixels than part 1; another series has another background colour.
        assert!(bright(&a2) > bright(&a1) + 50, "{} vs {}", bright(&a2), bright(&a1));
        let d = |x: [f64; 3], y: [f64; 3]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum::<f64>();
        assert!(d(mean(&a1), mean(&b1)) > 10.0);
        let clip = item_audio(&cfg, 0);
        assert_eq!(clip.len(), AUDIO_RATE as usize);
        assert!(clip.iter().all(|x| x.abs() <= 1.0));
        assert_ne!(item_audio(&cfg, 0), item_audio(&cfg, cfg.series_len));
        assert_eq!(latent(&cfg, n_items(&cfg) - 1), (2, cfg.series_per_domain - 1, cfg.series_len - 1));
    }
}
