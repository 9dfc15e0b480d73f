//! The operator's `/metrics`, scraped over HTTP while the controllers run in-process against
//! the fake Kubernetes API and a real nats-server: a group with a known backlog shows exactly
//! that lag, per partition and in total, and a dead-letter queue its depth and threshold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_broker::{ResourceRef, names};
use sluice_operator::controller::in_process::InProcessOperator;
use sluice_operator::controller::metrics::Metrics;
use sluice_operator::service::http::{self, Health};
use sluice_testkit::{FakeApi, Harness, NS, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sluice_path(plural: &str, name: &str) -> String {
    format!("/apis/sluice.dev/v1alpha1/namespaces/{NS}/{plural}/{name}")
}

fn object(kind: &str, name: &str, spec: Value, finalizers: &[&str]) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1,
            "finalizers": finalizers,
        },
        "spec": spec,
    })
}

/// GET `path` over a fresh connection; the body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Samples of a scrape: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn series(name: &str, object: &str, partition: Option<u32>) -> String {
    match partition {
        Some(p) => format!("{name}{{namespace=\"{NS}\",name=\"{object}\",partition=\"{p}\"}}"),
        None => format!("{name}{{namespace=\"{NS}\",name=\"{object}\"}}"),
    }
}

/// The sum of a family's samples for one object.
fn total(scrape: &BTreeMap<String, f64>, name: &str, object: &str) -> f64 {
    let prefix = format!("{name}{{namespace=\"{NS}\",name=\"{object}\",");
    scrape
        .iter()
        .filter(|(s, _)| s.starts_with(&prefix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_group_lag_equals_the_backlog_per_partition() {
    let nats = Harness::start().await;
    let (client, fake) = FakeApi::start();
    fake.put(
        &sluice_path("brokers", "main"),
        object("Broker", "main", json!({"replicas": 1}), &[]),
    );
    fake.put(
        &sluice_path("topics", "orders"),
        object(
            "Topic",
            "orders",
            json!({"broker": "main", "partitions": 3}),
            &[],
        ),
    );
    fake.put(
        &sluice_path("deadletterqueues", "orders-dlq"),
        object(
            "DeadLetterQueue",
            "orders-dlq",
            json!({"broker": "main", "alertThreshold": {"depth": 3}}),
            &[],
        ),
    );
    // The group carries its finalizer already (as after its first reconcile): the fake API
    // sends no watch events, and the finalizer helper waits for one after adding it.
    fake.put(
        &sluice_path("consumergroups", "audit"),
        object(
            "ConsumerGroup",
            "audit",
            json!({"source": {"topic": "orders"}}),
            &["sluice.dev/cleanup"],
        ),
    );

    let metrics = Arc::new(Metrics::default());
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        Arc::new(Health::default()),
        async {
            let _ = http_stopped.await;
        },
    ));
    let operator = InProcessOperator::start(
        &client,
        NS,
        &nats.url(),
        Duration::from_secs(1),
        metrics.clone(),
    );

    // No worker consumes: whatever is published is the group's lag.
    let orders = ResourceRef::new(NS, "orders").unwrap();
    wait_until(
        Duration::from_secs(120),
        "the topic's streams",
        async || {
            nats.broker
                .jetstream()
                .get_stream(names::topic_stream(&orders, 2))
                .await
                .is_ok()
        },
    )
    .await;
    let per_partition: [u32; 3] = [20, 12, 5];
    for (p, count) in per_partition.iter().enumerate() {
        let p = u32::try_from(p).unwrap();
        for i in 0..*count {
            nats.publish("orders", p, &format!("m-{p}-{i}"), None, "order")
                .await;
        }
    }
    let backlog: u32 = per_partition.iter().sum();
    assert_eq!(backlog, 37);
    let dlq = ResourceRef::new(NS, "orders-dlq").unwrap();
    wait_until(Duration::from_secs(120), "the DLQ's stream", async || {
        nats.broker
            .jetstream()
            .get_stream(names::dlq_stream(&dlq))
            .await
            .is_ok()
    })
    .await;
    for i in 0..4 {
        nats.broker
            .jetstream()
            .publish(names::dlq_subject(&dlq), format!("dead-{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dlq_depth = series("sluice_dlq_depth_messages", "orders-dlq", None);

    let mut scrape = BTreeMap::new();
    wait_until(
        Duration::from_secs(120),
        "a scrape showing the backlog of group audit, topic orders and the DLQ",
        async || {
            scrape = samples(&get(addr, "/metrics").await);
            total(&scrape, "sluice_group_lag_messages", "audit") == f64::from(backlog)
                && total(&scrape, "sluice_topic_partition_last_offset", "orders")
                    == f64::from(backlog)
                && scrape.get(&dlq_depth) == Some(&4.0)
        },
    )
    .await;

    for (p, count) in per_partition.iter().enumerate() {
        let p = Some(u32::try_from(p).unwrap());
        let count = f64::from(*count);
        let at = |name: &str, object: &str| {
            let s = series(name, object, p);
            *scrape
                .get(&s)
                .unwrap_or_else(|| panic!("no {s} in {scrape:#?}"))
        };
        assert_eq!(at("sluice_group_lag_messages", "audit"), count);
        assert_eq!(at("sluice_group_pending_messages", "audit"), count);
        assert_eq!(at("sluice_group_in_flight_messages", "audit"), 0.0);
        assert_eq!(at("sluice_topic_partition_last_offset", "orders"), count);
        assert_eq!(at("sluice_topic_partition_messages", "orders"), count);
    }
    assert_eq!(
        scrape
            .keys()
            .filter(|s| s.starts_with("sluice_group_lag_messages{"))
            .count(),
        3,
        "one series per partition: {scrape:#?}"
    );
    assert_eq!(
        scrape.get(
            "sluice_resource_ready{kind=\"ConsumerGroup\",namespace=\"default\",name=\"audit\"}"
        ),
        Some(&1.0),
        "{scrape:#?}"
    );
    assert_eq!(
        scrape.get(&series(
            "sluice_dlq_alert_threshold_messages",
            "orders-dlq",
            None
        )),
        Some(&3.0),
        "{scrape:#?}"
    );
    assert!(
        scrape
            .get(&series(
                "sluice_dlq_oldest_message_age_seconds",
                "orders-dlq",
                None
            ))
            .is_some_and(|age| *age >= 0.0),
        "{scrape:#?}"
    );
    // No autoscaling block: no autoscaler series.
    assert!(
        !scrape.contains_key(&series("sluice_group_desired_replicas", "audit", None)),
        "{scrape:#?}"
    );

    operator.stop().await.unwrap();
    let _ = stop_http.send(());
    server.await.unwrap();
}
