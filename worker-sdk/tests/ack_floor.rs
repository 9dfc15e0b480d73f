//! An ordered partition whose ack floor jumps past a delivery it holds (a deposed owner's
//! late acks, accepted by the server for an older delivery, plus an out-of-order redelivery)
//! goes on handling instead of stalling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_floor_jump_past_a_held_delivery_does_not_stall_the_partition() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "af", 1);
    // Long enough that what the "deposed owner" (this test) holds is not redelivered meanwhile.
    cfg.ack_wait_ms = 60_000;
    env.provision(&cfg).await;
    for i in 1..=10 {
        env.publish("orders", 0, &format!("id-{i}"), None, &format!("m{i}"))
            .await;
    }
    let stream = names::topic_stream(&ResourceRef::new(NS, "orders").unwrap(), 0);
    let durable = names::group_consumer(&ResourceRef::new(NS, "af").unwrap());

    // The deposed owner: pulls offsets 1-4 (and holds the pin until it expires).
    let client = env.broker.client().clone();
    let js = env.broker.jetstream().clone();
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let request = serde_json::json!({"batch": 4, "expires": 5_000_000_000u64, "group": names::PRIORITY_GROUP});
    client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 4 {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap();
        if m.status.is_none() {
            held.push(jetstream::Message {
                message: m,
                context: js.clone(),
            });
        }
    }

    let records: Records = Default::default();
    let _a = Member::spawn(MemberSpec::new(&env, "af", "a", &records));
    // a receives 5-10 once the old pin expired, and waits for 1-4 at its head.
    wait_until(
        Duration::from_secs(60),
        "offsets 5-10 delivered to a",
        || async {
            env.consumer_info(&stream, "af")
                .await
                .delivered
                .consumer_sequence
                >= 10
        },
    )
    .await;
    // Out-of-order redelivery: offset 4 goes back, and to a.
    held[3].ack_with(AckKind::Nak(None)).await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "offset 4 redelivered to a",
        || async {
            env.consumer_info(&stream, "af")
                .await
                .delivered
                .consumer_sequence
                >= 11
        },
    )
    .await;
    // Late acks of the deposed owner, offset 4's older delivery included: the ack floor jumps
    // to 4, past the delivery of 4 that a holds.
    for m in &held {
        m.ack().await.unwrap();
    }
    client.flush().await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "offsets 5-10 handled by a",
        async || {
            let r = records.lock().unwrap();
            (5..=10).all(|o| r.iter().any(|x| x.ok && x.offset == o))
        },
    )
    .await;
}
