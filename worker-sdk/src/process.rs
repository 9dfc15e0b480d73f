//! Handling one delivered message: the attempt limit, the delivery mode (ack before or after
//! the handler, idempotency store), retries (in place for ordered modes, NAK with delay
//! otherwise), progress heartbeats while a handler runs, panics, dead-lettering and fencing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::FutureExt;
use futures::future::BoxFuture;
use sluice_broker::config::{Delivery, SourceKind};
use sluice_broker::dlq::DeadLetter;
use sluice_broker::names;
use sluice_broker::{Backoff, GroupConfig};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::error::HandlerError;
use crate::hooks::{Event, MessageEvent, Observer};
use crate::idempotency::IdempotencyStore;
use crate::membership::Lease;
use crate::message::{Context, Message};
use crate::outputs::Outputs;

/// A user handler, boxed.
pub(crate) type BoxHandler =
    Arc<dyn Fn(Message, Context) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Everything message handling needs, shared by all partitions of a worker.
pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: watch::Receiver<Arc<GroupConfig>>,
    pub(crate) handler: BoxHandler,
    pub(crate) member_id: String,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) observer: Arc<dyn Observer>,
    /// Where [`Context::topic`] and [`Context::queue`] publish.
    pub(crate) outputs: Arc<Outputs>,
}

/// Opens the group's durable consumer `durable` on `stream_name` (`what` names the stream
/// in errors: "partition stream", "queue stream").
pub(crate) async fn open_group_consumer(
    shared: &Shared,
    what: &str,
    stream_name: &str,
    durable: &str,
) -> crate::error::Result<(jetstream::stream::Stream, jetstream::consumer::PullConsumer)> {
    let stream = shared
        .js
        .get_stream(stream_name)
        .await
        .map_err(|e| crate::error::broker(format!("failed to open {what} {stream_name}"), e))?;
    let consumer = stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
        .map_err(|e| {
            crate::error::broker(
                format!(
                    "failed to open consumer {stream_name}/{durable} (is the ConsumerGroup provisioned?)"
                ),
                e,
            )
        })?;
    Ok((stream, consumer))
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

/// How handling a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled and acknowledged (or skipped as already handled).
    Done,
    /// Left for JetStream to redeliver after a delay.
    Retrying,
    /// Published to the DLQ (or terminated without one) and acknowledged.
    DeadLettered,
    /// Ownership could not be proven: nothing acknowledged.
    Fenced,
    /// Could not be finished (e.g. the DLQ publish failed); left unacknowledged.
    Unfinished,
}

/// Where the message came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) partition: u32,
    pub(crate) stream: &'a str,
    /// Retry in place (the partition or key waits) instead of NAK-with-delay.
    pub(crate) in_place: bool,
}

fn fenced(lease: Option<&Lease>) -> bool {
    lease.is_some_and(|l| !l.is_valid())
}

async fn wait_fenced(lease: Option<&Lease>) {
    match lease {
        Some(l) => l.fenced.cancelled().await,
        None => futures::future::pending().await,
    }
}

/// Polls `fut` only while the lease is valid: `None` as soon as ownership cannot be proven.
/// A member frozen past its lease (SIGSTOP, a stalled VM or node) thus runs not one more step
/// of the handler after it wakes up, even before its renewal task noticed the lapse.
fn while_owned<'a, F: std::future::Future + 'a>(
    fut: F,
    lease: Option<&'a Lease>,
) -> impl std::future::Future<Output = Option<F::Output>> + 'a {
    let mut fut = Box::pin(fut);
    futures::future::poll_fn(move |cx| {
        if fenced(lease) {
            return std::task::Poll::Ready(None);
        }
        fut.as_mut().poll(cx).map(Some)
    })
}

/// Runs `fut`, sending progress acks every third of the ack wait so the message is not
/// redelivered while it runs; `None` when the lease was fenced meanwhile (`fut` is then
/// dropped without being polled again).
async fn with_progress<T>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    lease: Option<&Lease>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    // First tick one period from now: `interval`'s immediate first tick still waits for the
    // timer wheel (~1 ms), which would cost every message a millisecond.
    let period = ack_wait / 3;
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    let fut = while_owned(fut, lease);
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = wait_fenced(lease) => return None,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}

/// Pauses between two tries of an infrastructure step (idempotency store, DLQ): 100 ms
/// doubling to 5 s.
const INFRA_RETRY: Backoff = Backoff {
    initial_ms: 100,
    multiplier: 2.0,
    max_ms: 5_000,
    jitter: false,
};

