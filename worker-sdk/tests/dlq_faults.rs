//! Dead-lettering under faults: a DLQ that is unavailable for a while costs time, not the
//! message (and does not re-run the handler), and a message whose last delivery was never
//! finished (crashed members) is dead-lettered by the next owner instead of being lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::config::{DlqSettings, Ordering};
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;
use sluice_worker::HandlerError;

const DLQ: &str = "orders-dlq";

async fn dlq_down(env: &Harness) {
    let stream = names::dlq_stream(&ResourceRef::new(NS, DLQ).unwrap());
    env.broker.jetstream().delete_stream(&stream).await.unwrap();
}

async fn dlq_up(env: &Harness) {
    env.broker
        .ensure_dlq(&ResourceRef::new(NS, DLQ).unwrap(), &DlqSettings::default())
        .await
        .unwrap();
}

/// Payloads in the DLQ (none while it does not exist).
async fn dead_payloads(env: &Harness) -> Vec<String> {
    let stream = names::dlq_stream(&ResourceRef::new(NS, DLQ).unwrap());
    let Ok(mut s) = env.broker.jetstream().get_stream(&stream).await else {
        return Vec::new();
    };
    let Ok(info) = s.info().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for seq in 1..=info.state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(String::from_utf8_lossy(&m.payload).to_string());
        }
    }
    out
}

type Calls = Arc<Mutex<HashMap<String, usize>>>;

fn poison_spec(env: &Harness, id: &str, records: &Records, calls: &Calls) -> MemberSpec {
    let mut s = MemberSpec::new(env, "dl", id, records);
    let c = calls.clone();
    s.behaviour = Arc::new(move |m| {
        let payload = String::from_utf8_lossy(&m.payload).to_string();
        *c.lock().unwrap().entry(payload.clone()).or_insert(0) += 1;
        if payload == "poison" {
            Err(HandlerError::permanent("malformed order"))
        } else {
            Ok(())
        }
    });
    s
}

fn calls_of(calls: &Calls, payload: &str) -> usize {
    calls.lock().unwrap().get(payload).copied().unwrap_or(0)
}

async fn dlq_outage_costs_time_not_the_message(ordering: Ordering) {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "dl", 1);
    cfg.ordering = ordering;
    cfg.retry.max_attempts = 2;
    cfg.dead_letter = Some(DLQ.into());
    env.provision(&cfg).await;
    dlq_down(&env).await;
    env.publish("orders", 0, "id-poison", None, "poison").await;
    for i in 0..5 {
        env.publish(
            "orders",
            0,
            &format!("id-after-{i}"),
            None,
            &format!("after-{i}"),
        )
        .await;
    }
    let records: Records = Default::default();
    let calls: Calls = Default::default();
    let _a = Member::spawn(poison_spec(&env, "a", &records, &calls));
    wait_until(
        Duration::from_secs(30),
        "the poison to be handled",
        async || calls_of(&calls, "poison") >= 1,
    )
    .await;
    // The outage (the fault, not an assertion): several ack waits, more than the consumer's
    // deliveries would last if the message were left to time out.
    tokio::time::sleep(Duration::from_secs(10)).await;
    dlq_up(&env).await;
    wait_until(
        Duration::from_secs(60),
        "the poison in the DLQ once it is back",
        || async { dead_payloads(&env).await.contains(&"poison".to_string()) },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the messages behind it",
        async || (0..5).all(|i| calls_of(&calls, &format!("after-{i}")) >= 1),
    )
    .await;
    assert_eq!(
        calls_of(&calls, "poison"),
        1,
        "a permanent failure is handled once, however long the DLQ is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_outage_costs_time_not_the_message_unordered() {
    dlq_outage_costs_time_not_the_message(Ordering::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_outage_costs_time_not_the_message_ordered() {
    dlq_outage_costs_time_not_the_message(Ordering::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_delivery_left_by_crashed_members_is_dead_lettered() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "dl", 1);
    // max_deliver = 2: the second delivery is the last one JetStream makes.
    cfg.retry.max_attempts = 1;
    cfg.dead_letter = Some(DLQ.into());
    env.provision(&cfg).await;
    let stream = names::topic_stream(&ResourceRef::new(NS, "orders").unwrap(), 0);
    // The DLQ is down, so neither member can finish dead-lettering before it crashes.
    dlq_down(&env).await;
    env.publish("orders", 0, "id-poison", None, "poison").await;
    let records: Records = Default::default();
    let calls: Calls = Default::default();
    let mut a = Member::spawn(poison_spec(&env, "a", &records, &calls));
    wait_until(
        Duration::from_secs(30),
        "the first delivery to fail",
        async || calls_of(&calls, "poison") >= 1,
    )
    .await;
    a.kill();
    let mut b = Member::spawn(poison_spec(&env, "b", &records, &calls));
    wait_until(
        Duration::from_secs(60),
        "the second (last) delivery, to b",
        || async {
            env.consumer_info(&stream, "dl")
                .await
                .delivered
                .consumer_sequence
                >= 2
        },
    )
    .await;
    b.kill();
    dlq_up(&env).await;
    let _c = Member::spawn(poison_spec(&env, "c", &records, &calls));
    wait_until(
        Duration::from_secs(60),
        "the message whose last delivery was never finished, in the DLQ",
        || async { dead_payloads(&env).await.contains(&"poison".to_string()) },
    )
    .await;
    // And the partition goes on.
    env.publish("orders", 0, "id-later", None, "later").await;
    wait_until(Duration::from_secs(30), "a later message", async || {
        calls_of(&calls, "later") >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_message_whose_last_delivery_crashed_is_dead_lettered() {
    let env = Harness::start().await;
    let mut cfg = queue_group("jobs", "dl");
    cfg.retry.max_attempts = 1;
    cfg.dead_letter = Some(DLQ.into());
    env.provision_queue(&cfg).await;
    let stream = names::queue_stream(&ResourceRef::new(NS, "jobs").unwrap());
    dlq_down(&env).await;
    env.publish_queue("jobs", "id-poison", "poison").await;
    let records: Records = Default::default();
    let calls: Calls = Default::default();
    let mut a = Member::spawn(poison_spec(&env, "a", &records, &calls));
    wait_until(
        Duration::from_secs(30),
        "the first delivery to fail",
        async || calls_of(&calls, "poison") >= 1,
    )
    .await;
    a.kill();
    let mut b = Member::spawn(poison_spec(&env, "b", &records, &calls));
    wait_until(
        Duration::from_secs(60),
        "the second (last) delivery, to b",
        || async {
            env.consumer_info(&stream, "dl")
                .await
                .delivered
                .consumer_sequence
                >= 2
        },
    )
    .await;
    b.kill();
    dlq_up(&env).await;
    let _c = Member::spawn(poison_spec(&env, "c", &records, &calls));
    wait_until(
        Duration::from_secs(60),
        "the message whose last delivery was never finished, in the DLQ",
        || async { dead_payloads(&env).await.contains(&"poison".to_string()) },
    )
    .await;
}
