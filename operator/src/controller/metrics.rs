//! Prometheus metrics of the operator, served at `/metrics`.
//!
//! Label values are bounded: kinds and failure reasons are static strings; the per-group
//! autoscaler gauges carry the group's namespace and name (one series per ConsumerGroup,
//! removed when the group is deleted), so HPA/KEDA users can scale on the same numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Labels of per-group autoscaler metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Namespace of the ConsumerGroup.
    pub namespace: String,
    /// Name of the ConsumerGroup.
    pub group: String,
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
    group_lag: Family<GroupLabels, Gauge>,
    group_effective_lag: Family<GroupLabels, Gauge>,
    group_desired_replicas: Family<GroupLabels, Gauge>,
    group_scale_events: Family<GroupLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let group_lag = Family::<GroupLabels, Gauge>::default();
        let group_effective_lag = Family::<GroupLabels, Gauge>::default();
        let group_desired_replicas = Family::<GroupLabels, Gauge>::default();
        let group_scale_events = Family::<GroupLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by kind and failure category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, by kind",
            duration.clone(),
        );
        registry.register(
            "group_lag_messages",
            "Pending plus unacknowledged messages of a consumer group",
            group_lag.clone(),
        );
        registry.register(
            "group_effective_lag_messages",
            "Lag the autoscaler acts on: without messages waiting out a retry backoff and without stuck partitions",
            group_effective_lag.clone(),
        );
        registry.register(
            "group_desired_replicas",
            "Worker replicas the autoscaler wants for a consumer group",
            group_desired_replicas.clone(),
        );
        registry.register(
            "group_scale_events",
            "Times the autoscaler changed a consumer group's replicas",
            group_scale_events.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the controllers",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            group_lag,
            group_effective_lag,
            group_desired_replicas,
            group_scale_events,
            leader,
        }
    }
}

impl Metrics {
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

    /// Records the autoscaler's inputs and decision for a group.
    pub fn group_decision(&self, labels: &GroupLabels, lag: u64, effective_lag: u64, desired: u32) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.group_lag.get_or_create(labels).set(gauge(lag));
        self.group_effective_lag
            .get_or_create(labels)
            .set(gauge(effective_lag));
        self.group_desired_replicas
            .get_or_create(labels)
            .set(i64::from(desired));
    }

    /// Counts a scale of a group.
    pub fn group_scaled(&self, labels: &GroupLabels) {
        self.group_scale_events.get_or_create(labels).inc();
    }

    /// Drops the series of a deleted group.
    pub fn forget_group(&self, labels: &GroupLabels) {
        self.group_lag.remove(labels);
        self.group_effective_lag.remove(labels);
        self.group_desired_replicas.remove(labels);
        self.group_scale_events.remove(labels);
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
        m.group_decision(&g, 120, 80, 3);
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "sluice_operator_reconciles_total{kind=\"Topic\"} 1",
            "sluice_operator_reconcile_failures_total{kind=\"Topic\",reason=\"BrokerUnavailable\"} 1",
            "sluice_operator_reconcile_duration_seconds_count{kind=\"Topic\"} 1",
            "sluice_operator_group_lag_messages{namespace=\"prod\",group=\"billing\"} 120",
            "sluice_operator_group_effective_lag_messages{namespace=\"prod\",group=\"billing\"} 80",
            "sluice_operator_group_desired_replicas{namespace=\"prod\",group=\"billing\"} 3",
            "sluice_operator_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.forget_group(&g);
        assert!(!m.encode().contains("billing"));
    }
}
