//! The shapes shared by the operator, the worker SDK and `sluice dev`: what a topic, queue,
//! dead-letter queue and consumer group look like on the broker side, and [`GroupConfig`], the
//! document the operator publishes to the group-config channel and workers read.
//!
//! Durations are carried as whole milliseconds so the JSON is plain and language-neutral.

pub use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// How JetStream stores a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum StorageKind {
    /// On disk (default): survives restarts.
    #[default]
    File,
    /// In memory: fast, lost on restart.
    Memory,
}

/// Limits after which the oldest messages are discarded. `None` = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Maximum age of a message, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// Maximum bytes per stream (per partition for topics).
    pub max_bytes: Option<i64>,
    /// Maximum messages per stream (per partition for topics).
    pub max_messages: Option<i64>,
}

/// A partitioned event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSettings {
    /// Number of partitions (streams); may grow, never shrink.
    pub partitions: u32,
    /// Stream replicas (1, 3 or 5).
    pub replicas: u32,
    /// Retention limits, applied per partition.
    pub retention: Retention,
    /// Publish de-duplication window, in milliseconds.
    pub duplicate_window_ms: u64,
    /// File or memory storage.
    pub storage: StorageKind,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 1,
            replicas: 1,
            retention: Retention::default(),
            duplicate_window_ms: 120_000,
            storage: StorageKind::File,
        }
    }
}

/// A topic a queue copies every message from (fan-out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSource {
    /// Topic name (same namespace).
    pub topic: String,
    /// Partition count of that topic (one JetStream source per partition stream).
    pub partitions: u32,
}

/// A work queue: messages are removed once acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    /// Stream replicas (1, 3 or 5).
    pub replicas: u32,
    /// Maximum age of a waiting message, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// Publish de-duplication window, in milliseconds.
    pub duplicate_window_ms: u64,
    /// Topics whose messages are copied into this queue.
    pub sources: Vec<QueueSource>,
    /// File or memory storage.
    pub storage: StorageKind,
    /// Delayed delivery (`None`: off, a delayed send is refused).
    #[serde(default)]
    pub delay: Option<DelaySettings>,
    /// Priority levels, 1 (no priorities) to [`MAX_PRIORITIES`]; level 0 is the lowest.
    #[serde(default = "one")]
    pub priorities: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age_ms: None,
            duplicate_window_ms: 120_000,
            sources: Vec::new(),
            storage: StorageKind::File,
            delay: None,
            priorities: 1,
        }
    }
}

/// The most priority levels a queue may have.
pub const MAX_PRIORITIES: u32 = 10;

fn one() -> u32 {
    1
}

/// Delayed delivery on a queue (JetStream message schedules, nats-server 2.12+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelaySettings {
    /// The longest delay a producer may ask for, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for DelaySettings {
    fn default() -> Self {
        Self {
            max_delay_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// A dead-letter queue: a limits-retention stream kept for inspection and replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DlqSettings {
    /// Stream replicas (1, 3 or 5).
    pub replicas: u32,
    /// Retention limits.
    pub retention: Retention,
}

impl Default for DlqSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            retention: Retention::default(),
        }
    }
}

/// Whether a group reads a topic or a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceKind {
    /// A partitioned topic: each partition owned by one member at a time.
    Topic,
    /// A work queue: competing consumers.
    Queue,
}

/// What a group consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Topic or queue.
    pub kind: SourceKind,
    /// Resource name (same namespace as the group).
    pub name: String,
    /// Partition count (1 for queues).
    pub partitions: u32,
}

/// Delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// Acknowledge, then handle: never handled twice, may be lost on a crash.
    AtMostOnce,
    /// Handle, then acknowledge: never lost, may be handled again after a crash.
    #[default]
    AtLeastOnce,
    /// At-least-once plus an idempotency store and derived output ids.
    ExactlyOnce,
}

/// Ordering guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Ordering {
    /// Offset order within a partition; failures retry in place.
    #[default]
    Partition,
    /// Offset order per key; different keys in parallel.
    Key,
    /// No order; parallel, retries by redelivery.
    None,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum StartFrom {
    /// The first retained message.
    #[default]
    Earliest,
    /// Only messages published after the group is created.
    Latest,
    /// Messages published at or after this RFC 3339 time.
    Time(String),
}

