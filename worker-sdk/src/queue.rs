//! Competing consumers on a queue: one shared durable consumer on the queue stream (no pin),
//! handlers run concurrently up to `maxConcurrency`; the visibility timeout is the ack wait,
//! kept alive with progress acks while a handler runs; retries by NAK with delay; the same
//! attempt limit and dead-lettering as topics. A redelivery of a message this member is still
//! handling (its visibility timeout lapsed, e.g. the process stalled) is ignored: the running
//! handling acknowledges it. A queue with priority levels is consumed by
//! [`crate::priority_queue`] instead.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sluice_broker::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::Result;
use crate::process::{
    Origin, Shared, dead_letter_exhausted, max_deliveries_subject, open_group_consumer,
    parse_max_deliveries, process,
};

/// Consumes the group's queue until `shutdown`, then finishes running handlers; calls
/// `joined` once it consumes. When the queue's priority levels change (the group config says
/// so), finishes the running handlers and consumes again with the new levels.
pub(crate) async fn run_queue_member(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    joined: impl FnOnce(),
) -> Result<()> {
    let mut joined = Some(joined);
    let mut join = || {
        if let Some(f) = joined.take() {
            f();
        }
    };
    loop {
        let levels = shared.config.borrow().priorities;
        let relevel = if levels > 1 {
            crate::priority_queue::run_priority_queue_member(
                shared.clone(),
                shutdown.clone(),
                drain_timeout,
                &mut join,
            )
            .await?
        } else {
            run_single_level(shared.clone(), shutdown.clone(), drain_timeout, &mut join).await?
        };
        if !relevel || shutdown.is_cancelled() {
            return Ok(());
        }
        info!(
            from = levels,
            to = shared.config.borrow().priorities,
            "queue priority levels changed: consuming with the new levels"
        );
    }
}

/// Whether the group config now gives the queue another number of priority levels than
/// `levels` (the member must re-open its consumers).
pub(crate) fn levels_changed(shared: &Shared, levels: u32) -> bool {
    shared.config.borrow().priorities != levels
}

/// Consumes a queue without priority levels (one consumer, a pull stream) until `shutdown`
/// (`Ok(false)`) or until the levels change (`Ok(true)`), then finishes running handlers.
async fn run_single_level(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    joined: impl FnOnce(),
) -> Result<bool> {
    let cfg = shared.config.borrow().clone();
    let stream_name = names::queue_stream(&cfg.source_ref()?);
    let durable = names::group_consumer(&cfg.group_ref()?);
    let span = info_span!("sluice.queue", stream = %stream_name);
    let (stream, consumer) =
        open_group_consumer(&shared, "queue stream", &stream_name, &durable).await?;
    let max = cfg.max_concurrency.max(1) as usize;
    let mut messages = consumer
        .stream()
        .expires(Duration::from_secs(1))
        .max_messages_per_batch(max)
        .messages()
        .await
        .map_err(|e| {
            crate::error::broker(format!("failed to pull from {stream_name}/{durable}"), e)
        })?;
    // Messages whose last delivery was never finished (a crashed member) are dead-lettered by
    // one member (a queue subscription) from the stream, as JetStream never delivers them again.
    let advisory_subject = max_deliveries_subject(&stream_name, &durable);
    let mut advisories = shared
        .client
        .queue_subscribe(advisory_subject.clone(), durable.clone())
        .await
        .map_err(|e| {
            crate::error::broker(format!("failed to subscribe to {advisory_subject}"), e)
        })?;
    info!(stream = %stream_name, "consuming queue");
    joined();
    let stream_name: Arc<str> = stream_name.into();
    let mut inflight: FuturesUnordered<BoxFuture<'static, u64>> = FuturesUnordered::new();
    let mut running: HashSet<u64> = HashSet::new();
    let mut relevel = false;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    async {
        loop {
            let max = shared.config.borrow().max_concurrency.max(1) as usize;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = check.tick() => {
                    if levels_changed(&shared, cfg.priorities) {
                        // Messages the pull stream prefetched are redelivered after the
                        // visibility timeout.
                        relevel = true;
                        break;
                    }
                }
                Some(seq) = inflight.next(), if !inflight.is_empty() => {
                    running.remove(&seq);
                }
                Some(advisory) = advisories.next() => {
                    if let Some(work) = dead_letter_unfinished(&shared, &stream, &stream_name, &advisory.payload) {
                        inflight.push(work);
                    }
                }
                m = messages.next(), if inflight.len() < max => match m {
                    Some(Ok(msg)) => {
                        if let Some(work) = start_handling(&shared, msg, &stream_name, &mut running, &shutdown) {
                            inflight.push(work);
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "pull error (retrying)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    None => {
                        warn!("queue pull stream ended (consumer deleted?)");
                        break;
                    }
                },
            }
        }
        drop(messages);
        drain_handlers(&shared, &mut inflight, drain_timeout).await;
    }
    .instrument(span)
    .await;
    Ok(relevel)
}

/// Starts handling a queue message: the handling future (which yields the message's offset),
/// or `None` when the message has no JetStream metadata or is a redelivery of one this member
/// is still handling (`running` holds the offsets being handled).
pub(crate) fn start_handling(
    shared: &Arc<Shared>,
    msg: async_nats::jetstream::Message,
    stream_name: &Arc<str>,
    running: &mut HashSet<u64>,
    shutdown: &CancellationToken,
) -> Option<BoxFuture<'static, u64>> {
    let Ok(seq) = msg.info().map(|i| i.stream_sequence) else {
        warn!("queue message without JetStream metadata: skipped");
        return None;
    };
    if !running.insert(seq) {
        debug!(
            offset = seq,
            "redelivery of a message still being handled: ignored"
        );
        return None;
    }
    let shared = shared.clone();
    let stream = stream_name.clone();
    let stop = shutdown.clone();
    Some(Box::pin(async move {
        let origin = Origin {
            partition: 0,
            stream: &stream,
            in_place: false,
        };
        process(&shared, &msg, origin, None, &stop).await;
        seq
    }))
}

/// Lets the running handlers finish within `drain_timeout` (abandoned ones are redelivered
/// after their visibility timeout), then flushes the connection.
pub(crate) async fn drain_handlers(
    shared: &Shared,
    inflight: &mut FuturesUnordered<BoxFuture<'static, u64>>,
    drain_timeout: Duration,
) {
    let deadline = Instant::now() + drain_timeout;
    while !inflight.is_empty() {
        tokio::select! {
            _ = inflight.next() => {}
            _ = tokio::time::sleep_until(deadline) => {
                warn!(running = inflight.len(), "drain timeout: abandoning running handlers (their messages are redelivered)");
                break;
            }
        }
    }
    let _ = shared.client.flush().await;
}

/// Dead-letters the message a max-deliveries advisory names (its last delivery was never
/// finished): the future yields its offset; `None` for an advisory that cannot be read.
pub(crate) fn dead_letter_unfinished(
    shared: &Arc<Shared>,
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &Arc<str>,
    advisory: &[u8],
) -> Option<BoxFuture<'static, u64>> {
    let (seq, deliveries) = parse_max_deliveries(advisory)?;
    warn!(
        offset = seq,
        deliveries, "last delivery of a message was never finished: dead-lettering it"
    );
    let (shared, stream, stream_name) = (shared.clone(), stream.clone(), stream_name.clone());
    Some(Box::pin(async move {
        let origin = Origin {
            partition: 0,
            stream: &stream_name,
            in_place: false,
        };
        dead_letter_exhausted(&shared, &stream, origin, seq, deliveries).await;
        seq
    }))
}
