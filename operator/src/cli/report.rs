//! What the read commands report, read from the broker into plain serializable structs:
//! `sluice topics`, `queues`, `lag` and `status` print these as tables or as JSON/YAML.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::stream;
use futures::TryStreamExt;
use serde::Serialize;
use sluice_broker::config::SourceKind;
use sluice_broker::provision::{META_SOURCES, decode_sources};
use sluice_broker::schedule::QueueFeatures;
use sluice_broker::{Broker, GroupConfig, PartitionStatus, ResourceRef, names};

use super::output::{OutputArgs, Table};
use super::target::BrokerArgs;

/// The flags of the commands that list resources: which broker, which namespaces, which format.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Which broker.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Every namespace, not only `--namespace`.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

impl ListArgs {
    /// The namespace to list, `None` for all.
    pub fn namespace(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.broker.namespace.as_str())
    }
}

/// One topic and its partitions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicReport {
    /// `namespace/name`.
    pub name: String,
    /// Messages stored over all partitions.
    pub messages: u64,
    /// Bytes stored over all partitions.
    pub bytes: u64,
    /// Each partition, in order.
    pub partitions: Vec<PartitionStatus>,
}

/// One queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueReport {
    /// `namespace/name`.
    pub name: String,
    /// Messages stored (due and delayed).
    pub messages: u64,
    /// Per priority level, highest first (queues with priorities or delayed delivery).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelReport>,
    /// Source topic partitions a fan-out copies from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceReport>,
}

/// One priority level of a queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelReport {
    /// Level (0 = lowest).
    pub level: u32,
    /// Messages due.
    pub due: u64,
    /// Delayed messages not due yet.
    pub scheduled: u64,
}

/// How far a queue has received one source topic partition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// `topic/partition`.
    pub source: String,
    /// Last offset of the source partition.
    pub last_offset: u64,
    /// Last offset the queue received.
    pub received_offset: u64,
    /// Not received yet.
    pub pending: u64,
    /// Why it is not flowing, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One consumer group: members, who owns what, lag.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    /// `namespace/name`.
    pub name: String,
    /// `topic <name>` or `queue <name>`.
    pub source: String,
    /// Live members (workers heartbeating).
    pub members: usize,
    /// Messages waiting or in handling.
    pub lag: u64,
    /// The lag without messages that are only retrying.
    pub effective_lag: u64,
    /// Per partition (one row for a queue).
    pub partitions: Vec<GroupPartitionReport>,
    /// For a queue fed by topics: what the queue has not received from them yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<SourceReport>,
}

/// A group on one partition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPartitionReport {
    /// Partition number (0 for a queue).
    pub partition: u32,
    /// Not delivered yet.
    pub pending: u64,
    /// Delivered, not acknowledged.
    pub unacked: u64,
    /// Unacknowledged and delivered more than once.
    pub retrying: u64,
    /// Last offset acknowledged contiguously.
    pub acked_offset: u64,
    /// Member holding the partition's lease (ordered topic groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One dead-letter queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DlqReport {
    /// `namespace/name`.
    pub name: String,
    /// Dead letters stored.
    pub depth: u64,
    /// Age of the oldest, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_seconds: Option<u64>,
}

fn resource_ref(resource: &str) -> anyhow::Result<ResourceRef> {
    let (ns, name) = resource
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("stream metadata names {resource:?}, not namespace/name"))?;
    Ok(ResourceRef::new(ns, name)?)
}

/// The topics of `namespace` (every namespace when `None`), by name.
pub async fn topics(broker: &Broker, namespace: Option<&str>) -> anyhow::Result<Vec<TopicReport>> {
    let mut by_topic: BTreeMap<String, HashMap<String, stream::Info>> = BTreeMap::new();
    for (resource, info) in super::streams_of_kind(broker, "topic", namespace).await? {
        by_topic
            .entry(resource)
            .or_default()
            .insert(info.config.name.clone(), info);
    }
    let mut out = Vec::new();
    for (name, streams) in by_topic {
        let topic = resource_ref(&name)?;
        let partitions: Vec<PartitionStatus> = (0..)
            .map_while(|p| {
                streams
                    .get(&names::topic_stream(&topic, p))
                    .map(|info| PartitionStatus::of_stream(p, info))
            })
            .collect();
        out.push(TopicReport {
            name,
            messages: partitions.iter().map(|p| p.messages).sum(),
            bytes: partitions.iter().map(|p| p.bytes).sum(),
            partitions,
        });
    }
    Ok(out)
}

