//! [`QueueHandle`]: publishing to a queue (one partition, 0), at a priority level, now or
//! delayed.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sluice_broker::ResourceRef;
use sluice_broker::schedule::QueueFeatures;
use tracing::{Instrument as _, debug_span};

use super::acks::PublishReceipt;
use super::client::Producer;
use super::error::ProducerError;
use super::record::{Published, Record};
use super::route;

/// Publishes to one queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub(super) producer: Producer,
    pub(super) queue: ResourceRef,
    pub(super) not_found: Arc<str>,
    /// What the queue accepts, read when the handle was made and again when a record does not
    /// fit (the Queue may just have been changed).
    pub(super) features: Arc<RwLock<QueueFeatures>>,
}

impl QueueHandle {
    /// The queue.
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// println!("publishing to {}", jobs.queue());
    /// # Ok(()) }
    /// ```
    pub fn queue(&self) -> &ResourceRef {
        &self.queue
    }

    /// What the queue accepts (priority levels, longest delay), as last read from the broker.
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// println!("{} priority levels", jobs.features().priorities);
    /// # Ok(()) }
    /// ```
    pub fn features(&self) -> QueueFeatures {
        *self
            .features
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks a record against the queue, re-reading the queue's features once if it does not
    /// fit.
    async fn admit(&self, record: &Record) -> Result<(), ProducerError> {
        let Some(_) = route::check(record, self.features()) else {
            return Ok(());
        };
        let fresh = self.producer.broker().queue_features(&self.queue).await?;
        *self
            .features
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        match route::check(record, fresh) {
            None => Ok(()),
            Some(misfit) => Err(route::misfit_error(misfit, record, &self.queue, fresh)),
        }
    }

    /// Sends a record without waiting for its acknowledgement (the key, if any, is carried in
    /// `Sluice-Key` but does not pick anything: a queue has one partition, 0). The record's
    /// [priority](Record::priority) picks the level; a [delayed](Record::deliver_after) record
    /// is stored as a JetStream schedule and reaches workers when due.
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// let receipt = jobs.send(Record::new("resize image 7")).await?;
    /// receipt.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::InvalidMessage`] for a key or id with a line break (or an empty id),
    /// a priority the queue does not have, or a delay the queue does not accept (delay off, or
    /// longer than its `maxDelay`); `Unavailable` or `Broker` when the message could not be
    /// handed to the connection; [`ProducerErrorKind::Closed`] when the acknowledgement task is
    /// gone. Failures of the acknowledgement itself resolve the receipt.
    ///
    /// [`ProducerErrorKind::InvalidMessage`]: super::ProducerErrorKind::InvalidMessage
    /// [`ProducerErrorKind::Closed`]: super::ProducerErrorKind::Closed
    pub async fn send(&self, record: Record) -> Result<PublishReceipt, ProducerError> {
        let span = debug_span!(
            "sluice.publish",
            queue = %self.queue,
            priority = record.priority_level(),
            delayed = record.is_delayed()
        );
        async {
            record.validate()?;
            self.admit(&record).await?;
            let routed = route::route(&self.queue, record)?;
            self.producer
                .send_to(routed.subject, 0, routed.record, self.not_found.clone())
                .await
        }
        .instrument(span)
        .await
    }

    /// Sends a record that workers see `delay` after it is sent, not before (queues with
    /// `delay.enabled`; at most the queue's `maxDelay`). Retries, dead-lettering and the
    /// idempotency key work as for any message once it is due.
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use std::time::Duration;
    /// use sluice_worker::producer::Record;
    /// let receipt = jobs.send_after(Duration::from_secs(15 * 60), Record::new("remind customer 7").id("remind-7")).await?;
    /// receipt.await?; // stored (as a schedule): it will be delivered in 15 minutes
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`QueueHandle::send`].
    pub async fn send_after(
        &self,
        delay: Duration,
        record: Record,
    ) -> Result<PublishReceipt, ProducerError> {
        self.send(record.deliver_after(delay)).await
    }

    /// Sends a record that workers see at `at`, not before (a time in the past delivers at
    /// once).
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use std::time::{Duration, SystemTime};
    /// use sluice_worker::producer::Record;
    /// let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    /// jobs.send_at(tomorrow, Record::new("renew subscription 9")).await?.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`QueueHandle::send`].
    pub async fn send_at(
        &self,
        at: SystemTime,
        record: Record,
    ) -> Result<PublishReceipt, ProducerError> {
        self.send(record.deliver_at(at)).await
    }

    /// Sends a record at priority level `level` (0 is the lowest; the queue must have more
    /// than `level` levels).
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// jobs.send_with_priority(2, Record::new("premium upload 4")).await?.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`QueueHandle::send`].
    pub async fn send_with_priority(
        &self,
        level: u32,
        record: Record,
    ) -> Result<PublishReceipt, ProducerError> {
        self.send(record.priority(level)).await
    }

    /// Sends a record and waits for its acknowledgement.
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// let at = jobs.publish(Record::new("resize image 7").id("image-7")).await?;
    /// println!("stored at {}", at.offset);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`QueueHandle::send`], plus the acknowledgement's: [`ProducerErrorKind::Timeout`](super::ProducerErrorKind::Timeout) (the
    /// message may or may not be stored; re-send it with the same id), `NotFound`, `Unavailable`,
    /// `InvalidMessage` (too large) or `Broker`.
    pub async fn publish(&self, record: Record) -> Result<Published, ProducerError> {
        self.send(record).await?.await
    }

    /// Waits for every outstanding acknowledgement of the producer (see [`Producer::flush`]).
    ///
    /// ```no_run
    /// # async fn run(jobs: sluice_worker::producer::QueueHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// jobs.flush().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Producer::flush`](super::Producer::flush).
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.producer.flush().await
    }
}
