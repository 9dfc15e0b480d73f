//! Replication on a 3-node loopback cluster: an R3 topic survives kill -9 of one node with
//! every acknowledged message readable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sluice_broker::config::TopicSettings;
use sluice_broker::embedded::Cluster;
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};

#[tokio::test]
async fn r3_topic_survives_kill_of_one_node() {
    let mut cluster = Cluster::start(3).await.unwrap();
    let broker = Broker::connect(&ConnectOptions::from_url_list(&cluster.urls()))
        .await
        .unwrap();
    let events = ResourceRef::new("prod", "events").unwrap();
    let settings = TopicSettings {
        partitions: 3,
        replicas: 3,
        ..Default::default()
    };
    broker.ensure_topic(&events, &settings).await.unwrap();

    let mut acked = 0u64;
    for i in 0..300u32 {
        broker
            .jetstream()
            .publish(names::topic_subject(&events, i % 3), format!("e{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
        acked += 1;
    }

    cluster.node(0).unwrap().kill().await.unwrap();

    // Every acknowledged message is still readable once the survivors have a leader for
    // each partition; publishing keeps working too.
    let survivor_urls = cluster
        .urls()
        .split(',')
        .skip(1)
        .collect::<Vec<_>>()
        .join(",");
    // Right after the kill the survivors may still be electing a JetStream meta leader, so
    // connecting (which asks JetStream for account info) is retried within the deadline too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let survivor = loop {
        match Broker::connect(&ConnectOptions::from_url_list(&survivor_urls)).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "survivors never answered JetStream requests: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    loop {
        match survivor.topic_status(&events, 3).await {
            Ok(status) if status.iter().all(|p| p.leader.is_some()) => {
                let total: u64 = status.iter().map(|p| p.messages).sum();
                assert_eq!(total, acked, "acknowledged messages lost: {status:?}");
                break;
            }
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "partitions never recovered a leader: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    for p in 0..3u32 {
        let stream = survivor
            .jetstream()
            .get_stream(names::topic_stream(&events, p))
            .await
            .unwrap();
        for seq in 1..=100u64 {
            let msg = stream.get_raw_message(seq).await.unwrap();
            assert!(String::from_utf8_lossy(&msg.payload).starts_with('e'));
        }
    }
    let ack = survivor
        .jetstream()
        .publish(names::topic_subject(&events, 0), "after".into())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), ack)
        .await
        .unwrap()
        .unwrap();

    // The killed node comes back with its store and catches up.
    cluster.node(0).unwrap().restart().await.unwrap();
}
