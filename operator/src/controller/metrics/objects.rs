//! [`ObjectMetrics`]: what the operator last read from the broker (and decided) about each
//! Sluice object, served as Prometheus gauges under `sluice_`.
//!
//! Readings are kept per object, `(namespace, name)`, with the time they were taken, and
//! encoded on each scrape by a [`Collector`]: a family lists only objects read within
//! [`ObjectMetrics::stale_after`]. So the series of a deleted object (or of one whose broker
//! stopped answering) disappear by themselves, also for objects without a finalizer, whose
//! deletion the operator is never told about; a deleted ConsumerGroup's series go at once
//! ([`ObjectMetrics::forget`]).
//!
//! **Cardinality.** One series per object and family, times the partition count for the
//! per-partition families (a topic's partitions, a group's source partitions, a queue's source
//! partitions), times the few values of a static label (`direction`, `reason`, `kind`). No
//! label carries a message, an error text or a member id.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// An object's namespace and name.
pub type ObjectKey = (String, String);

/// Default of [`ObjectMetrics::stale_after`].
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

/// The kinds whose readiness is exported (`sluice_resource_ready{kind=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A Broker.
    Broker,
    /// A Topic.
    Topic,
    /// A Queue.
    Queue,
    /// A DeadLetterQueue.
    DeadLetterQueue,
    /// A ConsumerGroup.
    ConsumerGroup,
}

impl Kind {
    /// The kind's name, as in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Broker => "Broker",
            Kind::Topic => "Topic",
            Kind::Queue => "Queue",
            Kind::DeadLetterQueue => "DeadLetterQueue",
            Kind::ConsumerGroup => "ConsumerGroup",
        }
    }
}

/// A Broker's servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerReading {
    /// Servers asked for (`spec.replicas`).
    pub replicas: u32,
    /// Servers ready.
    pub ready_replicas: i32,
}

/// One partition of a Topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPartitionReading {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub first_offset: u64,
    /// Last offset written (the stream's last sequence).
    pub last_offset: u64,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// One source partition of a Queue (fan-out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSourceReading {
    /// Source topic.
    pub topic: String,
    /// Partition of the source topic.
    pub partition: u32,
    /// Messages of that partition the queue has not received yet.
    pub pending: u64,
}

/// A Queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueReading {
    /// Messages waiting in the queue.
    pub messages: u64,
    /// Fan-out progress per source partition.
    pub sources: Vec<QueueSourceReading>,
}

/// A DeadLetterQueue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DlqReading {
    /// Dead letters waiting.
    pub depth: u64,
    /// Age of the oldest one (0 when empty).
    pub oldest_age_seconds: f64,
    /// `spec.alertThreshold.depth`, when set.
    pub alert_threshold: Option<u64>,
}

/// A ConsumerGroup on one partition of its source (partition 0 for a queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPartitionReading {
    /// Partition number.
    pub partition: u32,
    /// Not yet delivered to the group.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub in_flight: u64,
    /// Unacknowledged and delivered more than once (mostly waiting out a backoff).
    pub retrying: u64,
}

/// A ConsumerGroup as its reconcile saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupReading {
    /// Lag per partition.
    pub partitions: Vec<GroupPartitionReading>,
    /// The worker Deployment's `spec.replicas`, when the group has one.
    pub replicas: Option<i32>,
    /// Its ready pods.
    pub ready_replicas: Option<i32>,
}

/// The autoscaler's last decision for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionReading {
    /// The lag the decision acted on.
    pub effective_lag: u64,
    /// Replicas wanted.
    pub desired: u32,
    /// Static reason code (`ScaleReason::code`).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
struct ScaleCounts {
    up: u64,
    down: u64,
}

#[derive(Debug)]
struct Stamped<T> {
    at: Instant,
    value: T,
}

impl<T> Stamped<T> {
    fn now(value: T, at: Instant) -> Self {
        Self { at, value }
    }
}

type Readings<T> = BTreeMap<ObjectKey, Stamped<T>>;

#[derive(Debug, Default)]
struct State {
    ready: BTreeMap<(Kind, ObjectKey), Stamped<bool>>,
    brokers: Readings<BrokerReading>,
    topics: Readings<Vec<TopicPartitionReading>>,
    queues: Readings<QueueReading>,
    dlqs: Readings<DlqReading>,
    groups: Readings<GroupReading>,
    decisions: Readings<DecisionReading>,
    scales: Readings<ScaleCounts>,
}

