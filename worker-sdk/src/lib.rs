//! sluice-worker
#![warn(missing_docs, unreachable_pub)]

pub mod metrics;
pub mod producer;
pub mod telemetry;

pub use metrics::{MetricsServer, WorkerMetrics};
pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerErrorKind, PublishReceipt, Published,
    QueueHandle, Record, TopicHandle,
};
