//! Dead-lettering against a real nats-server: messages that always fail, panic, or abort the
//! worker process end in the DLQ after exactly maxAttempts deliveries, with the envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_broker::config::SourceKind;
use sluice_testkit::*;
use sluice_worker::HandlerError;

/// Entry point of the worker child processes (see `sluice_testkit::child_main`).
#[test]
#[ignore = "worker process entry point, run as a child by the tests of this file"]
fn child_worker() {
    child_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_messages_are_dead_lettered_after_max_attempts() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "dl", 3);
    cfg.retry.max_attempts = 3;
    cfg.retry.backoff.initial_ms = 500;
    cfg.dead_letter = Some("orders-dlq".into());
    env.provision(&cfg).await;
    env.publish("orders", 0, "id-err", None, "poison-err").await;
    env.publish("orders", 0, "id-after-0", None, "after-0")
        .await;
    env.publish("orders", 1, "id-panic", None, "poison-panic")
        .await;
    env.publish("orders", 1, "id-after-1", None, "after-1")
        .await;
    for i in 0..10 {
        env.publish("orders", 2, &format!("id-p2-{i}"), None, &format!("p2-{i}"))
            .await;
    }
    // Calls per payload, counted before the handler fails or panics.
    let calls: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Default::default();
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "dl", "a", &records);
    let c = calls.clone();
    s.behaviour = Arc::new(move |m| {
        let payload = String::from_utf8_lossy(&m.payload).to_string();
        c.lock()
            .unwrap()
            .entry(payload.clone())
            .or_default()
            .push(Instant::now());
        match payload.as_str() {
            "poison-err" => Err(HandlerError::retryable("database unavailable")),
            "poison-panic" => panic!("index out of bounds in the handler"),
            _ => Ok(()),
        }
    });
    let _a = Member::spawn(s);
    wait_until(
        Duration::from_secs(25),
        "both poisons dead-lettered",
        || async { env.dlq_messages("orders-dlq").await.len() == 2 },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the messages behind them",
        async || records.lock().unwrap().iter().filter(|r| r.ok).count() == 12,
    )
    .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls["poison-err"].len(), 3, "exactly maxAttempts calls");
    assert_eq!(calls["poison-panic"].len(), 3, "exactly maxAttempts calls");
    // Other partitions kept flowing while the poisons were retried.
    let first_p2 = calls["p2-0"][0];
    assert!(first_p2 < calls["poison-err"][2] && first_p2 < calls["poison-panic"][2]);
    assert!(counts(&records.lock().unwrap()).values().all(|&n| n == 1));

    let dead = env.dead_letters("orders-dlq").await;
    let by_id: HashMap<String, _> = dead
        .into_iter()
        .map(|(dl, _, payload)| (dl.original_id.clone(), (dl, payload)))
        .collect();
    let (err, payload) = &by_id["id-err"];
    assert_eq!(payload, "poison-err");
    assert_eq!(
        (
            err.source_kind,
            err.source_name.as_str(),
            err.partition,
            err.offset
        ),
        (SourceKind::Topic, "orders", 0, 1)
    );
    assert_eq!(err.group, "dl");
    assert_eq!(err.attempts, 3);
    assert!(
        err.last_error.contains("database unavailable"),
        "{}",
        err.last_error
    );
    // Two backoff steps (500 ms, 1 s) separate the first and the last failure.
    assert!(err.last_failure - err.first_failure >= time::Duration::milliseconds(1_400));
    let (panicked, payload) = &by_id["id-panic"];
    assert_eq!(payload, "poison-panic");
    assert_eq!(
        (panicked.partition, panicked.offset, panicked.attempts),
        (1, 1, 3)
    );
    assert!(
        panicked.last_error.contains("panicked")
            && panicked.last_error.contains("index out of bounds"),
        "{}",
        panicked.last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_aborts_the_process_is_dead_lettered_after_max_attempts() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "crashy", 2);
    cfg.retry.max_attempts = 3;
    cfg.ack_wait_ms = 1_000;
    cfg.dead_letter = Some("orders-dlq".into());
    env.provision(&cfg).await;
    env.publish("orders", 0, "id-ok-1", None, "ok-1").await;
    env.publish("orders", 0, "id-poison", None, "abort:poison")
        .await;
    env.publish("orders", 0, "id-ok-2", None, "ok-2").await;
    for i in 0..5 {
        env.publish("orders", 1, &format!("id-p1-{i}"), None, &format!("p1-{i}"))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let children = ChildSpec::new(&env, "crashy", dir.path());
    let mut sup = Supervisor::start(children.clone());
    let deadline = Instant::now() + Duration::from_secs(40);
    let poison_dead = |dead: &[(
        sluice_broker::dlq::DeadLetter,
        async_nats::HeaderMap,
        String,
    )]| { dead.iter().any(|(dl, _, _)| dl.original_id == "id-poison") };
    loop {
        sup.tend();
        let done = child_counts(&children.events(), "done");
        let dead = env.dead_letters("orders-dlq").await;
        // ok-2 sits behind the poison: it is handled or (see below) dead-lettered.
        let ok2_settled =
            done.contains_key("ok-2") || dead.iter().any(|(dl, _, _)| dl.original_id == "id-ok-2");
        if poison_dead(&dead) && ok2_settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "poison not dead-lettered in time (crashes {}): {:?}\n{}",
            sup.crashes,
            children.events(),
            children.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = children.events();
    let starts = child_counts(&events, "start");
    assert_eq!(
        starts["abort:poison"], 3,
        "handler called exactly maxAttempts times"
    );
    assert_eq!(sup.crashes, 3, "each attempt crashed the worker");
    // The other partition kept flowing (at least once: acks sent just before a crash can be lost).
    let done = child_counts(&events, "done");
    for p in ["ok-1", "p1-0", "p1-4"] {
        assert!(
            done.get(p).is_some_and(|&n| n >= 1),
            "{p} not handled: {done:?}"
        );
    }
    let dead = env.dead_letters("orders-dlq").await;
    let (dl, _, payload) = dead
        .iter()
        .find(|(dl, _, _)| dl.original_id == "id-poison")
        .unwrap();
    assert_eq!(payload, "abort:poison");
    assert_eq!((dl.partition, dl.offset, dl.attempts), (0, 2, 3));
    assert_eq!(dl.group, "crashy");
    assert!(
        dl.last_error.contains("delivered 4 times"),
        "{}",
        dl.last_error
    );
    // KNOWN WEAKNESS (documented in the crate docs): ok-2 was fetched (delivered) by every
    // worker that crashed on the poison, and JetStream counts those deliveries, so it can reach
    // the limit without ever being handled; it then goes to the DLQ (not lost) with the same
    // explanation. Whatever happened to it, it was never handled more than once per delivery.
    if let Some((dl, _, _)) = dead.iter().find(|(dl, _, _)| dl.original_id == "id-ok-2") {
        assert!(
            dl.last_error.contains("delivered 4 times"),
            "{}",
            dl.last_error
        );
    }
    // The DLQ message was written by a member that never ran the handler on it.
    let handled_by: Vec<&str> = events
        .iter()
        .filter(|e| e.payload == "abort:poison")
        .map(|e| e.member.as_str())
        .collect();
    assert_eq!(handled_by, vec!["w0", "w1", "w2"]);
}
