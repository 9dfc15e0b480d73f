//! The chart's Grafana dashboard (`charts/sluice/dashboards/sluice.json`) and alerts
//! (`charts/sluice/templates/prometheusrule.yaml`) name only metrics that exist: every
//! `sluice_*` name in them must be a family the operator's registry or the worker SDK's
//! registry encodes (read from the registries themselves, so the check cannot drift).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{Metrics, family_names};

/// Every metric name a query may use: the operator's and the SDK's families, each recorded
/// once (the Prometheus client describes a labelled family only once it has a series).
fn exported() -> BTreeSet<String> {
    let operator = Metrics::default();
    operator.reconciled("Topic", 0.01);
    operator.failed("Topic", "BrokerUnavailable");
    operator.set_leader(true);
    let mut names = operator.exported_names();
    let worker = sluice_worker::WorkerMetrics::new("g");
    worker.record_processed(Duration::from_millis(1));
    worker.record_failed_after(Duration::from_millis(1));
    worker.record_retried();
    worker.record_dead_lettered();
    worker.set_partition_lag(0, 1);
    worker.set_ready(true);
    names.extend(family_names(
        &worker.encode().expect("worker metrics encode"),
    ));
    names
}

fn chart_file(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/sluice")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bsluice_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

fn assert_all_exported(what: &str, used: &BTreeSet<String>) {
    let exported = exported();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "{what} queries metrics nobody exports: {unknown:?}\nexported: {exported:#?}"
    );
}

#[test]
fn the_registries_list_operator_and_worker_families() {
    let names = exported();
    for name in [
        "sluice_group_lag_messages",
        "sluice_group_scale_events_total",
        "sluice_operator_reconcile_failures_total",
        "sluice_worker_messages_processed_total",
        "sluice_worker_handler_duration_seconds_bucket",
    ] {
        assert!(names.contains(name), "{name} not in {names:#?}");
    }
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let text = chart_file("dashboards/sluice.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let queries: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(queries.len() >= 10, "{queries:#?}");
    let used = metric_names_in(&text);
    assert!(used.len() >= 15, "{used:?}");
    assert_all_exported("the Grafana dashboard", &used);
}

#[test]
fn the_alerts_query_only_exported_metrics() {
    let used = metric_names_in(&chart_file("templates/prometheusrule.yaml"));
    assert!(used.len() >= 6, "{used:?}");
    assert_all_exported("the PrometheusRule", &used);
}
