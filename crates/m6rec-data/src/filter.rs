//! The filters research protocols and production pipelines apply to an event log before training: exact duplicates
//! dropped, iterative k-core, a cap on each user's history. Every filter keeps the order of the events it keeps, and
//! the dataset is compacted afterwards (users and items left without events are removed, indices renumbered in their
//! old order).

use crate::{Dataset, Interactions};
use crate::{Error, Result};
use std::collections::HashSet;

/// What to filter. The default filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Drop events identical to an earlier one (same user, item, time and event type); the first is kept.
    pub drop_duplicates: bool,
    /// Iterative k-core: users with fewer events are removed, then items with fewer than
    /// [`Filters::min_item_events`], until both hold everywhere (0 or 1: no bound).
    pub min_user_events: usize,
    /// See [`Filters::min_user_events`].
    pub min_item_events: usize,
    /// Keep only each user's most recent events (by time, file order for ties).
    pub max_history: Option<usize>,
}

/// What [`apply`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterReport {
    /// Exact duplicates dropped.
    pub duplicates: usize,
    /// Events removed by the k-core.
    pub kcore_events: usize,
    /// Rounds the k-core took to settle (0 when it had nothing to do or was off).
    pub kcore_rounds: usize,
    /// Events removed by the history cap.
    pub history_events: usize,
    /// Users and items left without events and removed.
    pub users_removed: usize,
    /// See [`FilterReport::users_removed`].
    pub items_removed: usize,
}

/// Applies `f` to `ds`. An empty result is an error naming the filter that emptied it.
pub fn apply(ds: Dataset, f: &Filters) -> Result<(Dataset, FilterReport)> {
    let mut report = FilterReport::default();
    let mut keep = vec![true; ds.interactions.len()];
    let emptied = |name: String, ds: &Dataset| Error::FilteredOut { filter: name, events: ds.interactions.len() };
    if f.drop_duplicates {
        report.duplicates = drop_duplicates(&ds.interactions, &mut keep);
    }
    if f.min_user_events > 1 || f.min_item_events > 1 {
        let (events, rounds) = k_core(&ds, &mut keep, f.min_user_events, f.min_item_events);
        report.kcore_events = events;
        report.kcore_rounds = rounds;
        if !keep.contains(&true) {
            let name =
                format!("the k-core (--min-user-events {} --min-item-events {})", f.min_user_events, f.min_item_events);
            return Err(emptied(name, &ds));
        }
    }
    if let Some(cap) = f.max_history {
        if cap == 0 {
            return Err(emptied("--max-history 0".into(), &ds));
        }
        report.history_events = cap_history(&ds, &mut keep, cap);
    }
    let before = (ds.n_users(), ds.n_items());
    let out = compact(ds, &keep);
    report.users_removed = before.0 - out.n_users();
    report.items_removed = before.1 - out.n_items();
    Ok((out, report))
}

fn drop_duplicates(inter: &Interactions, keep: &mut [bool]) -> usize {
    let mut seen = HashSet::with_capacity(inter.len());
    let mut dropped = 0;
    for (e, k) in keep.iter_mut().enumerate() {
        let key = (inter.user[e], inter.item[e], inter.timestamp[e], inter.event[e].as_deref());
        if *k && !seen.insert(key) {
            *k = false;
            dropped += 1;
        }
    }
    dropped
}

/// Removes events until every user has `min_user` kept events and every item `min_item`; returns (events removed,
/// rounds).
fn k_core(ds: &Dataset, keep: &mut [bool], min_user: usize, min_item: usize) -> (usize, usize) {
    let inter = &ds.interactions;
    let mut removed = 0;
    let mut rounds = 0;
    loop {
        let mut per_user = vec![0usize; ds.n_users()];
        let mut per_item = vec![0usize; ds.n_items()];
        for e in (0..inter.len()).filter(|&e| keep[e]) {
            per_user[inter.user[e] as usize] += 1;
            per_item[inter.item[e] as usize] += 1;
        }
        let mut changed = 0;
        for (e, k) in keep.iter_mut().enumerate() {
            if *k && (per_user[inter.user[e] as usize] < min_user || per_item[inter.item[e] as usize] < min_item) {
                *k = false;
                changed += 1;
            }
        }
        if changed == 0 {
            return (removed, rounds);
        }
        removed += changed;
        rounds += 1;
    }
}

fn cap_history(ds: &Dataset, keep: &mut [bool], cap: usize) -> usize {
    let inter = &ds.interactions;
    let mut per_user: Vec<Vec<usize>> = vec![Vec::new(); ds.n_users()];
    for e in (0..inter.len()).filter(|&e| keep[e]) {
        per_user[inter.user[e] as usize].push(e);
    }
    let mut removed = 0;
    for events in &mut per_user {
        if events.len() > cap {
            events.sort_by_key(|&e| inter.timestamp[e]); // stable: ties keep file order
            for &e in &events[..events.len() - cap] {
                keep[e] = false;
                removed += 1;
            }
        }
    }
    removed
}

