//! Consumer groups on the broker: one durable pull consumer per topic partition (pinned-client
//! priority group, so the server lets one member pull a partition at a time) or one shared
//! consumer on a queue stream; and the group-config channel, a KV bucket holding every group's
//! [`GroupConfig`] under `<namespace>.<group>`.
//!
//! Consumer settings: explicit acks; `ack_wait` = the visibility timeout; `max_deliver` =
//! `maxAttempts + 1` (see [`GroupConfig::max_deliver`]); `backoff` = the retry schedule, each
//! step at least `ack_wait` (JetStream also uses the schedule to time redelivery after an ack
//! timeout, so a step shorter than the visibility timeout would redeliver work still running).

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PriorityPolicy};
use async_nats::jetstream::kv;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{debug, info, instrument, warn};

use crate::backoff::Backoff;
use crate::client::Broker;
use crate::config::{GroupConfig, SourceKind, StartFrom};
use crate::error::{Error, ErrorKind, Result, broker_err};
use crate::names;
use crate::provision::Changes;

/// The consumer config of a group on one stream (partition or queue).
pub fn consumer_config(cfg: &GroupConfig) -> Result<consumer::pull::Config> {
    cfg.validate()?;
    let ack_wait = Duration::from_millis(cfg.ack_wait_ms);
    let backoff: Vec<Duration> = cfg
        .retry
        .backoff
        .schedule(cfg.retry.max_attempts + 1)
        .into_iter()
        .map(|d| d.max(ack_wait))
        .collect();
    let deliver_policy = match &cfg.start_from {
        StartFrom::Earliest => DeliverPolicy::All,
        StartFrom::Latest => DeliverPolicy::New,
        StartFrom::Time(text) => DeliverPolicy::ByStartTime {
            start_time: OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidSpec,
                    format!(
                        "group {}/{}: startFrom time {text:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z",
                        cfg.namespace, cfg.group
                    ),
                    e,
                )
            })?,
        },
    };
    let group = cfg.group_ref()?;
    let mut config = consumer::pull::Config {
        durable_name: Some(names::group_consumer(&group)),
        description: Some(format!("Sluice consumer group {group}")),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: cfg.max_deliver(),
        backoff,
        deliver_policy,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    if cfg.source.kind == SourceKind::Topic {
        config.priority_policy = PriorityPolicy::PinnedClient;
        config.priority_groups = vec![names::PRIORITY_GROUP.to_string()];
        config.priority_timeout = Duration::from_millis(cfg.pin_timeout_ms);
    }
    Ok(config)
}

/// The membership KV bucket ([`names::MEMBERS_BUCKET`]): per-key TTL, one value per key.
pub fn members_bucket() -> kv::Config {
    ttl_bucket(
        names::MEMBERS_BUCKET,
        "Sluice consumer-group members (heartbeats with per-key TTL)",
    )
}

/// The partition-lease KV bucket ([`names::LEASES_BUCKET`]): per-key TTL, compare-and-set.
pub fn leases_bucket() -> kv::Config {
    ttl_bucket(
        names::LEASES_BUCKET,
        "Sluice partition leases (per-key TTL, compare-and-set)",
    )
}

fn ttl_bucket(bucket: &str, description: &str) -> kv::Config {
    kv::Config {
        bucket: bucket.to_string(),
        description: description.to_string(),
        history: 1,
        limit_markers: Some(Duration::from_secs(5)),
        ..Default::default()
    }
}

/// The idempotency-store KV bucket of an exactly-once group (entries live
/// `idempotencyTtl`).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the group name is not a Kubernetes name.
pub fn idempotency_bucket(cfg: &GroupConfig) -> Result<kv::Config> {
    Ok(kv::Config {
        bucket: names::idempotency_bucket(&cfg.group_ref()?),
        description: format!(
            "Sluice idempotency keys of group {}/{}",
            cfg.namespace, cfg.group
        ),
        history: 1,
        max_age: Duration::from_millis(cfg.idempotency_ttl_ms),
        ..Default::default()
    })
}

