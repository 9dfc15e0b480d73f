//! Shared pieces of the example binaries: the event shapes, logging set-up and the
//! idempotent effect store the workers write to.
//!
//! Workers record each effect as a key in a KV bucket with `create`, which fails when the key
//! exists: a handler that runs twice for the same message finds its effect already there and
//! records the duplicate under `duplicate.<key>` instead, so end-to-end tests can prove that
//! nothing was handled twice (and nothing was missed).

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use sluice_worker::HandlerError;
use sluice_worker::producer::{Producer, ProducerConfig, Record};

/// An uploaded video.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Upload {
    /// Upload id, also the message key and id.
    pub upload_id: String,
    /// Uploader.
    pub user: String,
    /// Size in bytes.
    pub size: u64,
    /// A corrupt file the encoder cannot decode.
    pub corrupt: bool,
}

/// A render job of the render-jobs example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenderJob {
    /// Job id, also the message id.
    pub job_id: String,
    /// A premium customer's job (priority 1).
    pub premium: bool,
    /// The render slot is busy on the first try: the worker re-queues it with a delay.
    pub busy_first: bool,
}

/// An order event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// Customer id, the message key.
    pub customer: String,
    /// Position of this order among the customer's orders (1-based).
    pub customer_seq: u64,
    /// Amount in cents.
    pub amount_cents: u64,
}

/// Logs to stderr with `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The namespace from `SLUICE_NAMESPACE` (default `default`).
pub fn namespace() -> String {
    std::env::var("SLUICE_NAMESPACE").unwrap_or_else(|_| "default".into())
}

/// Opens (creating if needed) the effect bucket `bucket`.
pub async fn effect_store(js: &jetstream::Context, bucket: &str) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    match js
        .create_key_value(kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        // Another worker created it first.
        Err(_) => Ok(js.get_key_value(bucket).await?),
    }
}

/// Whether recording an effect found it new or already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// First time.
    New,
    /// Recorded before: the handler ran twice for this key.
    Duplicate,
}

/// Records an effect once under `key`; a second recording is kept as `duplicate.<key>`.
pub async fn record_effect(store: &kv::Store, key: &str, value: &str) -> anyhow::Result<Effect> {
    match store.create(key, value.to_string().into()).await {
        Ok(_) => Ok(Effect::New),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            store
                .put(format!("duplicate.{key}"), value.to_string().into())
                .await?;
            Ok(Effect::Duplicate)
        }
        Err(e) => Err(e.into()),
    }
}

/// Records the effect `key` once in `bucket` from inside a handler: the store is opened (or
/// created) and the effect written, any broker failure being a retryable handler error. A
/// first recording is logged as done, a second one as an error (the handler ran twice).
pub async fn record_handler_effect(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    value: &str,
    attempt: u32,
) -> Result<Effect, HandlerError> {
    let store = effect_store(js, bucket)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
    let effect = record_effect(&store, key, value)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
    match effect {
        Effect::New => tracing::info!(%key, attempt, "done"),
        Effect::Duplicate => tracing::error!(%key, "handled twice"),
    }
    Ok(effect)
}

/// Where an example API publishes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A Topic of the namespace, by name.
    Topic(String),
    /// A Queue of the namespace, by name.
    Queue(String),
}

/// Connects a producer from the environment (`SLUICE_BROKER_URL` and friends), sends every
/// record to `destination` in the namespace of [`namespace`], waits for every
/// acknowledgement and flushes. Returns how many records were published.
pub async fn publish_all(
    destination: &Destination,
    records: impl IntoIterator<Item = anyhow::Result<Record>>,
) -> anyhow::Result<u64> {
    let producer = Producer::connect_from_env(ProducerConfig::default()).await?;
    let namespace = namespace();
    let mut receipts = Vec::new();
    match destination {
        Destination::Topic(name) => {
            let topic = producer.topic(&namespace, name).await?;
            for record in records {
                receipts.push(topic.send(record?).await?);
            }
        }
        Destination::Queue(name) => {
            let queue = producer.queue(&namespace, name).await?;
            for record in records {
                receipts.push(queue.send(record?).await?);
            }
        }
    }
    let published = receipts.len() as u64;
    for receipt in receipts {
        receipt.await?;
    }
    producer.flush().await?;
    Ok(published)
}
