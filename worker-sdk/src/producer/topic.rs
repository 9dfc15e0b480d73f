//! [`TopicHandle`]: publishing to a topic's partitions, picked by key like Kafka, with the
//! partition count refreshed as the topic grows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_nats::Subject;
use sluice_broker::ResourceRef;
use sluice_broker::partitioner::{KeylessSpreader, choose_partition};
use tracing::{Instrument as _, debug, debug_span, instrument, warn};

use super::acks::PublishReceipt;
use super::client::{Producer, discover};
use super::error::{ProducerError, ProducerErrorKind};
use super::record::{Published, Record};

#[derive(Debug)]
pub(super) struct TopicState {
    pub(super) topic: ResourceRef,
    pub(super) not_found: Arc<str>,
    pub(super) subjects: RwLock<Arc<[Subject]>>,
    pub(super) spreader: KeylessSpreader,
    pub(super) refreshed_at: Mutex<Instant>,
    pub(super) refreshing: AtomicBool,
}

/// Publishes to one topic; cheap to clone.
#[derive(Debug, Clone)]
pub struct TopicHandle {
    pub(super) producer: Producer,
    pub(super) state: Arc<TopicState>,
}

impl TopicHandle {
    /// The topic.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// println!("publishing to {}", orders.topic());
    /// # Ok(()) }
    /// ```
    pub fn topic(&self) -> &ResourceRef {
        &self.state.topic
    }

    /// The partition count last discovered.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let n: u32 = orders.partitions();
    /// # let _ = n; Ok(()) }
    /// ```
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.subjects().len()).unwrap_or(u32::MAX)
    }

    /// The partition a record with `key` goes to (`None`: the next keyless partition).
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// // The same key always lands on the same partition (while the count does not change).
    /// assert_eq!(orders.partition_for(Some("customer-7")), orders.partition_for(Some("customer-7")));
    /// # Ok(()) }
    /// ```
    pub fn partition_for(&self, key: Option<&str>) -> u32 {
        choose_partition(
            key.map(str::as_bytes),
            self.partitions(),
            &self.state.spreader,
        )
    }

    fn subjects(&self) -> Arc<[Subject]> {
        self.state
            .subjects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the partition count from the broker (partitions can grow) and returns it.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let now = orders.refresh().await?;
    /// println!("the topic has {now} partitions");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::NotFound`] when the topic no longer exists;
    /// [`ProducerErrorKind::Unavailable`] or [`ProducerErrorKind::Broker`] when the broker cannot be
    /// asked (the last known count is kept).
    #[instrument(skip(self), fields(topic = %self.state.topic))]
    pub async fn refresh(&self) -> Result<u32, ProducerError> {
        let subjects = discover(&self.producer.inner.broker, &self.state.topic).await?;
        let count = u32::try_from(subjects.len()).unwrap_or(u32::MAX);
        let before = self.partitions();
        *self
            .state
            .subjects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = subjects;
        *self
            .state
            .refreshed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        if before != count {
            debug!(before, after = count, "partition count changed");
        }
        Ok(count)
    }

    /// Starts a background refresh when the partition count is older than the configured
    /// interval (at most one at a time; publishing never waits for it).
    fn maybe_refresh(&self) {
        let Some(every) = self.producer.inner.config.partition_refresh else {
            return;
        };
        let stale = self
            .state
            .refreshed_at
            .lock()
            .map(|at| at.elapsed() >= every)
            .unwrap_or(true);
        if !stale
            || self
                .state
                .refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let handle = self.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.refresh().await {
                warn!(topic = %handle.state.topic, error = %e, "failed to refresh the partition count; keeping the last one");
                // Try again after another interval, not on every publish.
                *handle
                    .state
                    .refreshed_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
            }
            handle.state.refreshing.store(false, Ordering::Release);
        });
    }

    /// Sends a record without waiting for its acknowledgement (waits only for an in-flight slot).
    /// The receipt resolves to its partition and offset.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// let receipt = orders.send(Record::new("order 1").key("customer-7")).await?;
    /// let stored = receipt.await?; // the broker's acknowledgement
    /// println!("partition {} offset {}", stored.partition, stored.offset);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::InvalidMessage`] for a key or id with a line break (or an empty id),
    /// or a record with a priority or delay (queues only);
    /// [`ProducerErrorKind::NotFound`] when the topic has no partitions; `Unavailable` or `Broker`
    /// when the message could not be handed to the connection; [`ProducerErrorKind::Closed`] when
    /// the acknowledgement task is gone. Failures of the acknowledgement itself resolve the receipt.
    pub async fn send(&self, record: Record) -> Result<PublishReceipt, ProducerError> {
        if record.is_delayed() || record.priority_level() > 0 {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidMessage,
                format!(
                    "topic {} cannot take a priority or a delay: a topic is a log read in offset order; send delayed or prioritized work to a Queue",
                    self.state.topic
                ),
            ));
        }
        self.maybe_refresh();
        let subjects = self.subjects();
        let count = u32::try_from(subjects.len()).unwrap_or(u32::MAX);
        let partition = choose_partition(
            record.key.as_deref().map(str::as_bytes),
            count,
            &self.state.spreader,
        );
        let subject = subjects.get(partition as usize).cloned().ok_or_else(|| {
            ProducerError::new(
                ProducerErrorKind::NotFound,
                self.state.not_found.to_string(),
            )
        })?;
        let span = debug_span!("sluice.publish", topic = %self.state.topic, partition);
        self.producer
            .send_to(subject, partition, record, self.state.not_found.clone())
            .instrument(span)
            .await
    }

    /// Sends records one after the other (pipelined) and returns their receipts in order.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// let receipts = orders.send_all((0..10).map(|i| Record::new(format!("order {i}")))).await?;
    /// for r in receipts {
    ///     r.await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TopicHandle::send`], for the first record that fails (records before it were sent).
    pub async fn send_all(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<PublishReceipt>, ProducerError> {
        let span = debug_span!("sluice.publish_batch", topic = %self.state.topic, count = tracing::field::Empty);
        async {
            let mut receipts = Vec::new();
            for record in records {
                receipts.push(self.send(record).await?);
            }
            tracing::Span::current().record("count", receipts.len());
            Ok(receipts)
        }
        .instrument(span)
        .await
    }

    /// Sends a record and waits for its acknowledgement.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// let at = orders.publish(Record::new("order 1").id("order-1")).await?;
    /// assert!(!at.duplicate || at.offset > 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TopicHandle::send`], plus the acknowledgement's: [`ProducerErrorKind::Timeout`] (the
    /// message may or may not be stored; re-send it with the same id), `NotFound`, `Unavailable`,
    /// `InvalidMessage` (too large) or `Broker`.
    pub async fn publish(&self, record: Record) -> Result<Published, ProducerError> {
        self.send(record).await?.await
    }

    /// Waits for every outstanding acknowledgement of the producer (see [`Producer::flush`]).
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// orders.flush().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Producer::flush`](super::Producer::flush).
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.producer.flush().await
    }
}