/// The KV buckets a group's workers use: membership and leases for a topic group, the
/// idempotency store for an exactly-once group.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the group name is not a Kubernetes name.
pub fn group_state_buckets(cfg: &GroupConfig) -> Result<Vec<kv::Config>> {
    let mut buckets = Vec::new();
    if cfg.source.kind == SourceKind::Topic {
        buckets.push(members_bucket());
        buckets.push(leases_bucket());
    }
    if cfg.delivery == crate::config::Delivery::ExactlyOnce {
        buckets.push(idempotency_bucket(cfg)?);
    }
    Ok(buckets)
}

/// The streams a group consumes: every partition stream of a topic, or the queue stream.
pub fn group_streams(cfg: &GroupConfig) -> Result<Vec<String>> {
    let source = cfg.source_ref()?;
    Ok(match cfg.source.kind {
        SourceKind::Topic => (0..cfg.source.partitions)
            .map(|p| names::topic_stream(&source, p))
            .collect(),
        SourceKind::Queue => vec![names::queue_stream(&source)],
    })
}

/// One durable consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConsumer {
    /// The partition (topics) or the priority level (queues; 0 is the lowest).
    pub index: u32,
    /// The stream it is on.
    pub stream: String,
    /// Its durable name.
    pub durable: String,
    /// The subject it reads (queues: its level's subject, so delayed messages waiting on
    /// their schedule subjects are never delivered); `None` reads the whole stream.
    pub filter: Option<String>,
}

/// Every durable consumer of a group: one per partition of a topic, one per priority level of
/// a queue (highest level last).
///
/// ```
/// use sluice_broker::config::{GroupConfig, SourceKind, SourceRef};
/// let mut cfg = GroupConfig::new("shop", "mailers", SourceRef { kind: SourceKind::Queue, name: "emails".into(), partitions: 1 });
/// cfg.priorities = 3;
/// let consumers = sluice_broker::group::group_consumers(&cfg).unwrap();
/// assert_eq!(consumers[2].durable, "G__mailers__p2");
/// assert_eq!(consumers[2].filter.as_deref(), Some("sluice.q.shop.emails.p2"));
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the group or source name is not a Kubernetes name.
pub fn group_consumers(cfg: &GroupConfig) -> Result<Vec<GroupConsumer>> {
    let source = cfg.source_ref()?;
    let group = cfg.group_ref()?;
    Ok(match cfg.source.kind {
        SourceKind::Topic => (0..cfg.source.partitions)
            .map(|p| GroupConsumer {
                index: p,
                stream: names::topic_stream(&source, p),
                durable: names::group_consumer(&group),
                filter: None,
            })
            .collect(),
        SourceKind::Queue => (0..cfg.priorities.max(1))
            .map(|level| GroupConsumer {
                index: level,
                stream: names::queue_stream(&source),
                durable: names::group_level_consumer(&group, level),
                filter: Some(names::queue_level_subject(&source, level)),
            })
            .collect(),
    })
}

fn consumer_drift(
    current: &consumer::Config,
    desired: &consumer::pull::Config,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if current.ack_wait != desired.ack_wait {
        fields.push("ackWait");
    }
    if current.max_deliver != desired.max_deliver {
        fields.push("maxDeliver");
    }
    if current.backoff != desired.backoff {
        fields.push("backoff");
    }
    if current.max_ack_pending != desired.max_ack_pending {
        fields.push("maxAckPending");
    }
    if current.filter_subject != desired.filter_subject {
        fields.push("filterSubject");
    }
    if current.priority_timeout != desired.priority_timeout
        && desired.priority_policy == PriorityPolicy::PinnedClient
    {
        fields.push("priorityTimeout");
    }
    fields
}

