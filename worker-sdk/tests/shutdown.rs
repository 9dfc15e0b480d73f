//! Graceful shutdown mid-load against a real nats-server: through the ShutdownHandle and through
//! a real SIGTERM to a worker process. Nothing is lost, nothing is handled twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_testkit::*;

/// Entry point of the worker child processes (see `sluice_testkit::child_main`).
#[test]
#[ignore = "worker process entry point, run as a child by the tests of this file"]
fn child_worker() {
    child_main();
}

const PARTITIONS: u32 = 3;
// Enough that a worker handling 20 ms per message cannot finish during its drain (at most the
// pull expiry plus 1 s of in-order handling after the stop).
const PER_PARTITION: usize = 150;

async fn load(env: &Harness, group: &str) -> Vec<String> {
    let cfg = topic_group("orders", group, PARTITIONS);
    env.provision(&cfg).await;
    let mut payloads = Vec::new();
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let payload = format!("{p}:{i}");
            env.publish("orders", p, &format!("m-{p}-{i}"), None, &payload)
                .await;
            payloads.push(payload);
        }
    }
    payloads
}

fn assert_each_once(payloads: &[String], handled: &BTreeMap<String, usize>) {
    let missing: Vec<&String> = payloads
        .iter()
        .filter(|p| !handled.contains_key(*p))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let twice: Vec<(&String, &usize)> = handled.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_handle_mid_load_loses_and_duplicates_nothing() {
    let env = Harness::start().await;
    let payloads = load(&env, "stop").await;
    let records: Records = Default::default();
    let mut s = MemberSpec::new(&env, "stop", "a", &records);
    s.work = Duration::from_millis(20);
    let mut a = Member::spawn(s);
    wait_until(Duration::from_secs(20), "a under load", async || {
        records.lock().unwrap().len() >= 20
    })
    .await;
    a.stop().expect("a clean shutdown returns Ok");
    let by_a = records.lock().unwrap().len();
    assert!(
        by_a < payloads.len(),
        "a finished everything before it was stopped"
    );
    let mut s = MemberSpec::new(&env, "stop", "b", &records);
    s.work = Duration::from_millis(5);
    let _b = Member::spawn(s);
    wait_until(
        Duration::from_secs(25),
        "b to finish the rest",
        async || records.lock().unwrap().len() >= payloads.len(),
    )
    .await;
    let records = records.lock().unwrap().clone();
    assert_each_once(&payloads, &ok_by_payload(&records));
    assert!(records.iter().any(|r| r.member == "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_exits_zero_and_loses_and_duplicates_nothing() {
    let env = Harness::start().await;
    let payloads = load(&env, "term").await;
    let dir = tempfile::tempdir().unwrap();
    let children = ChildSpec::new(&env, "term", dir.path()).with("SLUICE_TEST_WORK_MS", "20");
    let mut child = children.spawn("w0");
    wait_until(
        Duration::from_secs(20),
        "the worker under load",
        async || child_counts(&children.events(), "done").len() >= 20,
    )
    .await;
    child.sigterm();
    let status = child.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "worker exited with {status}\n{}",
        children.stderr()
    );
    let by_child = child_counts(&children.events(), "done");
    assert!(
        by_child.len() < payloads.len(),
        "the child finished everything before SIGTERM"
    );
    // Nothing was left half-done: every handling the child started, it completed.
    assert_eq!(child_counts(&children.events(), "start"), by_child);
    let records: Records = Default::default();
    let _b = Member::spawn(MemberSpec::new(&env, "term", "b", &records));
    wait_until(
        Duration::from_secs(25),
        "b to finish the rest",
        async || by_child.len() + records.lock().unwrap().len() >= payloads.len(),
    )
    .await;
    let mut handled = by_child.clone();
    for (p, n) in ok_by_payload(&records.lock().unwrap()) {
        *handled.entry(p).or_insert(0) += n;
    }
    assert_each_once(&payloads, &handled);
}
