//! Chronological leave-one-out: per user, the last event is the test target and the one before it the validation target.
//!
//! Each user's events are ordered by timestamp with a **stable** sort over source file order, so events with equal
//! timestamps keep the order they had in the file (never re-sorted by id). This is RecBole's `LS: valid_and_test,
//! order: TO` on integer timestamps.
//!
//! Users with two events get a test target but no validation target; users with one event are train-only.
//!
//! A temporal split ([`Split::temporal`]) cuts the global timeline instead: events before the validation cut train;
//! each user's first event in `[validation cut, test cut)` is their validation target and their first event from the
//! test cut on their test target, each with all of the user's earlier events as history. Users with no event before
//! a target have none (a model cannot rank for an empty history). [`Split::describe`] says which split it is.
//!
//! Cold-start evaluation ([`Split::with_cold_items`]): a set of items is removed from every training sequence, so a
//! model never sees them in training; they stay in validation and test (as targets and in histories), where they
//! are the items a model must recommend from content alone.

use crate::Interactions;

/// Per-user chronological sequences and the leave-one-out targets derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    seqs: Vec<Vec<u32>>,
    /// Training sequences with the cold items removed (only when there are cold items).
    train: Option<Vec<Vec<u32>>>,
    /// `cold[item]`: held out of training (empty when none is).
    cold: Vec<bool>,
    /// Per user, for a temporal split: where training ends and the targets are.
    cuts: Option<(TimeCuts, Vec<UserCut>)>,
}

/// The two instants of a temporal split (in the dataset's time unit, seconds for imported logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCuts {
    /// Events from here on are not trained on; the first one per user (before `test`) is the validation target.
    pub valid: i64,
    /// The first event per user from here on is the test target.
    pub test: i64,
}

