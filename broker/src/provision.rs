//! Idempotent provisioning of streams: "ensure" creates what is missing, updates what drifted
//! and reports what it did in [`Changes`]. Impossible changes (shrinking a topic, changing a
//! stream's retention kind or storage) fail with [`ErrorKind::NotSupported`] before anything is
//! touched. Deleting is always a separate, explicit call.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use tracing::{info, instrument};

use crate::client::Broker;
use crate::config::{
    DlqSettings, MAX_PRIORITIES, QueueSettings, QueueSource, Retention, StorageKind, TopicSettings,
};
use crate::error::{Error, ErrorKind, Result, broker_err};
use crate::names::{self, ResourceRef};

/// What an ensure call did, by object name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Objects created.
    pub created: Vec<String>,
    /// Objects updated in place.
    pub updated: Vec<String>,
    /// Objects that already matched.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Whether nothing was created or updated.
    pub fn is_noop(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty()
    }

    /// Adds another call's changes.
    pub fn merge(&mut self, other: Changes) {
        self.created.extend(other.created);
        self.updated.extend(other.updated);
        self.unchanged.extend(other.unchanged);
    }
}

/// Metadata key Sluice stamps on its streams.
pub const META_KIND: &str = "sluice.dev/kind";
/// Metadata key with the owning resource (`<namespace>/<name>`).
pub const META_RESOURCE: &str = "sluice.dev/resource";

pub(crate) fn valid_replicas(replicas: u32, what: &ResourceRef) -> Result<usize> {
    match replicas {
        1 | 3 | 5 => Ok(replicas as usize),
        other => Err(Error::new(
            ErrorKind::InvalidSpec,
            format!("{what}: replicas must be 1, 3 or 5, got {other}"),
        )),
    }
}

fn storage_type(kind: StorageKind) -> StorageType {
    match kind {
        StorageKind::File => StorageType::File,
        StorageKind::Memory => StorageType::Memory,
    }
}

fn apply_retention(config: &mut stream::Config, retention: &Retention) {
    config.max_age = Duration::from_millis(retention.max_age_ms.unwrap_or(0));
    config.max_bytes = retention.max_bytes.unwrap_or(-1);
    config.max_messages = retention.max_messages.unwrap_or(-1);
}

fn metadata(kind: &str, resource: &ResourceRef) -> std::collections::HashMap<String, String> {
    [
        (META_KIND.to_string(), kind.to_string()),
        (META_RESOURCE.to_string(), resource.to_string()),
    ]
    .into_iter()
    .collect()
}

/// The stream of topic partition `partition`.
pub fn topic_stream_config(
    topic: &ResourceRef,
    partition: u32,
    settings: &TopicSettings,
) -> Result<stream::Config> {
    let mut config = stream::Config {
        name: names::topic_stream(topic, partition),
        subjects: vec![names::topic_subject(topic, partition)],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: storage_type(settings.storage),
        num_replicas: valid_replicas(settings.replicas, topic)?,
        duplicate_window: Duration::from_millis(settings.duplicate_window_ms),
        allow_direct: true,
        description: Some(format!("Sluice topic {topic}, partition {partition}")),
        metadata: metadata("topic", topic),
        ..Default::default()
    };
    apply_retention(&mut config, &settings.retention);
    Ok(config)
}

/// Metadata key on a queue stream listing its source topics: `<topic>:<partitions>,...`
/// (what the CLI shows without reading Kubernetes).
pub const META_SOURCES: &str = "sluice.dev/sources";

/// Metadata key on a queue stream with its priority levels (absent: 1), read by producers.
pub const META_PRIORITIES: &str = "sluice.dev/priorities";
/// Metadata key on a queue stream with the longest delay a producer may ask for, in
/// milliseconds (absent: delayed delivery is off), read by producers.
pub const META_MAX_DELAY_MS: &str = "sluice.dev/max-delay-ms";

/// The subjects of a queue stream: one per priority level and, with delayed delivery, the
/// wildcard of the delayed messages (JetStream schedules that fire into the level subjects).
pub fn queue_subjects(queue: &ResourceRef, settings: &QueueSettings) -> Vec<String> {
    let mut subjects: Vec<String> = (0..settings.priorities.max(1))
        .map(|level| names::queue_level_subject(queue, level))
        .collect();
    if settings.delay.is_some() {
        subjects.push(names::queue_schedule_filter(queue, None));
    }
    subjects
}

