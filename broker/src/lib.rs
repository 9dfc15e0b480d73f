//! `sluice-broker`: the mapping of Sluice's Topics, Queues, DeadLetterQueues and
//! ConsumerGroups onto NATS JetStream. No Kubernetes types live here.
//!
//! Where each concept lives across the crates: `docs/architecture.md` in the repository.
//!
//! - [`names`]: deterministic, collision-free names for streams, subjects, consumers, buckets.
//! - [`partitioner`]: Kafka-compatible key -> partition (murmur2).
//! - [`backoff`]: [`Backoff`], the one exponential backoff policy (retries, redelivery, requeues).
//! - [`config`]: the shared shapes, including [`GroupConfig`].
//! - [`client`]: [`Broker`], a connection to one JetStream broker.
//! - [`provision`]: idempotent ensure/delete of topic, queue and DLQ streams.
//! - [`group`]: group consumers and the group-config channel.
//! - [`inspect`]: partition offsets, group lag, DLQ depth.
//! - [`dlq`]: the dead-letter envelope.
//! - [`schedule`]: delayed delivery (JetStream message schedules) and priority levels of queues.
//! - [`fanout`]: the relay that copies topics into the queues they feed (lossless fan-out).
//! - [`tls`]: the CA a client verifies the broker's TLS certificate with.
//! - [`embedded`]: a real nats-server as a child process (for `sluice dev` and tests).
//!
//! ```no_run
//! # async fn run() -> sluice_broker::Result<()> {
//! use sluice_broker::{Broker, ConnectOptions, ResourceRef, config::TopicSettings};
//! let broker = Broker::connect(&ConnectOptions::from_url_list("nats://127.0.0.1:4222")).await?;
//! let orders = ResourceRef::new("default", "orders")?;
//! let changes = broker
//!     .ensure_topic(&orders, &TopicSettings { partitions: 3, ..Default::default() })
//!     .await?;
//! println!("created {:?}", changes.created);
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod backoff;
pub mod catalog;
pub mod client;
pub mod config;
pub mod dlq;
pub mod embedded;
pub mod error;
pub mod fanout;
pub mod group;
pub mod ha;
pub mod identity;
pub mod inspect;
pub mod names;
pub mod partitioner;
pub mod provision;
pub mod schedule;
pub mod tls;

pub use backoff::Backoff;
pub use catalog::StreamCatalog;
pub use client::{Broker, ConnectOptions};
pub use config::GroupConfig;
pub use error::{Error, ErrorKind, Result};
pub use fanout::{FanoutRelays, SourcePartitionStatus};
pub use group::{ConfigUpdate, GroupConfigStore};
pub use inspect::{DlqStatus, GroupLag, PartitionLag, PartitionStatus};
pub use names::ResourceRef;
pub use provision::Changes;
