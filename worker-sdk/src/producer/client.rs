//! [`Producer`]: one broker connection, the in-flight bound and the acknowledgement task shared
//! by every topic and queue handle.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_nats::Subject;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};
use sluice_broker::dlq::headers;
use sluice_broker::partitioner::KeylessSpreader;
use sluice_broker::schedule::QueueFeatures;
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, instrument};

use super::acks::{AckTask, AwaitAck, Counters, PublishReceipt, await_ack, drive_acks};
use super::config::ProducerConfig;
use super::error::{ProducerError, ProducerErrorKind, closed, not_found_message, publish_error};
use super::queue::QueueHandle;
use super::record::Record;
use super::topic::{TopicHandle, TopicState};
use super::{BROKER_PASSWORD_ENV, BROKER_URL_ENV, BROKER_USER_ENV};
use crate::telemetry;

/// Counters of a producer, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStats {
    /// Acknowledgements outstanding now.
    pub in_flight: usize,
    /// Most acknowledgements ever outstanding at once (never above `max_in_flight`).
    pub peak_in_flight: usize,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes that failed.
    pub failed: u64,
}

pub(super) struct Inner {
    pub(super) broker: Broker,
    pub(super) js: jetstream::Context,
    pub(super) permits: Arc<Semaphore>,
    pub(super) config: ProducerConfig,
    pub(super) counters: Arc<Counters>,
    pub(super) acks: mpsc::UnboundedSender<AckTask>,
}

