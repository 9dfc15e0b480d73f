//! [`Observe`]: turns the status a reconcile just computed into the object's readings in
//! [`ObjectMetrics`]. The runtime calls it for every kind right before writing status, so the
//! metrics show exactly what status shows, without a second read of the broker.
//!
//! Readiness is always recorded; the readings only when the object is Ready, or for a group
//! provisioned whose workers are unavailable (a failed reconcile keeps the previous status,
//! which is not a fresh reading: its series age out).

use humantime::parse_duration;

use super::objects::{
    BrokerReading, DlqReading, GroupPartitionReading, GroupReading, Kind, ObjectMetrics,
    QueueReading, QueueSourceReading, TopicPartitionReading,
};
use crate::controller::conditions::{READY, WORKERS_UNAVAILABLE, get, is_true};
use crate::controller::ns_name;
use crate::crd::{
    Broker, BrokerStatus, ConsumerGroup, ConsumerGroupStatus, DeadLetterQueue,
    DeadLetterQueueStatus, Queue, QueueStatus, Topic, TopicStatus,
};

/// A kind whose reconciled status feeds the metrics.
pub trait Observe {
    /// The status its reconcile computes.
    type Status: serde::Serialize + Send;

    /// Records `status`, just computed for `self`, in `metrics`.
    fn observe(&self, status: &Self::Status, metrics: &ObjectMetrics);
}

impl Observe for Topic {
    type Status = TopicStatus;

    fn observe(&self, status: &TopicStatus, metrics: &ObjectMetrics) {
        let key = ns_name(self);
        let ready = is_true(&status.conditions, READY);
        metrics.ready(Kind::Topic, &key, ready);
        if ready {
            let partitions = status
                .partitions
                .iter()
                .map(|p| TopicPartitionReading {
                    partition: p.partition,
                    first_offset: p.first_offset,
                    last_offset: p.last_offset,
                    messages: p.messages,
                    bytes: p.bytes,
                })
                .collect();
            metrics.topic(&key, partitions);
        }
    }
}

impl Observe for Queue {
    type Status = QueueStatus;

    fn observe(&self, status: &QueueStatus, metrics: &ObjectMetrics) {
        let key = ns_name(self);
        let ready = is_true(&status.conditions, READY);
        metrics.ready(Kind::Queue, &key, ready);
        if ready {
            let sources = status
                .sources
                .iter()
                .map(|s| QueueSourceReading {
                    topic: s.topic.clone(),
                    partition: s.partition,
                    pending: s.pending,
                })
                .collect();
            metrics.queue(
                &key,
                QueueReading {
                    messages: status.messages.unwrap_or(0),
                    sources,
                },
            );
        }
    }
}

impl Observe for DeadLetterQueue {
    type Status = DeadLetterQueueStatus;

    fn observe(&self, status: &DeadLetterQueueStatus, metrics: &ObjectMetrics) {
        let key = ns_name(self);
        let ready = is_true(&status.conditions, READY);
        metrics.ready(Kind::DeadLetterQueue, &key, ready);
        if ready {
            // Status shows the age in whole seconds (`1h 2m 3s`), which is what is exported.
            let oldest_age_seconds = status
                .oldest_age
                .as_deref()
                .and_then(|a| parse_duration(a).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            metrics.dlq(
                &key,
                DlqReading {
                    depth: status.depth.unwrap_or(0),
                    oldest_age_seconds,
                    alert_threshold: self.spec.alert_threshold.as_ref().map(|t| t.depth),
                },
            );
        }
    }
}

impl Observe for Broker {
    type Status = BrokerStatus;

    fn observe(&self, status: &BrokerStatus, metrics: &ObjectMetrics) {
        let key = ns_name(self);
        metrics.ready(Kind::Broker, &key, is_true(&status.conditions, READY));
        metrics.broker(
            &key,
            BrokerReading {
                replicas: self.spec.replicas,
                ready_replicas: status.ready_replicas.unwrap_or(0),
            },
        );
    }
}

impl Observe for ConsumerGroup {
    type Status = ConsumerGroupStatus;

    fn observe(&self, status: &ConsumerGroupStatus, metrics: &ObjectMetrics) {
        let key = ns_name(self);
        let ready = is_true(&status.conditions, READY);
        metrics.ready(Kind::ConsumerGroup, &key, ready);
        // Provisioned but its workers unavailable: the lag was read this reconcile, and it
        // is the reading that matters most then.
        let measured = ready
            || get(&status.conditions, READY).is_some_and(|c| c.reason == WORKERS_UNAVAILABLE);
        if measured {
            let partitions = status
                .partitions
                .iter()
                .map(|p| GroupPartitionReading {
                    partition: p.partition,
                    pending: p.pending,
                    in_flight: p.ack_pending,
                    retrying: p.waiting_backoff,
                })
                .collect();
            metrics.group(
                &key,
                GroupReading {
                    partitions,
                    replicas: status.replicas,
                    ready_replicas: status.ready_replicas,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn encode(m: &Arc<ObjectMetrics>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn dlq(yaml: &str) -> DeadLetterQueue {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_ready_dlq_exports_depth_age_and_threshold() {
        let obj = dlq(
            "apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: orders-dlq, namespace: shop}\nspec: {broker: main, alertThreshold: {depth: 10}}\n",
        );
        let status: DeadLetterQueueStatus = serde_yaml::from_str(
            "conditions: [{type: Ready, status: 'True', reason: Ready, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}]\ndepth: 12\noldestAge: 1m 5s\n",
        )
        .unwrap();
        let m = Arc::new(ObjectMetrics::default());
        obj.observe(&status, &m);
        let text = encode(&m);
        for line in [
            "sluice_dlq_depth_messages{namespace=\"shop\",name=\"orders-dlq\"} 12",
            "sluice_dlq_oldest_message_age_seconds{namespace=\"shop\",name=\"orders-dlq\"} 65.0",
            "sluice_dlq_alert_threshold_messages{namespace=\"shop\",name=\"orders-dlq\"} 10",
            "sluice_resource_ready{kind=\"DeadLetterQueue\",namespace=\"shop\",name=\"orders-dlq\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_failing_object_exports_readiness_only() {
        let obj = dlq(
            "apiVersion: sluice.dev/v1alpha1\nkind: DeadLetterQueue\nmetadata: {name: orders-dlq, namespace: shop}\nspec: {broker: main}\n",
        );
        let status: DeadLetterQueueStatus = serde_yaml::from_str(
            "conditions: [{type: Ready, status: 'False', reason: BrokerUnavailable, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}]\ndepth: 12\n",
        )
        .unwrap();
        let m = Arc::new(ObjectMetrics::default());
        obj.observe(&status, &m);
        let text = encode(&m);
        assert!(
            text.contains("sluice_resource_ready{kind=\"DeadLetterQueue\",namespace=\"shop\",name=\"orders-dlq\"} 0"),
            "{text}"
        );
        assert!(!text.contains("sluice_dlq_depth_messages{"), "{text}");
    }
}