/// Why [`persist`] gave up on a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// Ownership could not be proven.
    Fenced,
    /// The partition or worker is stopping and the message may be returned.
    Stopped,
}

async fn stopped(stop: Option<&CancellationToken>) {
    match stop {
        Some(s) => s.cancelled().await,
        None => futures::future::pending().await,
    }
}

/// Runs an infrastructure step (`what`: recording an idempotency key, publishing a dead
/// letter) until it succeeds, retrying with backoff and keeping the message alive with
/// progress acks meanwhile, so an outage of the step costs time, not the message. Gives up only
/// when the lease is fenced, or when `stop` is cancelled (pass `None` when the message must not
/// be returned, e.g. on its last delivery).
async fn persist<T, E, F, Fut>(
    msg: Option<&jetstream::Message>,
    ack_wait: Duration,
    lease: Option<&Lease>,
    stop: Option<&CancellationToken>,
    what: &str,
    mut op: F,
) -> Result<T, Abandon>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let period = ack_wait / 3;
    let mut progress = tokio::time::interval_at(Instant::now() + period, period);
    let mut failures = 0u32;
    loop {
        let attempt = op();
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = wait_fenced(lease) => return Err(Abandon::Fenced),
                _ = progress.tick() => keep_alive(msg).await,
            }
        };
        let e = match result {
            Ok(v) => {
                if failures > 0 {
                    warn!(failures, "{what}: succeeded after retrying");
                }
                return Ok(v);
            }
            Err(e) => e,
        };
        failures += 1;
        let delay = INFRA_RETRY.delay_after(failures);
        warn!(error = %e, failures, retry_in = ?delay, "{what} failed: keeping the message and retrying");
        if stop.is_some_and(CancellationToken::is_cancelled) {
            return Err(Abandon::Stopped);
        }
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = wait_fenced(lease) => return Err(Abandon::Fenced),
                _ = stopped(stop) => return Err(Abandon::Stopped),
                _ = progress.tick() => keep_alive(msg).await,
            }
        }
    }
}

async fn keep_alive(msg: Option<&jetstream::Message>) {
    if let Some(m) = msg
        && let Err(e) = m.ack_with(AckKind::Progress).await
    {
        debug!(error = %e, "progress ack failed");
    }
}

/// Hands a message back for immediate redelivery (a stopping partition or worker).
async fn give_back(msg: &jetstream::Message, lease: Option<&Lease>) -> Outcome {
    if fenced(lease) {
        return Outcome::Fenced;
    }
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        debug!(error = %e, "nak failed: the message is redelivered after the ack wait");
    }
    Outcome::Unfinished
}