impl TimeCuts {
    /// Cuts that leave the last `test` fraction of all events (by time) for testing and the `valid` fraction before
    /// it for validation.
    pub fn by_fraction(inter: &Interactions, valid: f64, test: f64) -> TimeCuts {
        let mut ts = inter.timestamp.clone();
        ts.sort_unstable();
        let at = |frac: f64| {
            let k = ((ts.len() as f64) * (1.0 - frac.clamp(0.0, 1.0))).floor() as usize;
            ts.get(k.min(ts.len().saturating_sub(1))).copied().unwrap_or(0)
        };
        let test_cut = at(test);
        TimeCuts { valid: at(valid + test).min(test_cut), test: test_cut }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct UserCut {
    train: usize,
    valid: Option<usize>,
    test: Option<usize>,
    /// Events before the test cut (the user's history a test-time baseline may count).
    before_test: usize,
}

/// A history and the item that followed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target<'a> {
    /// Items seen before, oldest first.
    pub history: &'a [u32],
    /// The held-out next item.
    pub item: u32,
}

impl Split {
    /// Builds the split for `n_users` users from events in source order.
    pub fn leave_one_out(inter: &Interactions, n_users: usize) -> Split {
        let mut per_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); n_users];
        for ((&u, &i), &t) in inter.user.iter().zip(&inter.item).zip(&inter.timestamp) {
            if let Some(v) = per_user.get_mut(u as usize) {
                v.push((t, i));
            }
        }
        let seqs = per_user
            .into_iter()
            .map(|mut v| {
                v.sort_by_key(|&(t, _)| t); // stable: ties keep file order
                v.into_iter().map(|(_, i)| i).collect()
            })
            .collect();
        Split::from_sequences(seqs)
    }

    /// Wraps already-ordered sequences (one per user).
    pub fn from_sequences(seqs: Vec<Vec<u32>>) -> Split {
        Split { seqs, train: None, cold: Vec::new(), cuts: None }
    }

    /// The temporal split at `cuts` (see the module docs); events in file order, ties kept.
    pub fn temporal(inter: &Interactions, n_users: usize, cuts: TimeCuts) -> Split {
        let mut per_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); n_users];
        for ((&u, &i), &t) in inter.user.iter().zip(&inter.item).zip(&inter.timestamp) {
            if let Some(v) = per_user.get_mut(u as usize) {
                v.push((t, i));
            }
        }
        let mut seqs = Vec::with_capacity(n_users);
        let mut at = Vec::with_capacity(n_users);
        for mut v in per_user {
            v.sort_by_key(|&(t, _)| t); // stable: ties keep file order
            let train = v.partition_point(|&(t, _)| t < cuts.valid);
            let first_test = v.partition_point(|&(t, _)| t < cuts.test);
            let valid = (train < first_test && train > 0).then_some(train);
            let test = (first_test < v.len() && first_test > 0).then_some(first_test);
            at.push(UserCut { train, valid, test, before_test: first_test });
            seqs.push(v.into_iter().map(|(_, i)| i).collect());
        }
        Split { seqs, train: None, cold: Vec::new(), cuts: Some((cuts, at)) }
    }

    /// Which split this is, for reports: `leave-one-out`, or `temporal (validation from T1, test from T2)`.
    pub fn describe(&self) -> String {
        match &self.cuts {
            None => "chronological leave-one-out".into(),
            Some((c, _)) => {
                // Imported logs hold epoch seconds; other sources positions, shown as they are.
                let when = |t: i64| match chrono::DateTime::from_timestamp(t, 0).filter(|_| t > 100_000_000) {
                    Some(d) => format!("{t} ({})", d.format("%Y-%m-%d %H:%M:%S UTC")),
                    None => t.to_string(),
                };
                format!("temporal: validation from t={}, test from t={}", when(c.valid), when(c.test))
            }
        }
    }

    /// Holds `items` out of training: they are removed from every training sequence and stay in validation and
    /// test. Replaces any earlier cold set.
    pub fn with_cold_items(mut self, items: &[u32]) -> Split {
        let n = items.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut cold = vec![false; n];
        for &i in items {
            cold[i as usize] = true;
        }
        self.train = None;
        let train = (0..self.seqs.len())
            .map(|u| {
                self.train(u).iter().copied().filter(|&i| !cold.get(i as usize).copied().unwrap_or(false)).collect()
            })
            .collect();
        self.train = Some(train);
        self.cold = cold;
        self
    }

    /// A deterministic random `fraction` of the `n_items` catalog (at least one item when `fraction > 0`), sorted:
    /// the cold-start set for a seed.
    pub fn sample_cold_items(n_items: usize, fraction: f64, seed: u64) -> Vec<u32> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        if fraction <= 0.0 || n_items == 0 {
            return Vec::new();
        }
        let k = ((n_items as f64 * fraction.min(1.0)).round() as usize).clamp(1, n_items);
        let mut all: Vec<u32> = (0..n_items).filter_map(|i| u32::try_from(i).ok()).collect();
        all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xC01D_57A7));
        all.truncate(k);
        all.sort_unstable();
        all
    }

    /// Whether `item` is held out of training.
    pub fn is_cold(&self, item: u32) -> bool {
        self.cold.get(item as usize).copied().unwrap_or(false)
    }

    /// Number of items held out of training.
    pub fn n_cold(&self) -> usize {
        self.cold.iter().filter(|&&c| c).count()
    }

    /// Number of users.
    pub fn n_users(&self) -> usize {
        self.seqs.len()
    }

    /// The user's whole ordered sequence.
    pub fn sequence(&self, user: usize) -> &[u32] {
        &self.seqs[user]
    }

    /// Training events: all but the validation and test targets (and without cold items, when there are any).
    pub fn train(&self, user: usize) -> &[u32] {
        if let Some(t) = &self.train {
            return &t[user];
        }
        let s = &self.seqs[user];
        if let Some((_, at)) = &self.cuts {
            return &s[..at[user].train];
        }
        match s.len() {
            0 | 1 => s,
            2 => &s[..1],
            n => &s[..n - 2],
        }
    }

    /// Validation target with the training history before it (temporal: with every earlier event).
    pub fn valid(&self, user: usize) -> Option<Target<'_>> {
        let s = &self.seqs[user];
        if let Some((_, at)) = &self.cuts {
            return at[user].valid.map(|k| Target { history: &s[..k], item: s[k] });
        }
        (s.len() >= 3).then(|| Target { history: &s[..s.len() - 2], item: s[s.len() - 2] })
    }

    /// Test target with everything before it (training events and the validation target) as history.
    pub fn test(&self, user: usize) -> Option<Target<'_>> {
        let s = &self.seqs[user];
        if let Some((_, at)) = &self.cuts {
            return at[user].test.map(|k| Target { history: &s[..k], item: s[k] });
        }
        (s.len() >= 2).then(|| Target { history: &s[..s.len() - 1], item: s[s.len() - 1] })
    }

    /// Interaction counts per item over everything that happened before the test targets (what a baseline may see
    /// at test time): training events plus, leave-one-out, each user's validation target, or, temporal, every event
    /// between the two cuts (not only each user's first).
    pub fn before_test_counts(&self, n_items: usize) -> Vec<u64> {
        let mut counts = self.train_counts(n_items);
        for u in 0..self.n_users() {
            let s = &self.seqs[u];
            let between: &[u32] = match &self.cuts {
                Some((_, at)) => &s[at[u].train..at[u].before_test],
                None if self.valid(u).is_some() => &s[s.len() - 2..s.len() - 1],
                None => &[],
            };
            for &i in between {
                if let Some(c) = counts.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// Interaction counts per item over training events only (what a popularity model may see).
    pub fn train_counts(&self, n_items: usize) -> Vec<u64> {
        let mut counts = vec![0u64; n_items];
        for u in 0..self.n_users() {
            for &i in self.train(u) {
                if let Some(c) = counts.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inter(rows: &[(u32, u32, i64)]) -> Interactions {
        let mut x = Interactions::default();
        for &(u, i, t) in rows {
            x.push(u, i, t, None);
        }
        x
    }

    #[test]
    fn ties_keep_file_order_not_id_order() {
        // Item 9 comes before item 1 in the file at the same second; it must stay first.
        let s = Split::leave_one_out(&inter(&[(0, 5, 30), (0, 9, 10), (0, 1, 10), (0, 7, 20)]), 1);
        assert_eq!(s.sequence(0), &[9, 1, 7, 5]);
        assert_eq!(s.train(0), &[9, 1]);
        assert_eq!(s.valid(0).map(|t| t.item), Some(7));
        assert_eq!(s.test(0), Some(Target { history: &[9, 1, 7], item: 5 }));
    }

    #[test]
    fn short_users() {
        let s = Split::leave_one_out(&inter(&[(0, 1, 1), (1, 1, 1), (1, 2, 2)]), 2);
        assert_eq!((s.train(0), s.valid(0), s.test(0)), (&[1u32][..], None, None));
        assert_eq!((s.train(1), s.valid(1).is_none()), (&[1u32][..], true));
        assert_eq!(s.test(1).map(|t| t.item), Some(2));
    }

    #[test]
    fn cold_items_leave_training_and_stay_in_evaluation() {
        let s = Split::from_sequences(vec![vec![1, 5, 2, 5, 3, 4], vec![5, 1, 2]]).with_cold_items(&[5]);
        assert_eq!(s.train(0), &[1, 2]);
        assert_eq!(s.train(1), &[5u32; 0][..]);
        assert_eq!(s.valid(1).map(|t| (t.history, t.item)), Some((&[5u32][..], 1)));
        assert_eq!(s.test(0).map(|t| t.item), Some(4));
        assert!(s.is_cold(5) && !s.is_cold(1) && !s.is_cold(99));
        assert_eq!(s.n_cold(), 1);
        assert_eq!(s.train_counts(6), vec![0, 1, 1, 0, 0, 0]);
    }

    proptest! {
        /// Temporal: training is strictly before the validation cut, every validation target is in
        /// [valid cut, test cut), every test target from the test cut on, and each is the user's first there.
        #[test]
        fn temporal_targets_sit_after_their_cuts(
            rows in proptest::collection::vec((0u32..6, 0u32..20, 0i64..30), 0..120),
            valid in 0.0f64..0.4,
            test in 0.0f64..0.4,
        ) {
            let x = inter(&rows);
            let cuts = TimeCuts::by_fraction(&x, valid, test);
            prop_assert!(cuts.valid <= cuts.test);
            let s = Split::temporal(&x, 6, cuts);
            for u in 0..6usize {
                let mut mine: Vec<(i64, u32)> = rows.iter().filter(|r| r.0 as usize == u).map(|r| (r.2, r.1)).collect();
                mine.sort_by_key(|r| r.0);
                let before_valid: Vec<u32> = mine.iter().filter(|r| r.0 < cuts.valid).map(|r| r.1).collect();
                prop_assert_eq!(s.train(u), &before_valid[..]);
                let first = |lo: i64, hi: i64| mine.iter().position(|r| r.0 >= lo && r.0 < hi);
                let v = first(cuts.valid, cuts.test).filter(|&k| k > 0);
                prop_assert_eq!(s.valid(u).map(|t| (t.history.len(), t.item)), v.map(|k| (k, mine[k].1)));
                let t = first(cuts.test, i64::MAX).filter(|&k| k > 0);
                prop_assert_eq!(s.test(u).map(|t| (t.history.len(), t.item)), t.map(|k| (k, mine[k].1)));
            }
            // Before the test: every event before the test cut, whoever's and however many.
            let mut before = vec![0u64; 20];
            for r in rows.iter().filter(|r| r.2 < cuts.test) {
                before[r.1 as usize] += 1;
            }
            prop_assert_eq!(s.before_test_counts(20), before);
        }

        /// The cold sample is deterministic, sorted, distinct, in range and of the asked size.
        #[test]
        fn cold_sample_is_a_deterministic_subset(n in 1usize..500, frac in 0.01f64..1.0, seed in 0u64..1000) {
            let a = Split::sample_cold_items(n, frac, seed);
            prop_assert_eq!(&a, &Split::sample_cold_items(n, frac, seed));
            prop_assert_eq!(a.len(), ((n as f64 * frac).round() as usize).clamp(1, n));
            prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(a.iter().all(|&i| (i as usize) < n));
        }

        /// train ++ [valid] ++ [test] is exactly the user's events, and they are in non-decreasing time order.
        #[test]
        fn split_partitions_each_user_in_time_order(rows in proptest::collection::vec((0u32..5, 0u32..20, 0i64..8), 0..80)) {
            let x = inter(&rows);
            let s = Split::leave_one_out(&x, 5);
            for u in 0..5usize {
                let mut parts: Vec<u32> = s.train(u).to_vec();
                parts.extend(s.valid(u).map(|t| t.item));
                parts.extend(s.test(u).map(|t| t.item));
                // Same multiset and the same order as a stable sort by time of this user's rows.
                let mut mine: Vec<(i64, u32)> = rows.iter().filter(|r| r.0 as usize == u).map(|r| (r.2, r.1)).collect();
                mine.sort_by_key(|r| r.0);
                let expected: Vec<u32> = mine.iter().map(|r| r.1).collect();
                prop_assert_eq!(&parts, &expected);
                if let Some(t) = s.test(u) { prop_assert_eq!(t.history.len() + 1, expected.len()); }
            }
            // Before the test: every event but the test targets.
            let mut before = vec![0u64; 20];
            for r in &rows {
                before[r.1 as usize] += 1;
            }
            for u in 0..5usize {
                if let Some(t) = s.test(u) {
                    before[t.item as usize] -= 1;
                }
            }
            prop_assert_eq!(s.before_test_counts(20), before);
        }
    }
}
