//! Step 1, **dereference**: what a ConsumerGroup points to — its source (Topic or Queue), the
//! Broker it runs on and its dead-letter queue — read through the [`ReconcileContext`]'s
//! lookup. Missing objects are [`Failure::Missing`]; nothing is checked for consistency yet.

use sluice_broker::config::{DEFAULT_LOW_PRIORITY_SHARE, SourceKind};

use crate::controller::Failure;
use crate::controller::context::ReconcileContext;
use crate::controller::dereference::broker_of;
use crate::crd::{Broker, ConsumerGroup, DeadLetterQueue, InvalidField, Queue, Topic};
use crate::desired::group::{ResolvedSource, group_broker, source_of};
use crate::desired::queue::{low_priority_share, priorities, visibility_timeout_ms};

/// What a group points to, as read.
#[derive(Debug, Clone)]
pub struct GroupRefs {
    /// The source, with what the group needs to know about it.
    pub source: ResolvedSource,
    /// Name of the Broker the group runs on.
    pub broker_name: String,
    /// That Broker.
    pub broker: Broker,
    /// The dead-letter queue, when the group names one.
    pub dead_letter: Option<DeadLetterQueue>,
}

/// Reads the group's source, Broker and dead-letter queue.
pub async fn dereference(
    ctx: &ReconcileContext,
    namespace: &str,
    group: &ConsumerGroup,
) -> Result<GroupRefs, Failure> {
    let source = resolve_source(ctx, namespace, group).await?;
    let broker_name = group_broker(&group.spec, &source)?;
    let broker = broker_of(ctx, namespace, &broker_name).await?;
    let dead_letter = match &group.spec.dead_letter {
        Some(dl) => Some(
            ctx.lookup
                .get::<DeadLetterQueue>(namespace, &dl.queue)
                .await?
                .ok_or_else(|| Failure::Missing {
                    reason: "DeadLetterQueueNotFound",
                    message: format!(
                        "spec.deadLetter.queue: DeadLetterQueue {} does not exist in namespace {namespace}; create it or fix the name",
                        dl.queue
                    ),
                })?,
        ),
        None => None,
    };
    Ok(GroupRefs {
        source,
        broker_name,
        broker,
        dead_letter,
    })
}

/// Looks up the group's source.
pub async fn resolve_source(
    ctx: &ReconcileContext,
    namespace: &str,
    group: &ConsumerGroup,
) -> Result<ResolvedSource, Failure> {
    let (kind, name) = source_of(&group.spec.source)?;
    let missing = |what: &str| Failure::Missing {
        reason: "SourceNotFound",
        message: format!(
            "{what} {name} does not exist in namespace {namespace}; create it or fix spec.source"
        ),
    };
    match kind {
        SourceKind::Topic => {
            let t = ctx
                .lookup
                .get::<Topic>(namespace, name)
                .await?
                .ok_or_else(|| missing("Topic"))?;
            Ok(ResolvedSource {
                kind,
                name: name.into(),
                broker: t.spec.broker,
                partitions: t.spec.partitions,
                visibility_timeout_ms: None,
                priorities: 1,
                low_priority_share: DEFAULT_LOW_PRIORITY_SHARE,
            })
        }
        SourceKind::Queue => {
            let q = ctx
                .lookup
                .get::<Queue>(namespace, name)
                .await?
                .ok_or_else(|| missing("Queue"))?;
            let invalid = |e: InvalidField| {
                InvalidField::new("source.queue", format!("Queue {name} is invalid: {e}"))
            };
            let visibility = visibility_timeout_ms(&q.spec).map_err(invalid)?;
            let levels = priorities(&q.spec).map_err(invalid)?;
            let share = low_priority_share(&q.spec).map_err(invalid)?;
            Ok(ResolvedSource {
                kind,
                name: name.into(),
                broker: q.spec.broker,
                partitions: 1,
                visibility_timeout_ms: Some(visibility),
                priorities: levels,
                low_priority_share: share,
            })
        }
    }
}
