//! Queues (competing consumers) against a real nats-server: sharing, the visibility timeout kept
//! alive by progress heartbeats, retries and dead-lettering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use sluice_broker::config::SourceKind;
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;
use sluice_worker::HandlerError;

fn queue_stream() -> String {
    names::queue_stream(&ResourceRef::new(NS, "jobs").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_competing_workers_handle_every_message_once() {
    let env = Harness::start().await;
    let cfg = queue_group("jobs", "crew");
    env.provision_queue(&cfg).await;
    let n = 150;
    for i in 0..n {
        env.publish_queue("jobs", &format!("job-{i}"), &format!("job-{i}"))
            .await;
    }
    let records: Records = Default::default();
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let mut s = MemberSpec::new(&env, "crew", id, &records);
            s.work = Duration::from_millis(15);
            Member::spawn(s)
        })
        .collect();
    wait_until(Duration::from_secs(25), "all handled", async || {
        records.lock().unwrap().len() >= n
    })
    .await;
    wait_until(Duration::from_secs(10), "queue drained", || async {
        let info = env.consumer_info(&queue_stream(), "crew").await;
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
    let records = records.lock().unwrap().clone();
    let handled = ok_by_payload(&records);
    assert_eq!(handled.len(), n);
    assert!(
        handled.values().all(|&c| c == 1),
        "handled twice: {handled:?}"
    );
    for m in &members {
        assert!(
            records.iter().any(|r| r.member == m.id),
            "member {} got no work",
            m.id
        );
    }
    // Acknowledged queue messages are removed (work-queue retention).
    let info = env
        .broker
        .jetstream()
        .get_stream(queue_stream())
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_visibility_timeout_keeps_its_message() {
    let env = Harness::start().await;
    let mut cfg = queue_group("jobs", "slow");
    cfg.ack_wait_ms = 1_000;
    env.provision_queue(&cfg).await;
    env.publish_queue("jobs", "job-1", "slow-1").await;
    env.publish_queue("jobs", "job-2", "slow-2").await;
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "slow", "a", &records);
    // Three visibility timeouts per message.
    s.work = Duration::from_millis(3_000);
    let _a = Member::spawn(s);
    wait_until(Duration::from_secs(20), "both handled", async || {
        records.lock().unwrap().len() >= 2
    })
    .await;
    wait_until(Duration::from_secs(10), "acks settled", || async {
        env.consumer_info(&queue_stream(), "slow")
            .await
            .num_ack_pending
            == 0
    })
    .await;
    let info = env.consumer_info(&queue_stream(), "slow").await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "a message was redelivered while its handler ran"
    );
    let records = records.lock().unwrap().clone();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.attempt == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_retries_follow_the_backoff_and_end_in_the_dlq() {
    let env = Harness::start().await;
    let mut cfg = queue_group("jobs", "retrying");
    cfg.retry.max_attempts = 3;
    cfg.retry.backoff.initial_ms = 400;
    cfg.retry.backoff.multiplier = 2.0;
    cfg.retry.backoff.max_ms = 2_000;
    cfg.dead_letter = Some("jobs-dlq".into());
    env.provision_queue(&cfg).await;
    env.publish_queue("jobs", "job-poison", "poison").await;
    for i in 0..10 {
        env.publish_queue("jobs", &format!("job-{i}"), &format!("ok-{i}"))
            .await;
    }
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "retrying", "a", &records);
    s.behaviour = Arc::new(|m| {
        if &m.payload[..] == b"poison" {
            Err(HandlerError::retryable("downstream timeout"))
        } else {
            Ok(())
        }
    });
    let _a = Member::spawn(s);
    wait_until(Duration::from_secs(20), "poison dead-lettered", || async {
        !env.dlq_messages("jobs-dlq").await.is_empty()
    })
    .await;
    wait_until(Duration::from_secs(10), "the others handled", async || {
        records.lock().unwrap().iter().filter(|r| r.ok).count() == 10
    })
    .await;
    let records = records.lock().unwrap().clone();
    let mut poison: Vec<&Record> = records.iter().filter(|r| r.payload == "poison").collect();
    poison.sort_by_key(|r| r.start);
    assert_eq!(poison.len(), 3, "exactly maxAttempts calls");
    assert_eq!(
        poison.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for (w, want) in poison.windows(2).zip([400u64, 800]) {
        let gap = w[1].start.duration_since(w[0].end);
        assert!(
            gap + Duration::from_millis(20) >= Duration::from_millis(want),
            "gap {gap:?} < {want} ms"
        );
        assert!(gap <= Duration::from_millis(want + 3_000), "gap {gap:?}");
    }
    let dead = env.dead_letters("jobs-dlq").await;
    assert_eq!(dead.len(), 1);
    let (dl, _, payload) = &dead[0];
    assert_eq!(payload, "poison");
    assert_eq!(dl.source_kind, SourceKind::Queue);
    assert_eq!(dl.source_name, "jobs");
    assert_eq!((dl.partition, dl.offset, dl.attempts), (0, 1, 3));
    assert_eq!(dl.group, "retrying");
    assert_eq!(dl.original_id, "job-poison");
    assert!(dl.last_error.contains("downstream timeout"));
}
