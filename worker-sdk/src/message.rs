//! What a handler receives: the [`Message`] and its [`Context`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_nats::HeaderMap;
use bytes::Bytes;
use sluice_broker::dlq::headers;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::outputs::{Outputs, QueueOutput, TopicOutput};

/// One message handed to a handler.
#[derive(Debug, Clone)]
pub struct Message {
    /// The payload.
    pub payload: Bytes,
    /// The message key (`Sluice-Key` header), if the producer set one.
    pub key: Option<String>,
    /// All headers as published.
    pub headers: HeaderMap,
    /// The subject it was published to.
    pub subject: String,
    /// Partition number (0 for queues).
    pub partition: u32,
    /// Offset in the partition (the stream sequence).
    pub offset: u64,
    /// Which delivery this is, counted by JetStream across crashes and members, plus the
    /// retries made in place (1 on the first attempt).
    pub attempt: u32,
    /// Stable id of this message: `Sluice-Original-Id` when the message was replayed from a
    /// dead-letter queue (so a replay counts as the same message), else the producer's message
    /// id (`Nats-Msg-Id`), else `<stream>:<offset>`. Commit it together with your effects for
    /// exactly-once.
    pub idempotency_key: String,
}

impl Message {
    pub(crate) fn from_jetstream(
        msg: &async_nats::jetstream::Message,
        partition: u32,
        offset: u64,
        stream: &str,
        attempt: u32,
    ) -> Self {
        let headers = msg.headers.clone().unwrap_or_default();
        let key = headers.get(headers::KEY).map(|v| v.as_str().to_string());
        Self {
            payload: msg.payload.clone(),
            key,
            idempotency_key: idempotency_key(&headers, stream, offset),
            headers,
            subject: msg.subject.to_string(),
            partition,
            offset,
            attempt,
        }
    }
}

/// The id a message is known by across retries, replays and re-handling: the original id a
/// DLQ replay carries (`Sluice-Original-Id`), else the producer's `Nats-Msg-Id`, else
/// `<stream>:<offset>`.
pub(crate) fn idempotency_key(h: &HeaderMap, stream: &str, offset: u64) -> String {
    [headers::ORIGINAL_ID, headers::NATS_MSG_ID]
        .into_iter()
        .filter_map(|name| h.get(name))
        .map(|v| v.as_str().trim())
        .find(|v| !v.is_empty())
        .map_or_else(|| format!("{stream}:{offset}"), str::to_string)
}

/// What a handler can do besides reading its message: publish outputs to Topics and Queues by
/// name ([`Context::topic`], [`Context::queue`]) with ids derived from the input's idempotency
/// key, so a retried or re-handled input produces the same ids and JetStream drops the
/// duplicates (within the target stream's duplicate window); notice that it lost its partition.
///
/// ```no_run
/// use sluice_worker::{HandlerError, Worker};
/// # async fn run() -> sluice_worker::Result<()> {
/// Worker::from_env()?
///     .run(|msg, ctx| async move {
///         let key = msg.key.clone().unwrap_or_default();
///         ctx.topic("invoices")
///             .send(key, msg.payload.clone())
///             .await
///             .map_err(HandlerError::retryable)?;
///         Ok(())
///     })
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    js: async_nats::jetstream::Context,
    outputs: Arc<Outputs>,
    idempotency_key: String,
    member_id: String,
    outputs_sent: AtomicU32,
    cancel: CancellationToken,
}

