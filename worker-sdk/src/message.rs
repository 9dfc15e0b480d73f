//! What a handler receives: the [`Message`] and its [`Context`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_nats::HeaderMap;
use bytes::Bytes;
use sluice_broker::dlq::headers;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

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

/// What a handler can do besides reading its message: publish outputs whose ids derive from
/// the input's idempotency key, so a retried or re-handled input produces the same ids and
/// JetStream drops the duplicates (within the target stream's duplicate window).
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    js: async_nats::jetstream::Context,
    idempotency_key: String,
    member_id: String,
    outputs: AtomicU32,
    cancel: CancellationToken,
}

impl Context {
    pub(crate) fn new(
        js: async_nats::jetstream::Context,
        idempotency_key: String,
        member_id: String,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                js,
                idempotency_key,
                member_id,
                outputs: AtomicU32::new(0),
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
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// The idempotency key of the message being handled (see [`Message::idempotency_key`]).
    pub fn idempotency_key(&self) -> &str {
        &self.inner.idempotency_key
    }

    /// This worker's member id.
    pub fn member_id(&self) -> &str {
        &self.inner.member_id
    }

    /// The JetStream context, for anything the helpers below do not cover.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.js
    }

    /// The id the `n`-th output (0-based) of this input gets: `<input id>/<n>`.
    pub fn output_id(&self, n: u32) -> String {
        format!("{}/{n}", self.inner.idempotency_key)
    }

    /// Publishes an output to `subject` and waits for the broker's acknowledgement. Outputs are
    /// numbered in call order, so a handler that publishes deterministically gives its outputs
    /// the same ids on every attempt.
    pub async fn publish(
        &self,
        subject: impl Into<String>,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<u64> {
        let subject = subject.into();
        let n = self.inner.outputs.fetch_add(1, Ordering::SeqCst);
        let mut headers = headers.unwrap_or_default();
        let id = self.output_id(n);
        headers.insert(headers::NATS_MSG_ID, id.as_str());
        let ack = self
            .inner
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| Error::broker(format!("failed to publish output {id} to {subject}"), e))?
            .await
            .map_err(|e| {
                Error::broker(
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