/// Retry policy of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Deliveries before a message is dead-lettered (>= 1), counting crashed attempts.
    pub max_attempts: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::default(),
        }
    }
}

/// Everything a worker needs to know about its group; published by the operator to
/// the group-config KV bucket under `<namespace>.<group>` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupConfig {
    /// Namespace of the group.
    pub namespace: String,
    /// Group name.
    pub group: String,
    /// What the group consumes.
    pub source: SourceRef,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Ordering guarantee.
    pub ordering: Ordering,
    /// Where a new group starts.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Dead-letter queue name (same namespace). Without one, a message that used up its
    /// attempts is terminated: gone from a queue; on a topic it stays in the partition
    /// stream, but the group moves past it.
    pub dead_letter: Option<String>,
    /// Ack wait / visibility timeout, in milliseconds.
    pub ack_wait_ms: u64,
    /// Handler concurrency per member (for `key` and `none` ordering).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Idempotency-key retention for exactly-once, in milliseconds.
    #[serde(default = "default_idempotency_ttl_ms")]
    pub idempotency_ttl_ms: u64,
    /// How long a silent member keeps a partition's pin (the server's priority timeout), in
    /// milliseconds: the failover time after a crash.
    #[serde(default = "default_pin_timeout_ms")]
    pub pin_timeout_ms: u64,
    /// Priority levels of the queue the group reads (1 for topics and queues without
    /// priorities); one consumer per level.
    #[serde(default = "one")]
    pub priorities: u32,
    /// Percent (0-100) of a member's handling reserved for lower priority levels while higher
    /// ones have work: the starvation guard.
    #[serde(default = "default_low_priority_share")]
    pub low_priority_share: u32,
    /// The Topics and Queues (same namespace) the group's handlers publish to through
    /// `ctx.topic()` / `ctx.queue()`: the group's broker identity may publish there and
    /// nowhere else (see [`crate::identity`]).
    #[serde(default)]
    pub outputs: GroupOutputs,
}

/// The outputs a group declares (`spec.outputs` of the ConsumerGroup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOutputs {
    /// Topic names the handlers publish to.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Queue names the handlers publish to.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Application KV buckets the handlers create, read and write (through
    /// `ctx.jetstream()`), by bucket name. Sluice's own buckets (`SLUICE*`) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
}

/// Default [`GroupConfig::low_priority_share`]: one message in ten.
pub const DEFAULT_LOW_PRIORITY_SHARE: u32 = 10;

fn default_low_priority_share() -> u32 {
    DEFAULT_LOW_PRIORITY_SHARE
}

fn default_pin_timeout_ms() -> u64 {
    2_000
}

fn default_concurrency() -> u32 {
    16
}

fn default_idempotency_ttl_ms() -> u64 {
    24 * 3600 * 1000
}

impl GroupConfig {
    /// A config with the defaults of a ConsumerGroup that names only its source.
    pub fn new(namespace: impl Into<String>, group: impl Into<String>, source: SourceRef) -> Self {
        Self {
            namespace: namespace.into(),
            group: group.into(),
            source,
            delivery: Delivery::default(),
            ordering: Ordering::default(),
            start_from: StartFrom::default(),
            retry: RetryPolicy::default(),
            dead_letter: None,
            ack_wait_ms: 30_000,
            max_concurrency: default_concurrency(),
            idempotency_ttl_ms: default_idempotency_ttl_ms(),
            pin_timeout_ms: default_pin_timeout_ms(),
            priorities: 1,
            low_priority_share: DEFAULT_LOW_PRIORITY_SHARE,
            outputs: GroupOutputs::default(),
        }
    }

