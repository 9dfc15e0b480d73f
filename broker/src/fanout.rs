//! Fan-out from topics to queues, relayed by Sluice instead of JetStream stream sourcing.
//!
//! A Queue with `sources: [{topic: T}]` receives every message of every partition of `T`.
//! JetStream's own sourcing proved lossy here: a source attached to a work-queue stream that
//! already holds messages of its other sources can have its start clamped forward to the
//! destination's last message time, skipping the origin's earlier messages for good, and
//! sources whose origin does not exist yet are retried only after tens of seconds while
//! reporting no lag (nats-server issues #8387, #8409, #8630, #8346, #6206).
//!
//! The relay is a mechanism Sluice controls end to end:
//!
//! - **one durable pull consumer per source partition** ([`names::fanout_consumer`], on the
//!   partition's stream), created with `DeliverPolicy::All`, so a partition is copied from its
//!   first message whenever it appears (a topic created after its queue, a partition added by
//!   growth). Its ack floor is exactly "how far the queue has received": nothing else keeps
//!   that position, so nothing can clamp it.
//! - **copy, confirm, then acknowledge**: each message is published to the queue's subject
//!   with a de-duplication id derived from the origin ([`relay_message_id`]: stream, stream
//!   creation time and offset); the origin is acknowledged only after JetStream confirmed the
//!   copy. A crash between the two re-copies the message, and the queue's duplicate window
//!   drops the repeat.
//! - **visible**: [`Broker::fanout_status`] reports, per source partition, the origin's last
//!   offset, the offset received by the queue and what is still pending; [`FanoutRelays`]
//!   tracks when each relay last made progress, so a gap that does not close within a bound is
//!   reported ([`FanoutRelays::stalls`]) and repaired by restarting that relay (which re-creates
//!   a deleted consumer right after the last offset it copied).
//!
//! Headers of the origin travel with the copy, except JetStream's own (`Nats-*`). The copy
//! carries `Sluice-Fanout-From: <stream>:<offset>` and, when the origin had a producer id
//! (`Nats-Msg-Id`), that id as `Sluice-Original-Id`, so an exactly-once group on the queue
//! recognises the same message by the same idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::client::Broker;
use crate::config::{Backoff, QueueSource};
use crate::dlq::{headers as dlq_headers, is_jetstream_header};
use crate::error::{Error, ErrorKind, Result, broker_err};
use crate::names::{self, ResourceRef};

/// Header on a relayed copy naming its origin: `<origin stream>:<offset>`.
pub const FANOUT_FROM_HEADER: &str = "Sluice-Fanout-From";

/// How long the relay has to confirm a copy before the origin message is delivered again.
pub const RELAY_ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages copied per round (published together, then confirmed together).
pub const RELAY_BATCH: usize = 256;
/// How long the relays of a queue keep running without [`FanoutRelays::ensure`] being called
/// for it again (a deleted Queue's relays stop by themselves).
pub const DEFAULT_RELAY_LEASE: Duration = Duration::from_secs(300);
/// How often an idle relay checks its lease.
const LEASE_CHECK: Duration = Duration::from_secs(5);

/// How long a relay may make no progress while its partition has pending messages before it
/// counts as stalled (see [`FanoutRelays::stalls`]).
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

/// Waits between two attempts of a failing relay: 100 ms doubling to 5 s.
const RELAY_RETRY: Backoff = Backoff {
    initial_ms: 100,
    multiplier: 2.0,
    max_ms: 5_000,
    jitter: false,
};
/// Heartbeat of the relay's pull requests (a missing heartbeat restarts the relay).
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// The durable consumer of a queue's relay on one source partition.
///
/// `resume_after`: the last origin offset known to be copied (the relay re-creating a consumer
/// that was deleted behind its back); `None` copies the partition from its first message.
pub fn relay_consumer_config(
    queue: &ResourceRef,
    topic: &ResourceRef,
    partition: u32,
    resume_after: Option<u64>,
) -> pull::Config {
    pull::Config {
        durable_name: Some(names::fanout_consumer(queue)),
        description: Some(format!(
            "Sluice fan-out of topic {topic} partition {partition} into queue {queue}"
        )),
        deliver_policy: match resume_after {
            Some(offset) => DeliverPolicy::ByStartSequence {
                start_sequence: offset + 1,
            },
            None => DeliverPolicy::All,
        },
        ack_policy: AckPolicy::Explicit,
        ack_wait: RELAY_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: (RELAY_BATCH * 4) as i64,
        ..Default::default()
    }
}

