//! The broker side of autoscaling, shared by the Kubernetes runtime and `sluice dev`:
//! [`BrokerLagSource`] turns a group's consumer info into the autoscaler's [`LagSnapshot`].
//!
//! What JetStream tells and what Sluice derives from it, per partition:
//! - `pending` = `num_pending`, `unacked` = `num_ack_pending`, `ack_floor` and `delivered` as
//!   reported by the consumer's leader;
//! - `backoff_waiting` = `num_redelivered`: unacknowledged messages delivered more than once.
//!   JetStream does not say which of them are waiting out a backoff right now and which are
//!   being handled again; most of the time they wait, so they are not counted as lag.
//!
//! For the failure ratio, since the previous snapshot: `processed` = how far the ack floors
//! advanced, minus messages dead-lettered; `failed` = messages dead-lettered plus the growth of
//! the redelivered count. These are estimates from broker state alone (workers need no
//! metrics endpoint for them), good enough to tell "mostly failing" from "mostly working".

use std::sync::Mutex;

use sluice_broker::{Broker, GroupConfig, GroupLag, ResourceRef};

use crate::autoscale::{LagSnapshot, LagSource, PartitionSample};

/// Counters of the previous snapshot.
#[derive(Debug, Clone, Default)]
struct Previous {
    ack_floors: Vec<u64>,
    retrying: u64,
    dlq_depth: u64,
}

/// Takes [`LagSnapshot`]s of one group from the broker.
#[derive(Debug)]
pub struct BrokerLagSource {
    broker: Broker,
    config: GroupConfig,
    dlq: Option<ResourceRef>,
    previous: Mutex<Option<Previous>>,
}

impl BrokerLagSource {
    /// A source for the group `config`, whose dead-letter queue (if any) is `dlq`.
    pub fn new(broker: Broker, config: GroupConfig) -> Self {
        let dlq = config
            .dead_letter
            .as_ref()
            .and_then(|name| ResourceRef::new(config.namespace.clone(), name.clone()).ok());
        Self {
            broker,
            config,
            dlq,
            previous: Mutex::new(None),
        }
    }

    /// Replaces the group config (it changed), keeping the counters.
    pub fn set_config(&mut self, config: GroupConfig) {
        self.dlq = config
            .dead_letter
            .as_ref()
            .and_then(|name| ResourceRef::new(config.namespace.clone(), name.clone()).ok());
        self.config = config;
    }

    /// The group config.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }
}

/// Builds a snapshot from lag figures and the previous counters (pure).
fn snapshot_from(
    config: &GroupConfig,
    lag: &GroupLag,
    dlq_depth: u64,
    previous: Option<&Previous>,
) -> (LagSnapshot, Previous) {
    let mut snapshot = LagSnapshot::new(config.source.partitions, config.ordering);
    snapshot.samples = lag
        .partitions
        .iter()
        .map(|p| PartitionSample {
            partition: p.partition,
            pending: p.pending,
            unacked: p.ack_pending,
            backoff_waiting: p.retrying,
            ack_floor: p.acked_offset,
            delivered: p.delivered_offset,
        })
        .collect();
    let now = Previous {
        ack_floors: lag.partitions.iter().map(|p| p.acked_offset).collect(),
        retrying: lag.partitions.iter().map(|p| p.retrying).sum(),
        dlq_depth,
    };
    if let Some(prev) = previous {
        let advanced: u64 = now
            .ack_floors
            .iter()
            .enumerate()
            .map(|(i, floor)| floor.saturating_sub(prev.ack_floors.get(i).copied().unwrap_or(0)))
            .sum();
        let dead_lettered = now.dlq_depth.saturating_sub(prev.dlq_depth);
        snapshot.processed = advanced.saturating_sub(dead_lettered);
        snapshot.failed = dead_lettered + now.retrying.saturating_sub(prev.retrying);
    }
    (snapshot, now)
}

impl LagSource for BrokerLagSource {
    type Error = sluice_broker::Error;

    async fn snapshot(&self) -> Result<LagSnapshot, Self::Error> {
        let lag = self.broker.group_lag(&self.config).await?;
        let dlq_depth = match &self.dlq {
            Some(dlq) => self
                .broker
                .dlq_status(dlq)
                .await
                .map(|s| s.depth)
                .unwrap_or(0),
            None => 0,
        };
        let previous = self.previous.lock().ok().and_then(|p| p.clone());
        let (snapshot, now) = snapshot_from(&self.config, &lag, dlq_depth, previous.as_ref());
        if let Ok(mut slot) = self.previous.lock() {
            *slot = Some(now);
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::PartitionLag;
    use sluice_broker::config::{SourceKind, SourceRef};

    fn config() -> GroupConfig {
        GroupConfig::new(
            "default",
            "g",
            SourceRef {
                kind: SourceKind::Topic,
                name: "t".into(),
                partitions: 2,
            },
        )
    }

    fn lag(floors: [u64; 2], retrying: u64) -> GroupLag {
        GroupLag {
            partitions: (0..2)
                .map(|p| PartitionLag {
                    partition: p,
                    pending: 10,
                    ack_pending: 3,
                    retrying: if p == 0 { retrying } else { 0 },
                    acked_offset: floors[p as usize],
                    delivered_offset: floors[p as usize] + 3,
                })
                .collect(),
        }
    }

    #[test]
    fn first_snapshot_has_no_rates_then_deltas_count() {
        let cfg = config();
        let (first, prev) = snapshot_from(&cfg, &lag([5, 5], 0), 0, None);
        assert_eq!((first.processed, first.failed), (0, 0));
        assert_eq!(first.total_lag(), 26);
        assert_eq!(first.samples[0].backoff_waiting, 0);

        let (second, _) = snapshot_from(&cfg, &lag([12, 9], 2), 1, Some(&prev));
        // Floors advanced 7 + 4 = 11, of which 1 was dead-lettered.
        assert_eq!(second.processed, 10);
        // One dead-letter plus two more messages being retried.
        assert_eq!(second.failed, 3);
        assert_eq!(second.samples[0].backoff_waiting, 2);
    }
}