fn validate_queue(queue: &ResourceRef, settings: &QueueSettings) -> Result<()> {
    if settings.priorities == 0 || settings.priorities > MAX_PRIORITIES {
        return Err(Error::new(
            ErrorKind::InvalidSpec,
            format!(
                "{queue}: priorities must be between 1 and {MAX_PRIORITIES}, got {}",
                settings.priorities
            ),
        ));
    }
    if settings.delay.is_some_and(|d| d.max_delay_ms == 0) {
        return Err(Error::new(
            ErrorKind::InvalidSpec,
            format!("{queue}: delay.maxDelay must be longer than 0"),
        ));
    }
    Ok(())
}

/// The work-queue stream of a queue. Its sources' messages are copied in by the fan-out relay
/// ([`crate::fanout`]), not by JetStream stream sourcing (which can skip messages). With
/// delayed delivery the stream allows message schedules; delayed messages wait on their own
/// subjects (see [`names::queue_schedule_subject`]), which the group's consumers never read.
pub fn queue_stream_config(
    queue: &ResourceRef,
    settings: &QueueSettings,
) -> Result<stream::Config> {
    validate_queue(queue, settings)?;
    for source in &settings.sources {
        queue.sibling(source.topic.clone())?;
    }
    let mut meta = metadata("queue", queue);
    if !settings.sources.is_empty() {
        meta.insert(META_SOURCES.to_string(), encode_sources(&settings.sources));
    }
    if settings.priorities > 1 {
        meta.insert(META_PRIORITIES.to_string(), settings.priorities.to_string());
    }
    if let Some(delay) = settings.delay {
        meta.insert(
            META_MAX_DELAY_MS.to_string(),
            delay.max_delay_ms.to_string(),
        );
    }
    Ok(stream::Config {
        name: names::queue_stream(queue),
        subjects: queue_subjects(queue, settings),
        allow_message_schedules: settings.delay.is_some(),
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::Old,
        storage: storage_type(settings.storage),
        num_replicas: valid_replicas(settings.replicas, queue)?,
        duplicate_window: Duration::from_millis(settings.duplicate_window_ms),
        max_age: Duration::from_millis(settings.max_age_ms.unwrap_or(0)),
        max_bytes: -1,
        max_messages: -1,
        allow_direct: true,
        description: Some(format!("Sluice queue {queue}")),
        metadata: meta,
        ..Default::default()
    })
}

/// `<topic>:<partitions>,...`, the value of [`META_SOURCES`].
pub fn encode_sources(sources: &[QueueSource]) -> String {
    sources
        .iter()
        .map(|s| format!("{}:{}", s.topic, s.partitions))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`META_SOURCES`] back; malformed entries are skipped.
pub fn decode_sources(value: &str) -> Vec<QueueSource> {
    value
        .split(',')
        .filter_map(|entry| {
            let (topic, partitions) = entry.rsplit_once(':')?;
            Some(QueueSource {
                topic: topic.to_string(),
                partitions: partitions.parse().ok()?,
            })
        })
        .collect()
}

/// The stream of a dead-letter queue.
pub fn dlq_stream_config(dlq: &ResourceRef, settings: &DlqSettings) -> Result<stream::Config> {
    let mut config = stream::Config {
        name: names::dlq_stream(dlq),
        subjects: vec![names::dlq_subject(dlq)],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: valid_replicas(settings.replicas, dlq)?,
        duplicate_window: Duration::from_secs(600),
        allow_direct: true,
        description: Some(format!("Sluice dead-letter queue {dlq}")),
        metadata: metadata("deadletterqueue", dlq),
        ..Default::default()
    };
    apply_retention(&mut config, &settings.retention);
    Ok(config)
}

/// The fields Sluice manages, for drift detection (server-filled defaults are ignored).
pub(crate) fn drift(current: &stream::Config, desired: &stream::Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if current.subjects != desired.subjects {
        fields.push("subjects");
    }
    if current.max_age != desired.max_age {
        fields.push("maxAge");
    }
    if current.max_bytes != desired.max_bytes {
        fields.push("maxBytes");
    }
    if current.max_messages != desired.max_messages {
        fields.push("maxMessages");
    }
    if current.duplicate_window != desired.duplicate_window {
        fields.push("duplicateWindow");
    }
    if current.num_replicas != desired.num_replicas {
        fields.push("replicas");
    }
    let source_names = |c: &stream::Config| -> Vec<String> {
        let mut v: Vec<String> = c.sources.iter().flatten().map(|s| s.name.clone()).collect();
        v.sort();
        v
    };
    if source_names(current) != source_names(desired) {
        fields.push("sources");
    }
    if [META_SOURCES, META_PRIORITIES, META_MAX_DELAY_MS]
        .iter()
        .any(|k| current.metadata.get(*k) != desired.metadata.get(*k))
    {
        fields.push("metadata");
    }
    if desired.allow_message_schedules && !current.allow_message_schedules {
        fields.push("allowMsgSchedules");
    }
    fields
}