    /// Checks the invariants the SDK and the provisioning rely on.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::new(ErrorKind::InvalidSpec, msg));
        if self.retry.max_attempts == 0 {
            return fail(format!(
                "group {}/{}: retry.maxAttempts must be at least 1",
                self.namespace, self.group
            ));
        }
        if self.retry.backoff.multiplier < 1.0 || !self.retry.backoff.multiplier.is_finite() {
            return fail(format!(
                "group {}/{}: backoff multiplier must be a number >= 1, got {}",
                self.namespace, self.group, self.retry.backoff.multiplier
            ));
        }
        if self.retry.backoff.initial_ms > self.retry.backoff.max_ms {
            return fail(format!(
                "group {}/{}: backoff initial delay ({} ms) exceeds its maximum ({} ms)",
                self.namespace,
                self.group,
                self.retry.backoff.initial_ms,
                self.retry.backoff.max_ms
            ));
        }
        if self.ack_wait_ms < 1_000 {
            return fail(format!(
                "group {}/{}: ack wait (visibility timeout) must be at least 1s",
                self.namespace, self.group
            ));
        }
        if self.source.partitions == 0 {
            return fail(format!(
                "group {}/{}: source {} has no partitions",
                self.namespace, self.group, self.source.name
            ));
        }
        if self.pin_timeout_ms < 1_000 {
            return fail(format!(
                "group {}/{}: pin timeout must be at least 1s",
                self.namespace, self.group
            ));
        }
        if self.priorities == 0 || self.priorities > MAX_PRIORITIES {
            return fail(format!(
                "group {}/{}: priorities must be between 1 and {MAX_PRIORITIES}, got {}",
                self.namespace, self.group, self.priorities
            ));
        }
        if self.priorities > 1 && self.source.kind != SourceKind::Queue {
            return fail(format!(
                "group {}/{}: only queues have priority levels; set priorities to 1 for topic {}",
                self.namespace, self.group, self.source.name
            ));
        }
        if self.low_priority_share > 100 {
            return fail(format!(
                "group {}/{}: lowPriorityShare is a percentage (0-100), got {}",
                self.namespace, self.group, self.low_priority_share
            ));
        }
        if self.max_concurrency == 0 {
            return fail(format!(
                "group {}/{}: maxConcurrency must be at least 1",
                self.namespace, self.group
            ));
        }
        Ok(())
    }

    /// The group as a resource reference (validated names).
    pub fn group_ref(&self) -> Result<crate::names::ResourceRef> {
        crate::names::ResourceRef::new(self.namespace.clone(), self.group.clone())
    }

    /// The source topic or queue as a resource reference.
    pub fn source_ref(&self) -> Result<crate::names::ResourceRef> {
        crate::names::ResourceRef::new(self.namespace.clone(), self.source.name.clone())
    }

    /// JetStream's `max_deliver`: one delivery more than `maxAttempts`, so the SDK sees the
    /// message once more and dead-letters it without calling the handler (this is what makes
    /// attempts that crashed the worker count).
    pub fn max_deliver(&self) -> i64 {
        i64::from(self.retry.max_attempts) + 1
    }

    /// Encodes as the JSON stored in the config channel.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::with_source(ErrorKind::Decode, "failed to encode group config", e))
    }

    /// Decodes the JSON stored in the config channel.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::with_source(
                ErrorKind::Decode,
                "failed to decode group config from the config channel (was it written by a newer operator?)",
                e,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupConfig {
        GroupConfig::new(
            "default",
            "billing",
            SourceRef {
                kind: SourceKind::Topic,
                name: "orders".into(),
                partitions: 6,
            },
        )
    }

    #[test]
    fn json_round_trip() {
        let mut cfg = sample();
        cfg.start_from = StartFrom::Time("2026-01-01T00:00:00Z".into());
        cfg.dead_letter = Some("orders-dlq".into());
        let back = GroupConfig::from_json(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn validate_rejects_nonsense_with_kind() {
        let mut cfg = sample();
        cfg.retry.max_attempts = 0;
        assert_eq!(cfg.validate().unwrap_err().kind(), ErrorKind::InvalidSpec);
        let mut cfg = sample();
        cfg.retry.backoff.multiplier = 0.5;
        assert_eq!(cfg.validate().unwrap_err().kind(), ErrorKind::InvalidSpec);
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_tolerated_for_forward_compatibility() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["someFutureField"] = serde_json::json!(1);
        let back: GroupConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }
}