/// Handles one delivery end to end. `stop` is cancelled when the partition or worker stops:
/// a message waiting for a retry in place, or for the idempotency store or the DLQ, is then
/// handed back (NAK) instead of holding up the handoff, unless this is its last delivery.
pub(crate) async fn process(
    shared: &Shared,
    msg: &jetstream::Message,
    origin: Origin<'_>,
    lease: Option<&Lease>,
    stop: &CancellationToken,
) -> Outcome {
    let cfg = shared.config.borrow().clone();
    let (offset, delivered) = match msg.info() {
        Ok(info) => (info.stream_sequence, info.delivered.max(1) as u32),
        Err(e) => {
            warn!(error = %e, "message without JetStream metadata, skipped");
            return Outcome::Unfinished;
        }
    };
    let message = Message::from_jetstream(msg, origin.partition, offset, origin.stream, delivered);
    let span = info_span!(
        "sluice.message",
        partition = origin.partition,
        offset,
        attempt = delivered,
        key = message.key.as_deref().unwrap_or(""),
        id = %message.idempotency_key,
    );
    // The handling joins the producer's trace (W3C `traceparent` in the message headers).
    crate::telemetry::set_parent_from_headers(&span, &message.headers);
    async move {
        let ack_wait = Duration::from_millis(cfg.ack_wait_ms);
        let max = cfg.retry.max_attempts;
        // JetStream never delivers this message again after this delivery: it must not be
        // handed back, whatever happens.
        let last_delivery = i64::from(delivered) >= cfg.max_deliver();
        let returnable = (!last_delivery).then_some(stop);
        if cfg.delivery == Delivery::ExactlyOnce {
            // Before the delivery limit: a completed message is acknowledged, never
            // dead-lettered.
            let seen = persist(Some(msg), ack_wait, lease, returnable, "reading the idempotency store", || {
                shared.idempotency.seen(&cfg, &message.idempotency_key)
            })
            .await;
            match seen {
                Ok(true) => {
                    debug!("already handled (idempotency store): acknowledging without handling");
                    shared.observer.event(&MessageEvent::of(Event::Duplicate, &message, None));
                    return ack(msg, lease).await;
                }
                Ok(false) => {}
                Err(Abandon::Fenced) => return Outcome::Fenced,
                Err(Abandon::Stopped) => return give_back(msg, lease).await,
            }
        }
        if delivered > max {
            let err = format!(
                "delivered {delivered} times, more than maxAttempts={max} (earlier attempts failed or crashed the worker)"
            );
            let now = OffsetDateTime::now_utc();
            return dead_letter(shared, &cfg, Some(msg), &message, delivered - 1, &err, now, lease, returnable).await;
        }
        if cfg.delivery == Delivery::AtMostOnce {
            if fenced(lease) {
                return Outcome::Fenced;
            }
            if let Err(e) = msg.double_ack().await {
                warn!(error = %e, "ack failed before handling (at-most-once): not handling");
                return Outcome::Unfinished;
            }
            let started = Instant::now();
            let result = call(shared, &message, None).await;
            return match result {
                Ok(()) => {
                    shared.observer.event(&MessageEvent::of(Event::Processed, &message, Some(started.elapsed())));
                    Outcome::Done
                }
                Err(e) => {
                    warn!(error = %e, "handler failed (at-most-once: not retried)");
                    shared.observer.event(&MessageEvent::of(Event::Failed, &message, Some(started.elapsed())));
                    Outcome::Done
                }
            };
        }
        let mut local = 0u32;
        let mut first_failure: Option<OffsetDateTime> = None;
        loop {
            let attempt = delivered + local;
            let mut m = message.clone();
            m.attempt = attempt;
            let started = Instant::now();
            let Some(result) = with_progress(msg, ack_wait, lease, call(shared, &m, lease)).await else {
                return Outcome::Fenced;
            };
            let err = match result {
                Ok(()) => {
                    let latency = started.elapsed();
                    if cfg.delivery == Delivery::ExactlyOnce {
                        // Not acknowledged before the key is recorded: an ack without it would
                        // let a redelivery (or a replay) run the handler again.
                        let recorded = persist(Some(msg), ack_wait, lease, returnable, "recording the idempotency key", || {
                            shared.idempotency.record(&cfg, &message.idempotency_key)
                        })
                        .await;
                        match recorded {
                            Ok(()) => {}
                            Err(Abandon::Fenced) => return Outcome::Fenced,
                            Err(Abandon::Stopped) => return give_back(msg, lease).await,
                        }
                    }
                    // Reported once handling completed (and was recorded), before the ack.
                    shared.observer.event(&MessageEvent::of(Event::Processed, &message, Some(latency)));
                    return ack(msg, lease).await;
                }
                Err(e) => e,
            };
            shared.observer.event(&MessageEvent::of(Event::Failed, &message, Some(started.elapsed())));
            let first_failure = *first_failure.get_or_insert_with(OffsetDateTime::now_utc);
            let text = err.to_string();
            if !err.is_retryable() {
                warn!(error = %text, "permanent failure: dead-lettering");
                return dead_letter(shared, &cfg, Some(msg), &message, attempt, &text, first_failure, lease, returnable).await;
            }
            if attempt >= max {
                warn!(error = %text, attempt, "last attempt failed: dead-lettering");
                return dead_letter(shared, &cfg, Some(msg), &message, attempt, &text, first_failure, lease, returnable).await;
            }
            let delay = cfg.retry.backoff.delay_after(attempt);
            shared.observer.event(&MessageEvent::of(Event::Retried, &message, None));
            if origin.in_place {
                debug!(error = %text, attempt, ?delay, "retrying in place");
                let waited = tokio::select! {
                    w = with_progress(msg, ack_wait, lease, tokio::time::sleep(delay)) => w,
                    // A stopping partition does not wait out the backoff: the next owner retries.
                    _ = stopped(returnable) => return give_back(msg, lease).await,
                };
                if waited.is_none() {
                    return Outcome::Fenced;
                }
                local += 1;
                continue;
            }
            debug!(error = %text, attempt, ?delay, "retrying by redelivery");
            if fenced(lease) {
                return Outcome::Fenced;
            }
            if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                warn!(error = %e, "nak failed: the message is redelivered after the ack wait");
            }
            return Outcome::Retrying;
        }
    }
    .instrument(span)
    .await
}