/// The topics as a table: one line per topic.
pub fn topics_table(topics: &Vec<TopicReport>) -> String {
    let mut t = Table::new(&["TOPIC", "PARTITIONS", "MESSAGES", "BYTES", "OFFSETS"]);
    for topic in topics {
        let offsets: Vec<String> = topic
            .partitions
            .iter()
            .map(|p| format!("{}:{}-{}", p.partition, p.first_offset, p.last_offset))
            .collect();
        t.row(vec![
            topic.name.clone(),
            topic.partitions.len().to_string(),
            topic.messages.to_string(),
            topic.bytes.to_string(),
            offsets.join(" "),
        ]);
    }
    t.render()
}

/// What a queue has received from its source topic partitions.
async fn sources(
    broker: &Broker,
    queue: &ResourceRef,
    info: &stream::Info,
) -> anyhow::Result<Vec<SourceReport>> {
    let sources = info
        .config
        .metadata
        .get(META_SOURCES)
        .map(|v| decode_sources(v))
        .unwrap_or_default();
    Ok(broker
        .fanout_status(queue, &sources)
        .await?
        .into_iter()
        .map(|s| SourceReport {
            source: format!("{}/{}", s.topic, s.partition),
            last_offset: s.origin_last_offset,
            received_offset: s.received_offset,
            pending: s.pending,
            note: if !s.origin_exists {
                Some("partition not created yet".into())
            } else if !s.relay_attached {
                Some("relay not attached yet".into())
            } else {
                None
            },
        })
        .collect())
}

/// The queues of `namespace` (every namespace when `None`), by name.
pub async fn queues(broker: &Broker, namespace: Option<&str>) -> anyhow::Result<Vec<QueueReport>> {
    let mut out = Vec::new();
    for (name, info) in super::streams_of_kind(broker, "queue", namespace).await? {
        let queue = resource_ref(&name)?;
        let features = QueueFeatures::from_metadata(&info.config.metadata);
        let leveled = features.priorities > 1
            || features.max_delay.is_some()
            || info.config.allow_message_schedules;
        let levels = if leveled {
            broker
                .queue_levels(&queue)
                .await?
                .iter()
                .rev()
                .map(|l| LevelReport {
                    level: l.level,
                    due: l.due,
                    scheduled: l.scheduled,
                })
                .collect()
        } else {
            Vec::new()
        };
        out.push(QueueReport {
            messages: info.state.messages,
            levels,
            sources: sources(broker, &queue, &info).await?,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The queues as a table: one line per queue, then its levels and sources indented.
pub fn queues_table(queues: &Vec<QueueReport>) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "MESSAGES",
        "SOURCE",
        "LAST-OFFSET",
        "RECEIVED",
        "PENDING",
    ]);
    for q in queues {
        t.row(vec![q.name.clone(), q.messages.to_string()]);
        for l in &q.levels {
            t.row(vec![
                format!("  priority {}", l.level),
                (l.due + l.scheduled).to_string(),
                format!("due={} scheduled={}", l.due, l.scheduled),
            ]);
        }
        for s in &q.sources {
            let mut pending = s.pending.to_string();
            if let Some(note) = &s.note {
                pending.push_str(&format!("  ({note})"));
            }
            t.row(vec![
                String::new(),
                String::new(),
                s.source.clone(),
                s.last_offset.to_string(),
                s.received_offset.to_string(),
                pending,
            ]);
        }
    }
    t.render()
}

/// Live member keys of a group.
async fn member_count(broker: &Broker, group: &ResourceRef) -> usize {
    let Ok(kv) = broker
        .jetstream()
        .get_key_value(names::MEMBERS_BUCKET)
        .await
    else {
        return 0;
    };
    let prefix = names::members_prefix(group);
    match kv.keys().await {
        Ok(keys) => keys
            .try_filter(|k| futures::future::ready(k.starts_with(&prefix)))
            .try_collect::<Vec<_>>()
            .await
            .map_or(0, |k| k.len()),
        Err(_) => 0,
    }
}

/// The member holding each partition's lease.
async fn owners(broker: &Broker, group: &ResourceRef, partitions: u32) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Ok(kv) = broker.jetstream().get_key_value(names::LEASES_BUCKET).await else {
        return out;
    };
    for p in 0..partitions {
        if let Ok(Some(owner)) = kv.get(names::lease_key(group, p)).await
            && !owner.is_empty()
        {
            out.insert(p, String::from_utf8_lossy(&owner).to_string());
        }
    }
    out
}

