//! The seam between message handling and metrics: handling reports [`Event`]s to an
//! [`Observer`]. A [`Worker`](crate::Worker) always reports to its
//! [`WorkerMetrics`](crate::WorkerMetrics) and, through a [`Fanout`], to any observer added with
//! [`Worker::observer`](crate::Worker::observer); [`LogObserver`] only logs at debug level.

use std::fmt::Debug;
use std::sync::Arc;
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

/// Reports every event to several observers in turn (the worker's metrics plus any observer
/// the user added).
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    observers: Vec<Arc<dyn Observer>>,
}

impl Fanout {
    /// A fan-out to `observers`.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        Self { observers }
    }
}

impl Observer for Fanout {
    fn event(&self, event: Event, partition: u32, latency: Option<Duration>) {
        for o in &self.observers {
            o.event(event, partition, latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(Event, u32)>>);

    impl Observer for Seen {
        fn event(&self, event: Event, partition: u32, _latency: Option<Duration>) {
            self.0.lock().unwrap().push((event, partition));
        }
    }

    #[test]
    fn fanout_reports_to_every_observer() {
        let a = Arc::new(Seen::default());
        let b = Arc::new(Seen::default());
        let f = Fanout::new(vec![a.clone(), b.clone()]);
        f.event(Event::Processed, 3, None);
        f.event(Event::DeadLettered, 1, None);
        let expected = vec![(Event::Processed, 3), (Event::DeadLettered, 1)];
        assert_eq!(*a.0.lock().unwrap(), expected);
        assert_eq!(*b.0.lock().unwrap(), expected);
    }
}
