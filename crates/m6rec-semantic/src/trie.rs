//! The prefix trie of existing codes and beam search constrained to it.

use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
struct Node {
    children: BTreeMap<u16, u32>,
    item: Option<u32>,
}

/// Every existing code as a path from the root; a full-length path ends at its item.
#[derive(Debug, Clone)]
pub struct Trie {
    nodes: Vec<Node>,
    widths: Vec<usize>,
}

impl Trie {
    /// An empty trie for codes whose position `i` takes `widths[i]` values.
    pub fn new(widths: Vec<usize>) -> Trie {
        Trie { nodes: vec![Node::default()], widths }
    }

    /// Tokens per code.
    pub fn depth(&self) -> usize {
        self.widths.len()
    }

    /// Values code position `level` takes (the width of a model's output at that step); 0 past the depth.
    pub fn width(&self, level: usize) -> usize {
        self.widths.get(level).copied().unwrap_or(0)
    }

    /// Adds `code` (of [`Trie::depth`] tokens) naming `item`; a wider collision level widens the trie.
    pub fn insert(&mut self, code: &[u16], item: u32) {
        let mut at = 0usize;
        for (level, &t) in code.iter().enumerate() {
            if let Some(w) = self.widths.get_mut(level) {
                *w = (*w).max(t as usize + 1);
            }
            let next = match self.nodes[at].children.get(&t) {
                Some(&n) => n as usize,
                None => {
                    self.nodes.push(Node::default());
                    let n = self.nodes.len() - 1;
                    self.nodes[at].children.insert(t, n as u32);
                    n
                }
            };
            at = next;
        }
        self.nodes[at].item = Some(item);
    }

    fn walk(&self, prefix: &[u16]) -> Option<usize> {
        let mut at = 0usize;
        for t in prefix {
            at = *self.nodes[at].children.get(t)? as usize;
        }
        Some(at)
    }

    /// The tokens that may follow `prefix` (empty when it is not a prefix of any code, or is a whole code).
    pub fn next_tokens(&self, prefix: &[u16]) -> Vec<u16> {
        self.walk(prefix).map(|n| self.nodes[n].children.keys().copied().collect()).unwrap_or_default()
    }

    /// The item a whole code names.
    pub fn item(&self, code: &[u16]) -> Option<u32> {
        self.walk(code).and_then(|n| self.nodes[n].item)
    }
}

/// One result of [`beam_search`].
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// The item.
    pub item: u32,
    /// Its code.
    pub code: Vec<u16>,
    /// The summed log-probability of its tokens.
    pub score: f32,
}

/// Beam search over `trie`'s codes: at each code position, `log_probs` gets the live prefixes (all of the same
/// length) and returns, for each, log-probabilities over that position's [`Trie::width`] values; only tokens that
/// continue an existing code are expanded, and the `beam` best partial codes are kept. Returns up to `beam` items,
/// best first (ties by code order): every one exists, none twice.
pub fn beam_search<E: std::fmt::Display>(
    trie: &Trie,
    beam: usize,
    mut log_probs: impl FnMut(&[Vec<u16>]) -> std::result::Result<Vec<Vec<f32>>, E>,
) -> Result<Vec<Beam>> {
    let mut out = beam_search_batch(trie, beam, 1, |rows: &[(usize, Vec<u16>)]| {
        let prefixes: Vec<Vec<u16>> = rows.iter().map(|(_, p)| p.clone()).collect();
        log_probs(&prefixes)
    })?;
    Ok(out.pop().unwrap_or_default())
}

