//! Publishing to Sluice topics and queues, with pipelined acknowledgements.
//!
//! A [`Producer`] wraps one broker connection. [`Producer::topic`] returns a [`TopicHandle`]
//! that knows the topic's partition count (discovered from the broker, refreshed periodically
//! and on demand, since partitions can grow); [`Producer::queue`] a [`QueueHandle`].
//!
//! - **Partitioning**: a keyed record goes to Kafka's partition for its key
//!   ([`sluice_broker::partitioner`], murmur2), so a key always lands on the same partition and
//!   keeps its order; keyless records are spread evenly (round robin).
//! - **Headers**: the key travels in `Sluice-Key`; a record id becomes `Nats-Msg-Id`, so
//!   JetStream drops a re-sent duplicate within the stream's duplicate window; the W3C trace
//!   context of the current span travels in `traceparent`/`tracestate`.
//! - **Pipelining**: [`TopicHandle::send`] returns as soon as the message is handed to the
//!   connection, with a [`PublishReceipt`] that resolves to the [`Published`] partition and
//!   offset once the broker acknowledges it. At most [`ProducerConfig::max_in_flight`]
//!   acknowledgements are outstanding; `send` waits for a slot beyond that (backpressure).
//!   [`Producer::flush`] waits for every outstanding acknowledgement.
//! - **No silent loss**: a failed acknowledgement resolves its receipt with the error; if the
//!   receipt was dropped, the failure is reported by the next [`Producer::flush`].
//!
//! ```no_run
//! # async fn run() -> Result<(), sluice_worker::producer::ProducerError> {
//! use sluice_worker::producer::{Producer, ProducerConfig, Record};
//! let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
//! let orders = producer.topic("shop", "orders").await?;
//! // Pipelined: many sends, one flush.
//! for i in 0..1000 {
//!     orders.send(Record::new(format!("order {i}")).key(format!("customer-{}", i % 10))).await?;
//! }
//! producer.flush().await?;
//! // Or one at a time, waiting for the ack:
//! let at = orders.publish(Record::new("hello").id("order-1001")).await?;
//! println!("stored at partition {} offset {}", at.partition, at.offset);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    GetStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sluice_broker::dlq::headers;
use sluice_broker::partitioner::{KeylessSpreader, choose_partition};
use sluice_broker::{Broker, ConnectOptions, ResourceRef, names};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{Instrument as _, debug, debug_span, instrument, warn};

use crate::telemetry;

/// Environment variable with the broker URL(s), comma-separated.
pub const BROKER_URL_ENV: &str = "SLUICE_BROKER_URL";
/// Environment variable with the broker user.
pub const BROKER_USER_ENV: &str = "SLUICE_BROKER_USER";
/// Environment variable with the broker password.
pub const BROKER_PASSWORD_ENV: &str = "SLUICE_BROKER_PASSWORD";

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProducerErrorKind {
    /// The producer configuration or a resource name is invalid.
    InvalidConfig,
    /// The record cannot be published as it is (bad key or id, too large).
    InvalidMessage,
    /// The topic or queue does not exist on the broker.
    NotFound,
    /// The broker did not acknowledge in time; the message may or may not be stored.
    Timeout,
    /// The broker could not be reached.
    Unavailable,
    /// The broker refused the publish or request.
    Broker,
    /// The producer's background task is gone (the runtime is shutting down).
    Closed,
}

impl ProducerErrorKind {
    /// A short static label, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ProducerErrorKind::InvalidConfig => "InvalidConfig",
            ProducerErrorKind::InvalidMessage => "InvalidMessage",
            ProducerErrorKind::NotFound => "NotFound",
            ProducerErrorKind::Timeout => "Timeout",
            ProducerErrorKind::Unavailable => "BrokerUnavailable",
            ProducerErrorKind::Broker => "BrokerError",
            ProducerErrorKind::Closed => "Closed",
        }
    }

    /// Whether publishing the same record again later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProducerErrorKind::Timeout | ProducerErrorKind::Unavailable | ProducerErrorKind::Broker
        )
    }
}