impl Broker {
    /// Ensures a group's consumers on every stream it reads and publishes its config to the
    /// config channel. The source must exist; where the group starts (`startFrom`) only applies
    /// when a consumer is created.
    #[instrument(skip(self, cfg), fields(group = %format!("{}/{}", cfg.namespace, cfg.group)))]
    pub async fn ensure_group(&self, cfg: &GroupConfig) -> Result<Changes> {
        let base = consumer_config(cfg)?;
        self.check_source_partitions(cfg).await?;
        let mut changes = Changes::default();
        for slot in group_consumers(cfg)? {
            let stream_name = slot.stream.clone();
            let durable = slot.durable.clone();
            let mut desired = base.clone();
            desired.durable_name = Some(durable.clone());
            desired.filter_subject = slot.filter.clone().unwrap_or_default();
            let stream = match self.jetstream().get_stream(&stream_name).await {
                Ok(s) => s,
                Err(e) => {
                    let err = broker_err(format!("failed to look up stream {stream_name}"), e);
                    if err.kind() == ErrorKind::NotFound {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "group {}/{}: its source {} has no stream {stream_name} yet: create the {} first (or wait for it to become Ready)",
                                cfg.namespace,
                                cfg.group,
                                cfg.source.name,
                                match cfg.source.kind {
                                    SourceKind::Topic => "Topic",
                                    SourceKind::Queue => "Queue",
                                }
                            ),
                        ));
                    }
                    return Err(err);
                }
            };
            let object = format!("{stream_name}/{durable}");
            let current = match stream.consumer_info(&durable).await {
                Ok(info) => Some(info.config),
                Err(e) => {
                    let err = broker_err(format!("failed to read consumer {object}"), e);
                    if err.kind() == ErrorKind::NotFound {
                        None
                    } else {
                        return Err(err);
                    }
                }
            };
            match current {
                None => {
                    stream.create_consumer(desired.clone()).await.map_err(|e| {
                        broker_err(format!("failed to create consumer {object}"), e)
                    })?;
                    info!(consumer = %object, "consumer created");
                    changes.created.push(object);
                }
                Some(current) => {
                    let fields = consumer_drift(&current, &desired);
                    if fields.is_empty() {
                        changes.unchanged.push(object);
                    } else {
                        // Keep the start position the consumer was created with.
                        let mut update = desired.clone();
                        update.deliver_policy = current.deliver_policy;
                        stream.update_consumer(update).await.map_err(|e| {
                            broker_err(
                                format!(
                                    "failed to update consumer {object} ({})",
                                    fields.join(", ")
                                ),
                                e,
                            )
                        })?;
                        info!(consumer = %object, ?fields, "consumer updated");
                        changes.updated.push(object);
                    }
                }
            }
        }
        self.ensure_group_state(cfg).await?;
        changes.merge(self.publish_group_config(cfg).await?);
        Ok(changes)
    }

    /// Creates the KV buckets a group's workers keep their state in ([`group_state_buckets`]),
    /// so a worker's scoped identity never needs to create one (it may only read and write its
    /// own keys, see [`crate::identity`]).
    pub async fn ensure_group_state(&self, cfg: &GroupConfig) -> Result<()> {
        for bucket in group_state_buckets(cfg)? {
            crate::ha::ensure_bucket(self.jetstream(), bucket).await?;
        }
        Ok(())
    }

    /// Checks that a topic has no partitions beyond the count the group's config gives (a group
    /// that thinks its topic is smaller would never read the partitions past it). Missing
    /// partitions are reported by the consumer loop (the topic may still be growing).
    async fn check_source_partitions(&self, cfg: &GroupConfig) -> Result<()> {
        if cfg.source.kind != SourceKind::Topic {
            return Ok(());
        }
        let topic = cfg.source_ref()?;
        let beyond = names::topic_stream(&topic, cfg.source.partitions);
        if self.stream_config(&beyond).await?.is_none() {
            return Ok(());
        }
        let actual = self.topic_partition_count(&topic).await?;
        Err(Error::new(
            ErrorKind::Mismatch,
            format!(
                "group {}/{}: its source partitions say topic {topic} has {} partitions, but it has {actual} on the broker: set the group's source partitions to {actual} (the group would never read partitions {} to {})",
                cfg.namespace,
                cfg.group,
                cfg.source.partitions,
                cfg.source.partitions,
                actual.saturating_sub(1)
            ),
        ))
    }

    /// Deletes a group's consumers (their positions are lost) and its config entry.
    #[instrument(skip(self, cfg), fields(group = %format!("{}/{}", cfg.namespace, cfg.group)))]
    pub async fn delete_group(&self, cfg: &GroupConfig) -> Result<()> {
        for slot in group_consumers(cfg)? {
            let (stream_name, durable) = (slot.stream, slot.durable);
            let stream = match self.jetstream().get_stream(&stream_name).await {
                Ok(s) => s,
                Err(e) => {
                    let err = broker_err(format!("failed to look up stream {stream_name}"), e);
                    if err.kind() == ErrorKind::NotFound {
                        continue;
                    }
                    return Err(err);
                }
            };
            if let Err(e) = stream.delete_consumer(&durable).await {
                let err = broker_err(
                    format!("failed to delete consumer {stream_name}/{durable}"),
                    e,
                );
                if err.kind() != ErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        let store = self.group_config_store().await?;
        store.remove(&cfg.namespace, &cfg.group).await
    }

    /// Writes the group's config to the config channel when it differs.
    pub async fn publish_group_config(&self, cfg: &GroupConfig) -> Result<Changes> {
        let store = self.group_config_store().await?;
        let key = names::group_config_key(&cfg.group_ref()?);
        let mut changes = Changes::default();
        let object = format!("{}/{key}", names::GROUP_CONFIG_BUCKET);
        match store.get(&cfg.namespace, &cfg.group).await {
            Ok(Some(current)) if current == *cfg => changes.unchanged.push(object),
            Ok(existing) => {
                store.put(cfg).await?;
                if existing.is_some() {
                    changes.updated.push(object);
                } else {
                    changes.created.push(object);
                }
            }
            Err(e) if e.kind() == ErrorKind::Decode => {
                warn!(error = %e, "replacing undecodable group config");
                store.put(cfg).await?;
                changes.updated.push(object);
            }
            Err(e) => return Err(e),
        }
        Ok(changes)
    }

    /// Opens (creating if needed) the group-config KV bucket, replicated like the broker
    /// (see [`crate::ha`]).
    pub async fn group_config_store(&self) -> Result<GroupConfigStore> {
        let kv = crate::ha::ensure_bucket(
            self.jetstream(),
            kv::Config {
                bucket: names::GROUP_CONFIG_BUCKET.to_string(),
                description: "Sluice consumer-group configuration, written by the operator".into(),
                history: 5,
                ..Default::default()
            },
        )
        .await?;
        Ok(GroupConfigStore { kv })
    }
}

/// How long calls on the config channel retry transient failures (a fresh bucket on a
/// cluster answers `503 no responders` until its replicas elected a leader).
const READ_RETRY: Duration = Duration::from_secs(15);

/// Pauses between tries on the config channel: 50 ms doubling to 1 s.
const READ_RETRY_BACKOFF: Backoff = Backoff {
    initial_ms: 50,
    multiplier: 2.0,
    max_ms: 1_000,
    jitter: false,
};

/// Runs `op` again while it fails with [`ErrorKind::Unavailable`], for up to [`READ_RETRY`].
async fn retry_transient<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + READ_RETRY;
    let mut failures = 0;
    loop {
        failures += 1;
        let delay = READ_RETRY_BACKOFF.delay_after(failures);
        match op().await {
            Ok(v) => return Ok(v),
            Err(e)
                if e.kind() == ErrorKind::Unavailable
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                debug!(error = %e, "config channel not ready yet, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The group-config channel: read, write and watch [`GroupConfig`]s.
#[derive(Debug, Clone)]
pub struct GroupConfigStore {
    kv: kv::Store,
}

/// A change seen on the config channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigUpdate {
    /// The group's config was written.
    Put(Box<GroupConfig>),
    /// The group's config was removed (the group was deleted).
    Removed,
}

impl GroupConfigStore {
    fn key(namespace: &str, group: &str) -> Result<String> {
        Ok(names::group_config_key(&names::ResourceRef::new(
            namespace, group,
        )?))
    }

    /// The group's current config, `None` when none was published.
    pub async fn get(&self, namespace: &str, group: &str) -> Result<Option<GroupConfig>> {
        let key = Self::key(namespace, group)?;
        let entry = retry_transient(|| async {
            self.kv
                .get(&key)
                .await
                .map_err(|e| broker_err(format!("failed to read group config {key}"), e))
        })
        .await?;
        entry
            .map(|bytes| GroupConfig::from_json(&bytes))
            .transpose()
    }

    /// Every published config of `namespace` (of every namespace when `None`); undecodable
    /// entries are skipped with a warning.
    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<GroupConfig>> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| broker_err("failed to list group configs", e))?
            .try_collect()
            .await
            .map_err(|e| broker_err("failed to list group configs", e))?;
        let prefix = namespace.map(|ns| format!("{ns}."));
        let mut out = Vec::new();
        for key in keys {
            if prefix
                .as_ref()
                .is_some_and(|p| !key.starts_with(p.as_str()))
            {
                continue;
            }
            let entry = self
                .kv
                .get(&key)
                .await
                .map_err(|e| broker_err(format!("failed to read group config {key}"), e))?;
            match entry.map(|bytes| GroupConfig::from_json(&bytes)) {
                Some(Ok(cfg)) => out.push(cfg),
                Some(Err(e)) => warn!(error = %e, %key, "skipping undecodable group config"),
                None => {}
            }
        }
        Ok(out)
    }

    /// Writes a config.
    pub async fn put(&self, cfg: &GroupConfig) -> Result<u64> {
        let key = names::group_config_key(&cfg.group_ref()?);
        let value: bytes::Bytes = cfg.to_json()?.into();
        retry_transient(|| async {
            self.kv
                .put(&key, value.clone())
                .await
                .map_err(|e| broker_err(format!("failed to write group config {key}"), e))
        })
        .await
    }

    /// Removes a group's config.
    pub async fn remove(&self, namespace: &str, group: &str) -> Result<()> {
        let key = Self::key(namespace, group)?;
        self.kv
            .delete(&key)
            .await
            .map_err(|e| broker_err(format!("failed to remove group config {key}"), e))
    }

    /// Watches one group's config: the current value first (if any), then every change.
    /// Undecodable entries are skipped with a warning.
    pub async fn watch(
        &self,
        namespace: &str,
        group: &str,
    ) -> Result<impl futures::Stream<Item = ConfigUpdate> + Send + 'static> {
        let key = Self::key(namespace, group)?;
        let watch = retry_transient(|| async {
            self.kv
                .watch_with_history(&key)
                .await
                .map_err(|e| broker_err(format!("failed to watch group config {key}"), e))
        })
        .await?;
        Ok(watch.filter_map(|entry| async move {
            match entry {
                Ok(entry) => match entry.operation {
                    kv::Operation::Put => match GroupConfig::from_json(&entry.value) {
                        Ok(cfg) => Some(ConfigUpdate::Put(Box::new(cfg))),
                        Err(e) => {
                            warn!(error = %e, key = %entry.key, "skipping undecodable group config");
                            None
                        }
                    },
                    kv::Operation::Delete | kv::Operation::Purge => Some(ConfigUpdate::Removed),
                },
                Err(e) => {
                    warn!(error = %e, "group config watch error");
                    None
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceRef;

    fn cfg() -> GroupConfig {
        GroupConfig::new(
            "default",
            "billing",
            SourceRef {
                kind: SourceKind::Topic,
                name: "orders".into(),
                partitions: 3,
            },
        )
    }

    #[test]
    fn topic_consumers_are_pinned_with_backoff_and_one_extra_delivery() {
        let mut c = cfg();
        c.retry.max_attempts = 4;
        c.ack_wait_ms = 5_000;
        c.retry.backoff.initial_ms = 1_000;
        c.retry.backoff.max_ms = 20_000;
        let config = consumer_config(&c).unwrap();
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.priority_policy, PriorityPolicy::PinnedClient);
        assert_eq!(config.priority_groups, vec!["sluice".to_string()]);
        let secs: Vec<u64> = config.backoff.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![5, 5, 5, 8]);
        assert_eq!(config.durable_name.as_deref(), Some("G__billing"));
    }

    #[test]
    fn queue_consumers_are_shared() {
        let mut c = cfg();
        c.source.kind = SourceKind::Queue;
        c.source.partitions = 1;
        let config = consumer_config(&c).unwrap();
        assert_ne!(config.priority_policy, PriorityPolicy::PinnedClient);
        assert_eq!(
            group_streams(&c).unwrap(),
            vec!["SLUICE_Q__default__orders"]
        );
    }

    #[test]
    fn bad_start_time_is_invalid_spec() {
        let mut c = cfg();
        c.start_from = StartFrom::Time("yesterday".into());
        assert_eq!(
            consumer_config(&c).unwrap_err().kind(),
            ErrorKind::InvalidSpec
        );
    }
}