impl State {
    fn expire(&mut self, now: Instant, stale_after: Duration) {
        fn keep<K: Ord, T>(map: &mut BTreeMap<K, Stamped<T>>, now: Instant, max: Duration) {
            map.retain(|_, s| now.saturating_duration_since(s.at) <= max);
        }
        keep(&mut self.ready, now, stale_after);
        keep(&mut self.brokers, now, stale_after);
        keep(&mut self.topics, now, stale_after);
        keep(&mut self.queues, now, stale_after);
        keep(&mut self.dlqs, now, stale_after);
        keep(&mut self.groups, now, stale_after);
        keep(&mut self.decisions, now, stale_after);
        keep(&mut self.scales, now, stale_after);
    }
}

/// The per-object readings; see the [module doc](self).
#[derive(Debug)]
pub struct ObjectMetrics {
    state: Mutex<State>,
    stale_after: Duration,
}

impl Default for ObjectMetrics {
    fn default() -> Self {
        Self::new(DEFAULT_STALE_AFTER)
    }
}

impl ObjectMetrics {
    /// Readings older than `stale_after` are not exported any more.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            state: Mutex::default(),
            stale_after,
        }
    }

    /// How long a reading is exported after it was taken.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Records whether an object is Ready.
    pub fn ready(&self, kind: Kind, key: &ObjectKey, ready: bool) {
        let now = Instant::now();
        self.with(|s| {
            s.ready
                .insert((kind, key.clone()), Stamped::now(ready, now));
        });
    }

    /// Records a Broker.
    pub fn broker(&self, key: &ObjectKey, reading: BrokerReading) {
        let now = Instant::now();
        self.with(|s| {
            s.brokers.insert(key.clone(), Stamped::now(reading, now));
        });
    }

    /// Records a Topic's partitions.
    pub fn topic(&self, key: &ObjectKey, partitions: Vec<TopicPartitionReading>) {
        let now = Instant::now();
        self.with(|s| {
            s.topics.insert(key.clone(), Stamped::now(partitions, now));
        });
    }

    /// Records a Queue.
    pub fn queue(&self, key: &ObjectKey, reading: QueueReading) {
        let now = Instant::now();
        self.with(|s| {
            s.queues.insert(key.clone(), Stamped::now(reading, now));
        });
    }

    /// Records a DeadLetterQueue.
    pub fn dlq(&self, key: &ObjectKey, reading: DlqReading) {
        let now = Instant::now();
        self.with(|s| {
            s.dlqs.insert(key.clone(), Stamped::now(reading, now));
        });
    }

    /// Records a ConsumerGroup's lag and workers.
    pub fn group(&self, key: &ObjectKey, reading: GroupReading) {
        let now = Instant::now();
        self.with(|s| {
            s.groups.insert(key.clone(), Stamped::now(reading, now));
        });
    }

    /// Records the autoscaler's decision for a group.
    pub fn decision(&self, key: &ObjectKey, reading: DecisionReading) {
        let now = Instant::now();
        self.with(|s| {
            s.decisions.insert(key.clone(), Stamped::now(reading, now));
            // The scale counters live as long as the decisions do.
            if let Some(c) = s.scales.get_mut(key) {
                c.at = now;
            }
        });
    }

    /// Counts a scale of a group, up or down.
    pub fn scaled(&self, key: &ObjectKey, up: bool) {
        let now = Instant::now();
        self.with(|s| {
            let entry = s
                .scales
                .entry(key.clone())
                .or_insert_with(|| Stamped::now(ScaleCounts::default(), now));
            entry.at = now;
            if up {
                entry.value.up = entry.value.up.saturating_add(1);
            } else {
                entry.value.down = entry.value.down.saturating_add(1);
            }
        });
    }

    /// Drops a group's autoscaler series (the group has no `autoscaling` any more).
    pub fn forget_decisions(&self, key: &ObjectKey) {
        self.with(|s| {
            s.decisions.remove(key);
            s.scales.remove(key);
        });
    }

    /// Drops every series of a deleted object.
    pub fn forget(&self, kind: Kind, key: &ObjectKey) {
        self.with(|s| {
            s.ready.remove(&(kind, key.clone()));
            match kind {
                Kind::Broker => {
                    s.brokers.remove(key);
                }
                Kind::Topic => {
                    s.topics.remove(key);
                }
                Kind::Queue => {
                    s.queues.remove(key);
                }
                Kind::DeadLetterQueue => {
                    s.dlqs.remove(key);
                }
                Kind::ConsumerGroup => {
                    s.groups.remove(key);
                    s.decisions.remove(key);
                    s.scales.remove(key);
                }
            }
        });
    }

    #[cfg(test)]
    fn age_all(&self, by: Duration) {
        self.with(|s| {
            let Some(now) = Instant::now().checked_sub(by) else {
                return;
            };
            s.ready.values_mut().for_each(|v| v.at = now);
            s.topics.values_mut().for_each(|v| v.at = now);
            s.groups.values_mut().for_each(|v| v.at = now);
        });
    }
}

