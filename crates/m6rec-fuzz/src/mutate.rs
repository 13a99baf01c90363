//! Mutations of byte strings, AFL-style but without coverage feedback: bit flips, interesting bytes and numbers,
//! inserted, deleted, repeated and spliced ranges, truncation, and tokens from the target's dictionary. Input `i` of
//! a run is a pure function of `(seed, i)` and the corpus, so any input can be made again from its number.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BYTES: &[u8] = b"\0\x01\x7f\x80\xff\n\r\t ,;|:\"'{}[]-+.0123456789eE\\";
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1e18",
    b"1e309",
    b"NaN",
    b"inf",
    b"1000000000",
    b"99999999999999",
    b"0.5",
    b"",
];

/// Input `index` of a run with `seed` over `corpus` (non-empty) and `dict`, at most `max_len` bytes.
pub fn input(corpus: &[Vec<u8>], dict: &[&[u8]], seed: u64, index: u64, max_len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut x = corpus[rng.random_range(0..corpus.len())].clone();
    // One in sixteen inputs is a seed as it is (the valid path keeps being exercised).
    if rng.random_range(0..16) == 0 {
        return x;
    }
    let rounds = 1 + rng.random_range(0..8u32).min(rng.random_range(0..8u32));
    for _ in 0..rounds {
        mutate_once(&mut x, corpus, dict, &mut rng);
        x.truncate(max_len);
    }
    x
}

fn range(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let a = rng.random_range(0..len);
    let n = 1 + rng.random_range(0..(len - a).min(64));
    (a, a + n)
}

fn mutate_once(x: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]], rng: &mut ChaCha8Rng) {
    let len = x.len();
    match rng.random_range(0..11) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            x[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            x[i] = BYTES[rng.random_range(0..BYTES.len())];
        }
        2 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            x.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let (a, b) = range(rng, len);
            x.drain(a..b);
        }
        4 if len > 0 => {
            // A range repeated: long lines, many rows, deep nesting.
            let (a, b) = range(rng, len);
            let piece = x[a..b].to_vec();
            let times = 1 + rng.random_range(0..64);
            let at = rng.random_range(0..=x.len());
            x.splice(at..at, piece.iter().copied().cycle().take(piece.len() * times));
        }
        5 => {
            // Splice: the head of this input, the tail of another.
            let other = &corpus[rng.random_range(0..corpus.len())];
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..=other.len());
            x.truncate(cut);
            x.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => x.truncate(rng.random_range(0..len)),
        7 => {
            // A run of digits (or any spot) replaced by an interesting number.
            let at = if len > 0 { rng.random_range(0..len) } else { 0 };
            let mut end = at;
            while end < len && (x[end].is_ascii_digit() || x[end] == b'.' || x[end] == b'-') {
                end += 1;
            }
            let n = NUMBERS[rng.random_range(0..NUMBERS.len())];
            x.splice(at..end, n.iter().copied());
        }
        8 if !dict.is_empty() => {
            let at = rng.random_range(0..=len);
            let t = dict[rng.random_range(0..dict.len())];
            x.splice(at..at, t.iter().copied());
        }
        9 if len > 1 => {
            // Two ranges swapped (lines out of order).
            let (a, b) = range(rng, len);
            let (c, d) = range(rng, len);
            if b <= c {
                let second = x[c..d].to_vec();
                let first = x[a..b].to_vec();
                x.splice(c..d, first);
                x.splice(a..b, second);
            }
        }
        _ => {
            if len > 0 {
                let i = rng.random_range(0..len);
                x[i] = x[i].wrapping_add(rng.random_range(1..=35));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inputs_are_a_function_of_seed_and_index_and_stay_in_bounds() {
        let corpus = vec![b"user_id,item_id,timestamp\nu1,i1,1\n".to_vec(), b"{}".to_vec()];
        let dict: &[&[u8]] = &[b"item_id"];
        let a: Vec<Vec<u8>> = (0..200).map(|i| super::input(&corpus, dict, 7, i, 256)).collect();
        let b: Vec<Vec<u8>> = (0..200).map(|i| super::input(&corpus, dict, 7, i, 256)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.len() <= 256));
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 150, "mutations barely vary: {} distinct of 200", distinct.len());
    }
}