impl Broker {
    /// Reads a stream's config, `None` when it does not exist.
    pub(crate) async fn stream_config(&self, name: &str) -> Result<Option<stream::Config>> {
        match self.jetstream().get_stream(name).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => Ok(Some(info.config.clone())),
                Err(e) => Err(broker_err(format!("failed to read stream {name}"), e)),
            },
            Err(e) => {
                let err = broker_err(format!("failed to look up stream {name}"), e);
                if err.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Checks a desired stream against the existing one: `Ok(None)` to create, `Ok(Some(fields))`
    /// with the drifted fields, or NotSupported for changes JetStream cannot make.
    async fn plan_stream(
        &self,
        desired: &stream::Config,
        owner: &ResourceRef,
    ) -> Result<Option<Vec<&'static str>>> {
        let Some(current) = self.stream_config(&desired.name).await? else {
            return Ok(None);
        };
        if current.retention != desired.retention {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "{owner}: stream {} has retention {:?} but {:?} is wanted; JetStream cannot change a stream's retention kind: delete the resource (deletionPolicy: Delete) and create it again, or use a new name",
                    desired.name, current.retention, desired.retention
                ),
            ));
        }
        if current.storage != desired.storage {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "{owner}: stream {} uses {:?} storage but {:?} is wanted; JetStream cannot change storage in place: recreate the resource under a new name",
                    desired.name, current.storage, desired.storage
                ),
            ));
        }
        Ok(Some(drift(&current, desired)))
    }

    async fn apply_stream(
        &self,
        desired: stream::Config,
        plan: Option<Vec<&'static str>>,
        changes: &mut Changes,
    ) -> Result<()> {
        let name = desired.name.clone();
        match plan {
            None => {
                self.jetstream()
                    .create_stream(desired)
                    .await
                    .map_err(|e| broker_err(format!("failed to create stream {name}"), e))?;
                info!(stream = %name, "stream created");
                changes.created.push(name);
            }
            Some(fields) if fields.is_empty() => changes.unchanged.push(name),
            Some(fields) => {
                self.jetstream().update_stream(desired).await.map_err(|e| {
                    broker_err(
                        format!("failed to update stream {name} ({})", fields.join(", ")),
                        e,
                    )
                })?;
                info!(stream = %name, ?fields, "stream updated");
                changes.updated.push(name);
            }
        }
        Ok(())
    }

    /// Ensures one stream per partition of a topic. Shrinking is refused before anything changes.
    #[instrument(skip(self, settings), fields(topic = %topic, partitions = settings.partitions))]
    pub async fn ensure_topic(
        &self,
        topic: &ResourceRef,
        settings: &TopicSettings,
    ) -> Result<Changes> {
        if settings.partitions == 0 {
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                format!("{topic}: partitions must be at least 1"),
            ));
        }
        let beyond = names::topic_stream(topic, settings.partitions);
        if self.stream_config(&beyond).await?.is_some() {
            let existing = self.topic_partition_count(topic).await?;
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "{topic}: has {existing} partitions and partitions can only grow, not shrink to {}: set partitions back to {existing} or more, or create a new topic",
                    settings.partitions
                ),
            ));
        }
        let mut plans = Vec::with_capacity(settings.partitions as usize);
        for p in 0..settings.partitions {
            let desired = topic_stream_config(topic, p, settings)?;
            let plan = self.plan_stream(&desired, topic).await?;
            plans.push((desired, plan));
        }
        let mut changes = Changes::default();
        for (desired, plan) in plans {
            self.apply_stream(desired, plan, &mut changes).await?;
        }
        Ok(changes)
    }

    /// Counts the contiguous partition streams of a topic that exist on the broker.
    pub async fn topic_partition_count(&self, topic: &ResourceRef) -> Result<u32> {
        let mut count = 0;
        while self
            .stream_config(&names::topic_stream(topic, count))
            .await?
            .is_some()
        {
            count += 1;
        }
        Ok(count)
    }

    /// Ensures a queue's work-queue stream and, for its source topics, the fan-out relay's
    /// consumers on the partitions that exist (the relay itself runs in [`crate::FanoutRelays`]).
    #[instrument(skip(self, settings), fields(queue = %queue))]
    pub async fn ensure_queue(
        &self,
        queue: &ResourceRef,
        settings: &QueueSettings,
    ) -> Result<Changes> {
        let mut desired = queue_stream_config(queue, settings)?;
        if let Some(current) = self.stream_config(&desired.name).await? {
            let levels = current
                .metadata
                .get(META_PRIORITIES)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(1);
            if settings.priorities < levels {
                return Err(Error::new(
                    ErrorKind::NotSupported,
                    format!(
                        "{queue}: has {levels} priority levels and they can only grow, not shrink to {} (messages waiting on the higher levels would never be handled): set priorities back to {levels} or more, or create a new queue",
                        settings.priorities
                    ),
                ));
            }
            // JetStream cannot switch schedules off again; with delay off the producer refuses
            // delayed sends and the schedules already stored still fire.
            desired.allow_message_schedules |= current.allow_message_schedules;
            if current.allow_message_schedules && settings.delay.is_none() {
                desired
                    .subjects
                    .push(names::queue_schedule_filter(queue, None));
            }
        }
        let plan = self.plan_stream(&desired, queue).await?;
        let mut changes = Changes::default();
        self.apply_stream(desired, plan, &mut changes).await?;
        changes.merge(self.ensure_fanout(queue, &settings.sources).await?);
        Ok(changes)
    }

    /// Ensures a dead-letter queue's stream.
    #[instrument(skip(self, settings), fields(dlq = %dlq))]
    pub async fn ensure_dlq(&self, dlq: &ResourceRef, settings: &DlqSettings) -> Result<Changes> {
        let desired = dlq_stream_config(dlq, settings)?;
        let plan = self.plan_stream(&desired, dlq).await?;
        let mut changes = Changes::default();
        self.apply_stream(desired, plan, &mut changes).await?;
        Ok(changes)
    }

    async fn delete_stream_if_exists(&self, name: &str) -> Result<bool> {
        match self.jetstream().delete_stream(name).await {
            Ok(_) => {
                info!(stream = %name, "stream deleted");
                Ok(true)
            }
            Err(e) => {
                let err = broker_err(format!("failed to delete stream {name}"), e);
                if err.kind() == ErrorKind::NotFound {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Deletes every partition stream of a topic and its messages. Returns how many existed.
    #[instrument(skip(self), fields(topic = %topic))]
    pub async fn delete_topic(&self, topic: &ResourceRef) -> Result<u32> {
        let mut deleted = 0;
        while self
            .delete_stream_if_exists(&names::topic_stream(topic, deleted))
            .await?
        {
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes a queue's stream and its messages. Returns whether it existed.
    #[instrument(skip(self), fields(queue = %queue))]
    pub async fn delete_queue(&self, queue: &ResourceRef) -> Result<bool> {
        self.delete_stream_if_exists(&names::queue_stream(queue))
            .await
    }

    /// Deletes a dead-letter queue's stream and its messages. Returns whether it existed.
    #[instrument(skip(self), fields(dlq = %dlq))]
    pub async fn delete_dlq(&self, dlq: &ResourceRef) -> Result<bool> {
        self.delete_stream_if_exists(&names::dlq_stream(dlq)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_maps_settings() {
        let topic = ResourceRef::new("prod", "orders").unwrap();
        let settings = TopicSettings {
            partitions: 3,
            replicas: 3,
            retention: Retention {
                max_age_ms: Some(3_600_000),
                max_bytes: Some(1 << 20),
                max_messages: None,
            },
            duplicate_window_ms: 60_000,
            storage: StorageKind::File,
        };
        let c = topic_stream_config(&topic, 2, &settings).unwrap();
        assert_eq!(c.name, "SLUICE_T__prod__orders__2");
        assert_eq!(c.subjects, vec!["sluice.t.prod.orders.2"]);
        assert_eq!(c.num_replicas, 3);
        assert_eq!(c.max_age, Duration::from_secs(3600));
        assert_eq!(c.max_bytes, 1 << 20);
        assert_eq!(c.max_messages, -1);
        assert_eq!(c.retention, RetentionPolicy::Limits);
    }

    #[test]
    fn replicas_other_than_1_3_5_are_invalid() {
        let topic = ResourceRef::new("prod", "orders").unwrap();
        let settings = TopicSettings {
            replicas: 2,
            ..Default::default()
        };
        let err = topic_stream_config(&topic, 0, &settings).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    }

    #[test]
    fn queue_streams_record_their_sources_and_use_no_jetstream_sourcing() {
        let queue = ResourceRef::new("prod", "encode").unwrap();
        let settings = QueueSettings {
            sources: vec![
                QueueSource {
                    topic: "uploads".into(),
                    partitions: 2,
                },
                QueueSource {
                    topic: "retries".into(),
                    partitions: 1,
                },
            ],
            ..Default::default()
        };
        let c = queue_stream_config(&queue, &settings).unwrap();
        assert!(c.sources.is_none());
        assert_eq!(c.retention, RetentionPolicy::WorkQueue);
        let meta = c.metadata.get(META_SOURCES).unwrap();
        assert_eq!(meta, "uploads:2,retries:1");
        assert_eq!(decode_sources(meta), settings.sources);
    }
}
