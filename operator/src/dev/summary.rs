//! What `sluice dev` reports when it ends: for every group, how many messages its source
//! received, how many it handled, how many it dead-lettered, and how many are unaccounted
//! for (lost), all read from the broker.
//!
//! - expected: messages the group's source should have received (sum of the topic partitions'
//!   last offsets; for a queue, its last sequence plus what its source topics hold that the
//!   fan-out relay has not copied into it yet, so a queue that misses part of a topic counts
//!   those messages as lost);
//! - acknowledged: the group's ack floors (every message up to it was acknowledged,
//!   successfully handled or terminated after dead-lettering);
//! - dead-lettered: messages in the group's DLQ whose `Sluice-Group` header names the group;
//! - processed = acknowledged - dead-lettered; lost = expected - acknowledged.
//!
//! A queue with priority levels or delayed delivery has one consumer per level, whose offsets
//! interleave (and a delayed message takes a second offset, its schedule's), so there:
//! acknowledged = the level consumers' acknowledged deliveries (exact unless messages were
//! retried: each retry counts as one more), lost = messages still waiting on a level plus
//! delayed messages not due yet, expected = acknowledged + lost.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_broker::config::SourceKind;
use sluice_broker::dlq::headers;
use sluice_broker::{Broker, GroupConfig, ResourceRef, names};

use super::manifest::Manifests;
use super::view::Totals;

/// Accounting of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    /// `namespace/name`.
    pub group: String,
    /// Messages its source received.
    pub expected: u64,
    /// Handled successfully.
    pub processed: u64,
    /// Dead-lettered by this group.
    pub dead_lettered: u64,
    /// Neither handled nor dead-lettered.
    pub lost: u64,
    /// What the autoscaler did.
    pub scaling: super::session::ScalingStats,
}

/// The end-of-run report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Per group.
    pub groups: Vec<GroupSummary>,
    /// Totals.
    pub totals: Totals,
}

/// Reads the accounting from the broker.
pub async fn compute(
    broker: &Broker,
    manifests: &Manifests,
    groups: &[GroupConfig],
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for topic in &manifests.topics {
        let r = ResourceRef::new(
            topic.metadata.namespace.clone().unwrap_or_default(),
            topic.metadata.name.clone().unwrap_or_default(),
        )?;
        let parts = broker.topic_status(&r, topic.spec.partitions).await?;
        summary.totals.published += parts.iter().map(|p| p.last_offset).sum::<u64>();
    }
    let dead = dead_letters_by_group(broker, manifests).await?;
    for cfg in groups {
        let source = cfg.source_ref()?;
        let expected = match cfg.source.kind {
            SourceKind::Topic => broker
                .topic_status(&source, cfg.source.partitions)
                .await?
                .iter()
                .map(|p| p.last_offset)
                .sum(),
            SourceKind::Queue => {
                let mut stream = broker
                    .jetstream()
                    .get_stream(names::queue_stream(&source))
                    .await?;
                let info = stream.info().await?;
                let sources = info
                    .config
                    .metadata
                    .get(sluice_broker::provision::META_SOURCES)
                    .map(|v| sluice_broker::provision::decode_sources(v))
                    .unwrap_or_default();
                if cfg.priorities > 1 || info.config.allow_message_schedules {
                    let g = leveled_queue(broker, cfg, &source, &dead).await?;
                    if sources.is_empty() {
                        summary.totals.published += g.expected;
                    }
                    summary.totals.processed += g.processed;
                    summary.totals.dead_lettered += g.dead_lettered;
                    summary.totals.lost += g.lost;
                    summary.groups.push(g);
                    continue;
                }
                if sources.is_empty() {
                    summary.totals.published += info.state.last_sequence;
                }
                let not_received: u64 = broker
                    .fanout_status(&source, &sources)
                    .await?
                    .iter()
                    .map(|s| s.pending)
                    .sum();
                info.state.last_sequence + not_received
            }
        };
        let acked: u64 = broker
            .group_lag(cfg)
            .await?
            .partitions
            .iter()
            .map(|p| p.acked_offset)
            .sum();
        let dead_lettered = dead
            .get(&(cfg.namespace.clone(), cfg.group.clone()))
            .copied()
            .unwrap_or(0);
        let g = GroupSummary {
            group: format!("{}/{}", cfg.namespace, cfg.group),
            expected,
            processed: acked.saturating_sub(dead_lettered),
            dead_lettered,
            lost: expected.saturating_sub(acked),
            scaling: Default::default(),
        };
        summary.totals.processed += g.processed;
        summary.totals.dead_lettered += g.dead_lettered;
        summary.totals.lost += g.lost;
        summary.groups.push(g);
    }
    Ok(summary)
}

/// The accounting of a group on a queue with priority levels or delayed delivery (see the
/// module docs).
async fn leveled_queue(
    broker: &Broker,
    cfg: &GroupConfig,
    queue: &ResourceRef,
    dead: &BTreeMap<(String, String), u64>,
) -> anyhow::Result<GroupSummary> {
    let acked: u64 = broker
        .group_lag(cfg)
        .await?
        .partitions
        .iter()
        .map(|p| p.acked_deliveries)
        .sum();
    let waiting: u64 = broker
        .queue_levels(queue)
        .await?
        .iter()
        .map(|l| l.due + l.scheduled)
        .sum();
    let dead_lettered = dead
        .get(&(cfg.namespace.clone(), cfg.group.clone()))
        .copied()
        .unwrap_or(0);
    Ok(GroupSummary {
        group: format!("{}/{}", cfg.namespace, cfg.group),
        expected: acked + waiting,
        processed: acked.saturating_sub(dead_lettered),
        dead_lettered,
        lost: waiting,
        scaling: Default::default(),
    })
}

/// Counts DLQ messages per `(namespace, group)`.
async fn dead_letters_by_group(
    broker: &Broker,
    manifests: &Manifests,
) -> anyhow::Result<BTreeMap<(String, String), u64>> {
    let mut counts = BTreeMap::new();
    for dlq in &manifests.dlqs {
        let ns = dlq.metadata.namespace.clone().unwrap_or_default();
        let r = ResourceRef::new(ns.clone(), dlq.metadata.name.clone().unwrap_or_default())?;
        let mut stream = broker.jetstream().get_stream(names::dlq_stream(&r)).await?;
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(msg) = stream.get_raw_message(seq).await else {
                continue;
            };
            if let Some(group) = msg.headers.get(headers::GROUP) {
                *counts
                    .entry((ns.clone(), group.as_str().to_string()))
                    .or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}