impl fmt::Display for ProducerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the producer: a [`ProducerErrorKind`] plus a message naming the target and what
/// the user can do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProducerError {
    kind: ProducerErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ProducerError {
    fn new(kind: ProducerErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn with_source(
        kind: ProducerErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: format!("{}: {}", message.into(), source),
            source: Some(Box::new(source)),
        }
    }

    fn closed() -> Self {
        Self::new(
            ProducerErrorKind::Closed,
            "the producer's acknowledgement task has stopped (is the Tokio runtime shutting down?)",
        )
    }

    /// What went wrong.
    pub fn kind(&self) -> ProducerErrorKind {
        self.kind
    }
}

impl From<sluice_broker::Error> for ProducerError {
    fn from(e: sluice_broker::Error) -> Self {
        use sluice_broker::ErrorKind as K;
        let kind = match e.kind() {
            K::InvalidSpec => ProducerErrorKind::InvalidConfig,
            K::Unavailable => ProducerErrorKind::Unavailable,
            K::NotFound => ProducerErrorKind::NotFound,
            _ => ProducerErrorKind::Broker,
        };
        Self {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// Producer settings; start from `ProducerConfig::default()`.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Most acknowledgements outstanding at once; `send` waits beyond that.
    pub max_in_flight: usize,
    /// How long to wait for one acknowledgement.
    pub ack_timeout: Duration,
    /// How often a topic handle re-reads the partition count in the background
    /// (`None`: only on [`TopicHandle::refresh`]).
    pub partition_refresh: Option<Duration>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            ack_timeout: Duration::from_secs(10),
            partition_refresh: Some(Duration::from_secs(30)),
        }
    }
}

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct Record {
    payload: Bytes,
    key: Option<String>,
    id: Option<String>,
    headers: HeaderMap,
}

impl Record {
    /// A keyless record without id.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Default::default()
        }
    }

    /// Sets the key: it picks the partition (Kafka murmur2 of its UTF-8 bytes) and travels in
    /// the `Sluice-Key` header.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the message id: JetStream stores a record with a given id once per duplicate
    /// window, so re-sending after a timeout is safe.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds an application header.
    pub fn header(
        mut self,
        name: impl async_nats::header::IntoHeaderName,
        value: impl async_nats::header::IntoHeaderValue,
    ) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The key, if any.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The message id, if any.
    pub fn id_str(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn validate(&self) -> Result<(), ProducerError> {
        let bad = |s: &str| s.contains(['\r', '\n']);
        if self.key.as_deref().is_some_and(bad) {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidMessage,
                "record key contains a line break: keys travel in a header, use a key without CR/LF",
            ));
        }
        if self
            .id
            .as_deref()
            .is_some_and(|id| id.is_empty() || bad(id))
        {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidMessage,
                "record id is empty or contains a line break: use a non-empty id without CR/LF",
            ));
        }
        Ok(())
    }
}

/// Where a message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The partition (0 for queues).
    pub partition: u32,
    /// The offset in that partition (the stream sequence).
    pub offset: u64,
    /// Whether the broker recognised the message id as a duplicate and did not store it again
    /// (`offset` is then the original's).
    pub duplicate: bool,
}

/// Resolves to where the message was stored once the broker acknowledges it.
///
/// Dropping a receipt does not cancel the publish; a failure is then reported by
/// [`Producer::flush`].
#[derive(Debug)]
#[must_use = "await the receipt, or call Producer::flush, to learn whether the publish succeeded"]
pub struct PublishReceipt {
    partition: u32,
    rx: oneshot::Receiver<Result<Published, ProducerError>>,
}

impl PublishReceipt {
    /// The partition the message was sent to.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl Future for PublishReceipt {
    type Output = Result<Published, ProducerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(ProducerError::closed())),
            Poll::Pending => Poll::Pending,
        }
    }
}

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

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    acked: AtomicU64,
    failed: AtomicU64,
    /// Failures whose receipt had been dropped: count and the first message.
    unobserved: Mutex<(u64, Option<String>)>,
}

type AckTask = BoxFuture<'static, ()>;

struct Inner {
    broker: Broker,
    js: jetstream::Context,
    permits: Arc<Semaphore>,
    config: ProducerConfig,
    counters: Arc<Counters>,
    acks: mpsc::UnboundedSender<AckTask>,
}

