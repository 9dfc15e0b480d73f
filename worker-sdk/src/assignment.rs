//! Balanced, sticky partition assignment: a pure function every member evaluates on the same
//! inputs (the live members and the current partition owners, both read from KV), so all
//! members agree on the target without a leader.
//!
//! Rules, in order:
//! 1. Every member gets `P / n` or `P / n + 1` partitions (`P % n` members get one more).
//! 2. The members that currently own the most partitions get the larger quotas (ties by id),
//!    and each member keeps as many of its current partitions as its quota allows (lowest
//!    partition numbers first).
//! 3. The remaining partitions go, in ascending order, to members with spare quota, in id
//!    order.
//!
//! So a join moves only the partitions the newcomer needs, and a leave moves only the
//! leaver's partitions: the minimum any balanced assignment must move.

use std::collections::{BTreeMap, BTreeSet};

/// Computes the target owner of each partition `0..partitions`.
///
/// `current` maps partitions to their present owners; owners that are not in `members` are
/// ignored (their partitions are up for grabs). Returns an empty map when there are no members.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use sluice_worker::assignment::{assign, partitions_of};
/// let members: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
/// let target = assign(4, &members, &BTreeMap::new());
/// assert_eq!(partitions_of(&target, "a").len(), 2);
/// assert_eq!(partitions_of(&target, "b").len(), 2);
/// ```
pub fn assign(
    partitions: u32,
    members: &BTreeSet<String>,
    current: &BTreeMap<u32, String>,
) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let n = members.len() as u32;
    if n == 0 || partitions == 0 {
        return out;
    }
    let base = partitions / n;
    let extra = partitions % n;

    let mut kept: BTreeMap<&str, Vec<u32>> = members.iter().map(|m| (m.as_str(), vec![])).collect();
    for (&p, owner) in current {
        if p < partitions
            && let Some(list) = kept.get_mut(owner.as_str())
        {
            list.push(p);
        }
    }
    // Members owning the most get the larger quotas; ties go to the smaller id.
    let mut by_load: Vec<(&str, usize)> = kept.iter().map(|(m, l)| (*m, l.len())).collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut quota: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, (m, _)) in by_load.iter().enumerate() {
        quota.insert(m, base + u32::from((i as u32) < extra));
    }
    for (m, list) in &kept {
        let q = quota.get(m).copied().unwrap_or(base) as usize;
        for &p in list.iter().take(q) {
            out.insert(p, (*m).to_string());
        }
    }
    let mut spare: Vec<(&str, u32)> = members
        .iter()
        .map(|m| {
            let m = m.as_str();
            let have = out.values().filter(|o| o.as_str() == m).count() as u32;
            (
                m,
                quota.get(m).copied().unwrap_or(base).saturating_sub(have),
            )
        })
        .collect();
    for p in 0..partitions {
        if out.contains_key(&p) {
            continue;
        }
        if let Some(slot) = spare.iter_mut().find(|(_, s)| *s > 0) {
            slot.1 -= 1;
            out.insert(p, slot.0.to_string());
        }
    }
    out
}

/// The partitions `member` owns in `assignment`, ascending.
///
/// ```
/// use std::collections::BTreeMap;
/// let assignment = BTreeMap::from([(0, "a".to_string()), (1, "b".to_string()), (2, "a".to_string())]);
/// let mine: Vec<u32> = sluice_worker::assignment::partitions_of(&assignment, "a").into_iter().collect();
/// assert_eq!(mine, vec![0, 2]);
/// ```
pub fn partitions_of(assignment: &BTreeMap<u32, String>, member: &str) -> BTreeSet<u32> {
    assignment
        .iter()
        .filter(|(_, m)| m.as_str() == member)
        .map(|(p, _)| *p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ms: &[&str]) -> BTreeSet<String> {
        ms.iter().map(|s| s.to_string()).collect()
    }

    fn counts(a: &BTreeMap<u32, String>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for m in a.values() {
            *c.entry(m.clone()).or_insert(0) += 1;
        }
        c
    }

    fn moved(a: &BTreeMap<u32, String>, b: &BTreeMap<u32, String>) -> usize {
        b.iter().filter(|(p, m)| a.get(p) != Some(m)).count()
    }

    #[test]
    fn single_member_takes_everything() {
        let a = assign(4, &set(&["a"]), &BTreeMap::new());
        assert_eq!(partitions_of(&a, "a"), (0..4).collect());
        assert!(assign(4, &set(&[]), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn join_moves_only_what_the_newcomer_needs() {
        let a = assign(6, &set(&["a", "b"]), &BTreeMap::new());
        let b = assign(6, &set(&["a", "b", "c"]), &a);
        assert_eq!(moved(&a, &b), 2);
        assert_eq!(partitions_of(&b, "c").len(), 2);
    }

    #[test]
    fn leave_moves_only_the_leavers_partitions() {
        let a = assign(7, &set(&["a", "b", "c"]), &BTreeMap::new());
        let b = assign(7, &set(&["a", "c"]), &a);
        let lost = partitions_of(&a, "b").len();
        assert_eq!(moved(&a, &b), lost);
    }

    proptest! {
        #[test]
        fn balanced_complete_and_minimal(
            partitions in 1u32..40,
            before in prop::collection::btree_set("[a-f]", 1..6),
            after in prop::collection::btree_set("[a-f]", 1..6),
        ) {
            let a = assign(partitions, &before, &BTreeMap::new());
            let b = assign(partitions, &after, &a);
            // complete
            prop_assert_eq!(b.len() as u32, partitions);
            // balanced
            let c = counts(&b);
            let lo = partitions / after.len() as u32;
            for m in &after {
                let k = c.get(m).copied().unwrap_or(0) as u32;
                prop_assert!(k == lo || k == lo + 1, "{m} has {k}");
            }
            // minimal: a member only loses partitions beyond its new quota, and partitions
            // of departed members always move.
            let n = after.len() as u32;
            let ceil = partitions.div_ceil(n) as usize;
            let mut min_moves = 0usize;
            let before_counts = counts(&a);
            let mut surplus_kept = Vec::new();
            for (m, k) in &before_counts {
                if after.contains(m) {
                    surplus_kept.push(*k);
                } else {
                    min_moves += k;
                }
            }
            // Survivors keep up to their quota; the biggest `extra` ones may keep ceil.
            surplus_kept.sort_unstable_by(|x, y| y.cmp(x));
            let extra = (partitions % n) as usize;
            for (i, k) in surplus_kept.iter().enumerate() {
                let q = if i < extra { ceil } else { (partitions / n) as usize };
                min_moves += k.saturating_sub(q);
            }
            prop_assert_eq!(moved(&a, &b), min_moves);
            // stable: the same inputs give the same output
            prop_assert_eq!(assign(partitions, &after, &b), b.clone());
        }
    }
}
