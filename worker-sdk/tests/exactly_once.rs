//! exactlyOnce and atMostOnce against a real nats-server: forced redeliveries, crashes between
//! handling and acknowledgement, crashes mid-handling, DLQ replays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use sluice_broker::config::{Delivery, Ordering, TopicSettings};
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;
use sluice_worker::Event;

/// Entry point of the worker child processes (see `sluice_testkit::child_main`).
#[test]
#[ignore = "worker process entry point, run as a child by the tests of this file"]
fn child_worker() {
    child_main();
}

/// Creates the output topic and returns its subject and stream.
async fn output_topic(env: &Harness) -> (String, String) {
    let out = ResourceRef::new(NS, "outputs").unwrap();
    env.broker
        .ensure_topic(
            &out,
            &TopicSettings {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (names::topic_subject(&out, 0), names::topic_stream(&out, 0))
}

/// Payloads stored in a stream, with how often each is there.
async fn stored(env: &Harness, stream: &str) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for (_, payload) in env.stream_messages(stream).await {
        *c.entry(payload).or_insert(0) += 1;
    }
    c
}

/// Handlers that block their worker's thread past the ack wait: no progress ack can go out,
/// so JetStream redelivers while the handler still runs (or just finished).
async fn forced_redeliveries(queue: bool) {
    let env = Harness::start().await;
    let (out_subject, out_stream) = output_topic(&env).await;
    let group = if queue { "eo-queue" } else { "eo-topic" };
    let mut cfg = if queue {
        queue_group("jobs", group)
    } else {
        topic_group("jobs", group, 1)
    };
    cfg.delivery = Delivery::ExactlyOnce;
    cfg.ordering = Ordering::None;
    cfg.ack_wait_ms = 1_000;
    // Long leases, so the blocked thread does not lose its partition meanwhile.
    cfg.pin_timeout_ms = 5_000;
    cfg.max_concurrency = 4;
    cfg.retry.max_attempts = 10;
    if queue {
        env.provision_queue(&cfg).await;
    } else {
        env.provision(&cfg).await;
    }
    let n = 8;
    for i in 0..n {
        let payload = if i % 3 == 0 {
            format!("slow-{i}")
        } else {
            format!("fast-{i}")
        };
        if queue {
            env.publish_queue("jobs", &format!("job-{i}"), &payload)
                .await;
        } else {
            env.publish("jobs", 0, &format!("job-{i}"), None, &payload)
                .await;
        }
    }
    let records: Records = Default::default();
    let counter = Arc::new(EventCounter::default());
    let mut s = MemberSpec::new(&env, group, "a", &records);
    s.behaviour = Arc::new(|m| {
        if m.payload.starts_with(b"slow-") {
            std::thread::sleep(Duration::from_millis(1_600));
        }
        Ok(())
    });
    s.observer = Some(counter.clone());
    s.output_subject = Some(out_subject);
    let _a = Member::spawn(s);
    wait_until(Duration::from_secs(25), "all handled", async || {
        records.lock().unwrap().len() >= n
    })
    .await;
    let stream = if queue {
        names::queue_stream(&ResourceRef::new(NS, "jobs").unwrap())
    } else {
        names::topic_stream(&ResourceRef::new(NS, "jobs").unwrap(), 0)
    };
    wait_until(
        Duration::from_secs(15),
        "every delivery settled",
        || async {
            let info = env.consumer_info(&stream, group).await;
            info.num_ack_pending == 0 && info.num_pending == 0
        },
    )
    .await;
    let info = env.consumer_info(&stream, group).await;
    assert!(
        info.delivered.consumer_sequence > n as u64,
        "no redelivery was forced ({} deliveries for {n} messages)",
        info.delivered.consumer_sequence
    );
    let records = records.lock().unwrap().clone();
    let by_payload = ok_by_payload(&records);
    assert_eq!(by_payload.len(), n);
    assert!(
        by_payload.values().all(|&c| c == 1),
        "a completed message reached the handler twice: {by_payload:?}"
    );
    let outputs = stored(&env, &out_stream).await;
    assert_eq!(outputs.len(), n);
    assert!(
        outputs.values().all(|&c| c == 1),
        "duplicate outputs: {outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_forced_redeliveries_on_a_topic() {
    forced_redeliveries(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_forced_redeliveries_on_a_queue() {
    forced_redeliveries(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_crashes_after_handling_and_mid_handling() {
    let env = Harness::start().await;
    let (out_subject, out_stream) = output_topic(&env).await;
    let mut cfg = topic_group("jobs", "eo-crash", 1);
    cfg.delivery = Delivery::ExactlyOnce;
    cfg.ack_wait_ms = 1_000;
    env.provision(&cfg).await;
    let payloads = [
        "p-0",
        "p-1",
        // Completes, its key is recorded, then the process dies before the ack.
        "crash-before-ack:2",
        "p-3",
        // Publishes its output, then the process dies before completing: handled again.
        "abort-once:4",
        "p-5",
    ];
    for (i, p) in payloads.iter().enumerate() {
        env.publish("jobs", 0, &format!("job-{i}"), None, p).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let children =
        ChildSpec::new(&env, "eo-crash", dir.path()).with("SLUICE_TEST_OUTPUT", &out_subject);
    let mut sup = Supervisor::start(children.clone());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        sup.tend();
        let done = child_counts(&children.events(), "done");
        if payloads.iter().all(|p| done.contains_key(*p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all handled (crashes {}): {:?}\n{}",
            sup.crashes,
            children.events(),
            children.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = names::topic_stream(&ResourceRef::new(NS, "jobs").unwrap(), 0);
    wait_until(
        Duration::from_secs(15),
        "every delivery settled",
        || async {
            let info = env.consumer_info(&stream, "eo-crash").await;
            info.num_ack_pending == 0 && info.num_pending == 0
        },
    )
    .await;
    let events = children.events();
    assert_eq!(sup.crashes, 2, "{events:?}");
    let done = child_counts(&events, "done");
    assert!(
        done.values().all(|&c| c == 1),
        "a completed message reached the handler twice: {done:?}"
    );
    let starts = child_counts(&events, "start");
    assert_eq!(
        starts["crash-before-ack:2"], 1,
        "redelivered after completion and handled again"
    );
    assert_eq!(starts["abort-once:4"], 2, "the crashed handling runs again");
    assert!(
        events.iter().any(|e| e.event == "dup"),
        "the idempotency store never recognised a redelivery: {events:?}"
    );
    let outputs = stored(&env, &out_stream).await;
    assert_eq!(outputs.len(), payloads.len(), "{outputs:?}");
    assert!(
        outputs.values().all(|&c| c == 1),
        "duplicate outputs: {outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_recognised_as_the_same_message() {
    let env = Harness::start().await;
    let mut cfg = topic_group("jobs", "eo-replay", 1);
    cfg.delivery = Delivery::ExactlyOnce;
    env.provision(&cfg).await;
    env.publish("jobs", 0, "job-1", None, "first").await;
    let records: Records = Default::default();
    let counter = Arc::new(EventCounter::default());
    let mut s = MemberSpec::new(&env, "eo-replay", "a", &records);
    s.observer = Some(counter.clone());
    let _a = Member::spawn(s);
    wait_until(Duration::from_secs(20), "first handled", async || {
        records.lock().unwrap().len() == 1
    })
    .await;
    // What `sluice dlq replay` publishes for a dead letter of job-1 at DLQ sequence 7.
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "replay:7:job-1");
    h.insert("Sluice-Original-Id", "job-1");
    env.publish_with("jobs", 0, h, "first").await;
    env.publish("jobs", 0, "job-2", None, "second").await;
    wait_until(Duration::from_secs(20), "second handled", async || {
        records
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.payload == "second")
    })
    .await;
    assert_eq!(
        records.lock().unwrap().len(),
        2,
        "the replay reached the handler"
    );
    assert_eq!(counter.get(Event::Duplicate), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_never_handles_twice_even_when_the_process_dies_mid_handling() {
    let env = Harness::start().await;
    let mut cfg = topic_group("jobs", "amo", 1);
    cfg.delivery = Delivery::AtMostOnce;
    cfg.ack_wait_ms = 1_000;
    env.provision(&cfg).await;
    let payloads = ["a-0", "a-1", "abort:2", "a-3", "a-4"];
    for (i, p) in payloads.iter().enumerate() {
        env.publish("jobs", 0, &format!("job-{i}"), None, p).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let children = ChildSpec::new(&env, "amo", dir.path());
    let mut sup = Supervisor::start(children.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sup.tend();
        if child_counts(&children.events(), "done").contains_key("a-4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a-4 not handled (crashes {}): {:?}\n{}",
            sup.crashes,
            children.events(),
            children.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = names::topic_stream(&ResourceRef::new(NS, "jobs").unwrap(), 0);
    wait_until(
        Duration::from_secs(15),
        "every delivery settled",
        || async {
            let info = env.consumer_info(&stream, "amo").await;
            info.num_ack_pending == 0 && info.num_pending == 0
        },
    )
    .await;
    let events = children.events();
    assert_eq!(sup.crashes, 1);
    let starts = child_counts(&events, "start");
    assert!(
        starts.values().all(|&c| c == 1),
        "a message reached the handler twice: {starts:?}"
    );
    // The crash lost the message it interrupted (that is the at-most-once trade-off).
    assert_eq!(starts["abort:2"], 1);
    let done = child_counts(&events, "done");
    for p in ["a-0", "a-1", "a-3", "a-4"] {
        assert_eq!(done.get(p), Some(&1), "{p}: {done:?}");
    }
}