/// The de-duplication id of the copy of origin message `offset` of `stream`, created at
/// `incarnation` (nanoseconds since the epoch): a topic deleted and created again restarts its
/// offsets, so the creation time keeps the ids of the two lives apart.
pub fn relay_message_id(stream: &str, incarnation: i128, offset: u64) -> String {
    format!("fanout:{stream}:{incarnation}:{offset}")
}

/// The headers of a relayed copy (see the module docs).
pub fn relay_headers(
    origin: Option<&HeaderMap>,
    stream: &str,
    incarnation: i128,
    offset: u64,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut producer_id = None;
    let mut has_original_id = false;
    if let Some(origin) = origin {
        for (name, values) in origin.iter() {
            let name_str: &str = name.as_ref();
            if name_str.eq_ignore_ascii_case(dlq_headers::NATS_MSG_ID) {
                producer_id = values.first().map(|v| v.as_str().to_string());
            }
            if is_jetstream_header(name_str) || name_str.eq_ignore_ascii_case(FANOUT_FROM_HEADER) {
                continue;
            }
            if name_str.eq_ignore_ascii_case(dlq_headers::ORIGINAL_ID) {
                has_original_id = true;
            }
            for v in values {
                out.append(name_str, v.as_str());
            }
        }
    }
    if let Some(id) = producer_id.filter(|id| !id.is_empty() && !has_original_id) {
        out.insert(dlq_headers::ORIGINAL_ID, id.as_str());
    }
    out.insert(
        dlq_headers::NATS_MSG_ID,
        relay_message_id(stream, incarnation, offset).as_str(),
    );
    out.insert(FANOUT_FROM_HEADER, format!("{stream}:{offset}").as_str());
    out
}

/// How far a queue has received one partition of a source topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePartitionStatus {
    /// Source topic name (same namespace as the queue).
    pub topic: String,
    /// Partition of that topic.
    pub partition: u32,
    /// Whether the partition's stream exists.
    pub origin_exists: bool,
    /// The partition's last offset.
    pub origin_last_offset: u64,
    /// Every origin message up to this offset was copied into the queue (the relay
    /// consumer's ack floor; 0 before the first).
    pub received_offset: u64,
    /// Origin messages not yet confirmed in the queue (waiting plus in flight).
    pub pending: u64,
    /// Whether the relay's consumer exists on the partition.
    pub relay_attached: bool,
}

impl SourcePartitionStatus {
    /// Whether the queue has received everything this partition holds.
    pub fn caught_up(&self) -> bool {
        self.pending == 0 && (self.relay_attached || !self.origin_exists)
    }
}

/// Every partition of `queue`'s sources: the topic, the partition and its stream's name.
fn source_partitions(
    queue: &ResourceRef,
    sources: &[QueueSource],
) -> Result<Vec<(ResourceRef, u32, String)>> {
    let mut out = Vec::new();
    for source in sources {
        let topic = queue.sibling(source.topic.clone())?;
        for p in 0..source.partitions {
            let stream_name = names::topic_stream(&topic, p);
            out.push((topic.clone(), p, stream_name));
        }
    }
    Ok(out)
}

