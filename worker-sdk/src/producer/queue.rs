//! [`QueueHandle`]: publishing to a queue (one partition, 0).

use std::sync::Arc;

use async_nats::Subject;
use sluice_broker::ResourceRef;
use tracing::{Instrument as _, debug_span};

use super::acks::PublishReceipt;
use super::client::Producer;
use super::error::ProducerError;
use super::record::{Published, Record};

/// Publishes to one queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub(super) producer: Producer,
    pub(super) queue: ResourceRef,
    pub(super) subject: Subject,
    pub(super) not_found: Arc<str>,
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

    /// Sends a record without waiting for its acknowledgement (the key, if any, is carried in
    /// `Sluice-Key` but does not pick anything: a queue has one partition, 0).
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
    /// [`ProducerErrorKind::InvalidMessage`] for a key or id with a line break (or an empty id);
    /// `Unavailable` or `Broker` when the message could not be handed to the connection;
    /// [`ProducerErrorKind::Closed`] when the acknowledgement task is gone. Failures of the
    /// acknowledgement itself resolve the receipt.
    pub async fn send(&self, record: Record) -> Result<PublishReceipt, ProducerError> {
        let span = debug_span!("sluice.publish", queue = %self.queue);
        self.producer
            .send_to(self.subject.clone(), 0, record, self.not_found.clone())
            .instrument(span)
            .await
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
    /// As [`QueueHandle::send`], plus the acknowledgement's: [`ProducerErrorKind::Timeout`] (the
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
