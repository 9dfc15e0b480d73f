//! [`LagSnapshot`]: what the runtime measured on the broker and the workers at one poll.

use sluice_broker::config::Ordering;

/// One partition's lag and progress at the time of the snapshot.
///
/// For a Queue (one shared consumer) the runtime reports a single sample for partition 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionSample {
    /// Partition index.
    pub partition: u32,
    /// Messages not yet delivered to any worker (JetStream `num_pending`).
    pub pending: u64,
    /// Messages delivered but not acknowledged (JetStream `num_ack_pending`), including the
    /// ones counted in `backoff_waiting`.
    pub unacked: u64,
    /// How many of the `unacked` messages are only waiting out a retry backoff. They are not
    /// lag: more replicas would not handle them any sooner. Values above `unacked` are capped.
    pub backoff_waiting: u64,
    /// The acknowledged offset (JetStream ack floor, stream sequence). It advancing is what
    /// "the partition makes progress" means.
    pub ack_floor: u64,
    /// Deliveries so far (JetStream delivered consumer sequence, which counts redeliveries).
    /// It advancing while `ack_floor` stands still means the head message is being retried.
    pub delivered: u64,
}

impl PartitionSample {
    /// Everything outstanding: `pending + unacked`.
    pub fn total_lag(&self) -> u64 {
        self.pending.saturating_add(self.unacked)
    }

    /// Messages only waiting out a backoff (never more than `unacked`).
    pub fn backoff(&self) -> u64 {
        self.backoff_waiting.min(self.unacked)
    }

    /// Lag that more replicas could work on: `pending + unacked - backoff`.
    pub fn effective_lag(&self) -> u64 {
        self.total_lag() - self.backoff()
    }
}

/// One poll's worth of measurements of a consumer group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LagSnapshot {
    /// Partitions of the source (1 for a Queue).
    pub partitions: u32,
    /// Ordering of the group; `Partition` caps replicas at `partitions`.
    pub ordering: Ordering,
    /// Per-partition lag and progress. Partitions missing here count as having no lag.
    pub samples: Vec<PartitionSample>,
    /// Messages handled successfully by the group since the previous snapshot.
    pub processed: u64,
    /// Failed handling attempts since the previous snapshot: retries plus dead-letters.
    pub failed: u64,
}

impl LagSnapshot {
    /// A snapshot of `partitions` partitions with the given ordering and no lag.
    pub fn new(partitions: u32, ordering: Ordering) -> Self {
        Self {
            partitions,
            ordering,
            ..Default::default()
        }
    }

    /// Sum of `pending + unacked` over all partitions.
    pub fn total_lag(&self) -> u64 {
        self.samples.iter().map(PartitionSample::total_lag).sum()
    }
}