/// Publishes records to topics and queues; cheap to clone (clones share the connection and
/// the in-flight bound).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
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

    /// Connects using `SLUICE_BROKER_URL` (required), `SLUICE_BROKER_USER` and
    /// `SLUICE_BROKER_PASSWORD`.
    pub async fn connect_from_env(config: ProducerConfig) -> Result<Self, ProducerError> {
        let urls = std::env::var(BROKER_URL_ENV).map_err(|_| {
            ProducerError::new(
                ProducerErrorKind::InvalidConfig,
                format!("{BROKER_URL_ENV} is not set: set it to one or more nats:// URLs"),
            )
        })?;
        let mut options = ConnectOptions::from_url_list(&urls);
        options.name = "sluice-producer".into();
        options.user = std::env::var(BROKER_USER_ENV)
            .ok()
            .filter(|u| !u.is_empty());
        options.password = std::env::var(BROKER_PASSWORD_ENV).ok();
        let broker = Broker::connect(&options).await?;
        Self::new(broker, config)
    }

    /// The broker connection.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// A handle on topic `namespace/name`, after discovering its partition count.
    /// Fails with [`ProducerErrorKind::NotFound`] when the topic has no partition on the broker.
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
    #[instrument(skip(self))]
    pub async fn queue(&self, namespace: &str, name: &str) -> Result<QueueHandle, ProducerError> {
        let queue = ResourceRef::new(namespace, name)?;
        let stream = names::queue_stream(&queue);
        let not_found = not_found_message("queue", &queue);
        match self.inner.broker.jetstream().get_stream(&stream).await {
            Ok(_) => {}
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
        }
        Ok(QueueHandle {
            producer: self.clone(),
            subject: Subject::from(names::queue_subject(&queue)),
            not_found: Arc::from(not_found),
            queue,
        })
    }

    /// Waits until every acknowledgement outstanding when it is called (and any sent meanwhile)
    /// has arrived. Fails if a publish whose receipt had been dropped failed since the last
    /// flush (failures seen through their receipt are not repeated here).
    #[instrument(level = "debug", skip(self))]
    pub async fn flush(&self) -> Result<(), ProducerError> {
        let all = u32::try_from(self.inner.config.max_in_flight).unwrap_or(u32::MAX);
        let permits = self
            .inner
            .permits
            .acquire_many(all)
            .await
            .map_err(|_| ProducerError::closed())?;
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
    async fn send_to(
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
            .map_err(|_| ProducerError::closed())?;
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
        self.inner
            .acks
            .send(Box::pin(task))
            .map_err(|_| ProducerError::closed())?;
        Ok(PublishReceipt { partition, rx })
    }
}

fn not_found_message(kind: &str, resource: &ResourceRef) -> String {
    let upper = if kind == "topic" { "Topic" } else { "Queue" };
    format!("{kind} {resource} does not exist on the broker: create the {upper} first")
}

/// Lists the partition subjects of a topic (by discovering its partition count).
async fn discover(broker: &Broker, topic: &ResourceRef) -> Result<Arc<[Subject]>, ProducerError> {
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

fn publish_error(
    e: PublishError,
    subject: &Subject,
    not_found: &str,
    ack_timeout: Duration,
) -> ProducerError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => ProducerError::with_source(
            ProducerErrorKind::NotFound,
            format!("{not_found} (no stream takes subject {subject})"),
            e,
        ),
        PublishErrorKind::TimedOut => ProducerError::with_source(
            ProducerErrorKind::Timeout,
            format!(
                "no acknowledgement for {subject} within {ack_timeout:?}: the message may or may not be stored; re-send it with the same id to stay de-duplicated"
            ),
            e,
        ),
        PublishErrorKind::MaxPayloadExceeded => ProducerError::with_source(
            ProducerErrorKind::InvalidMessage,
            format!(
                "message to {subject} is too large for the broker: send smaller messages or raise max_payload"
            ),
            e,
        ),
        PublishErrorKind::BrokenPipe => ProducerError::with_source(
            ProducerErrorKind::Unavailable,
            format!(
                "connection lost before {subject} was acknowledged: re-send it (with an id to stay de-duplicated)"
            ),
            e,
        ),
        _ => ProducerError::with_source(
            ProducerErrorKind::Broker,
            format!("the broker refused the publish to {subject}"),
            e,
        ),
    }
}

