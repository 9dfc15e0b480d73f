//! Handlers and the idempotency store under faults: a panic before the handler's future is
//! returned is a retryable failure (the partition goes on), and a completed message is not
//! acknowledged until its idempotency key is recorded. Also: a worker binary that sets up no
//! logging still shows the SDK's warnings on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use sluice_broker::config::Delivery;
use sluice_broker::{ResourceRef, names};
use sluice_testkit::*;
use sluice_worker::{Context, Message, Worker};

/// Entry point of the worker child processes (see `sluice_testkit::child_main`).
#[test]
#[ignore = "worker process entry point, run as a child by the tests of this file"]
fn child_worker() {
    child_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_from_the_environment_logs_to_stderr_by_default() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "logs", 1);
    env.provision(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ChildSpec::new(&env, "logs", dir.path())
        .with("SLUICE_TEST_DEFAULT_LOGGING", "1")
        .with("RUST_LOG", "");
    let mut child = spec.spawn("w0");
    wait_until(
        Duration::from_secs(60),
        "the worker's own log lines on its stderr",
        async || spec.stderr().contains("joined the group"),
    )
    .await;
    // stderr is a file, not a terminal: plain text, no colour codes.
    let stderr = spec.stderr();
    assert!(!stderr.contains('\x1b'), "ANSI escape codes in {stderr:?}");
    child.sigterm();
    child.wait_exit(Duration::from_secs(60)).await;
}

/// Runs `worker` with `handler` on its own runtime until the test ends.
fn run_worker<F, Fut>(worker: Worker, handler: F) -> sluice_worker::ShutdownHandle
where
    F: Fn(Message, Context) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), sluice_worker::HandlerError>> + Send + 'static,
{
    let shutdown = worker.shutdown_handle();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(worker.run(handler));
        rt.shutdown_background();
    });
    shutdown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_the_handler_future_is_a_retryable_failure() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "sp", 1);
    env.provision(&cfg).await;
    env.publish("orders", 0, "id-boom", None, "boom").await;
    env.publish("orders", 0, "id-after", None, "after").await;
    let handled: Arc<Mutex<Vec<String>>> = Default::default();
    let panicked = Arc::new(AtomicBool::new(false));
    let h = handled.clone();
    let shutdown = run_worker(
        Worker::new(member_options(&env, "sp", "a")),
        move |msg: Message, _ctx: Context| {
            let payload = String::from_utf8_lossy(&msg.payload).to_string();
            // Synchronous part of the handler: panics the first time it sees "boom".
            if payload == "boom" && !panicked.swap(true, AtomicOrdering::SeqCst) {
                panic!("bad input detected before any await");
            }
            let h = h.clone();
            async move {
                h.lock().unwrap().push(payload);
                Ok(())
            }
        },
    );
    wait_until(
        Duration::from_secs(60),
        "the panicking message retried and the one after it handled",
        async || {
            let got: BTreeSet<String> = handled.lock().unwrap().iter().cloned().collect();
            got.contains("boom") && got.contains("after")
        },
    )
    .await;
    assert_eq!(
        *handled.lock().unwrap(),
        vec!["boom".to_string(), "after".to_string()],
        "in offset order"
    );
    shutdown.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_does_not_ack_before_the_key_is_recorded() {
    let env = Harness::start().await;
    let mut cfg = topic_group("orders", "eo", 1);
    cfg.delivery = Delivery::ExactlyOnce;
    env.provision(&cfg).await;
    let bucket = names::idempotency_bucket(&ResourceRef::new(NS, "eo").unwrap());
    let js = env.broker.jetstream().clone();
    let release = Arc::new(AtomicBool::new(false));
    let handled: Arc<Mutex<Vec<String>>> = Default::default();
    let (r, h) = (release.clone(), handled.clone());
    let shutdown = run_worker(
        Worker::new(member_options(&env, "eo", "a")),
        move |msg: Message, _ctx: Context| {
            let (r, h) = (r.clone(), h.clone());
            async move {
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&msg.payload).to_string());
                while !r.load(AtomicOrdering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
        },
    );
    env.publish("orders", 0, "id-1", None, "one").await;
    wait_until(
        Duration::from_secs(60),
        "the handler to start",
        async || !handled.lock().unwrap().is_empty(),
    )
    .await;
    // The idempotency store goes away while the handler runs.
    let config = {
        let mut s = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        s.info().await.unwrap().config.clone()
    };
    js.delete_stream(format!("KV_{bucket}")).await.unwrap();
    release.store(true, AtomicOrdering::SeqCst);
    // The fault lasts a few ack waits (not an assertion).
    tokio::time::sleep(Duration::from_secs(6)).await;
    js.create_stream(config).await.unwrap();
    let store = js.get_key_value(&bucket).await.unwrap();
    let key = names::escape_member("id-1");
    wait_until(
        Duration::from_secs(60),
        "the idempotency key recorded once the store is back",
        || {
            let store: kv::Store = store.clone();
            let key = key.clone();
            async move { matches!(store.get(&key).await, Ok(Some(_))) }
        },
    )
    .await;
    let stream = names::topic_stream(&ResourceRef::new(NS, "orders").unwrap(), 0);
    wait_until(
        Duration::from_secs(30),
        "the message acknowledged",
        || async {
            env.consumer_info(&stream, "eo")
                .await
                .ack_floor
                .stream_sequence
                >= 1
        },
    )
    .await;
    assert_eq!(handled.lock().unwrap().len(), 1, "handled once");
    shutdown.shutdown();
}
