//! The ConsumerGroup's `autoscaling` block and the broker's lag, in the autoscaler's terms
//! (pure; shared by the Kubernetes runtime and `sluice dev`).
//!
//! - [`autoscale_policy`] maps [`AutoscalingSpec`] onto [`AutoscalePolicy`], applying the
//!   documented defaults and checking what the schema cannot.
//! - [`LagHistory::snapshot`] turns one [`GroupLag`] reading into a [`LagSnapshot`]. The
//!   broker reports levels (pending, unacknowledged, ack floor); the autoscaler also wants
//!   rates (messages processed and failed since the last poll), so the history keeps the
//!   previous reading and derives them:
//!   - **processed** = how far the ack floors advanced since the previous poll, summed over
//!     partitions. The ack floor is a stream sequence, so gaps (messages removed by retention
//!     or de-duplicated) count too, and messages acknowledged above a floor that has not moved
//!     yet count only once it moves: an approximation that is exact for in-order consumption.
//!   - **failed** = the increase of the dead-letter queue's depth since the previous poll
//!     (messages that used up their attempts) plus the messages currently being retried
//!     (JetStream redeliveries not yet acknowledged). The second term is a level, not a rate:
//!     a message waiting out a long backoff counts on every poll it waits. That biases the
//!     failure ratio towards "failures dominate", i.e. towards *not* scaling up while a
//!     dependency is failing, which is the safe direction.
//!
//!   The first reading (and the first after a partition's ack floor went backwards, i.e. its
//!   consumer was re-created) has no previous value and counts nothing processed or
//!   dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_broker::GroupLag;
use sluice_broker::config::Ordering;

use crate::autoscale::{AutoscalePolicy, LagSnapshot, PartitionSample, ScaleUpLimit};
use crate::crd::InvalidField;
use crate::crd::common::DurationString;
use crate::crd::group::AutoscalingSpec;

/// Lag one replica is expected to keep up with when `targetLagPerReplica` is unset.
pub const DEFAULT_TARGET_LAG_PER_REPLICA: u64 = 100;
/// Scale-down stabilization when `scaleDownStabilization` is unset.
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(300);
/// Poll interval when `pollInterval` is unset.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Idle time before scaling to zero when `idleBeforeZero` is unset.
pub const DEFAULT_IDLE_BEFORE_ZERO: Duration = Duration::from_secs(300);

/// The autoscaler policy of a group's `autoscaling` block, with the CRD's defaults (see the
/// field docs of [`AutoscalingSpec`]). Fails naming the field when the policy cannot work.
pub fn autoscale_policy(spec: &AutoscalingSpec) -> Result<AutoscalePolicy, InvalidField> {
    let duration = |value: &Option<DurationString>, field: &str, default: Duration| {
        value
            .as_ref()
            .map_or(Ok(default), |d| d.parse(&format!("autoscaling.{field}")))
    };
    let policy = AutoscalePolicy {
        min: spec.min_replicas.unwrap_or(1),
        max: spec.max_replicas,
        target_lag_per_replica: spec
            .target_lag_per_replica
            .unwrap_or(DEFAULT_TARGET_LAG_PER_REPLICA),
        activation_lag: spec.activation_lag.unwrap_or(1),
        scale_up_limit: spec
            .scale_up_limit
            .map_or(ScaleUpLimit::UNLIMITED, |replicas| ScaleUpLimit {
                replicas,
                percent: 0,
            }),
        scale_down_stabilization: duration(
            &spec.scale_down_stabilization,
            "scaleDownStabilization",
            DEFAULT_STABILIZATION,
        )?,
        poll_interval: duration(&spec.poll_interval, "pollInterval", DEFAULT_POLL_INTERVAL)?,
        scale_to_zero: spec.scale_to_zero.unwrap_or(false),
        idle_before_zero: duration(
            &spec.idle_before_zero,
            "idleBeforeZero",
            DEFAULT_IDLE_BEFORE_ZERO,
        )?,
        ..AutoscalePolicy::default()
    };
    policy
        .validate()
        .map_err(|e| InvalidField::new("autoscaling", e.to_string()))?;
    Ok(policy)
}

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

    fn spec(yaml: &str) -> AutoscalingSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_follow_the_crd_docs() {
        let p = autoscale_policy(&spec("maxReplicas: 8")).unwrap();
        assert_eq!(p.min, 1);
        assert_eq!(p.max, 8);
        assert_eq!(p.target_lag_per_replica, 100);
        assert_eq!(p.activation_lag, 1);
        assert_eq!(p.scale_up_limit, ScaleUpLimit::UNLIMITED);
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(300));
        assert_eq!(p.poll_interval, Duration::from_secs(5));
        assert!(!p.scale_to_zero);
        assert_eq!(p.idle_before_zero, Duration::from_secs(300));
    }

    #[test]
    fn every_field_maps() {
        let p = autoscale_policy(&spec(
            "minReplicas: 2\nmaxReplicas: 20\ntargetLagPerReplica: 50\nactivationLag: 10\n\
             scaleUpLimit: 3\nscaleDownStabilization: 1m\npollInterval: 2s\nscaleToZero: true\n\
             idleBeforeZero: 90s\n",
        ))
        .unwrap();
        assert_eq!((p.min, p.max), (2, 20));
        assert_eq!(p.target_lag_per_replica, 50);
        assert_eq!(p.activation_lag, 10);
        assert_eq!(
            p.scale_up_limit,
            ScaleUpLimit {
                replicas: 3,
                percent: 0
            }
        );
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(60));
        assert_eq!(p.poll_interval, Duration::from_secs(2));
        assert!(p.scale_to_zero);
        assert_eq!(p.idle_before_zero, Duration::from_secs(90));
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let err = autoscale_policy(&spec("minReplicas: 5\nmaxReplicas: 2")).unwrap_err();
        assert!(err.to_string().contains("min (5)"), "{err}");
        let err = autoscale_policy(&spec("maxReplicas: 2\npollInterval: soon")).unwrap_err();
        assert!(
            err.to_string().contains("autoscaling.pollInterval"),
            "{err}"
        );
        let err = autoscale_policy(&spec("maxReplicas: 2\npollInterval: 0s")).unwrap_err();
        assert!(err.to_string().contains("pollInterval"), "{err}");
    }

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
