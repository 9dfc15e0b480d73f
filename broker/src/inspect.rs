//! Read-only views of the broker for status, the CLI and the autoscaler: partition offsets,
//! group lag and dead-letter depth.
//!
//! Lag of a partition = `pending` (not yet delivered to the group) + `ack_pending` (delivered,
//! not yet acknowledged). JetStream does not say which unacknowledged messages are only waiting
//! out a backoff delay; its closest figure is `redelivered` (unacknowledged messages delivered
//! more than once), which Sluice reports as `retrying` so the autoscaler can leave it out.

use std::time::Duration;

use time::OffsetDateTime;
use tracing::instrument;

use crate::client::Broker;
use crate::config::GroupConfig;
use crate::error::{Error, ErrorKind, Result, broker_err};
use crate::names::{self, ResourceRef};

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored (0 when empty and never written).
    pub first_offset: u64,
    /// Last offset written.
    pub last_offset: u64,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Server leading the partition's Raft group (`None` on a single server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl PartitionStatus {
    /// Partition `partition` as its stream's `info` shows it.
    pub fn of_stream(partition: u32, info: &async_nats::jetstream::stream::Info) -> Self {
        Self {
            partition,
            first_offset: info.state.first_sequence,
            last_offset: info.state.last_sequence,
            messages: info.state.messages,
            bytes: info.state.bytes,
            leader: info.cluster.as_ref().and_then(|c| c.leader.clone()),
        }
    }
}

/// Lag of a group on one partition (or on its queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition number (0 for a queue).
    pub partition: u32,
    /// Messages not yet delivered to the group.
    pub pending: u64,
    /// Messages delivered but not acknowledged.
    pub ack_pending: u64,
    /// Unacknowledged messages that were delivered more than once (retrying, most of them
    /// waiting out a backoff delay).
    pub retrying: u64,
    /// Last offset the group acknowledged contiguously (the ack floor).
    pub acked_offset: u64,
    /// Last offset delivered to the group.
    pub delivered_offset: u64,
    /// Deliveries (redeliveries included) acknowledged contiguously: the consumer's ack floor
    /// in its own sequence. For a queue's priority level, whose offsets interleave with the
    /// other levels' and with delayed messages', this is what counts handled messages.
    pub acked_deliveries: u64,
}

impl PartitionLag {
    /// pending + unacknowledged.
    pub fn lag(&self) -> u64 {
        self.pending + self.ack_pending
    }

    /// Lag without the messages that are only retrying.
    pub fn effective_lag(&self) -> u64 {
        self.lag().saturating_sub(self.retrying)
    }
}

/// Lag of a whole group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLag {
    /// Per partition, in partition order.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// Total lag.
    pub fn total(&self) -> u64 {
        self.partitions.iter().map(PartitionLag::lag).sum()
    }

    /// Total lag without retrying messages.
    pub fn effective_total(&self) -> u64 {
        self.partitions
            .iter()
            .map(PartitionLag::effective_lag)
            .sum()
    }
}

/// A dead-letter queue's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqStatus {
    /// Messages in the DLQ.
    pub depth: u64,
    /// Age of the oldest message, `None` when empty.
    pub oldest_age: Option<Duration>,
}

impl Broker {
    /// Messages stored in stream `stream_name` on the subjects matching `filter` (a literal
    /// subject or a wildcard; a wildcard over many subjects pages through all of them).
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// let n = broker.count_on_subjects("SLUICE_Q__shop__emails", "sluice.q.shop.emails").await?;
    /// println!("{n} waiting");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the stream does not exist; `Unavailable` or `Broker` when it
    /// cannot be read.
    pub async fn count_on_subjects(&self, stream_name: &str, filter: &str) -> Result<u64> {
        use futures::TryStreamExt as _;
        let stream = self
            .jetstream()
            .get_stream(stream_name)
            .await
            .map_err(|e| broker_err(format!("failed to look up stream {stream_name}"), e))?;
        let subjects = stream.info_with_subjects(filter).await.map_err(|e| {
            broker_err(
                format!("failed to read the subjects of stream {stream_name}"),
                e,
            )
        })?;
        subjects
            .try_fold(0u64, |n, (_, count)| async move { Ok(n + count as u64) })
            .await
            .map_err(|e| {
                broker_err(
                    format!("failed to read the subjects of stream {stream_name}"),
                    e,
                )
            })
    }

