//! Retry timing, permanent errors, ordering=key and metrics against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use sluice_broker::config::{Ordering, SourceKind};
use sluice_testkit::*;
use sluice_worker::{Event, HandlerError, Worker};

/// A handler that fails `flaky` until its `succeed_at`-th attempt.
fn flaky_until(succeed_at: u32) -> Behaviour {
    Arc::new(move |m| {
        if &m.payload[..] == b"flaky" && m.attempt < succeed_at {
            Err(HandlerError::retryable(format!(
                "attempt {} fails",
                m.attempt
            )))
        } else {
            Ok(())
        }
    })
}

/// Attempts of `payload` in start order.
fn attempts_of<'a>(records: &'a [Record], payload: &str) -> Vec<&'a Record> {
    let mut rs: Vec<&Record> = records.iter().filter(|r| r.payload == payload).collect();
    rs.sort_by_key(|r| r.start);
    rs
}

/// The gap between the end of each attempt and the start of the next must be at least the
/// schedule's delay (minus `slack` for clock granularity between client and server) and not
/// absurdly longer.
fn assert_gaps(attempts: &[&Record], delays_ms: &[u64], slack_ms: u64) {
    assert_eq!(attempts.len(), delays_ms.len() + 1, "{attempts:#?}");
    for (i, w) in attempts.windows(2).enumerate() {
        let gap = w[1].start.duration_since(w[0].end);
        let want = Duration::from_millis(delays_ms[i]);
        assert!(
            gap + Duration::from_millis(slack_ms) >= want,
            "gap after attempt {} was {gap:?}, schedule says {want:?}",
            i + 1
        );
        assert!(
            gap <= want + Duration::from_secs(3),
            "gap after attempt {} was {gap:?}, far beyond the schedule's {want:?}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_retries_wait_in_place_following_the_backoff_schedule() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "retry-in-place", 1);
    cfg.retry.max_attempts = 5;
    cfg.retry.backoff.initial_ms = 300;
    cfg.retry.backoff.multiplier = 2.0;
    cfg.retry.backoff.max_ms = 1_000;
    env.provision(&cfg).await;
    env.publish("orders", 0, "m-flaky", None, "flaky").await;
    env.publish("orders", 0, "m-next", None, "next").await;
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "retry-in-place", "a", &records);
    s.behaviour = flaky_until(4);
    let _a = Member::spawn(s);
    wait_until(
        Duration::from_secs(20),
        "both messages handled",
        async || records.lock().unwrap().iter().filter(|r| r.ok).count() == 2,
    )
    .await;
    let records = records.lock().unwrap().clone();
    let flaky = attempts_of(&records, "flaky");
    let numbers: Vec<u32> = flaky.iter().map(|r| r.attempt).collect();
    assert_eq!(
        numbers,
        vec![1, 2, 3, 4],
        "attempt numbers count retries in place"
    );
    // 300 ms, then x2, capped at 1 s.
    assert_gaps(&flaky, &[300, 600, 1_000], 0);
    // The partition waited: `next` ran only after `flaky` succeeded.
    let next = attempts_of(&records, "next");
    assert_eq!(next.len(), 1);
    assert!(next[0].start >= flaky[3].end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_retries_are_redelivered_after_the_backoff_while_others_flow() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "retry-nak", 1);
    cfg.ordering = Ordering::None;
    cfg.retry.max_attempts = 5;
    cfg.retry.backoff.initial_ms = 400;
    cfg.retry.backoff.multiplier = 2.0;
    cfg.retry.backoff.max_ms = 1_000;
    env.provision(&cfg).await;
    env.publish("orders", 0, "m-flaky", None, "flaky").await;
    for i in 0..20 {
        env.publish("orders", 0, &format!("m-{i}"), None, &format!("ok-{i}"))
            .await;
    }
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "retry-nak", "a", &records);
    s.behaviour = flaky_until(4);
    let _a = Member::spawn(s);
    wait_until(
        Duration::from_secs(20),
        "all messages handled",
        async || records.lock().unwrap().iter().filter(|r| r.ok).count() == 21,
    )
    .await;
    let records = records.lock().unwrap().clone();
    let flaky = attempts_of(&records, "flaky");
    // Each retry is a JetStream redelivery: the attempt is the delivery count.
    let numbers: Vec<u32> = flaky.iter().map(|r| r.attempt).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert_gaps(&flaky, &[400, 800, 1_000], 20);
    // Nothing waited for the failing message.
    let last_ok = records
        .iter()
        .filter(|r| r.payload.starts_with("ok-"))
        .map(|r| r.end)
        .max()
        .unwrap();
    assert!(
        last_ok < flaky[3].start,
        "other messages waited for the retries"
    );
    assert!(counts(&records).values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_skips_retries_and_dead_letters_with_the_envelope() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "perm", 2);
    cfg.retry.max_attempts = 5;
    cfg.dead_letter = Some("orders-dlq".into());
    env.provision(&cfg).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "order-bad");
    h.insert("traceparent", traceparent);
    h.insert("X-Tenant", "acme");
    env.publish("orders", 0, "order-1", None, "good-1").await;
    env.publish_with("orders", 1, h, "bad").await;
    env.publish("orders", 1, "order-2", None, "good-2").await;
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "perm", "a", &records);
    s.behaviour = Arc::new(|m| {
        if &m.payload[..] == b"bad" {
            Err(HandlerError::permanent("not an order"))
        } else {
            Ok(())
        }
    });
    let counter = Arc::new(EventCounter::default());
    s.observer = Some(counter.clone());
    let _a = Member::spawn(s);
    wait_until(
        Duration::from_secs(20),
        "good messages handled",
        async || records.lock().unwrap().iter().filter(|r| r.ok).count() == 2,
    )
    .await;
    wait_until(Duration::from_secs(10), "dead-letter event", async || {
        counter.get(Event::DeadLettered) == 1
    })
    .await;
    let records = records.lock().unwrap().clone();
    assert_eq!(
        attempts_of(&records, "bad").len(),
        1,
        "no retry after a permanent error"
    );
    assert_eq!(counter.get(Event::Retried), 0);
    let dead = env.dead_letters("orders-dlq").await;
    assert_eq!(dead.len(), 1);
    let (dl, headers, payload) = &dead[0];
    assert_eq!(payload, "bad");
    assert_eq!(dl.source_kind, SourceKind::Topic);
    assert_eq!(dl.source_name, "orders");
    assert_eq!(dl.partition, 1);
    assert_eq!(dl.offset, 1);
    assert_eq!(dl.group, "perm");
    assert_eq!(dl.attempts, 1);
    assert_eq!(dl.original_id, "order-bad");
    assert!(dl.last_error.contains("not an order"), "{}", dl.last_error);
    assert!(dl.first_failure <= dl.last_failure);
    // Original headers, trace context included, travel with the dead letter.
    assert_eq!(headers.get("traceparent").unwrap().as_str(), traceparent);
    assert_eq!(headers.get("X-Tenant").unwrap().as_str(), "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordering_keeps_per_key_order_while_keys_run_concurrently() {
    let env = Harness::start().await;
    let mut cfg = topic_group("events", "by-key", 1);
    cfg.ordering = Ordering::Key;
    cfg.max_concurrency = 8;
    env.provision(&cfg).await;
    let keys = ["k0", "k1", "k2", "k3"];
    let per_key = 12;
    for i in 0..per_key {
        for k in keys {
            env.publish(
                "events",
                0,
                &format!("{k}-{i}"),
                Some(k),
                &format!("{k}:{i}"),
            )
            .await;
        }
    }
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "by-key", "a", &records);
    s.work = Duration::from_millis(40);
    let _a = Member::spawn(s);
    let total = keys.len() * per_key;
    wait_until(Duration::from_secs(25), "all handled", async || {
        records.lock().unwrap().len() == total
    })
    .await;
    let mut records = records.lock().unwrap().clone();
    records.sort_by_key(|r| r.start);
    for k in keys {
        let of_key: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(k))
            .collect();
        let seq: Vec<String> = of_key.iter().map(|r| r.payload.clone()).collect();
        let expected: Vec<String> = (0..per_key).map(|i| format!("{k}:{i}")).collect();
        assert_eq!(seq, expected, "key {k} out of publish order");
        for w in of_key.windows(2) {
            assert!(w[1].start >= w[0].end, "key {k} handled concurrently");
        }
    }
    // Different keys overlapped in time.
    let max_overlap = records
        .iter()
        .map(|r| {
            records
                .iter()
                .filter(|o| o.start <= r.start && o.end > r.start)
                .count()
        })
        .max()
        .unwrap();
    assert!(max_overlap > 1, "keys never ran concurrently");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_serves_metrics_and_readiness_once_joined() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "metered", 1);
    env.provision(&cfg).await;
    for i in 0..3 {
        env.publish("orders", 0, &format!("m-{i}"), None, "x").await;
    }
    let port = sluice_broker::embedded::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut options = member_options(&env, "metered", "a");
    options.metrics_addr = Some(addr);
    let worker = Worker::new(options);
    let metrics = worker.metrics();
    let records: Records = Default::default();
    let _a = Member::spawn_with(worker, MemberSpec::new(&env, "metered", "a", &records));
    wait_until(Duration::from_secs(20), "3 handled", async || {
        records.lock().unwrap().len() == 3
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "processed counter at 3",
        || async {
            let (status, body) = http_get(addr, "/metrics").await;
            status == 200
                && body
                    .lines()
                    .any(|l| l == r#"sluice_worker_messages_processed_total{group="metered"} 3"#)
        },
    )
    .await;
    let (status, _) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200);
    assert!(metrics.is_ready());
}
