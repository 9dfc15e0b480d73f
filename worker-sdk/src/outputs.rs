//! A handler's outputs by name: [`Context::topic`](crate::Context::topic) and
//! [`Context::queue`](crate::Context::queue) publish to a Topic or Queue of the group's
//! namespace through one [`Producer`] per worker, so an output is partitioned exactly like a
//! producer's record (Kafka's murmur2 of the key) and carries the same headers (`Sluice-Key`,
//! the trace context). Each output gets the id `<input id>/<n>`
//! ([`Context::output_id`](crate::Context::output_id)), so a retried or re-handled input
//! produces the same ids and JetStream drops the duplicates.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;
use sluice_broker::Broker;

use crate::message::Context;
use crate::producer::{
    Producer, ProducerConfig, ProducerError, Published, QueueHandle, Record, TopicHandle,
};

/// The worker's output producer and the handles it opened, by name.
#[derive(Debug)]
pub(crate) struct Outputs {
    producer: Producer,
    namespace: String,
    topics: Mutex<HashMap<String, TopicHandle>>,
    queues: Mutex<HashMap<String, QueueHandle>>,
}

impl Outputs {
    /// Outputs to the resources of `namespace` over `broker`'s connection.
    pub(crate) fn new(broker: Broker, namespace: String) -> Result<Self, ProducerError> {
        Ok(Self {
            producer: Producer::new(broker, ProducerConfig::default())?,
            namespace,
            topics: Mutex::default(),
            queues: Mutex::default(),
        })
    }

    /// The handle of topic `name`, opened (partition count discovered) on first use.
    async fn topic(&self, name: &str) -> Result<TopicHandle, ProducerError> {
        cached(
            &self.topics,
            name,
            self.producer.topic(&self.namespace, name),
        )
        .await
    }

    /// The handle of queue `name`, checked to exist on first use.
    async fn queue(&self, name: &str) -> Result<QueueHandle, ProducerError> {
        cached(
            &self.queues,
            name,
            self.producer.queue(&self.namespace, name),
        )
        .await
    }
}

/// The handle cached under `name`, else the one `open` yields (then cached). `open` is only
/// polled on a miss.
async fn cached<H: Clone>(
    handles: &Mutex<HashMap<String, H>>,
    name: &str,
    open: impl Future<Output = Result<H, ProducerError>>,
) -> Result<H, ProducerError> {
    let lock = || {
        handles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(handle) = lock().get(name) {
        return Ok(handle.clone());
    }
    let handle = open.await?;
    lock().insert(name.to_string(), handle.clone());
    Ok(handle)
}

/// Gives `record` the next output id of `ctx`, unless it has an id of its own.
fn with_output_id(ctx: &Context, record: Record) -> Record {
    if record.id_str().is_some() {
        record
    } else {
        record.id(ctx.next_output_id())
    }
}

/// A topic a handler publishes to (see [`Context::topic`](crate::Context::topic)).
#[derive(Debug)]
#[must_use = "an output does nothing until `send` is called"]
pub struct TopicOutput<'a> {
    ctx: &'a Context,
    name: String,
}

impl<'a> TopicOutput<'a> {
    pub(crate) fn new(ctx: &'a Context, name: String) -> Self {
        Self { ctx, name }
    }

    /// Publishes `payload` with `key` and waits for the broker's acknowledgement. The key picks
    /// the partition (as [`Producer`] does: Kafka's murmur2), so one key keeps its order, and
    /// travels in `Sluice-Key`; the output gets the next id derived from the input.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let at = ctx.topic("invoices").send("customer-7", "invoice for order 1").await?;
    /// println!("partition {} offset {}", at.partition, at.offset);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::NotFound`](crate::producer::ProducerErrorKind::NotFound) when the
    /// topic does not exist in the group's namespace; `Timeout`, `Unavailable` or `Broker`
    /// when the broker did not store it (retrying the input is safe: the output id is the
    /// same); `InvalidMessage` for a key with a line break or a payload that is too large.
    pub async fn send(
        &self,
        key: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<Published, ProducerError> {
        self.send_record(Record::new(payload).key(key)).await
    }

    /// Publishes a [`Record`] (keyless, with headers, ...) and waits for its acknowledgement.
    /// A record without id gets the next output id; one with its own id keeps it.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// ctx.topic("audit").send_record(Record::new("seen").header("X-Source", "billing")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TopicOutput::send`].
    pub async fn send_record(&self, record: Record) -> Result<Published, ProducerError> {
        let handle = self.ctx.outputs().topic(&self.name).await?;
        handle.publish(with_output_id(self.ctx, record)).await
    }
}

/// A queue a handler publishes to (see [`Context::queue`](crate::Context::queue)).
#[derive(Debug)]
#[must_use = "an output does nothing until `send` is called"]
pub struct QueueOutput<'a> {
    ctx: &'a Context,
    name: String,
}

impl<'a> QueueOutput<'a> {
    pub(crate) fn new(ctx: &'a Context, name: String) -> Self {
        Self { ctx, name }
    }

    /// Publishes `payload` to the queue and waits for the broker's acknowledgement; the output
    /// gets the next id derived from the input.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// ctx.queue("emails").send("send the invoice to customer 7").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerErrorKind::NotFound`](crate::producer::ProducerErrorKind::NotFound) when the
    /// queue does not exist in the group's namespace; `Timeout`, `Unavailable` or `Broker`
    /// when the broker did not store it (retrying the input is safe: the output id is the
    /// same); `InvalidMessage` for a payload that is too large.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<Published, ProducerError> {
        self.send_record(Record::new(payload)).await
    }

    /// Publishes a [`Record`] (with a key or headers) and waits for its acknowledgement. A
    /// record without id gets the next output id; one with its own id keeps it.
    ///
    /// ```no_run
    /// # async fn h(ctx: sluice_worker::Context) -> Result<(), sluice_worker::producer::ProducerError> {
    /// use sluice_worker::producer::Record;
    /// ctx.queue("emails").send_record(Record::new("hi").key("customer-7")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`QueueOutput::send`].
    pub async fn send_record(&self, record: Record) -> Result<Published, ProducerError> {
        let handle = self.ctx.outputs().queue(&self.name).await?;
        handle.publish(with_output_id(self.ctx, record)).await
    }
}