/// Calls the handler, turning a panic into a retryable failure.
async fn call(
    shared: &Shared,
    message: &Message,
    lease: Option<&Lease>,
) -> Result<(), HandlerError> {
    let ctx = Context::new(
        shared.js.clone(),
        shared.outputs.clone(),
        message.idempotency_key.clone(),
        shared.member_id.clone(),
        lease.map_or_else(CancellationToken::new, |l| l.fenced.child_token()),
    );
    // A panic in the synchronous part of the handler (before it returns its future) is the
    // same failure as one inside the future.
    let fut =
        match std::panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(message.clone(), ctx)))
        {
            Ok(fut) => fut,
            Err(panic) => return Err(panicked(panic.as_ref())),
        };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(panicked(panic.as_ref())),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    HandlerError::retryable(format!("handler panicked: {text}"))
}

async fn ack(msg: &jetstream::Message, lease: Option<&Lease>) -> Outcome {
    if fenced(lease) {
        return Outcome::Fenced;
    }
    match msg.ack().await {
        Ok(()) => Outcome::Done,
        Err(e) => {
            warn!(error = %e, "ack failed: the message will be redelivered");
            Outcome::Unfinished
        }
    }
}

/// Publishes `message` to the group's DLQ and, once stored, terminates the delivery `msg`
/// (none when the server already gave the message up, see [`dead_letter_exhausted`]). A DLQ
/// that is unavailable is retried (see [`persist`]) until the dead letter is stored.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn dead_letter(
    shared: &Shared,
    cfg: &GroupConfig,
    msg: Option<&jetstream::Message>,
    message: &Message,
    attempts: u32,
    last_error: &str,
    first_failure: OffsetDateTime,
    lease: Option<&Lease>,
    stop: Option<&CancellationToken>,
) -> Outcome {
    if fenced(lease) {
        return Outcome::Fenced;
    }
    let Some(dlq) = cfg.dead_letter.as_deref() else {
        warn!(error = %last_error, "no dead-letter queue configured: terminating the message (it is dropped)");
        if let Some(msg) = msg
            && let Err(e) = msg.ack_with(AckKind::Term).await
        {
            warn!(error = %e, "term failed");
            return Outcome::Unfinished;
        }
        shared
            .observer
            .event(&MessageEvent::of(Event::DeadLettered, message, None));
        return Outcome::DeadLettered;
    };
    let dlq_ref = match names::ResourceRef::new(cfg.namespace.clone(), dlq) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "invalid dead-letter queue name in the group config");
            return Outcome::Unfinished;
        }
    };
    let envelope = DeadLetter {
        source_kind: cfg.source.kind,
        source_name: cfg.source.name.clone(),
        source_subject: message.subject.clone(),
        partition: match cfg.source.kind {
            SourceKind::Topic => message.partition,
            SourceKind::Queue => 0,
        },
        offset: message.offset,
        group: cfg.group.clone(),
        attempts: u64::from(attempts),
        last_error: last_error.to_string(),
        first_failure,
        last_failure: OffsetDateTime::now_utc(),
        original_id: message.idempotency_key.clone(),
    };
    let mut headers = envelope.encode(Some(&message.headers));
    headers.insert(
        sluice_broker::dlq::headers::NATS_MSG_ID,
        dlq_message_id(&envelope, &message.headers).as_str(),
    );
    let subject = names::dlq_subject(&dlq_ref);
    let ack_wait = Duration::from_millis(cfg.ack_wait_ms);
    let published = persist(
        msg,
        ack_wait,
        lease,
        stop,
        "publishing the dead letter",
        || {
            let (subject, headers) = (subject.clone(), headers.clone());
            async move {
                match shared
                    .js
                    .publish_with_headers(subject, headers, message.payload.clone())
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
    match published {
        Ok(()) => {}
        Err(Abandon::Fenced) => return Outcome::Fenced,
        Err(Abandon::Stopped) => {
            return match msg {
                Some(msg) => give_back(msg, lease).await,
                None => Outcome::Unfinished,
            };
        }
    }
    if fenced(lease) {
        return Outcome::Fenced;
    }
    if let Some(msg) = msg
        && let Err(e) = msg.ack_with(AckKind::Term).await
    {
        warn!(error = %e, "term after dead-lettering failed (the DLQ publish is de-duplicated)");
        return Outcome::Unfinished;
    }
    shared
        .observer
        .event(&MessageEvent::of(Event::DeadLettered, message, None));
    Outcome::DeadLettered
}

/// The subject of a consumer's max-deliveries advisory: JetStream publishes it once when it
/// gives a message up because its last delivery was returned unfinished.
pub(crate) fn max_deliveries_subject(stream: &str, durable: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}")
}

/// `(offset, deliveries)` of a max-deliveries advisory.
pub(crate) fn parse_max_deliveries(payload: &[u8]) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct MaxDeliveries {
        stream_seq: u64,
        deliveries: u64,
    }
    serde_json::from_slice::<MaxDeliveries>(payload)
        .ok()
        .map(|a| (a.stream_seq, a.deliveries))
}

