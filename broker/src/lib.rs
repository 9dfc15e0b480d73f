//! `sluice-broker`: the mapping of Sluice's Topics, Queues, DeadLetterQueues and
//! ConsumerGroups onto NATS JetStream. No Kubernetes types live here.
//!
//! - [`names`]: deterministic, collision-free names for streams, subjects, consumers, buckets.
//! - [`partitioner`]: Kafka-compatible key -> partition (murmur2).
//! - [`config`]: the shared shapes, including [`GroupConfig`].
//! - [`dlq`]: the dead-letter envelope.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod dlq;
pub mod error;
pub mod names;
pub mod partitioner;

pub use config::GroupConfig;
pub use error::{Error, ErrorKind, Result};
pub use names::ResourceRef;