impl Broker {
    /// A stream, `None` when it does not exist.
    async fn stream_if_exists(&self, name: &str) -> Result<Option<jetstream::stream::Stream>> {
        match self.jetstream().get_stream(name).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => not_found_as_none(broker_err(format!("failed to look up stream {name}"), e)),
        }
    }

    /// Creates the relay consumer of `queue` on every partition of its sources that exists
    /// (missing partitions are attached by the relay once they appear). Existing consumers are
    /// left as they are: their position is the queue's progress.
    #[tracing::instrument(skip(self, sources), fields(queue = %queue))]
    pub async fn ensure_fanout(
        &self,
        queue: &ResourceRef,
        sources: &[QueueSource],
    ) -> Result<crate::Changes> {
        let mut changes = crate::Changes::default();
        let durable = names::fanout_consumer(queue);
        for (topic, p, stream_name) in source_partitions(queue, sources)? {
            let Some(stream) = self.stream_if_exists(&stream_name).await? else {
                continue;
            };
            if consumer_if_exists(&stream, &durable).await?.is_some() {
                changes.unchanged.push(format!("{stream_name}/{durable}"));
                continue;
            }
            stream
                .get_or_create_consumer::<pull::Config>(
                    &durable,
                    relay_consumer_config(queue, &topic, p, None),
                )
                .await
                .map_err(|e| {
                    broker_err(
                        format!("failed to create consumer {stream_name}/{durable}"),
                        e,
                    )
                })?;
            info!(stream = %stream_name, consumer = %durable, "fan-out relay consumer created");
            changes.created.push(format!("{stream_name}/{durable}"));
        }
        Ok(changes)
    }

    /// Deletes the relay consumers of `queue` on its sources' partitions (the queue and the
    /// topics keep their messages). Returns how many existed.
    #[tracing::instrument(skip(self, sources), fields(queue = %queue))]
    pub async fn delete_fanout(&self, queue: &ResourceRef, sources: &[QueueSource]) -> Result<u32> {
        let durable = names::fanout_consumer(queue);
        let mut deleted = 0;
        for (_, _, stream_name) in source_partitions(queue, sources)? {
            let Some(stream) = self.stream_if_exists(&stream_name).await? else {
                continue;
            };
            let existed = match stream.delete_consumer(&durable).await {
                Ok(_) => Some(()),
                Err(e) => not_found_as_none(broker_err(
                    format!("failed to delete consumer {stream_name}/{durable}"),
                    e,
                ))?,
            };
            deleted += u32::from(existed.is_some());
        }
        Ok(deleted)
    }

    /// Per source partition: the origin's last offset, what the queue received and what is
    /// pending (see [`SourcePartitionStatus`]).
    #[tracing::instrument(skip(self, sources), fields(queue = %queue))]
    pub async fn fanout_status(
        &self,
        queue: &ResourceRef,
        sources: &[QueueSource],
    ) -> Result<Vec<SourcePartitionStatus>> {
        let durable = names::fanout_consumer(queue);
        let mut out = Vec::new();
        for (topic, p, stream_name) in source_partitions(queue, sources)? {
            let mut status = SourcePartitionStatus {
                topic: topic.name.clone(),
                partition: p,
                origin_exists: false,
                origin_last_offset: 0,
                received_offset: 0,
                pending: 0,
                relay_attached: false,
            };
            let Some(mut stream) = self.stream_if_exists(&stream_name).await? else {
                out.push(status);
                continue;
            };
            let state = stream
                .info()
                .await
                .map_err(|e| broker_err(format!("failed to read stream {stream_name}"), e))?
                .state
                .clone();
            status.origin_exists = true;
            status.origin_last_offset = state.last_sequence;
            match consumer_if_exists(&stream, &durable).await? {
                Some(info) => {
                    status.relay_attached = true;
                    status.received_offset = info.ack_floor.stream_sequence;
                    status.pending = info.num_pending + info.num_ack_pending as u64;
                }
                None => status.pending = state.messages,
            }
            out.push(status);
        }
        Ok(out)
    }
}

/// `Ok(None)` for a NotFound error, the error otherwise.
fn not_found_as_none<T>(err: Error) -> Result<Option<T>> {
    if err.kind() == ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(err)
    }
}

/// A consumer's info, `None` when it does not exist.
async fn consumer_if_exists(
    stream: &jetstream::stream::Stream,
    durable: &str,
) -> Result<Option<jetstream::consumer::Info>> {
    match stream.consumer_info(durable).await {
        Ok(info) => Ok(Some(info)),
        Err(e) => not_found_as_none(broker_err(
            format!(
                "failed to read consumer {}/{durable}",
                stream.cached_info().config.name
            ),
            e,
        )),
    }
}

