//! `sluice-worker`: write workers for Sluice consumer groups.
//!
//! Where each concept lives across the crates: `docs/architecture.md` in the repository.
//!
//! A worker needs only the broker URL, credentials and its group name (the `SLUICE_*`
//! environment the operator sets); everything else — source, delivery mode, ordering, retry,
//! dead-lettering — comes from the group's config on the broker's config channel and applies
//! live.
//!
//! ```no_run
//! use sluice_worker::{HandlerError, Worker};
//! # async fn run() -> sluice_worker::Result<()> {
//! Worker::from_env()?
//!     .run(|msg, ctx| async move {
//!         let order: serde_json::Value = serde_json::from_slice(&msg.payload)
//!             .map_err(HandlerError::permanent)?; // bad input: straight to the DLQ
//!         // To the Topic "invoices", partitioned by the customer like a producer's record.
//!         // Outputs get ids derived from the input's, so retries never duplicate them.
//!         let customer = order["customer"].as_str().unwrap_or_default().to_string();
//!         ctx.topic("invoices")
//!             .send(customer, order.to_string())
//!             .await
//!             .map_err(HandlerError::retryable)?;
//!         Ok(())
//!     })
//!     .await
//! # }
//! ```
//!
//! # How members share partitions
//! Members heartbeat into the `SLUICE_MEMBERS` KV bucket (per-key TTL = the pin timeout,
//! rounded up to whole seconds). Every member computes the same balanced, sticky assignment
//! from the live members and the current owners ([`assignment::assign`]). Ownership itself is
//! a lease key per partition (`SLUICE_LEASES`, compare-and-set, same TTL): a member starts a
//! partition only after creating its lease, which is possible only once the previous owner
//! deleted it (clean handoff) or it expired (crash). A revoked owner stops requesting
//! messages, keeps receiving and handling in order until every pull request it sent has ended
//! (at most the pull expiry — a third of the pin timeout, clamped to 0.25–1 s — plus 1 s of
//! grace when a request's end is never reported), finishes
//! running handlers, returns what it never started with a NAK, waits until the server counted
//! its acks, unpins the consumer and deletes the lease, so a clean join or leave delivers
//! nothing twice. The prefetch window follows the handling rate (about 0.5 s of work, 16–1024
//! messages), so a handoff rarely has anything left to return. The server's pinned-client
//! priority group backs this up: only the pinned member receives messages.
//!
//! The membership, lease and idempotency buckets (and the group-config bucket) are replicated
//! like the broker: three replicas on a JetStream cluster, so losing one server stops no group
//! (see [`sluice_broker::ha`]). Each member rebuilds its view of members and leases from a
//! fresh snapshot whenever its watch restarts or its connection comes back, so a broker
//! restart or a network cut longer than the lease TTL ends with every partition owned again.
//!
//! **Fencing.** The server accepts a deposed member's acks, so the SDK fences itself: a lease
//! counts as valid until 3/4 of its TTL after the last renewal was *sent*; the server expires
//! it no earlier than a full TTL after it *stored* that renewal. A member that cannot renew
//! in time stops handling that partition (running handlers are cancelled, nothing more is
//! acknowledged) before anyone else can take it. Checks happen before a handler starts and
//! before every ack; a handler that is already running when the lease lapses is cancelled at
//! its next await point.
//!
//! **Failover** after a crash takes the lease TTL (2 s by default) plus one pull; messages the
//! crashed member had fetched but not acknowledged come back after the ack wait (with ordered
//! modes the partition waits for them, to keep order).
//!
//! # Ordering
//! - `partition`: one message at a time per partition, in offset order, also across
//!   rebalances (a reorder buffer restores offset order after redeliveries). A failing message
//!   is retried in place with the backoff schedule; the partition waits. A partition that is
//!   handed over does not wait out a retry's backoff: the message goes back (NAK) to the next
//!   owner, and nothing behind it starts here.
//! - `key`: offset order per key (the `Sluice-Key` header); different keys run concurrently up
//!   to `maxConcurrency`. Keyless messages have no order.
//! - `none`: up to `maxConcurrency` at once; retries go back to JetStream with a NAK delayed by
//!   the backoff schedule.
//!
//! # Delivery guarantees — precisely
//! - **atLeastOnce** (default): handle, then ack. Every message is handled successfully or
//!   dead-lettered, whatever crashes. A message can be handled more than once when a worker
//!   crashes (or is fenced) between handling and ack.
//! - **atMostOnce**: ack (confirmed by the server) before handling; never handled twice; a crash
//!   during handling loses the message; failures are logged, not retried.
//! - **exactlyOnce**: at-least-once plus an idempotency store (`SLUICE_IDEM__<ns>__<group>`, entries
//!   kept `idempotencyTtl`): after the handler returns `Ok`, the SDK records the message's
//!   idempotency key, then acks (while the store is unavailable, recording is retried and the
//!   message kept; nothing is acked before the key is recorded). A redelivered message whose
//!   key is recorded is acked without calling the handler, also when it is past the delivery
//!   limit. The remaining window is a crash *after the handler returned and before
//!   the key was recorded*: then the handler runs again. A redelivery that arrives while the
//!   first handling still runs on the same member (its ack wait lapsed because the process
//!   stalled) is not started again; on a queue, a redelivery to *another* member while the
//!   first is still running is not covered by the store (neither has completed yet), which is
//!   why the visibility timeout is kept alive with progress acks. Therefore:
//!   - outputs published through [`Context::topic`], [`Context::queue`] or [`Context::publish`] carry ids `<input id>/<n>`, and JetStream
//!     drops the duplicate when the re-run publishes the same outputs within the target stream's
//!     duplicate window (handlers must publish deterministically);
//!   - effects outside the broker are exactly-once only when the handler commits them together
//!     with [`Message::idempotency_key`] (e.g. a unique column in the same database
//!     transaction). The SDK cannot make an arbitrary side effect exactly-once.
//!
//!   The idempotency key is `Sluice-Original-Id` when present (what `sluice dlq replay` sets),
//!   else `Nats-Msg-Id`, else `<stream>:<offset>`: a replayed dead letter is the same message,
//!   so a replay of a message whose handling completed is acknowledged without handling.
//!
//! # Retries and dead letters
//! `attempt` counts JetStream deliveries (so attempts that crashed the process count) plus
//! retries in place. The group's consumers allow `maxAttempts + 1` deliveries: a message
//! delivered more than `maxAttempts` times is dead-lettered without calling the handler.
//! Deliveries the handler never saw count too: a message fetched by a member that then
//! crashed, or returned (NAK) by a clean handoff before it was started. A group that
//! rebalances very often can therefore dead-letter a message with fewer than `maxAttempts`
//! handler calls (the envelope's `attempts` says how many deliveries there were). A
//! [`HandlerError::Permanent`] dead-letters at once; a panic counts as a retryable failure.
//! Dead-lettering publishes the original payload and headers plus the `Sluice-*` envelope
//! ([`sluice_broker::dlq`]) and waits for the broker's ack before terminating the original.
//! A DLQ that is unavailable costs time, not messages: the message is kept (progress acks) and
//! the publish retried with backoff (up to 5 s apart) until the DLQ stores it. A message on its
//! last JetStream delivery is never handed back (JetStream would not deliver it again): at a
//! handoff or fence it is dead-lettered instead, and when a member crashes with it, the next
//! owner (on a queue: one of the members) dead-letters it from the stream as soon as the
//! server reports that it gave the message up (the consumer's max-deliveries advisory), with
//! `Sluice-Last-Error` saying so. Without a DLQ the message is terminated with a
//! warning. `Sluice-First-Failure` is the first failure this worker saw (earlier failures on
//! crashed workers are not known); `Sluice-Original-Id` is the message's idempotency key; the
//! original headers, W3C `traceparent`/`tracestate` included, travel with the dead letter.
//! The DLQ publish is de-duplicated per (group, original id), so a crash between
//! dead-lettering and terminating does not dead-letter twice; a replayed message that fails
//! again is dead-lettered under its replay id, so the new failure is not dropped as a duplicate.
//!
//! **Known limit: deliveries count, not handler starts.** JetStream counts every delivery,
//! including messages a worker had fetched ahead (up to 32 per partition) but not started when
//! it crashed. With ordered consumption, a message that crashes the worker `maxAttempts`
//! times can therefore take messages fetched behind it to the limit too: those are
//! dead-lettered without having been handled (`Sluice-Last-Error` says "delivered N times"),
//! never lost; replay them with `sluice dlq replay`. Crashes that are not repeated (the usual
//! case) only cost a delivery each.
//!
//! # Metrics and tracing
//! Every worker records [`WorkerMetrics`] (processed, failed, retried, dead-lettered, handler
//! latency; [`Worker::metrics`] gives the registry) and reports the same events to any
//! [`Observer`] added with [`Worker::observer`]. With `SLUICE_METRICS_ADDR` set (or
//! [`WorkerOptions::metrics_addr`]) it serves `/metrics`, `/healthz` and `/readyz`; `/readyz`
//! answers 200 once the worker joined its group and 503 again during shutdown. Each message is
//! handled in a `sluice.message` span whose parent is the trace context in the message's
//! `traceparent` header (see [`telemetry`]; export needs [`telemetry::init_tracing`]).
//!
//! # Shutdown
//! SIGTERM, SIGINT or [`ShutdownHandle::shutdown`]: stop fetching, finish running handlers
//! within the drain timeout, ack, return fetched but unstarted messages (NAK), unpin, release
//! partitions, delete the member key, return `Ok` (a worker binary then exits 0). On a queue,
//! messages the client had buffered but not started come back after the visibility timeout.
#![warn(missing_docs, unreachable_pub)]

pub mod assignment;
mod coordinator;
pub mod error;
pub mod hooks;
mod idempotency;
mod kv;
pub mod membership;
mod message;
pub mod metrics;
mod outputs;
mod partition;
mod priority;
mod priority_queue;
mod process;
pub mod producer;
mod pull;
mod queue;
pub mod telemetry;
mod worker;

pub use error::{Error, ErrorKind, HandlerError, Result};
pub use hooks::{Event, MessageEvent, Observer};
pub use message::{Context, Message};
pub use outputs::{QueueOutput, TopicOutput};
pub use worker::{ShutdownHandle, Worker, WorkerOptions};

pub use metrics::{MetricsServer, WorkerMetrics};
pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerErrorKind, PublishReceipt, Published,
    QueueHandle, Record, TopicHandle,
};