/// [`beam_search`] for `queries` searches at once (one model call per code position for all of them): `log_probs`
/// gets `(query, prefix)` rows. Returns each query's beams.
pub fn beam_search_batch<E: std::fmt::Display>(
    trie: &Trie,
    beam: usize,
    queries: usize,
    mut log_probs: impl FnMut(&[(usize, Vec<u16>)]) -> std::result::Result<Vec<Vec<f32>>, E>,
) -> Result<Vec<Vec<Beam>>> {
    if beam == 0 {
        return Ok(vec![Vec::new(); queries]);
    }
    let mut live: Vec<Vec<(Vec<u16>, f32)>> = vec![vec![(Vec::new(), 0.0)]; queries];
    for level in 0..trie.depth() {
        let rows: Vec<(usize, Vec<u16>)> =
            live.iter().enumerate().flat_map(|(q, l)| l.iter().map(move |(p, _)| (q, p.clone()))).collect();
        if rows.is_empty() {
            break;
        }
        let lp = log_probs(&rows).map_err(|e| Error::Scoring(e.to_string()))?;
        if lp.len() != rows.len() {
            return Err(Error::Scoring(format!("{} score rows for {} prefixes", lp.len(), rows.len())));
        }
        let mut next: Vec<Vec<(Vec<u16>, f32)>> = vec![Vec::new(); queries];
        for ((q, prefix), row) in rows.iter().zip(&lp) {
            let score = live[*q].iter().find(|(p, _)| p == prefix).map_or(0.0, |(_, s)| *s);
            for t in trie.next_tokens(prefix) {
                let Some(&s) = row.get(t as usize) else {
                    return Err(Error::Scoring(format!(
                        "level {level}: {} scores, but token {t} exists (width {})",
                        row.len(),
                        trie.width(level)
                    )));
                };
                let mut code = prefix.clone();
                code.push(t);
                next[*q].push((code, score + if s.is_nan() { f32::NEG_INFINITY } else { s }));
            }
        }
        for n in &mut next {
            n.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            n.truncate(beam);
        }
        live = next;
    }
    Ok(live
        .into_iter()
        .map(|l| {
            l.into_iter().filter_map(|(code, score)| trie.item(&code).map(|item| Beam { item, code, score })).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie_of(codes: &[Vec<u16>]) -> Trie {
        let mut t = Trie::new(vec![0; codes.first().map_or(0, Vec::len)]);
        for (i, c) in codes.iter().enumerate() {
            t.insert(c, i as u32);
        }
        t
    }

    /// Deterministic pseudo-random log-probabilities of `token` after `prefix`.
    fn score(prefix: &[u16], token: usize, salt: u64) -> f32 {
        let mut h = salt ^ 0x9E37_79B9_7F4A_7C15;
        for &p in prefix {
            h = (h ^ u64::from(p)).wrapping_mul(0x100_0000_01B3);
        }
        h = (h ^ token as u64).wrapping_mul(0x100_0000_01B3);
        -((h >> 40) as f32 / (1u64 << 24) as f32) * 5.0
    }

    proptest! {
        /// Constrained beam search never returns a code that is not an item, never an item twice; with a beam as
        /// large as the catalog it ranks every item exactly as exhaustive scoring does.
        #[test]
        fn beams_are_items_and_a_full_beam_is_exact(
            raw in proptest::collection::hash_set(proptest::collection::vec(0u16..5, 3), 1..40),
            beam in 1usize..10,
            salt in 0u64..1000,
        ) {
            let codes: Vec<Vec<u16>> = raw.into_iter().collect();
            let trie = trie_of(&codes);
            let f = |ps: &[Vec<u16>]| Ok::<_, String>(ps.iter().map(|p| (0..trie.width(p.len())).map(|t| score(p, t, salt)).collect()).collect());
            let got = beam_search(&trie, beam, f).unwrap();
            prop_assert_eq!(got.len(), beam.min(codes.len()));
            let mut seen = std::collections::HashSet::new();
            for b in &got {
                prop_assert_eq!(&codes[b.item as usize], &b.code, "a beam is an existing item's code");
                prop_assert!(seen.insert(b.item));
            }
            let all = beam_search(&trie, codes.len(), f).unwrap();
            let mut exhaustive: Vec<(f32, Vec<u16>)> = codes.iter().map(|c| {
                let s: f32 = (0..c.len()).map(|l| score(&c[..l], c[l] as usize, salt)).sum();
                (s, c.clone())
            }).collect();
            exhaustive.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let ranked: Vec<Vec<u16>> = all.iter().map(|b| b.code.clone()).collect();
            let want: Vec<Vec<u16>> = exhaustive.into_iter().map(|(_, c)| c).collect();
            prop_assert_eq!(ranked, want);
            // Two queries searched together get what each gets alone.
            let g = |rows: &[(usize, Vec<u16>)]| Ok::<_, String>(rows.iter().map(|(q, p)| (0..trie.width(p.len())).map(|t| score(p, t, salt + *q as u64)).collect()).collect());
            let both = beam_search_batch(&trie, beam, 2, g).unwrap();
            let second = beam_search(&trie, beam, |ps: &[Vec<u16>]| Ok::<_, String>(ps.iter().map(|p| (0..trie.width(p.len())).map(|t| score(p, t, salt + 1)).collect()).collect())).unwrap();
            prop_assert_eq!(&both[0], &got);
            prop_assert_eq!(&both[1], &second);
        }
    }

    #[test]
    fn a_scorer_that_prefers_missing_codes_still_gets_items() {
        let codes = vec![vec![1u16, 0], vec![1, 2], vec![3, 0]];
        let trie = trie_of(&codes);
        // Token 0 at the first level does not exist: it must never be chosen, however good its score.
        let f = |ps: &[Vec<u16>]| {
            Ok::<_, String>(
                ps.iter()
                    .map(|p| if p.is_empty() { vec![0.0, -5.0, -9.0, -1.0] } else { vec![-1.0, -9.0, -2.0] })
                    .collect(),
            )
        };
        let got = beam_search(&trie, 2, f).unwrap();
        assert_eq!(got.iter().map(|b| b.item).collect::<Vec<_>>(), vec![2, 0]);
        let short = |ps: &[Vec<u16>]| Ok::<_, String>(ps.iter().map(|_| vec![0.0]).collect());
        assert!(beam_search(&trie, 2, short).unwrap_err().to_string().contains("token"));
        assert!(beam_search(&trie, 0, f).unwrap().is_empty());
    }
}
