//! YAML fixtures parsed into the CRD types and run through the pure reconcile core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::Deserialize;
use sluice_broker::config::{Ordering, SourceKind};
use sluice_operator::crd::{ConsumerGroup, DeadLetterQueue, Queue, Topic};
use sluice_operator::desired::group::{ResolvedSource, group_config};
use sluice_operator::desired::queue::{ResolvedTopic, queue_settings, visibility_timeout_ms};
use sluice_operator::desired::{dlq::dlq_settings, topic::topic_settings};

fn documents(file: &str) -> Vec<serde_yaml::Value> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .map(|d| serde_yaml::from_value(d.clone()).unwrap())
        .collect()
}

#[test]
fn pipeline_fixture_converts_to_broker_shapes() {
    let docs = documents("pipeline.yaml");
    let topics: Vec<Topic> = of_kind(&docs, "Topic");
    let queues: Vec<Queue> = of_kind(&docs, "Queue");
    let dlqs: Vec<DeadLetterQueue> = of_kind(&docs, "DeadLetterQueue");
    let groups: Vec<ConsumerGroup> = of_kind(&docs, "ConsumerGroup");
    assert_eq!(
        (topics.len(), queues.len(), dlqs.len(), groups.len()),
        (1, 1, 1, 2)
    );

    let topic = topic_settings(&topics[0].spec).unwrap();
    assert_eq!(topic.partitions, 3);
    let resolved = ResolvedTopic {
        name: "orders".into(),
        broker: "main".into(),
        partitions: topic.partitions,
    };
    let queue = queue_settings(&queues[0].spec, &[resolved]).unwrap();
    assert_eq!(queue.sources[0].partitions, 3);
    assert_eq!(
        dlq_settings(&dlqs[0].spec).unwrap().retention.max_age_ms,
        Some(14 * 86_400_000)
    );

    let billing = group_config(
        "ns",
        "billing",
        &groups[0].spec,
        &ResolvedSource {
            kind: SourceKind::Topic,
            name: "orders".into(),
            broker: "main".into(),
            partitions: 3,
            visibility_timeout_ms: None,
            priorities: 1,
            low_priority_share: 10,
        },
    )
    .unwrap();
    assert_eq!(billing.retry.max_attempts, 4);
    assert_eq!(billing.dead_letter.as_deref(), Some("orders-dlq"));
    let template = groups[0]
        .spec
        .template
        .as_ref()
        .unwrap()
        .decode("template")
        .unwrap();
    assert_eq!(template.spec.unwrap().containers[0].name, "worker");

    let mailer = group_config(
        "ns",
        "mailer",
        &groups[1].spec,
        &ResolvedSource {
            kind: SourceKind::Queue,
            name: "emails".into(),
            broker: "main".into(),
            partitions: 1,
            visibility_timeout_ms: Some(visibility_timeout_ms(&queues[0].spec).unwrap()),
            priorities: 1,
            low_priority_share: 10,
        },
    )
    .unwrap();
    assert_eq!(mailer.ordering, Ordering::None);
    assert_eq!(mailer.ack_wait_ms, 60_000);
}

#[test]
fn invalid_fixture_is_reported_field_by_field() {
    let docs = documents("invalid-group.yaml");
    let groups: Vec<ConsumerGroup> = of_kind(&docs, "ConsumerGroup");
    let spec = &groups[0].spec;
    let queue = ResolvedSource {
        kind: SourceKind::Queue,
        name: "emails".into(),
        broker: "main".into(),
        partitions: 1,
        visibility_timeout_ms: None,
        priorities: 1,
        low_priority_share: 10,
    };
    let err = group_config("ns", "broken", spec, &queue).unwrap_err();
    assert_eq!(err.field, "ordering");
    assert!(err.to_string().contains("set ordering: none"), "{err}");
    let err = spec
        .template
        .as_ref()
        .unwrap()
        .decode("template")
        .unwrap_err();
    assert_eq!(err.field, "template");
}
