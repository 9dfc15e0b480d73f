//! Delayed delivery on queues (JetStream message schedules) against a real nats-server: a
//! delayed message is invisible until due, then handled like any other (headers, idempotency
//! key, retries); schedules survive a server restart; the producer refuses what the queue does
//! not accept.
//!
//! `lateness_distribution` prints the lateness figures quoted in `docs/delay-and-priority.md`:
//! `cargo nextest run -p sluice-worker -E 'binary(delay)' --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sluice_broker::config::{DelaySettings, QueueSettings};
use sluice_broker::schedule;
use sluice_testkit::*;
use sluice_worker::HandlerError;
use sluice_worker::producer::{Producer, ProducerConfig, ProducerErrorKind, Record};

/// A handled message as the test sees it.
#[derive(Debug, Clone)]
struct Seen {
    payload: String,
    at: SystemTime,
    due: Option<SystemTime>,
    key: Option<String>,
    idempotency_key: String,
    custom: Option<String>,
    attempt: u32,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

fn parse_due(h: &async_nats::HeaderMap) -> Option<SystemTime> {
    let text = h.get(schedule::DUE)?.as_str().to_string();
    let t =
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos() as u64))
}

fn delayed_queue(max_delay: Duration) -> QueueSettings {
    QueueSettings {
        delay: Some(DelaySettings {
            max_delay_ms: max_delay.as_millis() as u64,
        }),
        ..Default::default()
    }
}

fn recording_member(env: &Harness, group: &str, seen: &SeenLog, fail_first: bool) -> Member {
    let records: Records = Default::default();
    let mut spec = MemberSpec::new(env, group, "a", &records);
    let seen = seen.clone();
    spec.behaviour = Arc::new(move |m| {
        seen.lock().unwrap().push(Seen {
            payload: String::from_utf8_lossy(&m.payload).into_owned(),
            at: SystemTime::now(),
            due: parse_due(&m.headers),
            key: m.key.clone(),
            idempotency_key: m.idempotency_key.clone(),
            custom: m.headers.get("X-Custom").map(|v| v.as_str().to_string()),
            attempt: m.attempt,
        });
        if fail_first && m.attempt == 1 {
            return Err(HandlerError::retryable("first attempt fails"));
        }
        Ok(())
    });
    Member::spawn(spec)
}

