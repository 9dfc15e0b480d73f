//! The custom resources of Sluice, group `sluice.dev`, version `v1alpha1`.
//!
//! The Rust types are the only source of the CRD YAML (see [`crate::crdgen`]). Spec fields
//! that have defaults are `Option`s and defaults are applied where they are used, so the
//! operator never writes into a user's spec.

// `printcolumn(...)` repeats `name`/`type_` keys by design; clippy mistakes them for duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod broker;
pub mod common;
pub mod dlq;
pub mod group;
pub mod queue;
pub mod topic;

pub use broker::{Broker, BrokerSpec, BrokerStatus, BrokerTls, CertManagerIssuerRef, TlsModeSpec};
pub use common::{Condition, ConditionStatus, DeletionPolicy, DurationString, InvalidField};
pub use dlq::{DeadLetterQueue, DeadLetterQueueSpec, DeadLetterQueueStatus};
pub use group::{ConsumerGroup, ConsumerGroupSpec, ConsumerGroupStatus};
pub use queue::{Queue, QueueSourceStatus, QueueSpec, QueueStatus};
pub use topic::{Topic, TopicSpec, TopicStatus};
