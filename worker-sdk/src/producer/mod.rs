//! Publishing to Sluice topics and queues, with pipelined acknowledgements.
//!
//! A [`Producer`] wraps one broker connection. [`Producer::topic`] returns a [`TopicHandle`]
//! that knows the topic's partition count (discovered from the broker, refreshed periodically
//! and on demand, since partitions can grow); [`Producer::queue`] a [`QueueHandle`].
//!
//! - **Partitioning**: a keyed record goes to Kafka's partition for its key
//!   ([`sluice_broker::partitioner`], murmur2), so a key always lands on the same partition and
//!   keeps its order; keyless records are spread evenly (round robin).
//! - **Headers**: the key travels in `Sluice-Key`; a record id becomes `Nats-Msg-Id`, so
//!   JetStream drops a re-sent duplicate within the stream's duplicate window; the W3C trace
//!   context of the current span travels in `traceparent`/`tracestate`.
//! - **Pipelining**: [`TopicHandle::send`] returns as soon as the message is handed to the
//!   connection, with a [`PublishReceipt`] that resolves to the [`Published`] partition and
//!   offset once the broker acknowledges it. At most [`ProducerConfig::max_in_flight`]
//!   acknowledgements are outstanding; `send` waits for a slot beyond that (backpressure).
//!   [`Producer::flush`] waits for every outstanding acknowledgement.
//! - **Priorities and delays** (queues only): [`Record::priority`] picks a priority level,
//!   [`QueueHandle::send_after`] / [`QueueHandle::send_at`] (or [`Record::deliver_after`])
//!   delay delivery; a record the queue does not accept (level out of range, delay off or
//!   longer than the queue's `maxDelay`) is refused with `InvalidMessage` before anything is
//!   sent. Topics refuse both (a log has no priorities, and its offsets are its order).
//! - **No silent loss**: a failed acknowledgement resolves its receipt with the error; if the
//!   receipt was dropped, the failure is reported by the next [`Producer::flush`].
//!
//! ```no_run
//! # async fn run() -> Result<(), sluice_worker::producer::ProducerError> {
//! use sluice_worker::producer::{Producer, ProducerConfig, Record};
//! let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
//! let orders = producer.topic("shop", "orders").await?;
//! // Pipelined: many sends, one flush.
//! for i in 0..1000 {
//!     orders.send(Record::new(format!("order {i}")).key(format!("customer-{}", i % 10))).await?;
//! }
//! producer.flush().await?;
//! // Or one at a time, waiting for the ack:
//! let at = orders.publish(Record::new("hello").id("order-1001")).await?;
//! println!("stored at partition {} offset {}", at.partition, at.offset);
//! # Ok(()) }
//! ```

//!
//! Layout: [`Producer`] (`client.rs`), [`TopicHandle`] (`topic.rs`), [`QueueHandle`]
//! (`queue.rs`), [`Record`] and [`Published`] (`record.rs`), the acknowledgement driver and
//! [`PublishReceipt`] (`acks.rs`), [`ProducerConfig`] (`config.rs`), [`ProducerError`]
//! (`error.rs`).

mod acks;
mod client;
mod config;
mod error;
mod queue;
mod record;
mod route;
mod topic;

pub use acks::PublishReceipt;
pub use client::{Producer, ProducerStats};
pub use config::ProducerConfig;
pub use error::{ProducerError, ProducerErrorKind};
pub use queue::QueueHandle;
pub use record::{Published, Record};
pub use topic::TopicHandle;

/// Environment variable with the broker URL(s), comma-separated.
pub const BROKER_URL_ENV: &str = "SLUICE_BROKER_URL";
/// Environment variable with the broker user.
pub const BROKER_USER_ENV: &str = "SLUICE_BROKER_USER";
/// Environment variable with the broker password.
pub const BROKER_PASSWORD_ENV: &str = "SLUICE_BROKER_PASSWORD";
