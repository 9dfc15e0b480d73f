//! Prometheus metrics of the operator, served at `/metrics` (the full list, with labels and
//! how to scale on them: `docs/metrics.md`).
//!
//! Two parts:
//! - the operator's own work under `sluice_operator_`: reconciles, failures by static
//!   category, reconcile durations, leadership;
//! - what it reads from the broker and decides about each object under `sluice_`
//!   ([`objects`]): topic offsets, group lag and in-flight messages per partition, DLQ depth
//!   and oldest age, worker and desired replicas and the autoscaler's reason, readiness.
//!   The readings come from each reconcile ([`observe`]) and from the autoscaler
//!   (`super::autoscaling`).
//!
//! Label values are bounded: kinds and reasons are static strings, objects are
//! `namespace`/`name` (series dropped when the object is deleted or not read for
//! [`objects::ObjectMetrics::stale_after`]), `partition` is at most the source's partition count.

#[cfg(test)]
mod chart_tests;
pub mod objects;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use objects::{Kind, ObjectKey, ObjectMetrics};
pub use observe::Observe;

/// Labels of per-kind metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Resource kind, e.g. `Topic`.
    pub kind: &'static str,
}

/// Labels of failure counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Resource kind.
    pub kind: &'static str,
    /// Static failure category ([`super::Failure::reason`]).
    pub reason: &'static str,
}

/// A ConsumerGroup, as the autoscaler metrics name it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct GroupLabels {
    /// Namespace of the ConsumerGroup.
    pub namespace: String,
    /// Name of the ConsumerGroup.
    pub group: String,
}

impl GroupLabels {
    fn key(&self) -> ObjectKey {
        (self.namespace.clone(), self.group.clone())
    }
}

/// One decision of the autoscaler, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDecision {
    /// The lag the decision acted on.
    pub effective_lag: u64,
    /// Replicas wanted.
    pub desired: u32,
    /// Static reason code (`ScaleReason::code`).
    pub reason: &'static str,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5ms .. ~20s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: HistogramFamily,
    leader: Gauge,
    objects: Arc<ObjectMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_stale_after(objects::DEFAULT_STALE_AFTER)
    }
}

impl Metrics {
    /// Metrics whose per-object readings are exported for `stale_after` after they were
    /// taken (pick a few resync periods).
    pub fn with_stale_after(stale_after: Duration) -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let leader = Gauge::default();
        let objects = Arc::new(ObjectMetrics::new(stale_after));
        let operator = registry.sub_registry_with_prefix("sluice_operator");
        operator.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        operator.register(
            "reconcile_failures",
            "Reconciles that failed, by kind and failure category",
            failures.clone(),
        );
        operator.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, by kind",
            duration.clone(),
        );
        operator.register(
            "leader",
            "1 while this replica holds the leader lease and runs the controllers",
            leader.clone(),
        );
        registry.register_collector(Box::new(objects.clone()));
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            objects,
        }
    }

    /// The per-object readings.
    pub fn objects(&self) -> &ObjectMetrics {
        &self.objects
    }

    /// Counts a reconcile of `kind` that took `seconds`.
    pub fn reconciled(&self, kind: &'static str, seconds: f64) {
        let labels = KindLabels { kind };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, kind: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { kind, reason })
            .inc();
    }

    /// Records the autoscaler's decision for a group.
    pub fn group_decision(&self, labels: &GroupLabels, decision: GroupDecision) {
        self.objects.decision(
            &labels.key(),
            objects::DecisionReading {
                effective_lag: decision.effective_lag,
                desired: decision.desired,
                reason: decision.reason,
            },
        );
    }

    /// Counts a scale of a group (`up` or down).
    pub fn group_scaled(&self, labels: &GroupLabels, up: bool) {
        self.objects.scaled(&labels.key(), up);
    }

    /// Drops the autoscaler series of a group that is not autoscaled (any more).
    pub fn group_not_autoscaled(&self, labels: &GroupLabels) {
        self.objects.forget_decisions(&labels.key());
    }

    /// Drops the series of a deleted group.
    pub fn forget_group(&self, labels: &GroupLabels) {
        self.objects.forget(Kind::ConsumerGroup, &labels.key());
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The names of the metric families in the current encoding, as a query names them
    /// (counters with their `_total` suffix, histograms with `_bucket`, `_sum` and `_count`),
    /// read from the registry itself. The per-object families are always there; a labelled
    /// `sluice_operator_*` family appears once it has a series.
    pub fn exported_names(&self) -> std::collections::BTreeSet<String> {
        family_names(&self.encode())
    }
}

/// The metric names a query can use for the families described in `text` (Prometheus or
/// OpenMetrics text format): the `# TYPE` lines give each family and its type.
pub fn family_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_histograms_and_group_gauges() {
        let m = Metrics::default();
        m.reconciled("Topic", 0.02);
        m.failed("Topic", "BrokerUnavailable");
        let g = GroupLabels {
            namespace: "prod".into(),
            group: "billing".into(),
        };
        m.group_decision(
            &g,
            GroupDecision {
                effective_lag: 80,
                desired: 3,
                reason: "ScaleUp",
            },
        );
        m.group_scaled(&g, true);
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "sluice_operator_reconciles_total{kind=\"Topic\"} 1",
            "sluice_operator_reconcile_failures_total{kind=\"Topic\",reason=\"BrokerUnavailable\"} 1",
            "sluice_operator_reconcile_duration_seconds_count{kind=\"Topic\"} 1",
            "sluice_group_effective_lag_messages{namespace=\"prod\",name=\"billing\"} 80",
            "sluice_group_desired_replicas{namespace=\"prod\",name=\"billing\"} 3",
            "sluice_group_scaling_reason{namespace=\"prod\",name=\"billing\",reason=\"ScaleUp\"} 1",
            "sluice_group_scale_events_total{namespace=\"prod\",name=\"billing\",direction=\"up\"} 1",
            "sluice_operator_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.forget_group(&g);
        assert!(!m.encode().contains("billing"));
        let names = m.exported_names();
        for name in [
            "sluice_operator_reconciles_total",
            "sluice_operator_reconcile_duration_seconds_bucket",
            "sluice_operator_leader",
            "sluice_group_lag_messages",
            "sluice_group_scale_events_total",
        ] {
            assert!(names.contains(name), "{name} not in {names:?}");
        }
    }
}