/// One group's report.
pub async fn group(broker: &Broker, cfg: &GroupConfig) -> anyhow::Result<GroupReport> {
    let group = cfg.group_ref()?;
    let lag = broker.group_lag(cfg).await?;
    let owners = owners(broker, &group, lag.partitions.len() as u32).await;
    let source = cfg.source_ref()?;
    let upstream = if cfg.source.kind == SourceKind::Queue {
        let mut stream = broker
            .jetstream()
            .get_stream(names::queue_stream(&source))
            .await?;
        let info = stream.info().await?;
        sources(broker, &source, info).await?
    } else {
        Vec::new()
    };
    Ok(GroupReport {
        name: group.to_string(),
        source: format!(
            "{} {}",
            format!("{:?}", cfg.source.kind).to_lowercase(),
            source.name
        ),
        members: member_count(broker, &group).await,
        lag: lag.total(),
        effective_lag: lag.effective_total(),
        partitions: lag
            .partitions
            .iter()
            .map(|p| GroupPartitionReport {
                partition: p.partition,
                pending: p.pending,
                unacked: p.ack_pending,
                retrying: p.retrying,
                acked_offset: p.acked_offset,
                owner: owners.get(&p.partition).cloned(),
            })
            .collect(),
        upstream,
    })
}

/// A group's lag as a table: per partition, the totals, and what is still upstream.
pub fn group_table(g: &GroupReport) -> String {
    let mut t = Table::new(&[
        "PARTITION",
        "PENDING",
        "UNACKED",
        "RETRYING",
        "ACKED-OFFSET",
        "OWNER",
    ]);
    for p in &g.partitions {
        t.row(vec![
            p.partition.to_string(),
            p.pending.to_string(),
            p.unacked.to_string(),
            p.retrying.to_string(),
            p.acked_offset.to_string(),
            p.owner.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "total lag {} (without retrying: {}); {} member(s)\n",
        g.lag, g.effective_lag, g.members
    ));
    if !g.upstream.is_empty() {
        out.push_str(&format!(
            "{} is fed by topics; not yet received from them:\n",
            g.source
        ));
        let mut u = Table::new(&["SOURCE", "LAST-OFFSET", "RECEIVED", "PENDING"]);
        for s in &g.upstream {
            u.row(vec![
                s.source.clone(),
                s.last_offset.to_string(),
                s.received_offset.to_string(),
                s.pending.to_string(),
            ]);
        }
        out.push_str(&u.render());
        out.push_str(&format!(
            "upstream lag {}\n",
            g.upstream.iter().map(|s| s.pending).sum::<u64>()
        ));
    }
    out
}

/// The groups with a config on the broker in `namespace` (every namespace when `None`).
pub async fn group_configs(
    broker: &Broker,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<GroupConfig>> {
    let store = broker.group_config_store().await?;
    let mut out = store.list(namespace).await?;
    out.sort_by(|a, b| (&a.namespace, &a.group).cmp(&(&b.namespace, &b.group)));
    Ok(out)
}

/// The dead-letter queues of `namespace` (every namespace when `None`).
pub async fn dlqs(broker: &Broker, namespace: Option<&str>) -> anyhow::Result<Vec<DlqReport>> {
    let mut out = Vec::new();
    for (name, _) in super::streams_of_kind(broker, "deadletterqueue", namespace).await? {
        let status = broker.dlq_status(&resource_ref(&name)?).await?;
        out.push(DlqReport {
            name,
            depth: status.depth,
            oldest_age_seconds: status.oldest_age.map(|a| a.as_secs()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