/// The dataset of the kept events, without users and items that have none left.
pub(crate) fn compact(ds: Dataset, keep: &[bool]) -> Dataset {
    let inter = &ds.interactions;
    let mut user_used = vec![false; ds.n_users()];
    let mut item_used = vec![false; ds.n_items()];
    for e in (0..inter.len()).filter(|&e| keep[e]) {
        user_used[inter.user[e] as usize] = true;
        item_used[inter.item[e] as usize] = true;
    }
    let renumber = |used: &[bool]| -> Vec<u32> {
        let mut next = 0u32;
        used.iter()
            .map(|&u| {
                let i = next;
                next += u32::from(u);
                i
            })
            .collect()
    };
    let (user_new, item_new) = (renumber(&user_used), renumber(&item_used));
    let Dataset { name, source, users, items, interactions } = ds;
    let mut out = Interactions::default();
    for (e, event) in interactions.event.into_iter().enumerate() {
        if keep[e] {
            let (u, i) = (interactions.user[e] as usize, interactions.item[e] as usize);
            out.push(user_new[u], item_new[i], interactions.timestamp[e], event);
        }
    }
    let users = users.into_iter().zip(&user_used).filter(|(_, &k)| k).map(|(u, _)| u).collect();
    let items = items.into_iter().zip(&item_used).filter(|(_, &k)| k).map(|(it, _)| it).collect();
    Dataset { name, source, users, items, interactions: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Item;
    use proptest::prelude::*;

    fn dataset(events: &[(u32, u32, i64)], n_users: usize, n_items: usize) -> Dataset {
        let mut interactions = Interactions::default();
        for &(u, i, t) in events {
            interactions.push(u, i, t, None);
        }
        Dataset {
            name: "t".into(),
            source: "test".into(),
            users: (0..n_users).map(|u| format!("u{u}")).collect(),
            items: (0..n_items).map(|i| Item { id: format!("i{i}"), ..Item::default() }).collect(),
            interactions,
        }
    }

    /// The k-core by its definition: the largest sub-log in which every user and item has enough events, found by
    /// removing one violating user or item at a time (the order does not change the fixpoint).
    fn reference_core(events: &[(u32, u32, i64)], min_user: usize, min_item: usize) -> Vec<(u32, u32, i64)> {
        let mut kept: Vec<(u32, u32, i64)> = events.to_vec();
        loop {
            let count = |f: &dyn Fn(&(u32, u32, i64)) -> u32, x: u32| kept.iter().filter(|e| f(e) == x).count();
            let bad = kept.iter().position(|e| count(&|e| e.0, e.0) < min_user || count(&|e| e.1, e.1) < min_item);
            let Some(p) = bad else { return kept };
            let (u, i) = (kept[p].0, kept[p].1);
            let by_user = count(&|e| e.0, u) < min_user;
            kept.retain(|e| if by_user { e.0 != u } else { e.1 != i });
        }
    }

    proptest! {
        #[test]
        fn k_core_matches_the_definition(
            events in prop::collection::vec((0u32..12, 0u32..10, 0i64..50), 0..120),
            min_user in 1usize..5,
            min_item in 1usize..5,
        ) {
            let ds = dataset(&events, 12, 10);
            let f = Filters { min_user_events: min_user, min_item_events: min_item, ..Filters::default() };
            let want = reference_core(&events, min_user, min_item);
            match apply(ds, &f) {
                Ok((out, report)) => {
                    let got: Vec<(String, String, i64)> = (0..out.interactions.len())
                        .map(|e| {
                            let x = &out.interactions;
                            (out.users[x.user[e] as usize].clone(), out.items[x.item[e] as usize].id.clone(), x.timestamp[e])
                        })
                        .collect();
                    let want: Vec<(String, String, i64)> =
                        want.iter().map(|&(u, i, t)| (format!("u{u}"), format!("i{i}"), t)).collect();
                    prop_assert_eq!(&got, &want);
                    prop_assert_eq!(report.kcore_events, events.len() - want.len());
                    prop_assert!(out.users.iter().all(|u| got.iter().any(|g| &g.0 == u)), "no user without events");
                }
                Err(Error::FilteredOut { filter, .. }) => {
                    prop_assert!(want.is_empty(), "emptied but the reference keeps {}", want.len());
                    prop_assert!(filter.contains("k-core"));
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn history_cap_keeps_each_users_latest(
            events in prop::collection::vec((0u32..5, 0u32..6, 0i64..8), 1..60),
            cap in 1usize..6,
        ) {
            let ds = dataset(&events, 5, 6);
            let (out, _) = apply(ds, &Filters { max_history: Some(cap), ..Filters::default() }).unwrap();
            for (u, name) in out.users.iter().enumerate() {
                let mut theirs: Vec<(i64, usize)> =
                    events.iter().enumerate().filter(|(_, e)| format!("u{}", e.0) == *name).map(|(n, e)| (e.2, n)).collect();
                theirs.sort();
                let kept: Vec<(i64, usize)> = theirs[theirs.len().saturating_sub(cap)..].to_vec();
                let got: Vec<i64> =
                    (0..out.interactions.len()).filter(|&e| out.interactions.user[e] as usize == u).map(|e| out.interactions.timestamp[e]).collect();
                let mut want: Vec<(usize, i64)> = kept.iter().map(|&(t, n)| (n, t)).collect();
                want.sort();
                prop_assert_eq!(got, want.into_iter().map(|(_, t)| t).collect::<Vec<_>>(), "file order kept");
            }
        }
    }

    #[test]
    fn duplicates_are_dropped_once_and_the_first_is_kept() {
        let ds = dataset(&[(0, 0, 1), (0, 0, 1), (0, 1, 1), (0, 0, 2), (1, 0, 1)], 2, 2);
        let (out, r) = apply(ds, &Filters { drop_duplicates: true, ..Filters::default() }).unwrap();
        assert_eq!(r.duplicates, 1);
        assert_eq!(out.interactions.len(), 4);
        assert_eq!(out.interactions.timestamp, vec![1, 1, 2, 1]);
    }

    #[test]
    fn a_filter_that_empties_the_log_is_named() {
        let ds = dataset(&[(0, 0, 1), (1, 1, 1)], 2, 2);
        let f = Filters { min_user_events: 5, ..Filters::default() };
        let e = apply(ds, &f).unwrap_err().to_string();
        assert!(e.contains("--min-user-events 5"), "{e}");
    }
}
