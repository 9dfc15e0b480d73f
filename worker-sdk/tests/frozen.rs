//! A member frozen past its lease (here: its only runtime thread blocked, as under SIGSTOP)
//! runs not one more step of the handler once it wakes up: the handler is cancelled at its
//! next await point, while the partition's new owner handles the message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_testkit::*;
use sluice_worker::{Context, Message, Worker};

type Log = Arc<Mutex<Vec<String>>>;

fn has(log: &Log, what: &str) -> bool {
    log.lock().unwrap().iter().any(|e| e == what)
}

/// Records `dropped` when the handler's future is dropped before it finished.
struct DropGuard(Log, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.lock().unwrap().push("a-dropped".into());
        }
    }
}

fn run_worker<F, Fut>(worker: Worker, handler: F)
where
    F: Fn(Message, Context) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), sluice_worker::HandlerError>> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(worker.run(handler));
        rt.shutdown_background();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_lease_does_not_go_on_handling() {
    let env = Harness::start().await;
    let cfg = topic_group("orders", "fz", 1);
    env.provision(&cfg).await;
    let log: Log = Default::default();

    let a_log = log.clone();
    run_worker(
        Worker::new(member_options(&env, "fz", "a")),
        move |_msg: Message, _ctx: Context| {
            let log = a_log.clone();
            async move {
                let mut guard = DropGuard(log.clone(), false);
                log.lock().unwrap().push("a-start".into());
                // Frozen: the member's only thread stops, lease renewal included, for
                // several lease TTLs.
                std::thread::sleep(Duration::from_secs(8));
                log.lock().unwrap().push("a-woke".into());
                tokio::task::yield_now().await;
                // A side effect that must not happen: the partition has a new owner.
                log.lock().unwrap().push("a-after-freeze".into());
                guard.1 = true;
                Ok(())
            }
        },
    );
    env.wait_owns("fz", "a", Duration::from_secs(60)).await;
    env.publish("orders", 0, "id-1", None, "one").await;
    wait_until(Duration::from_secs(60), "a to start handling", async || {
        has(&log, "a-start")
    })
    .await;
    let b_log = log.clone();
    run_worker(
        Worker::new(member_options(&env, "fz", "b")),
        move |_msg: Message, _ctx: Context| {
            let log = b_log.clone();
            async move {
                log.lock().unwrap().push("b-handled".into());
                Ok(())
            }
        },
    );
    wait_until(
        Duration::from_secs(60),
        "a to wake up and its handler to end one way or the other",
        async || has(&log, "a-dropped") || has(&log, "a-after-freeze"),
    )
    .await;
    assert!(
        !has(&log, "a-after-freeze"),
        "a went on handling after its lease lapsed: {:?}",
        log.lock().unwrap()
    );
    wait_until(
        Duration::from_secs(60),
        "b to handle the message",
        async || has(&log, "b-handled"),
    )
    .await;
}
