//! Assertions over the members' [`Record`]s, and an observer that counts worker events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sluice_worker::{Event, MessageEvent, Observer};

use crate::member::Record;

/// Asserts no two members ever handled the same partition at overlapping times.
pub fn assert_no_overlap(records: &[Record]) {
    let mut by_p: BTreeMap<u32, Vec<&Record>> = Default::default();
    for r in records {
        by_p.entry(r.partition).or_default().push(r);
    }
    let mut overlaps = 0;
    for (p, mut rs) in by_p {
        rs.sort_by_key(|r| r.start);
        for w in rs.windows(2) {
            if w[0].member != w[1].member && w[1].start < w[0].end {
                overlaps += 1;
                eprintln!("overlap on partition {p}: {:?} and {:?}", w[0], w[1]);
            }
        }
    }
    assert_eq!(overlaps, 0, "partitions handled by two members at once");
}

/// Successful handlings per (partition, offset).
pub fn counts(records: &[Record]) -> BTreeMap<(u32, u64), usize> {
    let mut c = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        *c.entry((r.partition, r.offset)).or_insert(0) += 1;
    }
    c
}

/// Successful handlings per payload.
pub fn ok_by_payload(records: &[Record]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        *c.entry(r.payload.clone()).or_insert(0) += 1;
    }
    c
}

/// An observer that counts events by kind.
#[derive(Debug, Default)]
pub struct EventCounter(pub Mutex<HashMap<Event, usize>>);

impl EventCounter {
    /// How many events of this kind were seen.
    pub fn get(&self, e: Event) -> usize {
        self.0.lock().unwrap().get(&e).copied().unwrap_or(0)
    }
}

impl Observer for EventCounter {
    fn event(&self, e: &MessageEvent<'_>) {
        *self.0.lock().unwrap().entry(e.event).or_insert(0) += 1;
    }
}
