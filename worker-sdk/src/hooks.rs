//! The seam between message handling and metrics: handling reports [`Event`]s to an
//! [`Observer`]. A [`Worker`](crate::Worker) always reports to its
//! [`WorkerMetrics`](crate::WorkerMetrics) and, through a [`Fanout`], to any observer added with
//! [`Worker::observer`](crate::Worker::observer); [`LogObserver`] only logs at debug level.
//! Each [`MessageEvent`] names the message: partition, offset and key.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::message::Message;

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

/// What happened to which message: the event plus the message's partition, offset and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageEvent<'a> {
    /// What happened.
    pub event: Event,
    /// The message's partition (0 for queues).
    pub partition: u32,
    /// The message's offset in that partition (the stream sequence).
    pub offset: u64,
    /// The message's key (`Sluice-Key`), if its producer set one.
    pub key: Option<&'a str>,
    /// The handler's run time, where one ran.
    pub latency: Option<Duration>,
}

impl<'a> MessageEvent<'a> {
    /// `event` on `message`, with the handler's run time where one ran.
    pub(crate) fn of(event: Event, message: &'a Message, latency: Option<Duration>) -> Self {
        Self {
            event,
            partition: message.partition,
            offset: message.offset,
            key: message.key.as_deref(),
            latency,
        }
    }
}

/// Receives message events; implementations must be cheap and never block.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use sluice_worker::hooks::{Event, MessageEvent, Observer};
///
/// #[derive(Debug, Default)]
/// struct DeadLetterCounter(AtomicU64);
///
/// impl Observer for DeadLetterCounter {
///     fn event(&self, e: &MessageEvent<'_>) {
///         if e.event == Event::DeadLettered {
///             self.0.fetch_add(1, Ordering::Relaxed);
///             tracing::warn!(partition = e.partition, offset = e.offset, key = ?e.key, "dead-lettered");
///         }
///     }
/// }
/// ```
pub trait Observer: Send + Sync + Debug {
    /// One event on one message.
    fn event(&self, event: &MessageEvent<'_>);
}

/// The default observer: debug logs only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn event(&self, e: &MessageEvent<'_>) {
        tracing::debug!(event = ?e.event, partition = e.partition, offset = e.offset, key = ?e.key, latency = ?e.latency, "message event");
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
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sluice_worker::hooks::{Fanout, LogObserver};
    /// let both = Fanout::new(vec![Arc::new(LogObserver), Arc::new(LogObserver)]);
    /// # let _ = both;
    /// ```
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        Self { observers }
    }
}

impl Observer for Fanout {
    fn event(&self, event: &MessageEvent<'_>) {
        for o in &self.observers {
            o.event(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An event as seen: event, partition, offset, key.
    type Sighting = (Event, u32, u64, Option<String>);

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<Sighting>>);

    impl Observer for Seen {
        fn event(&self, e: &MessageEvent<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((e.event, e.partition, e.offset, e.key.map(String::from)));
        }
    }

    fn on(event: Event, partition: u32, offset: u64, key: Option<&str>) -> MessageEvent<'_> {
        MessageEvent {
            event,
            partition,
            offset,
            key,
            latency: None,
        }
    }

    #[test]
    fn fanout_reports_to_every_observer() {
        let a = Arc::new(Seen::default());
        let b = Arc::new(Seen::default());
        let f = Fanout::new(vec![a.clone(), b.clone()]);
        f.event(&on(Event::Processed, 3, 7, Some("k")));
        f.event(&on(Event::DeadLettered, 1, 9, None));
        let expected = vec![
            (Event::Processed, 3, 7, Some("k".to_string())),
            (Event::DeadLettered, 1, 9, None),
        ];
        assert_eq!(*a.0.lock().unwrap(), expected);
        assert_eq!(*b.0.lock().unwrap(), expected);
    }
}
