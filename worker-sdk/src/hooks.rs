//! The seam between message handling and metrics: handling reports [`Event`]s to an
//! [`Observer`]. The default observer only logs at debug level; the metrics module plugs in
//! its counters and histograms here.

use std::fmt::Debug;
use std::time::Duration;

/// Something that happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// The handler succeeded.
    Processed,
    /// The handler failed (retryable, permanent or panic).
    Failed,
    /// A retry was scheduled.
    Retried,
    /// The message was dead-lettered (or terminated without a DLQ).
    DeadLettered,
    /// A completed message was delivered again and skipped (exactly-once).
    Duplicate,
}

/// Receives message events; implementations must be cheap and never block.
pub trait Observer: Send + Sync + Debug {
    /// One event on `partition`; `latency` is the handler's run time where one ran.
    fn event(&self, event: Event, partition: u32, latency: Option<Duration>);
}

/// The default observer: debug logs only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn event(&self, event: Event, partition: u32, latency: Option<Duration>) {
        tracing::debug!(?event, partition, ?latency, "message event");
    }
}
