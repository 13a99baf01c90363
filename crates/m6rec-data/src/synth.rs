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
}