/// Publishes records to topics and queues; cheap to clone (clones share the connection and
/// the in-flight bound).
#[derive(Clone)]
pub struct Producer {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer on an existing broker connection. Must be called inside a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use sluice_broker::{Broker, ConnectOptions};
    /// use sluice_worker::producer::{Producer, ProducerConfig};
    /// let broker = Broker::connect(&ConnectOptions::from_url_list("nats://127.0.0.1:4222")).await?;
    /// let producer = Producer::new(broker, ProducerConfig { max_in_flight: 256, ..Default::default() })?;
    /// # let _ = producer; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::InvalidConfig`] when `max_in_flight` is 0 or above 2^24, `ack_timeout` is
    /// zero, or there is no Tokio runtime.
    pub fn new(broker: Broker, config: ProducerConfig) -> Result<Self, ProducerError> {
        if config.max_in_flight == 0 || config.max_in_flight > Semaphore::MAX_PERMITS.min(1 << 24) {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidConfig,
                format!(
                    "max_in_flight must be between 1 and {}, got {}",
                    1 << 24,
                    config.max_in_flight
                ),
            ));
        }
        if config.ack_timeout.is_zero() {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidConfig,
                "ack_timeout must be greater than zero",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            ProducerError::with_source(
                ProducerErrorKind::InvalidConfig,
                "a producer needs a Tokio runtime: create it inside one",
                e,
            )
        })?;
        // Our semaphore is taken before async-nats' own, which is as large, so async-nats never
        // waits or refuses; its bound only backs ours up.
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_in_flight)
            .backpressure_on_inflight(true)
            .build(broker.client().clone());
        let (acks, rx) = mpsc::unbounded_channel();
        runtime.spawn(drive_acks(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                broker,
                js,
                permits: Arc::new(Semaphore::new(config.max_in_flight)),
                config,
                counters: Arc::new(Counters::default()),
                acks,
            }),
        })
    }

    /// Connects using `SLUICE_BROKER_URL` (required), `SLUICE_BROKER_USER`,
    /// `SLUICE_BROKER_PASSWORD` and the broker's CA, `SLUICE_BROKER_CA` (PEM) or
    /// `SLUICE_BROKER_CA_FILE` (a path): with a CA the connection uses TLS and verifies the
    /// server against it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::{Producer, ProducerConfig};
    /// let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    /// # let _ = producer; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::InvalidConfig`] when `SLUICE_BROKER_URL` is not set or not a list of
    /// nats:// URLs, or the CA cannot be read; [`ProducerErrorKind::Unavailable`] when the broker cannot be reached.
    pub async fn connect_from_env(config: ProducerConfig) -> Result<Self, ProducerError> {
        let urls = std::env::var(BROKER_URL_ENV).map_err(|_| {
            ProducerError::new(
                ProducerErrorKind::InvalidConfig,
                format!("{BROKER_URL_ENV} is not set: set it to one or more nats:// URLs"),
            )
        })?;
        let mut options = ConnectOptions::from_url_list(&urls);
        options.name = "sluice-producer".into();
        options.set_credentials(
            std::env::var(BROKER_USER_ENV)
                .ok()
                .filter(|u| !u.is_empty()),
            std::env::var(BROKER_PASSWORD_ENV).ok(),
            std::env::var(sluice_broker::client::INBOX_PREFIX_ENV).ok(),
        );
        options.ca = sluice_broker::tls::TrustedCa::from_lookup(|k| std::env::var(k).ok())
            .map_err(|e| {
                ProducerError::new(
                    ProducerErrorKind::InvalidConfig,
                    format!(
                        "bad broker CA in {} or {}: {e}",
                        sluice_broker::tls::BROKER_CA_ENV,
                        sluice_broker::tls::BROKER_CA_FILE_ENV
                    ),
                )
            })?;
        let broker = Broker::connect(&options).await?;
        Self::new(broker, config)
    }

    /// The broker connection.
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let account = producer.broker().jetstream().query_account().await;
    /// # let _ = account; Ok(()) }
    /// ```
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The configuration.
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// println!("at most {} in flight", producer.config().max_in_flight);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// A handle on topic `namespace/name`, after discovering its partition count.
    /// Fails with [`ProducerErrorKind::NotFound`] when the topic has no partition on the broker.
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let orders = producer.topic("shop", "orders").await?;
    /// println!("{} partitions", orders.partitions());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::NotFound`] when the topic has no partition on the broker;
    /// [`ProducerErrorKind::InvalidConfig`] for names that are not Kubernetes names;
    /// [`ProducerErrorKind::Unavailable`] or [`ProducerErrorKind::Broker`] when the broker cannot
    /// be asked.
    #[instrument(skip(self))]
    pub async fn topic(&self, namespace: &str, name: &str) -> Result<TopicHandle, ProducerError> {
        let topic = ResourceRef::new(namespace, name)?;
        let subjects = discover(&self.inner.broker, &topic).await?;
        debug!(partitions = subjects.len(), "topic discovered");
        Ok(TopicHandle {
            producer: self.clone(),
            state: Arc::new(TopicState {
                not_found: Arc::from(not_found_message("topic", &topic)),
                topic,
                subjects: RwLock::new(subjects),
                spreader: KeylessSpreader::default(),
                refreshed_at: Mutex::new(Instant::now()),
                refreshing: AtomicBool::new(false),
            }),
        })
    }

    /// A handle on queue `namespace/name`, after checking it exists.
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let jobs = producer.queue("shop", "emails").await?;
    /// jobs.publish(sluice_worker::producer::Record::new("hello")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::NotFound`] when the queue does not exist on the broker;
    /// [`ProducerErrorKind::InvalidConfig`] for names that are not Kubernetes names;
    /// [`ProducerErrorKind::Unavailable`] when the broker cannot be asked.
    #[instrument(skip(self))]
    pub async fn queue(&self, namespace: &str, name: &str) -> Result<QueueHandle, ProducerError> {
        let queue = ResourceRef::new(namespace, name)?;
        let stream = names::queue_stream(&queue);
        let not_found = not_found_message("queue", &queue);
        let features = match self.inner.broker.jetstream().get_stream(&stream).await {
            Ok(s) => QueueFeatures::from_metadata(&s.cached_info().config.metadata),
            Err(e) => {
                let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                return Err(if missing {
                    ProducerError::new(ProducerErrorKind::NotFound, not_found)
                } else {
                    ProducerError::with_source(
                        ProducerErrorKind::Unavailable,
                        format!("failed to look up queue {queue} (stream {stream})"),
                        e,
                    )
                });
            }
        };
        Ok(QueueHandle {
            producer: self.clone(),
            not_found: Arc::from(not_found),
            queue,
            features: Arc::new(RwLock::new(features)),
        })
    }

    /// Waits until every acknowledgement outstanding when it is called (and any sent meanwhile)
    /// has arrived. Fails if a publish whose receipt had been dropped failed since the last
    /// flush (failures seen through their receipt are not repeated here).
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let orders = producer.topic("shop", "orders").await?;
    /// let _receipt = orders.send(sluice_worker::producer::Record::new("o-1")).await?;
    /// producer.flush().await?; // the receipt was dropped: a failure would show here
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::Broker`] when publishes whose receipts were dropped failed since the last
    /// flush (the message names how many and the first error); [`ProducerErrorKind::Closed`] when
    /// the acknowledgement task is gone.
    #[instrument(level = "debug", skip(self))]
    pub async fn flush(&self) -> Result<(), ProducerError> {
        let all = u32::try_from(self.inner.config.max_in_flight).unwrap_or(u32::MAX);
        let permits = self
            .inner
            .permits
            .acquire_many(all)
            .await
            .map_err(|_| closed())?;
        drop(permits);
        let (count, first) = {
            let mut guard = self
                .inner
                .counters
                .unobserved
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut *guard)
        };
        match (count, first) {
            (0, _) => Ok(()),
            (n, first) => Err(ProducerError::new(
                ProducerErrorKind::Broker,
                format!(
                    "{n} publish(es) failed since the last flush (their receipts were dropped); first error: {}",
                    first.unwrap_or_default()
                ),
            )),
        }
    }

    /// Current counters.
    ///
    /// ```no_run
    /// # async fn run(producer: sluice_worker::producer::Producer) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let stats = producer.stats();
    /// println!("{} acked, {} failed, {} in flight", stats.acked, stats.failed, stats.in_flight);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> ProducerStats {
        let c = &self.inner.counters;
        ProducerStats {
            in_flight: c.in_flight.load(Ordering::Acquire),
            peak_in_flight: c.peak_in_flight.load(Ordering::Acquire),
            acked: c.acked.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
        }
    }

    /// Sends one record to `subject` once an in-flight slot is free; the receipt resolves on ack.
    pub(super) async fn send_to(
        &self,
        subject: Subject,
        partition: u32,
        record: Record,
        not_found: Arc<str>,
    ) -> Result<PublishReceipt, ProducerError> {
        record.validate()?;
        let Record {
            payload,
            key,
            id,
            mut headers,
            ..
        } = record;
        if let Some(key) = &key {
            headers.insert(headers::KEY, key.as_str());
        }
        if let Some(id) = &id {
            headers.insert(headers::NATS_MSG_ID, id.as_str());
        }
        telemetry::inject_current(&mut headers);
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let mut message = PublishMessage::build().payload(payload);
        if !headers.is_empty() {
            // An empty header block would still cost bytes and parsing on every message.
            message = message.headers(headers);
        }
        let ack = self
            .inner
            .js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| publish_error(e, &subject, &not_found, self.inner.config.ack_timeout))?;
        let counters = self.inner.counters.clone();
        let now = counters.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        counters.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        let (tx, rx) = oneshot::channel();
        let task = await_ack(AwaitAck {
            ack,
            permit,
            tx,
            counters,
            partition,
            subject,
            not_found,
            ack_timeout: self.inner.config.ack_timeout,
        });
        self.inner.acks.send(Box::pin(task)).map_err(|_| closed())?;
        Ok(PublishReceipt { partition, rx })
    }
}

/// Lists the partition subjects of a topic (by discovering its partition count).
pub(super) async fn discover(
    broker: &Broker,
    topic: &ResourceRef,
) -> Result<Arc<[Subject]>, ProducerError> {
    let count = broker.topic_partition_count(topic).await?;
    if count == 0 {
        return Err(ProducerError::new(
            ProducerErrorKind::NotFound,
            not_found_message("topic", topic),
        ));
    }
    Ok((0..count)
        .map(|p| Subject::from(names::topic_subject(topic, p)))
        .collect())
}
