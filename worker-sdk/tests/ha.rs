//! High availability of the SDK's own state on a 3-node loopback cluster: the membership,
//! lease, idempotency and group-config buckets are replicated (R3; an R1 bucket left from
//! before is scaled up), so killing the node that leads them stops no group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use sluice_broker::config::{Delivery, TopicSettings};
use sluice_broker::embedded::Cluster;
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};
use sluice_testkit::*;

const PARTITIONS: u32 = 3;

async fn connect(urls: &str) -> Broker {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Broker::connect(&ConnectOptions::from_url_list(urls)).await {
            Ok(b) => return b,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "connect: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Publishes, retrying while the cluster elects new leaders.
async fn publish_retrying(broker: &Broker, partition: u32, id: &str) {
    let t = ResourceRef::new(NS, "orders").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        let sent = broker
            .jetstream()
            .publish_with_headers(
                names::topic_subject(&t, partition),
                h,
                id.to_string().into(),
            )
            .await;
        let acked = match sent {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if acked {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not publish {id}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn publish_round(broker: &Broker, round: &str, per_partition: u32) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..per_partition {
        for p in 0..PARTITIONS {
            let id = format!("{round}-{p}-{i}");
            publish_retrying(broker, p, &id).await;
            ids.insert(id);
        }
    }
    ids
}

fn handled(records: &Records) -> BTreeSet<String> {
    records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.payload.clone())
        .collect()
}

async fn replicas(broker: &Broker, bucket: &str) -> usize {
    let mut stream = broker
        .jetstream()
        .get_stream(format!("KV_{bucket}"))
        .await
        .unwrap();
    stream.info().await.unwrap().config.num_replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_node_stops_no_group() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await.unwrap();
    let urls = cluster.urls();
    let broker = connect(&urls).await;
    // A membership bucket left over from an SDK version that created it with one replica.
    broker
        .jetstream()
        .create_key_value(kv::Config {
            bucket: names::MEMBERS_BUCKET.to_string(),
            history: 1,
            limit_markers: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .await
        .unwrap();
    broker
        .ensure_topic(
            &ResourceRef::new(NS, "orders").unwrap(),
            &TopicSettings {
                partitions: PARTITIONS,
                replicas: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut cfg = topic_group("orders", "billing", PARTITIONS);
    cfg.delivery = Delivery::ExactlyOnce;
    // Right after the bucket was created: reads of the config just written must not fail
    // while the new bucket elects its leader.
    broker.ensure_group(&cfg).await.unwrap();

    let records: Records = Default::default();
    let _members: Vec<Member> = ["a", "b"]
        .into_iter()
        .map(|id| {
            Member::spawn(MemberSpec {
                url: urls.clone(),
                group: "billing".into(),
                id: id.into(),
                records: records.clone(),
                behaviour: ok_behaviour(),
                work: Duration::ZERO,
                observer: None,
                output_subject: None,
            })
        })
        .collect();
    let before = publish_round(&broker, "before", 20).await;
    wait_until(
        Duration::from_secs(90),
        "messages before the node loss",
        async || handled(&records).is_superset(&before),
    )
    .await;
    let idem = names::idempotency_bucket(&ResourceRef::new(NS, "billing").unwrap());
    for bucket in [
        names::MEMBERS_BUCKET,
        names::LEASES_BUCKET,
        names::GROUP_CONFIG_BUCKET,
        idem.as_str(),
    ] {
        assert_eq!(replicas(&broker, bucket).await, 3, "replicas of {bucket}");
    }

    // Kill the node leading the lease bucket: the worst case for the group's coordination.
    let mut stream = broker
        .jetstream()
        .get_stream(format!("KV_{}", names::LEASES_BUCKET))
        .await
        .unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .unwrap();
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    cluster.node(index).unwrap().kill().await.unwrap();
    let killed = std::time::Instant::now();

    let after = publish_round(&broker, "after", 20).await;
    wait_until(
        Duration::from_secs(90),
        "every message published after the node loss to be handled",
        async || handled(&records).is_superset(&after),
    )
    .await;
    // A figure for the report, not an assertion.
    eprintln!(
        "node {leader} killed: all {} messages published after it handled {:?} after the kill",
        after.len(),
        killed.elapsed()
    );
}
