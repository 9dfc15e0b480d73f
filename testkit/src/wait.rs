//! Waiting on conditions: the one way tests wait, with generous deadlines that hold on a
//! loaded 2-core machine (never a fixed sleep standing in for a condition).

use std::time::{Duration, Instant};

/// How often a condition is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `cond` until it holds, panicking with `what` once `timeout` has passed.
///
/// The condition is an async closure, so it may read the broker or the API server; a plain
/// check is written `async || records.lock().unwrap().len() == 3`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