/// What one relay task reports about itself.
#[derive(Debug, Clone, Default)]
pub struct RelayProgress {
    /// The last origin offset copied and confirmed by this relay.
    pub relayed: Option<u64>,
    /// When the relay last copied something, else when it started.
    pub last_progress: Option<Instant>,
    /// The last error, cleared by the next successful round.
    pub last_error: Option<String>,
    /// Messages copied since the relay started.
    pub copied: u64,
    /// How often the relay was restarted for a stall.
    pub restarts: u32,
}

/// A source partition whose gap did not close within the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Messages the queue has not received.
    pub pending: u64,
    /// How long the relay made no progress.
    pub idle_for: Duration,
    /// The relay's last error, if any.
    pub last_error: Option<String>,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} partition {}: {} messages not received for {}s",
            self.topic,
            self.partition,
            self.pending,
            self.idle_for.as_secs()
        )?;
        if let Some(e) = &self.last_error {
            write!(f, " (last error: {e})")?;
        }
        Ok(())
    }
}

type PartitionKey = (String, u32);

#[derive(Debug)]
struct RunningRelay {
    handle: JoinHandle<()>,
    progress: Arc<Mutex<RelayProgress>>,
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The relays of one queue and their shared lease.
#[derive(Debug)]
struct QueueRelays {
    partitions: HashMap<PartitionKey, RunningRelay>,
    lease_until: Arc<Mutex<Instant>>,
}

/// The relays of every queue fed by topics, one task per source partition, kept in line with
/// the queues' specs by [`FanoutRelays::ensure`]. Dropping it stops every relay.
///
/// Each call of `ensure` for a queue renews its relays' lease; relays whose queue is not
/// ensured again within the lease stop by themselves, so a Queue deleted without any cleanup
/// hook (no finalizer) loses its relays after at most one lease.
///
/// Run it wherever the queues are reconciled (the operator, `sluice dev`); two copies running
/// at once share the durable consumers and de-duplicate their copies, so an overlap during a
/// leader change costs nothing but work.
#[derive(Debug)]
pub struct FanoutRelays {
    queues: Mutex<BTreeMap<ResourceRef, QueueRelays>>,
    lease: Duration,
}

impl Default for FanoutRelays {
    fn default() -> Self {
        Self::with_lease(DEFAULT_RELAY_LEASE)
    }
}

impl FanoutRelays {
    /// No relays yet; leases of [`DEFAULT_RELAY_LEASE`].
    pub fn new() -> Self {
        Self::default()
    }