    /// Offsets, size and leader of every partition of a topic.
    #[instrument(skip(self), fields(topic = %topic))]
    pub async fn topic_status(
        &self,
        topic: &ResourceRef,
        partitions: u32,
    ) -> Result<Vec<PartitionStatus>> {
        let mut out = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let name = names::topic_stream(topic, p);
            let mut stream = self.jetstream().get_stream(&name).await.map_err(|e| {
                broker_err(
                    format!("failed to look up stream {name} of topic {topic}"),
                    e,
                )
            })?;
            let info = stream.info().await.map_err(|e| {
                broker_err(format!("failed to read stream {name} of topic {topic}"), e)
            })?;
            out.push(PartitionStatus::of_stream(p, info));
        }
        Ok(out)
    }

    /// Lag of a group on each partition (or its queue), read from each consumer's leader.
    /// A consumer that does not exist yet counts everything stored as pending.
    #[instrument(skip(self, cfg), fields(group = %format!("{}/{}", cfg.namespace, cfg.group)))]
    pub async fn group_lag(&self, cfg: &GroupConfig) -> Result<GroupLag> {
        let mut partitions = Vec::new();
        for slot in crate::group::group_consumers(cfg)? {
            let (p, stream_name, durable) = (slot.index, slot.stream, slot.durable);
            let mut stream = self
                .jetstream()
                .get_stream(&stream_name)
                .await
                .map_err(|e| broker_err(format!("failed to look up stream {stream_name}"), e))?;
            let lag = match stream.consumer_info(&durable).await {
                Ok(info) => PartitionLag {
                    partition: p,
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending as u64,
                    retrying: info.num_redelivered as u64,
                    acked_offset: info.ack_floor.stream_sequence,
                    delivered_offset: info.delivered.stream_sequence,
                    acked_deliveries: info.ack_floor.consumer_sequence,
                },
                Err(e) => {
                    let err = broker_err(
                        format!("failed to read consumer {stream_name}/{durable}"),
                        e,
                    );
                    if err.kind() != ErrorKind::NotFound {
                        return Err(err);
                    }
                    let info = stream.info().await.map_err(|e| {
                        broker_err(format!("failed to read stream {stream_name}"), e)
                    })?;
                    PartitionLag {
                        partition: p,
                        pending: match &slot.filter {
                            Some(subject) => self.count_on_subjects(&stream_name, subject).await?,
                            None => info.state.messages,
                        },
                        ..Default::default()
                    }
                }
            };
            partitions.push(lag);
        }
        Ok(GroupLag { partitions })
    }

    /// Lag of group `group` (namespace and name) on each partition, reading the group's
    /// config from the config channel to learn its source.
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// use sluice_broker::ResourceRef;
    /// let lag = broker.group_lag_by_name(&ResourceRef::new("shop", "billing")?).await?;
    /// println!("{} messages behind", lag.total());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the group has no config on the config channel (it was never
    /// provisioned) or its source has no stream; [`ErrorKind::Unavailable`] or
    /// [`ErrorKind::Broker`] when the broker cannot be read; [`ErrorKind::Decode`] when the
    /// stored config does not decode.
    #[instrument(skip(self), fields(group = %group))]
    pub async fn group_lag_by_name(&self, group: &ResourceRef) -> Result<GroupLag> {
        let store = self.group_config_store().await?;
        let cfg = store
            .get(&group.namespace, &group.name)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "group {group} has no config on the config channel: apply the ConsumerGroup (or provision it with Broker::ensure_group) first"
                    ),
                )
            })?;
        self.group_lag(&cfg).await
    }

    /// Depth and oldest-message age of a dead-letter queue.
    #[instrument(skip(self), fields(dlq = %dlq))]
    pub async fn dlq_status(&self, dlq: &ResourceRef) -> Result<DlqStatus> {
        let mut stream = self.dlq_stream(dlq).await?;
        let name = names::dlq_stream(dlq);
        let info = stream
            .info()
            .await
            .map_err(|e| broker_err(format!("failed to read stream {name} of DLQ {dlq}"), e))?;
        let depth = info.state.messages;
        let oldest_age = (depth > 0).then(|| {
            let age = OffsetDateTime::now_utc() - info.state.first_timestamp;
            Duration::try_from(age).unwrap_or_default()
        });
        Ok(DlqStatus { depth, oldest_age })
    }
}