/// Dead-letters a message the server gave up on (its `max_deliver`-th delivery was returned
/// unfinished: by a handoff, a fenced or crashed member): JetStream never delivers it again,
/// so it is read from the stream by offset. No lease is needed: nobody else can receive it.
pub(crate) async fn dead_letter_exhausted(
    shared: &Shared,
    stream: &jetstream::stream::Stream,
    origin: Origin<'_>,
    offset: u64,
    deliveries: u64,
) -> Outcome {
    let cfg = shared.config.borrow().clone();
    let span = info_span!(
        "sluice.message",
        partition = origin.partition,
        offset,
        attempt = deliveries
    );
    async move {
        let raw = persist(None, Duration::from_secs(3), None, None, "reading a message the server gave up on", || {
            stream.get_raw_message(offset)
        })
        .await;
        let Ok(raw) = raw else {
            return Outcome::Unfinished;
        };
        let headers = raw.headers.clone();
        let key = headers
            .get(sluice_broker::dlq::headers::KEY)
            .map(|v| v.as_str().to_string());
        let message = Message {
            payload: raw.payload.clone(),
            key,
            idempotency_key: crate::message::idempotency_key(&headers, origin.stream, offset),
            headers,
            subject: raw.subject.to_string(),
            partition: origin.partition,
            offset,
            attempt: deliveries as u32,
        };
        let err = format!(
            "delivered {deliveries} times without being finished (the last delivery was returned by a handoff, a fenced member or a crash); maxAttempts={}",
            cfg.retry.max_attempts
        );
        warn!("the server gave the message up after its last delivery: dead-lettering it from the stream");
        let now = OffsetDateTime::now_utc();
        let attempts = deliveries.saturating_sub(1) as u32;
        dead_letter(shared, &cfg, None, &message, attempts, &err, now, None, None).await
    }
    .instrument(span)
    .await
}

/// The de-duplication id of a DLQ publish: stable per (group, original message), so a worker
/// that crashes between dead-lettering and acknowledging does not dead-letter twice. A replayed
/// message (it carries `Sluice-Original-Id` and its own replay id) that fails again gets an id
/// per replay, so its new failure is not swallowed as a duplicate of the first dead letter.
fn dlq_message_id(envelope: &DeadLetter, incoming: &async_nats::HeaderMap) -> String {
    use sluice_broker::dlq::headers;
    let replay_id = incoming
        .get(headers::ORIGINAL_ID)
        .and(incoming.get(headers::NATS_MSG_ID))
        .map(|v| v.as_str())
        .filter(|id| !id.is_empty() && *id != envelope.original_id);
    match replay_id {
        Some(id) => format!("dlq:{}:{id}", envelope.group),
        None => envelope.dlq_message_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::config::SourceKind;

    #[test]
    fn a_replay_that_fails_again_is_dead_lettered_under_a_new_id() {
        use sluice_broker::dlq::headers;
        let envelope = DeadLetter {
            source_kind: SourceKind::Topic,
            source_name: "orders".into(),
            source_subject: "s".into(),
            partition: 0,
            offset: 9,
            group: "billing".into(),
            attempts: 3,
            last_error: "e".into(),
            first_failure: OffsetDateTime::UNIX_EPOCH,
            last_failure: OffsetDateTime::UNIX_EPOCH,
            original_id: "order-1".into(),
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::NATS_MSG_ID, "order-1");
        assert_eq!(dlq_message_id(&envelope, &h), "dlq:billing:order-1");
        h.insert(headers::NATS_MSG_ID, "replay:42:order-1");
        h.insert(headers::ORIGINAL_ID, "order-1");
        assert_eq!(
            dlq_message_id(&envelope, &h),
            "dlq:billing:replay:42:order-1"
        );
    }
}
