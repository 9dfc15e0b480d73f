//! Competing consumers on a queue with priority levels: one shared durable consumer per level
//! (each filtered on its level's subject), and a member that fills every free handler slot
//! from the highest level that has work, with the starvation guard of [`crate::priority`].
//!
//! A member never prefetches: when `k` handler slots are free it asks the levels in the
//! picker's order for up to `k` messages with a no-wait fetch and takes what the first level
//! that has any returns. A high-priority message published behind a backlog is therefore
//! taken by the next free slot (at most one in-flight window of lower-level work is ahead of
//! it). When no level has work the member polls again after an idle pause growing from
//! [`IDLE_MIN`] to [`IDLE_MAX`] (the extra latency of an idle priority queue; a queue without
//! priorities keeps the pull stream of [`crate::queue`]). Everything else (visibility timeout,
//! retries by NAK with delay, dead-lettering, redeliveries of a message still being handled)
//! is as in [`crate::queue`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use sluice_broker::group::group_consumers;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::error::Result;
use crate::priority::Picker;
use crate::process::{Shared, max_deliveries_subject};
use crate::queue::{dead_letter_unfinished, drain_handlers, start_handling};

/// First pause after finding every level empty.
pub(crate) const IDLE_MIN: Duration = Duration::from_millis(10);
/// Longest pause between polls of an idle queue.
pub(crate) const IDLE_MAX: Duration = Duration::from_millis(200);

/// Consumes the group's prioritized queue until `shutdown` (`Ok(false)`) or until its levels
/// change (`Ok(true)`), then finishes running handlers; calls `joined` once it consumes.
pub(crate) async fn run_priority_queue_member(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    joined: impl FnOnce(),
) -> Result<bool> {
    let cfg = shared.config.borrow().clone();
    let slots = group_consumers(&cfg)?;
    let Some(first) = slots.first() else {
        return Ok(false);
    };
    let stream_name = first.stream.clone();
    let span = info_span!("sluice.queue", stream = %stream_name, levels = slots.len());
    let stream = shared.js.get_stream(&stream_name).await.map_err(|e| {
        crate::error::broker(format!("failed to open queue stream {stream_name}"), e)
    })?;
    let mut consumers: Vec<PullConsumer> = Vec::with_capacity(slots.len());
    let mut advisories = SelectAll::new();
    for slot in &slots {
        let consumer = stream
            .get_consumer::<pull::Config>(&slot.durable)
            .await
            .map_err(|e| {
                crate::error::broker(
                    format!(
                        "failed to open consumer {stream_name}/{} of priority level {} (is the ConsumerGroup provisioned for the queue's priorities?)",
                        slot.durable, slot.index
                    ),
                    e,
                )
            })?;
        consumers.push(consumer);
        let subject = max_deliveries_subject(&stream_name, &slot.durable);
        let sub = shared
            .client
            .queue_subscribe(subject.clone(), slot.durable.clone())
            .await
            .map_err(|e| crate::error::broker(format!("failed to subscribe to {subject}"), e))?;
        advisories.push(sub);
    }
    let mut picker = Picker::new(cfg.priorities, cfg.low_priority_share);
    info!(stream = %stream_name, levels = consumers.len(), "consuming prioritized queue");
    joined();
    let stream_name: Arc<str> = stream_name.into();
    let mut inflight: FuturesUnordered<BoxFuture<'static, u64>> = FuturesUnordered::new();
    let mut running: HashSet<u64> = HashSet::new();
    let mut idle = IDLE_MIN;
    let mut relevel = false;
    async {
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if crate::queue::levels_changed(&shared, cfg.priorities) {
                relevel = true;
                break;
            }
            let max = shared.config.borrow().max_concurrency.max(1) as usize;
            let free = max.saturating_sub(inflight.len());
            let mut took = 0;
            if free > 0 {
                let turn = picker.turn();
                for &level in &turn.order {
                    let Some(consumer) = consumers.get(level as usize) else {
                        continue;
                    };
                    let batch = fetch(consumer, free).await;
                    if batch.is_empty() {
                        continue;
                    }
                    picker.took(&turn, level, batch.len() as u64);
                    for msg in batch {
                        took += 1;
                        if let Some(work) = start_handling(&shared, msg, &stream_name, &mut running, &shutdown) {
                            inflight.push(work);
                        }
                    }
                    break;
                }
            }
            if took > 0 {
                idle = IDLE_MIN;
                continue;
            }
            let pause = if free > 0 { idle } else { IDLE_MAX };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(seq) = inflight.next(), if !inflight.is_empty() => {
                    running.remove(&seq);
                }
                Some(advisory) = advisories.next() => {
                    if let Some(work) = dead_letter_unfinished(&shared, &stream, &stream_name, &advisory.payload) {
                        inflight.push(work);
                    }
                }
                _ = tokio::time::sleep(pause) => {
                    if free > 0 {
                        idle = (idle * 2).min(IDLE_MAX);
                    }
                }
            }
        }
        drain_handlers(&shared, &mut inflight, drain_timeout).await;
    }
    .instrument(span)
    .await;
    Ok(relevel)
}

/// Up to `max` messages available now on `consumer` (a no-wait fetch: it never waits for
/// messages to arrive and leaves no request pending).
async fn fetch(consumer: &PullConsumer, max: usize) -> Vec<async_nats::jetstream::Message> {
    let mut batch = match consumer.fetch().max_messages(max).messages().await {
        Ok(b) => b,
        Err(e) => {
            debug!(error = %e, "fetch failed (retrying)");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    while let Some(item) = batch.next().await {
        match item {
            Ok(msg) => out.push(msg),
            Err(e) => {
                debug!(error = %e, "fetch ended");
                break;
            }
        }
    }
    out
}