type Labels = Vec<(&'static str, String)>;

fn object(key: &ObjectKey) -> Labels {
    vec![("namespace", key.0.clone()), ("name", key.1.clone())]
}

fn with(mut labels: Labels, name: &'static str, value: impl ToString) -> Labels {
    labels.push((name, value.to_string()));
    labels
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Encodes one family: its descriptor (also when it has no series, so the names are
/// discoverable) and one sample per row.
fn family<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn per_partition<T, M>(map: &Readings<Vec<T>>, value: impl Fn(&T) -> (u32, M)) -> Vec<(Labels, M)> {
    let mut rows = Vec::new();
    for (key, s) in map {
        for p in &s.value {
            let (partition, v) = value(p);
            rows.push((with(object(key), "partition", partition), v));
        }
    }
    rows
}

fn per_group_partition<M>(
    map: &Readings<GroupReading>,
    value: impl Fn(&GroupPartitionReading) -> M,
) -> Vec<(Labels, M)> {
    let mut rows = Vec::new();
    for (key, s) in map {
        for p in &s.value.partitions {
            rows.push((with(object(key), "partition", p.partition), value(p)));
        }
    }
    rows
}

fn per_object<'a, T: 'a, M>(
    map: &'a Readings<T>,
    value: impl Fn(&T) -> Option<M> + 'a,
) -> impl Iterator<Item = (Labels, M)> + 'a {
    map.iter()
        .filter_map(move |(key, s)| value(&s.value).map(|v| (object(key), v)))
}

impl Collector for ObjectMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Ok(mut s) = self.state.lock() else {
            return Ok(());
        };
        s.expire(Instant::now(), self.stale_after);
        let e = &mut e;
        family(
            e,
            "sluice_resource_ready",
            "1 when the object's Ready condition is True, else 0",
            s.ready.iter().map(|((kind, key), r)| {
                let mut labels = vec![("kind", kind.as_str().to_string())];
                labels.extend(object(key));
                (labels, ConstGauge::new(i64::from(r.value)))
            }),
        )?;
        family(
            e,
            "sluice_broker_replicas",
            "Servers a Broker asks for (spec.replicas)",
            per_object(&s.brokers, |b| Some(ConstGauge::new(i64::from(b.replicas)))),
        )?;
        family(
            e,
            "sluice_broker_ready_replicas",
            "Ready servers of a Broker",
            per_object(&s.brokers, |b| {
                Some(ConstGauge::new(i64::from(b.ready_replicas)))
            }),
        )?;
        family(
            e,
            "sluice_topic_partition_first_offset",
            "First offset still stored in a topic partition",
            per_partition(&s.topics, |p: &TopicPartitionReading| {
                (p.partition, gauge(p.first_offset))
            }),
        )?;
        family(
            e,
            "sluice_topic_partition_last_offset",
            "Last offset written to a topic partition (its stream's last sequence)",
            per_partition(&s.topics, |p: &TopicPartitionReading| {
                (p.partition, gauge(p.last_offset))
            }),
        )?;
        family(
            e,
            "sluice_topic_partition_messages",
            "Messages stored in a topic partition",
            per_partition(&s.topics, |p: &TopicPartitionReading| {
                (p.partition, gauge(p.messages))
            }),
        )?;
        family(
            e,
            "sluice_topic_partition_bytes",
            "Bytes stored in a topic partition",
            per_partition(&s.topics, |p: &TopicPartitionReading| {
                (p.partition, gauge(p.bytes))
            }),
        )?;
        family(
            e,
            "sluice_queue_messages",
            "Messages waiting in a queue",
            per_object(&s.queues, |q| Some(gauge(q.messages))),
        )?;
        family(
            e,
            "sluice_queue_source_pending_messages",
            "Messages of a source topic partition the queue has not received yet (fan-out)",
            s.queues.iter().flat_map(|(key, q)| {
                q.value.sources.iter().map(move |src| {
                    let labels = with(
                        with(object(key), "topic", &src.topic),
                        "partition",
                        src.partition,
                    );
                    (labels, gauge(src.pending))
                })
            }),
        )?;
        family(
            e,
            "sluice_dlq_depth_messages",
            "Dead letters waiting in a dead-letter queue",
            per_object(&s.dlqs, |d| Some(gauge(d.depth))),
        )?;
        family(
            e,
            "sluice_dlq_oldest_message_age_seconds",
            "Age of the oldest dead letter (0 when the queue is empty)",
            per_object(&s.dlqs, |d| Some(ConstGauge::new(d.oldest_age_seconds))),
        )?;
        family(
            e,
            "sluice_dlq_alert_threshold_messages",
            "The dead-letter queue's spec.alertThreshold.depth (absent when unset)",
            per_object(&s.dlqs, |d| d.alert_threshold.map(gauge)),
        )?;
        family(
            e,
            "sluice_group_lag_messages",
            "Messages of a partition the group has not acknowledged: pending plus in flight",
            per_group_partition(&s.groups, |p| gauge(p.pending.saturating_add(p.in_flight))),
        )?;
        family(
            e,
            "sluice_group_pending_messages",
            "Messages of a partition not yet delivered to the group",
            per_group_partition(&s.groups, |p| gauge(p.pending)),
        )?;
        family(
            e,
            "sluice_group_in_flight_messages",
            "Messages of a partition delivered to the group and not yet acknowledged",
            per_group_partition(&s.groups, |p| gauge(p.in_flight)),
        )?;
        family(
            e,
            "sluice_group_retrying_messages",
            "In-flight messages delivered more than once (mostly waiting out a retry backoff)",
            per_group_partition(&s.groups, |p| gauge(p.retrying)),
        )?;
        family(
            e,
            "sluice_group_replicas",
            "Worker replicas of a group (its Deployment's spec.replicas)",
            per_object(&s.groups, |g| {
                g.replicas.map(|r| ConstGauge::new(i64::from(r)))
            }),
        )?;
        family(
            e,
            "sluice_group_ready_replicas",
            "Ready worker pods of a group",
            per_object(&s.groups, |g| {
                g.ready_replicas.map(|r| ConstGauge::new(i64::from(r)))
            }),
        )?;
        family(
            e,
            "sluice_group_effective_lag_messages",
            "Lag the autoscaler acts on: without messages waiting out a retry backoff and without stuck partitions",
            per_object(&s.decisions, |d| Some(gauge(d.effective_lag))),
        )?;
        family(
            e,
            "sluice_group_desired_replicas",
            "Worker replicas the autoscaler wants for a group",
            per_object(&s.decisions, |d| {
                Some(ConstGauge::new(i64::from(d.desired)))
            }),
        )?;
        family(
            e,
            "sluice_group_scaling_reason",
            "1 for the reason of the autoscaler's last decision (one series per group)",
            s.decisions.iter().map(|(key, d)| {
                (
                    with(object(key), "reason", d.value.reason),
                    ConstGauge::new(1_i64),
                )
            }),
        )?;
        family(
            e,
            "sluice_group_scale_events",
            "Times the autoscaler changed a group's replicas, by direction (up, down)",
            s.scales.iter().flat_map(|(key, c)| {
                [("up", c.value.up), ("down", c.value.down)]
                    .into_iter()
                    .map(|(direction, n)| {
                        (
                            with(object(key), "direction", direction),
                            ConstCounter::new(n),
                        )
                    })
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    fn key(ns: &str, name: &str) -> ObjectKey {
        (ns.into(), name.into())
    }

    fn encode(m: &Arc<ObjectMetrics>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(m.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn every_family_is_described_even_without_objects() {
        let text = encode(&Arc::new(ObjectMetrics::default()));
        for name in [
            "sluice_resource_ready gauge",
            "sluice_topic_partition_last_offset gauge",
            "sluice_group_lag_messages gauge",
            "sluice_dlq_oldest_message_age_seconds gauge",
            "sluice_group_scale_events counter",
        ] {
            assert!(text.contains(&format!("# TYPE {name}")), "{name}\n{text}");
        }
    }

    #[test]
    fn readings_are_labelled_by_namespace_name_and_partition() {
        let m = Arc::new(ObjectMetrics::default());
        let orders = key("shop", "orders");
        m.topic(
            &orders,
            vec![TopicPartitionReading {
                partition: 1,
                first_offset: 1,
                last_offset: 12,
                messages: 12,
                bytes: 480,
            }],
        );
        m.group(
            &key("shop", "billing"),
            GroupReading {
                partitions: vec![GroupPartitionReading {
                    partition: 1,
                    pending: 7,
                    in_flight: 2,
                    retrying: 1,
                }],
                replicas: Some(3),
                ready_replicas: None,
            },
        );
        m.dlq(
            &key("shop", "orders-dlq"),
            DlqReading {
                depth: 4,
                oldest_age_seconds: 61.0,
                alert_threshold: None,
            },
        );
        m.decision(
            &key("shop", "billing"),
            DecisionReading {
                effective_lag: 8,
                desired: 2,
                reason: "ScaleDown",
            },
        );
        m.scaled(&key("shop", "billing"), false);
        m.ready(Kind::Topic, &orders, true);
        let text = encode(&m);
        for line in [
            "sluice_topic_partition_last_offset{namespace=\"shop\",name=\"orders\",partition=\"1\"} 12",
            "sluice_topic_partition_bytes{namespace=\"shop\",name=\"orders\",partition=\"1\"} 480",
            "sluice_group_lag_messages{namespace=\"shop\",name=\"billing\",partition=\"1\"} 9",
            "sluice_group_in_flight_messages{namespace=\"shop\",name=\"billing\",partition=\"1\"} 2",
            "sluice_group_retrying_messages{namespace=\"shop\",name=\"billing\",partition=\"1\"} 1",
            "sluice_group_replicas{namespace=\"shop\",name=\"billing\"} 3",
            "sluice_group_desired_replicas{namespace=\"shop\",name=\"billing\"} 2",
            "sluice_group_scaling_reason{namespace=\"shop\",name=\"billing\",reason=\"ScaleDown\"} 1",
            "sluice_group_scale_events_total{namespace=\"shop\",name=\"billing\",direction=\"down\"} 1",
            "sluice_group_scale_events_total{namespace=\"shop\",name=\"billing\",direction=\"up\"} 0",
            "sluice_dlq_depth_messages{namespace=\"shop\",name=\"orders-dlq\"} 4",
            "sluice_dlq_oldest_message_age_seconds{namespace=\"shop\",name=\"orders-dlq\"} 61.0",
            "sluice_resource_ready{kind=\"Topic\",namespace=\"shop\",name=\"orders\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("sluice_group_ready_replicas{"), "{text}");
        assert!(
            !text.contains("sluice_dlq_alert_threshold_messages{"),
            "{text}"
        );
    }

    #[test]
    fn stale_and_forgotten_objects_disappear() {
        let m = Arc::new(ObjectMetrics::new(Duration::from_secs(60)));
        let orders = key("shop", "orders");
        m.topic(&orders, vec![TopicPartitionReading::default()]);
        m.ready(Kind::Topic, &orders, true);
        m.group(&key("shop", "billing"), GroupReading::default());
        m.decision(
            &key("shop", "billing"),
            DecisionReading {
                effective_lag: 0,
                desired: 1,
                reason: "Steady",
            },
        );
        m.forget(Kind::ConsumerGroup, &key("shop", "billing"));
        let text = encode(&m);
        assert!(!text.contains("billing"), "{text}");
        assert!(text.contains("name=\"orders\""), "{text}");
        m.age_all(Duration::from_secs(61));
        assert!(!encode(&m).contains("orders"));
    }
}