impl Context {
    pub(crate) fn new(
        js: async_nats::jetstream::Context,
        outputs: Arc<Outputs>,
        idempotency_key: String,
        member_id: String,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                js,
                outputs,
                idempotency_key,
                member_id,
                outputs_sent: AtomicU32::new(0),
                cancel,
            }),
        }
    }

    /// Whether this member lost the partition while the handler runs (its lease renewal task
    /// found the lease lapsed or taken, e.g. after the process was frozen): another member may
    /// handle the message now, so stop and commit nothing. The SDK itself stops polling the
    /// handler's future as soon as the lease lapses; this is for work that does not await (a
    /// long synchronous loop, another thread).
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) {
    /// for row in 0..1_000 {
    ///     if ctx.is_cancelled() {
    ///         return; // the partition moved on: leave the rest to its new owner
    ///     }
    ///     # let _ = row;
    /// }
    /// # }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// A token cancelled when this member lost the partition (see [`Context::is_cancelled`]),
    /// for work the handler runs elsewhere (a spawned task, another thread). Always live for
    /// queues (no ownership to lose).
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) {
    /// let token = ctx.cancellation();
    /// let work = tokio::spawn(async move {
    ///     tokio::select! {
    ///         _ = token.cancelled() => {} // the partition moved on
    ///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    ///     }
    /// });
    /// # let _ = work;
    /// # }
    /// ```
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// The idempotency key of the message being handled (see [`Message::idempotency_key`]).
    ///
    /// ```no_run
    /// # fn h(ctx: sluice_worker::Context) {
    /// // Commit it together with the effect, e.g. as a unique column in the same transaction.
    /// let key: &str = ctx.idempotency_key();
    /// # let _ = key;
    /// # }
    /// ```
    pub fn idempotency_key(&self) -> &str {
        &self.inner.idempotency_key
    }

    /// This worker's member id.
    ///
    /// ```no_run
    /// # fn h(ctx: sluice_worker::Context) {
    /// tracing::info!(member = ctx.member_id(), "handling");
    /// # }
    /// ```
    pub fn member_id(&self) -> &str {
        &self.inner.member_id
    }

    /// The JetStream context, for anything the helpers below do not cover.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) {
    /// let info = ctx.jetstream().query_account().await;
    /// # let _ = info;
    /// # }
    /// ```
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.js
    }

    /// The id the `n`-th output (0-based) of this input gets: `<input id>/<n>`.
    ///
    /// ```no_run
    /// # fn h(ctx: sluice_worker::Context) {
    /// assert_eq!(ctx.output_id(0), format!("{}/0", ctx.idempotency_key()));
    /// # }
    /// ```
    pub fn output_id(&self, n: u32) -> String {
        format!("{}/{n}", self.inner.idempotency_key)
    }

    /// The id of the next output, counting outputs in call order.
    pub(crate) fn next_output_id(&self) -> String {
        self.output_id(self.inner.outputs_sent.fetch_add(1, Ordering::SeqCst))
    }

    pub(crate) fn outputs(&self) -> &Outputs {
        &self.inner.outputs
    }

    /// An output to topic `name` in the group's namespace: [`TopicOutput::send`] publishes with
    /// a key, partitioned like the [`Producer`](crate::producer::Producer) does, under the next
    /// id derived from this input (`<input id>/<n>`, outputs numbered in call order across
    /// [`Context::topic`], [`Context::queue`] and [`Context::publish`]), so a handler that
    /// publishes deterministically gives its outputs the same ids on every attempt.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// ctx.topic("invoices").send("customer-7", "invoice for order 1").await?;
    /// # Ok(()) }
    /// ```
    pub fn topic(&self, name: impl Into<String>) -> TopicOutput<'_> {
        TopicOutput::new(self, name.into())
    }

    /// An output to queue `name` in the group's namespace (see [`Context::topic`] for the ids).
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// ctx.queue("emails").send("send the invoice to customer 7").await?;
    /// # Ok(()) }
    /// ```
    pub fn queue(&self, name: impl Into<String>) -> QueueOutput<'_> {
        QueueOutput::new(self, name.into())
    }

    /// The low-level escape hatch: publishes an output to a raw JetStream `subject` and waits
    /// for the broker's acknowledgement, returning the stream sequence. Prefer
    /// [`Context::topic`] and [`Context::queue`], which name the resource and pick the
    /// partition. Outputs are numbered in call order, so a handler that publishes
    /// deterministically gives its outputs the same ids on every attempt.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> sluice_worker::Result<()> {
    /// let seq = ctx.publish("audit.billing", None, "seen".into()).await?;
    /// # let _ = seq; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Broker`](crate::ErrorKind::Broker) when the publish failed or the broker did
    /// not acknowledge it (no stream takes the subject, timeout, connection lost); retrying the
    /// input is safe, the output id stays the same.
    pub async fn publish(
        &self,
        subject: impl Into<String>,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<u64> {
        let subject = subject.into();
        let mut headers = headers.unwrap_or_default();
        let id = self.next_output_id();
        headers.insert(headers::NATS_MSG_ID, id.as_str());
        let ack = self
            .inner
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| {
                crate::error::broker(format!("failed to publish output {id} to {subject}"), e)
            })?
            .await
            .map_err(|e| {
                crate::error::broker(
                    format!("broker did not acknowledge output {id} on {subject}"),
                    e,
                )
            })?;
        Ok(ack.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_prefers_the_message_id() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h, "S", 7), "S:7");
        h.insert(headers::NATS_MSG_ID, "order-1");
        assert_eq!(idempotency_key(&h, "S", 7), "order-1");
    }

    #[test]
    fn a_replayed_message_keeps_its_original_id() {
        // What `sluice dlq replay` publishes: original headers + a replay-specific msg id.
        let mut h = HeaderMap::new();
        h.insert(headers::NATS_MSG_ID, "replay:42:order-1");
        h.insert(headers::ORIGINAL_ID, "order-1");
        assert_eq!(idempotency_key(&h, "S", 99), "order-1");
        // An empty original id does not count.
        let mut h = HeaderMap::new();
        h.insert(headers::NATS_MSG_ID, "order-2");
        h.insert(headers::ORIGINAL_ID, "");
        assert_eq!(idempotency_key(&h, "S", 99), "order-2");
    }
}
