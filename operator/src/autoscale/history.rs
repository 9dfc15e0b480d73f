//! [`LagHistory`]: the one conversion of the broker's lag reading into the autoscaler's
//! [`LagSnapshot`] (pure; used by both runtimes). The broker reports levels (pending,
//! unacknowledged, ack floor); the autoscaler also wants rates (messages processed and failed
//! since the last poll), so the history keeps the previous reading and derives them:
//!
//! - **processed** = how far the ack floors advanced since the previous poll, summed over
//!   partitions. The ack floor is a stream sequence, so gaps (messages removed by retention
//!   or de-duplicated) count too, and messages acknowledged above a floor that has not moved
//!   yet count only once it moves: an approximation that is exact for in-order consumption.
//! - **failed** = the increase of the dead-letter queue's depth since the previous poll
//!   (messages that used up their attempts) plus the messages currently being retried
//!   (JetStream redeliveries not yet acknowledged). The second term is a level, not a rate:
//!   a message waiting out a long backoff counts on every poll it waits. That biases the
//!   failure ratio towards "failures dominate", i.e. towards *not* scaling up while a
//!   dependency is failing, which is the safe direction.
//!
//! The first reading (and the first after a partition's ack floor went backwards, i.e. its
//! consumer was re-created) has no previous value and counts nothing processed or
//! dead-lettered.

use std::collections::BTreeMap;

use sluice_broker::GroupLag;
use sluice_broker::config::Ordering;

use super::{LagSnapshot, PartitionSample};

/// What the previous poll of a group measured, to derive processed and failed counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagHistory {
    ack_floors: BTreeMap<u32, u64>,
    dlq_depth: Option<u64>,
}

impl LagHistory {
    /// The snapshot of one lag reading (see the module doc for how processed and failed are
    /// derived), remembering it for the next call. `dlq_depth` is the depth of the group's
    /// dead-letter queue, `None` when it has none.
    pub fn snapshot(
        &mut self,
        lag: &GroupLag,
        partitions: u32,
        ordering: Ordering,
        dlq_depth: Option<u64>,
    ) -> LagSnapshot {
        let mut processed = 0u64;
        let mut retrying = 0u64;
        let mut samples = Vec::with_capacity(lag.partitions.len());
        for p in &lag.partitions {
            if let Some(prev) = self.ack_floors.get(&p.partition) {
                processed = processed.saturating_add(p.acked_offset.saturating_sub(*prev));
            }
            self.ack_floors.insert(p.partition, p.acked_offset);
            retrying = retrying.saturating_add(p.retrying);
            samples.push(PartitionSample {
                partition: p.partition,
                pending: p.pending,
                unacked: p.ack_pending,
                backoff_waiting: p.retrying,
                ack_floor: p.acked_offset,
                delivered: p.delivered_offset,
            });
        }
        let dead_lettered = match (self.dlq_depth, dlq_depth) {
            (Some(prev), Some(now)) => now.saturating_sub(prev),
            _ => 0,
        };
        self.dlq_depth = dlq_depth;
        LagSnapshot {
            partitions,
            ordering,
            samples,
            processed,
            failed: dead_lettered.saturating_add(retrying),
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_broker::PartitionLag;

    use super::*;

    fn part(
        partition: u32,
        pending: u64,
        ack_pending: u64,
        retrying: u64,
        acked: u64,
    ) -> PartitionLag {
        PartitionLag {
            partition,
            pending,
            ack_pending,
            retrying,
            acked_offset: acked,
            delivered_offset: acked + ack_pending,
            acked_deliveries: acked,
        }
    }

    #[test]
    fn snapshot_maps_levels_and_derives_rates() {
        let mut h = LagHistory::default();
        let first = GroupLag {
            partitions: vec![part(0, 10, 2, 1, 100), part(1, 0, 0, 0, 50)],
        };
        let s = h.snapshot(&first, 2, Ordering::Partition, Some(3));
        assert_eq!(s.partitions, 2);
        assert_eq!(s.ordering, Ordering::Partition);
        assert_eq!(
            s.samples[0],
            PartitionSample {
                partition: 0,
                pending: 10,
                unacked: 2,
                backoff_waiting: 1,
                ack_floor: 100,
                delivered: 102,
            }
        );
        assert_eq!(s.processed, 0, "no previous reading");
        assert_eq!(s.failed, 1, "only the retrying message");

        let second = GroupLag {
            partitions: vec![part(0, 4, 2, 0, 130), part(1, 0, 0, 0, 55)],
        };
        let s = h.snapshot(&second, 2, Ordering::Partition, Some(5));
        assert_eq!(s.processed, 35, "ack floors advanced by 30 and 5");
        assert_eq!(
            s.failed, 2,
            "two messages dead-lettered since the last poll"
        );
    }

    #[test]
    fn recreated_consumer_and_drained_dlq_count_nothing() {
        let mut h = LagHistory::default();
        h.snapshot(
            &GroupLag {
                partitions: vec![part(0, 0, 0, 0, 100)],
            },
            1,
            Ordering::None,
            Some(10),
        );
        let s = h.snapshot(
            &GroupLag {
                partitions: vec![part(0, 0, 0, 0, 7)],
            },
            1,
            Ordering::None,
            Some(0),
        );
        assert_eq!(s.processed, 0);
        assert_eq!(s.failed, 0);
        let s = h.snapshot(
            &GroupLag {
                partitions: vec![part(0, 0, 0, 0, 9)],
            },
            1,
            Ordering::None,
            None,
        );
        assert_eq!(
            s.processed, 2,
            "counts from the re-created consumer's floor"
        );
    }
}