async fn producer(env: &Harness) -> Producer {
    Producer::new(env.broker.clone(), ProducerConfig::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_invisible_until_due_then_handled_like_any_other() {
    let env = Harness::start().await;
    let mut cfg = queue_group("later", "crew");
    cfg.retry.max_attempts = 3;
    env.provision_queue_with(&cfg, &delayed_queue(Duration::from_secs(3600)))
        .await;
    let seen: SeenLog = Default::default();
    let _a = recording_member(&env, "crew", &seen, true);
    let producer = producer(&env).await;
    let jobs = producer.queue(NS, "later").await.unwrap();
    let delay = Duration::from_secs(3);
    let sent_at = SystemTime::now();
    jobs.send_after(
        delay,
        Record::new("delayed")
            .id("job-7")
            .key("customer-7")
            .header("X-Custom", "kept"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    jobs.publish(Record::new("now")).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the delayed message handled twice (retry)",
        async || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|s| s.payload == "delayed")
                .count()
                >= 2
        },
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    let now = seen
        .iter()
        .find(|s| s.payload == "now")
        .expect("undelayed handled");
    let delayed: Vec<&Seen> = seen.iter().filter(|s| s.payload == "delayed").collect();
    assert!(
        delayed[0].at >= sent_at + delay,
        "delivered {:?} before its time",
        (sent_at + delay).duration_since(delayed[0].at)
    );
    assert!(
        now.at < delayed[0].at,
        "the undelayed message waited for the delayed one"
    );
    for d in &delayed {
        assert_eq!(d.key.as_deref(), Some("customer-7"));
        assert_eq!(d.custom.as_deref(), Some("kept"));
        assert_eq!(
            d.idempotency_key, "job-7",
            "the message id survives the schedule"
        );
    }
    assert_eq!(
        delayed.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        vec![1, 2],
        "retried like any other message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_refuses_delays_the_queue_does_not_accept() {
    let env = Harness::start().await;
    let cfg = queue_group("strict", "crew");
    env.provision_queue_with(&cfg, &delayed_queue(Duration::from_secs(60)))
        .await;
    let plain = queue_group("plain", "crew2");
    env.provision_queue(&plain).await;
    let producer = producer(&env).await;
    let strict = producer.queue(NS, "strict").await.unwrap();
    let err = strict
        .send_after(Duration::from_secs(61), Record::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::InvalidMessage);
    assert!(err.to_string().contains("maxDelay"), "{err}");
    let err = strict
        .send_with_priority(1, Record::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProducerErrorKind::InvalidMessage);
    let plain = producer.queue(NS, "plain").await.unwrap();
    let err = plain
        .send_after(Duration::from_secs(1), Record::new("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("delay.enabled"), "{err}");
    // A delay within the limit and a due time in the past are accepted.
    strict
        .send_after(Duration::from_secs(60), Record::new("x"))
        .await
        .unwrap()
        .await
        .unwrap();
    plain
        .send_at(SystemTime::UNIX_EPOCH, Record::new("x"))
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sending_a_delayed_message_with_the_same_id_schedules_it_once() {
    let env = Harness::start().await;
    let cfg = queue_group("once", "crew");
    env.provision_queue_with(&cfg, &delayed_queue(Duration::from_secs(60)))
        .await;
    let seen: SeenLog = Default::default();
    let _a = recording_member(&env, "crew", &seen, false);
    let producer = producer(&env).await;
    let jobs = producer.queue(NS, "once").await.unwrap();
    for _ in 0..3 {
        jobs.send_after(Duration::from_secs(2), Record::new("one").id("same-id"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    jobs.send_after(Duration::from_secs(4), Record::new("marker"))
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "marker handled", async || {
        seen.lock().unwrap().iter().any(|s| s.payload == "marker")
    })
    .await;
    let count = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.payload == "one")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_survive_a_server_restart() {
    let mut env = Harness::start().await;
    let cfg = queue_group("durable", "crew");
    env.provision_queue_with(&cfg, &delayed_queue(Duration::from_secs(3600)))
        .await;
    let n = 20;
    {
        let producer = producer(&env).await;
        let jobs = producer.queue(NS, "durable").await.unwrap();
        for i in 0..n {
            drop(
                jobs.send_after(
                    Duration::from_secs(6),
                    Record::new(format!("d-{i}")).id(format!("d-{i}")),
                )
                .await
                .unwrap(),
            );
        }
        producer.flush().await.unwrap();
    }
    let sent_at = SystemTime::now();
    env.server.restart().await.unwrap();
    let seen: SeenLog = Default::default();
    let _a = recording_member(&env, "crew", &seen, false);
    wait_until(
        Duration::from_secs(60),
        "every delayed message handled",
        async || seen.lock().unwrap().len() >= n,
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        ok_payloads(&seen),
        (0..n).map(|i| format!("d-{i}")).collect::<Vec<_>>()
    );
    for s in &seen {
        assert!(
            s.at >= sent_at + Duration::from_secs(5),
            "{} came early",
            s.payload
        );
        assert!(
            s.at >= s.due.unwrap(),
            "{} came before it was due",
            s.payload
        );
    }
}

fn ok_payloads(seen: &[Seen]) -> Vec<String> {
    let mut v: Vec<String> = seen.iter().map(|s| s.payload.clone()).collect();
    v.sort_by_key(|p| p.trim_start_matches("d-").parse::<u32>().unwrap_or(0));
    v.dedup();
    v
}

/// Sends 200 messages with delays spread over 1-5 s and prints how late after its due time
/// each was handled (never early: asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_distribution() {
    let env = Harness::start().await;
    let mut cfg = queue_group("lateness", "crew");
    cfg.max_concurrency = 32;
    env.provision_queue_with(&cfg, &delayed_queue(Duration::from_secs(60)))
        .await;
    let seen: SeenLog = Default::default();
    let _a = recording_member(&env, "crew", &seen, false);
    let producer = producer(&env).await;
    let jobs = producer.queue(NS, "lateness").await.unwrap();
    let n = 200u64;
    for i in 0..n {
        let delay = Duration::from_millis(1_000 + (i * 4_000) / n);
        drop(
            jobs.send_after(delay, Record::new(format!("l-{i}")))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    wait_until(Duration::from_secs(60), "all handled", async || {
        seen.lock().unwrap().len() as u64 >= n
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let mut late: Vec<Duration> = seen
        .iter()
        .map(|s| {
            let due = s.due.expect("Sluice-Due header");
            s.at.duration_since(due)
                .unwrap_or_else(|e| panic!("{} handled {:?} early", s.payload, e.duration()))
        })
        .collect();
    late.sort();
    let pct = |p: usize| late[(late.len() * p / 100).min(late.len() - 1)];
    println!(
        "lateness over {} delayed messages: min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?}",
        late.len(),
        late[0],
        pct(50),
        pct(90),
        pct(99),
        late[late.len() - 1]
    );
}

/// The same figure for the SDK's retry path (NAK with delay, JetStream redelivery): 200
/// messages failing once with a 2 s backoff; prints how much later than the backoff the retry
/// started. Compared with `lateness_distribution` in `docs/delay-and-priority.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_retry_lateness_distribution() {
    let env = Harness::start().await;
    let mut cfg = queue_group("naks", "crew");
    cfg.max_concurrency = 256;
    cfg.retry.backoff.initial_ms = 2_000;
    cfg.retry.backoff.max_ms = 2_000;
    cfg.retry.max_attempts = 3;
    env.provision_queue(&cfg).await;
    let seen: SeenLog = Default::default();
    let _a = recording_member(&env, "crew", &seen, true);
    let producer = producer(&env).await;
    let jobs = producer.queue(NS, "naks").await.unwrap();
    let n = 200;
    for i in 0..n {
        drop(jobs.send(Record::new(format!("n-{i}"))).await.unwrap());
    }
    producer.flush().await.unwrap();
    wait_until(Duration::from_secs(60), "all retried", async || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.attempt == 2)
            .count()
            >= n
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let mut late: Vec<Duration> = Vec::new();
    for i in 0..n {
        let p = format!("n-{i}");
        let first = seen
            .iter()
            .find(|s| s.payload == p && s.attempt == 1)
            .unwrap();
        let second = seen
            .iter()
            .find(|s| s.payload == p && s.attempt == 2)
            .unwrap();
        let gap = second.at.duration_since(first.at).unwrap();
        late.push(gap.saturating_sub(Duration::from_secs(2)));
    }
    late.sort();
    let pct = |p: usize| late[(late.len() * p / 100).min(late.len() - 1)];
    println!(
        "NAK-with-delay retry lateness over {} retries (2 s backoff): min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?}",
        late.len(),
        late[0],
        pct(50),
        pct(90),
        pct(99),
        late[late.len() - 1]
    );
}