    /// No relays yet; a queue's relays stop when it was not ensured for `lease` (use a few
    /// resync periods of whatever calls `ensure`).
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            queues: Mutex::default(),
            lease,
        }
    }

    /// Runs one relay per partition of `sources` for `queue` (starting the missing ones,
    /// restarting ones that ended, stopping those of removed sources). Needs a Tokio runtime.
    pub fn ensure(&self, broker: &Broker, queue: &ResourceRef, sources: &[QueueSource]) {
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        let now = Instant::now();
        queues.retain(|_, q| q.lease_until.lock().map(|t| *t > now).unwrap_or(false));
        let entry = queues.entry(queue.clone()).or_insert_with(|| QueueRelays {
            partitions: HashMap::new(),
            lease_until: Arc::new(Mutex::new(now)),
        });
        if let Ok(mut until) = entry.lease_until.lock() {
            *until = now + self.lease;
        }
        let lease = entry.lease_until.clone();
        let relays = &mut entry.partitions;
        let wanted: Vec<PartitionKey> = sources
            .iter()
            .flat_map(|s| (0..s.partitions).map(move |p| (s.topic.clone(), p)))
            .collect();
        relays.retain(|key, _| wanted.contains(key));
        for key in wanted {
            let restart = match relays.get(&key) {
                Some(r) => r.handle.is_finished(),
                None => true,
            };
            if restart {
                let progress = relays
                    .get(&key)
                    .map(|r| r.progress.clone())
                    .unwrap_or_default();
                let relay = spawn_relay(
                    broker.clone(),
                    queue.clone(),
                    key.clone(),
                    progress,
                    lease.clone(),
                );
                relays.insert(key, relay);
            }
        }
        if relays.is_empty() {
            queues.remove(queue);
        }
    }

    /// Stops the relays of `queue` (its consumers stay, so a later start resumes).
    pub fn stop(&self, queue: &ResourceRef) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.remove(queue);
        }
    }

    /// The queues with running relays.
    pub fn queues(&self) -> Vec<ResourceRef> {
        self.queues
            .lock()
            .map(|q| q.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// What each relay of `queue` reports, by `(topic, partition)`.
    pub fn progress(&self, queue: &ResourceRef) -> BTreeMap<(String, u32), RelayProgress> {
        let Ok(queues) = self.queues.lock() else {
            return BTreeMap::new();
        };
        queues
            .get(queue)
            .map(|q| {
                q.partitions
                    .iter()
                    .map(|(k, r)| {
                        let p = r.progress.lock().map(|p| p.clone()).unwrap_or_default();
                        (k.clone(), p)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The source partitions of `queue` whose pending messages (from `statuses`, read with
    /// [`Broker::fanout_status`]) saw no progress for longer than `bound`. Each stalled relay is
    /// restarted (the repair: a fresh consumer subscription, re-created after the last copied
    /// offset if it was deleted).
    pub fn stalls(
        &self,
        broker: &Broker,
        queue: &ResourceRef,
        statuses: &[SourcePartitionStatus],
        bound: Duration,
    ) -> Vec<Stall> {
        let Ok(mut queues) = self.queues.lock() else {
            return Vec::new();
        };
        let Some(QueueRelays {
            partitions: relays,
            lease_until,
        }) = queues.get_mut(queue)
        else {
            return Vec::new();
        };
        let mut stalls = Vec::new();
        for status in statuses.iter().filter(|s| s.pending > 0) {
            let key = (status.topic.clone(), status.partition);
            let Some(relay) = relays.get(&key) else {
                continue;
            };
            let (idle_for, last_error) = match relay.progress.lock() {
                Ok(p) => (
                    p.last_progress.map(|t| t.elapsed()).unwrap_or_default(),
                    p.last_error.clone(),
                ),
                Err(_) => continue,
            };
            if idle_for <= bound {
                continue;
            }
            warn!(%queue, topic = %status.topic, partition = status.partition, pending = status.pending, ?idle_for, "fan-out relay stalled: restarting it");
            let progress = relay.progress.clone();
            if let Ok(mut p) = progress.lock() {
                p.restarts += 1;
                p.last_progress = Some(Instant::now());
            }
            let fresh = spawn_relay(
                broker.clone(),
                queue.clone(),
                key.clone(),
                progress,
                lease_until.clone(),
            );
            relays.insert(key, fresh);
            stalls.push(Stall {
                topic: status.topic.clone(),
                partition: status.partition,
                pending: status.pending,
                idle_for,
                last_error,
            });
        }
        stalls
    }
}

fn spawn_relay(
    broker: Broker,
    queue: ResourceRef,
    (topic, partition): PartitionKey,
    progress: Arc<Mutex<RelayProgress>>,
    lease_until: Arc<Mutex<Instant>>,
) -> RunningRelay {
    if let Ok(mut p) = progress.lock()
        && p.last_progress.is_none()
    {
        p.last_progress = Some(Instant::now());
    }
    let span = info_span!("fanout_relay", %queue, %topic, partition);
    let relay = PartitionRelay {
        broker,
        queue,
        topic,
        partition,
        progress: progress.clone(),
        lease_until,
    };
    let handle = tokio::spawn(relay.run().instrument(span));
    RunningRelay { handle, progress }
}

/// Copies one source partition into one queue, forever.
struct PartitionRelay {
    broker: Broker,
    queue: ResourceRef,
    topic: String,
    partition: u32,
    progress: Arc<Mutex<RelayProgress>>,
    lease_until: Arc<Mutex<Instant>>,
}

impl PartitionRelay {
    async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            if self.expired() {
                info!("the queue's relays were not renewed: stopping");
                return;
            }
            match self.relay_until_error().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if e.kind() == ErrorKind::NotFound {
                        debug!(error = %e, "waiting for the source partition");
                    } else {
                        warn!(error = %e, "fan-out relay failed; retrying");
                    }
                    self.update(|p| p.last_error = Some(e.to_string()));
                }
            }
            if failures > 0 {
                tokio::time::sleep(RELAY_RETRY.delay_after(failures)).await;
            }
        }
    }

    /// Whether the queue's lease ran out (it was not ensured for a whole lease).
    fn expired(&self) -> bool {
        self.lease_until
            .lock()
            .map(|t| Instant::now() >= *t)
            .unwrap_or(true)
    }

    fn update(&self, f: impl FnOnce(&mut RelayProgress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    fn relayed(&self) -> Option<u64> {
        self.progress.lock().ok().and_then(|p| p.relayed)
    }

    /// Attaches to the partition and copies until something fails.
    async fn relay_until_error(&self) -> Result<()> {
        let topic = self.queue.sibling(self.topic.clone())?;
        let stream_name = names::topic_stream(&topic, self.partition);
        let js = self.broker.jetstream();
        let mut stream = js.get_stream(&stream_name).await.map_err(|e| {
            broker_err(
                format!("source partition stream {stream_name} is not there yet"),
                e,
            )
        })?;
        let incarnation = stream
            .info()
            .await
            .map_err(|e| broker_err(format!("failed to read stream {stream_name}"), e))?
            .created
            .unix_timestamp_nanos();
        let durable = names::fanout_consumer(&self.queue);
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                relay_consumer_config(&self.queue, &topic, self.partition, self.relayed()),
            )
            .await
            .map_err(|e| {
                broker_err(
                    format!("failed to attach consumer {stream_name}/{durable}"),
                    e,
                )
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(RELAY_BATCH)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| broker_err(format!("failed to pull from {stream_name}/{durable}"), e))?;
        let mut chunks = messages.ready_chunks(RELAY_BATCH);
        let subject = names::queue_subject(&self.queue);
        debug!(stream = %stream_name, "fan-out relay attached");
        loop {
            // `next` is cancel-safe: items ready but not taken stay in the chunker.
            let next = tokio::select! {
                next = chunks.next() => next,
                () = tokio::time::sleep(LEASE_CHECK) => {
                    if self.expired() {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(chunk) = next else { break };
            let mut batch = Vec::with_capacity(chunk.len());
            for item in chunk {
                match item {
                    Ok(m) => batch.push(m),
                    Err(e) => {
                        nak_all(&batch).await;
                        return Err(broker_err(
                            format!("pulling from {stream_name}/{durable} failed"),
                            e,
                        ));
                    }
                }
            }
            self.copy_batch(&batch, &stream_name, incarnation, &subject)
                .await?;
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("the pull from {stream_name}/{durable} ended"),
        ))
    }

    /// Publishes a batch, waits for every confirmation, then acknowledges the origins.
    async fn copy_batch(
        &self,
        batch: &[jetstream::Message],
        stream_name: &str,
        incarnation: i128,
        subject: &str,
    ) -> Result<()> {
        let js = self.broker.jetstream();
        let mut confirmations = Vec::with_capacity(batch.len());
        let mut last_offset = 0;
        for m in batch {
            let offset = m
                .info()
                .map_err(|e| {
                    Error::with_source(
                        ErrorKind::Decode,
                        format!("a message of {stream_name} has no JetStream metadata"),
                        e,
                    )
                })?
                .stream_sequence;
            last_offset = last_offset.max(offset);
            let headers = relay_headers(m.headers.as_ref(), stream_name, incarnation, offset);
            match js
                .publish_with_headers(subject.to_string(), headers, m.payload.clone())
                .await
            {
                Ok(c) => confirmations.push(c),
                Err(e) => {
                    nak_all(batch).await;
                    return Err(broker_err(format!("failed to copy into {subject}"), e));
                }
            }
        }
        for c in confirmations {
            if let Err(e) = c.await {
                nak_all(batch).await;
                return Err(broker_err(
                    format!("the queue did not confirm a copy on {subject}"),
                    e,
                ));
            }
        }
        // Acknowledgements are processed in order: confirming the last one confirms the batch
        // (and keeps a server restart from re-copying more than the batch in flight).
        let last = batch.len().saturating_sub(1);
        for (i, m) in batch.iter().enumerate() {
            let acked = if i == last {
                m.double_ack().await
            } else {
                m.ack().await
            };
            if let Err(e) = acked {
                // The copies are stored; a lost ack only means a de-duplicated second copy.
                return Err(Error::with_source(
                    ErrorKind::Unavailable,
                    format!("failed to acknowledge a copied message of {stream_name}"),
                    e,
                ));
            }
        }
        self.update(|p| {
            p.relayed = Some(p.relayed.unwrap_or(0).max(last_offset));
            p.copied += batch.len() as u64;
            p.last_progress = Some(Instant::now());
            p.last_error = None;
        });
        Ok(())
    }
}

/// Hands a batch back for immediate redelivery (best effort: unacknowledged messages come
/// back after [`RELAY_ACK_WAIT`] anyway).
async fn nak_all(batch: &[jetstream::Message]) {
    for m in batch {
        let _ = m
            .ack_with(AckKind::Nak(Some(Duration::from_millis(200))))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_ids_differ_per_incarnation_and_offset() {
        let a = relay_message_id("S", 1, 7);
        assert_ne!(a, relay_message_id("S", 2, 7));
        assert_ne!(a, relay_message_id("S", 1, 8));
        assert_ne!(a, relay_message_id("T", 1, 7));
    }

    #[test]
    fn relay_headers_keep_user_headers_and_the_producer_id() {
        let mut origin = HeaderMap::new();
        origin.insert("Sluice-Key", "customer-1");
        origin.insert("traceparent", "00-abc-def-01");
        origin.insert("Nats-Msg-Id", "order-7");
        origin.insert("Nats-Stream-Source", "whatever");
        let h = relay_headers(Some(&origin), "SLUICE_T__ns__t__0", 42, 9);
        assert_eq!(h.get("Sluice-Key").map(|v| v.as_str()), Some("customer-1"));
        assert_eq!(
            h.get("traceparent").map(|v| v.as_str()),
            Some("00-abc-def-01")
        );
        assert_eq!(
            h.get(dlq_headers::ORIGINAL_ID).map(|v| v.as_str()),
            Some("order-7")
        );
        assert_eq!(
            h.get(dlq_headers::NATS_MSG_ID).map(|v| v.as_str()),
            Some("fanout:SLUICE_T__ns__t__0:42:9")
        );
        assert!(h.get("Nats-Stream-Source").is_none());
        assert_eq!(
            h.get(FANOUT_FROM_HEADER).map(|v| v.as_str()),
            Some("SLUICE_T__ns__t__0:9")
        );
    }

    #[test]
    fn a_replayed_origin_keeps_its_original_id() {
        let mut origin = HeaderMap::new();
        origin.insert("Nats-Msg-Id", "replay:3:order-7");
        origin.insert(dlq_headers::ORIGINAL_ID, "order-7");
        let h = relay_headers(Some(&origin), "S", 1, 1);
        assert_eq!(
            h.get(dlq_headers::ORIGINAL_ID).map(|v| v.as_str()),
            Some("order-7")
        );
    }

    #[test]
    fn relay_consumer_starts_at_the_first_message_or_after_the_last_copied() {
        let q = ResourceRef::new("ns", "encode").unwrap();
        let t = ResourceRef::new("ns", "uploads").unwrap();
        let fresh = relay_consumer_config(&q, &t, 2, None);
        assert_eq!(fresh.deliver_policy, DeliverPolicy::All);
        assert_eq!(fresh.durable_name.as_deref(), Some("Q__encode"));
        let resumed = relay_consumer_config(&q, &t, 2, Some(41));
        assert_eq!(
            resumed.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
    }
}
