//! A single nats-server killed under running members and restarted with its data: every
//! message published after the restart is handled (the members' membership and lease views
//! are rebuilt from the broker, not kept from before the outage).
//!
//! Members reach the server through a proxy that lets them back a few seconds after the
//! server is up again, as clients whose reconnect backoff grew during a long outage do (and
//! as after a Broker pod restart): by then the server has expired their member and lease keys
//! and removed the expiry markers, which is what a view kept across the outage never learns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;

const PARTITIONS: u32 = 6;
/// How long after the server is back the members can reach it again (longer than the
/// server keeps expiry markers, 5 s).
const LATE_RECONNECT: Duration = Duration::from_secs(8);
/// Enough that a partition crawling at one message per few seconds misses the deadline.
const PER_PARTITION: u32 = 50;

/// Publishes, retrying while the test's own connection is still reconnecting.
async fn publish_retrying(env: &Harness, topic: &str, partition: u32, id: &str) {
    let t = ResourceRef::new(NS, topic).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        let sent = env
            .broker
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
            "could not publish {id} after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

async fn publish_round(env: &Harness, round: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let id = format!("{round}-{p}-{i}");
            publish_retrying(env, "orders", p, &id).await;
            ids.insert(id);
        }
    }
    ids
}

async fn survives_a_broker_restart(outage: Duration) {
    let mut env = Harness::start().await;
    let cfg = topic_group("orders", "billing", PARTITIONS);
    env.provision(&cfg).await;
    let records: Records = Default::default();
    let proxy = Proxy::start(env.server.port()).await;
    let _members: Vec<Member> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let mut s = MemberSpec::new(&env, "billing", id, &records);
            s.url = proxy.url();
            Member::spawn(s)
        })
        .collect();
    for id in ["a", "b", "c"] {
        env.wait_owns("billing", id, Duration::from_secs(60)).await;
    }
    let before = publish_round(&env, "before").await;
    wait_until(
        Duration::from_secs(60),
        "messages before the outage",
        async || handled(&records).is_superset(&before),
    )
    .await;

    proxy.cut();
    env.server.kill().await.unwrap();
    // The fault itself (not an assertion): the outage, then the members' late reconnect.
    tokio::time::sleep(outage).await;
    env.server.restart().await.unwrap();
    let restarted = std::time::Instant::now();
    tokio::time::sleep(LATE_RECONNECT).await;
    proxy.restore();
    let reconnected = std::time::Instant::now();

    let after = publish_round(&env, "after").await;
    wait_until(
        Duration::from_secs(90),
        "every message published after the restart to be handled",
        async || handled(&records).is_superset(&after),
    )
    .await;
    // A figure for the report, not an assertion.
    eprintln!(
        "outage {outage:?}: all {} messages published after the restart handled {:?} after it, {:?} after the members could reconnect",
        after.len(),
        restarted.elapsed(),
        reconnected.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_resume_after_a_short_broker_outage() {
    survives_a_broker_restart(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_resume_after_a_long_broker_outage() {
    survives_a_broker_restart(Duration::from_secs(30)).await;
}