struct AwaitAck {
    ack: PublishAckFuture,
    permit: OwnedSemaphorePermit,
    tx: oneshot::Sender<Result<Published, ProducerError>>,
    counters: Arc<Counters>,
    partition: u32,
    subject: Subject,
    not_found: Arc<str>,
    ack_timeout: Duration,
}

/// Waits for one acknowledgement, hands the result to the receipt (or records it for `flush`),
/// then frees the in-flight slot: in that order, so `flush` sees every failure.
async fn await_ack(pending: AwaitAck) {
    let AwaitAck {
        ack,
        permit,
        tx,
        counters,
        partition,
        subject,
        not_found,
        ack_timeout,
    } = pending;
    let result = match ack.await {
        Ok(ack) => {
            counters.acked.fetch_add(1, Ordering::AcqRel);
            Ok(Published {
                partition,
                offset: ack.sequence,
                duplicate: ack.duplicate,
            })
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::AcqRel);
            Err(publish_error(e, &subject, &not_found, ack_timeout))
        }
    };
    if let Err(Err(e)) = tx.send(result) {
        warn!(error = %e, "publish failed and its receipt was dropped; reported by the next flush");
        let mut guard = counters
            .unobserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.0 += 1;
        if guard.1.is_none() {
            guard.1 = Some(e.to_string());
        }
    }
    counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    drop(permit);
}

/// Polls every outstanding acknowledgement; ends once all producers are dropped and every
/// acknowledgement is resolved.
async fn drive_acks(mut rx: mpsc::UnboundedReceiver<AckTask>) {
    let mut pending: FuturesUnordered<AckTask> = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = pending.next(), if !pending.is_empty() => {}
            next = rx.recv() => match next {
                Some(task) => pending.push(task),
                None => break,
            },
        }
    }
    while pending.next().await.is_some() {}
}

#[derive(Debug)]
struct TopicState {
    topic: ResourceRef,
    not_found: Arc<str>,
    subjects: RwLock<Arc<[Subject]>>,
    spreader: KeylessSpreader,
    refreshed_at: Mutex<Instant>,
    refreshing: AtomicBool,
}

/// Publishes to one topic; cheap to clone.
#[derive(Debug, Clone)]
pub struct TopicHandle {
    producer: Producer,
    state: Arc<TopicState>,
}

impl TopicHandle {
    /// The topic.
    pub fn topic(&self) -> &ResourceRef {
        &self.state.topic
    }

    /// The partition count last discovered.
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.subjects().len()).unwrap_or(u32::MAX)
    }

    /// The partition a record with `key` goes to (`None`: the next keyless partition).
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
    pub async fn send(&self, record: Record) -> Result<PublishReceipt, ProducerError> {
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
    pub async fn publish(&self, record: Record) -> Result<Published, ProducerError> {
        self.send(record).await?.await
    }

    /// Waits for every outstanding acknowledgement of the producer (see [`Producer::flush`]).
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.producer.flush().await
    }
}

/// Publishes to one queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    producer: Producer,
    queue: ResourceRef,
    subject: Subject,
    not_found: Arc<str>,
}

impl QueueHandle {
    /// The queue.
    pub fn queue(&self) -> &ResourceRef {
        &self.queue
    }

    /// Sends a record without waiting for its acknowledgement (the key, if any, is carried in
    /// `Sluice-Key` but does not pick anything: a queue has one partition, 0).
    pub async fn send(&self, record: Record) -> Result<PublishReceipt, ProducerError> {
        let span = debug_span!("sluice.publish", queue = %self.queue);
        self.producer
            .send_to(self.subject.clone(), 0, record, self.not_found.clone())
            .instrument(span)
            .await
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn publish(&self, record: Record) -> Result<Published, ProducerError> {
        self.send(record).await?.await
    }

    /// Waits for every outstanding acknowledgement of the producer (see [`Producer::flush`]).
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.producer.flush().await
    }
}
