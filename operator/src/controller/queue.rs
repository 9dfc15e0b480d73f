//! Queue: dereference the Broker and source Topics -> validate and build `QueueSettings` ->
//! `ensure_queue` (stream plus fan-out relay consumers) and keep the fan-out relays running ->
//! status with the number of waiting messages, how far each source partition was received,
//! and `SourcingStalled` (condition and Warning Event) when a source's gap does not close.

use std::future::Future;
use std::time::Duration;

use sluice_broker::fanout::{DEFAULT_STALL_AFTER, SourcePartitionStatus, Stall};
use tracing::{info, instrument, warn};

use super::broker_resource::BrokerResource;
use super::context::ReconcileContext;
use super::dereference::{broker_of, cleanup_broker, connect, resource_ref};
use super::{Failure, ObjectEvent, Outcome, Requeue, conditions, ns_name};
use crate::crd::{
    Broker, ConditionStatus, DeletionPolicy, Queue, QueueSourceStatus, QueueStatus, Topic,
};
use crate::desired::queue::{ResolvedTopic, queue_settings};
use crate::desired::stream_replicas;

/// Requeue of a queue whose sources are still being copied in (status follows closely).
const SOURCING_RESYNC: Duration = Duration::from_secs(5);

/// What the broker says about a provisioned queue.
struct QueueState {
    messages: u64,
    /// Copies of the queue stream in effect.
    replicas: u32,
    sources: Vec<SourcePartitionStatus>,
    stalls: Vec<Stall>,
}

/// Reconciles one Queue against its broker.
#[instrument(skip_all, fields(queue = %format!("{}/{}", ns_name(queue).0, ns_name(queue).1)))]
pub async fn reconcile(
    ctx: &ReconcileContext,
    queue: &Queue,
    resync: Duration,
) -> Outcome<QueueStatus> {
    let generation = queue.metadata.generation;
    let mut status = queue.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    status.observed_generation = generation;
    match apply(ctx, queue).await {
        Ok(state) => {
            status.messages = Some(state.messages);
            status.replicas = Some(state.replicas);
            status.sources = state.sources.iter().map(source_status).collect();
            conditions::ready(
                &mut status.conditions,
                "queue stream provisioned",
                generation,
            );
            sourcing_condition(&mut status, &state.stalls, generation, &mut events);
            let catching_up = state.sources.iter().any(|s| s.pending > 0);
            Outcome {
                status,
                requeue: Requeue::After(if catching_up {
                    resync.min(SOURCING_RESYNC)
                } else {
                    resync
                }),
                events,
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "queue not ready");
            conditions::failed(&mut status.conditions, &failure, generation);
            Outcome {
                requeue: failure.requeue(),
                status,
                events,
            }
        }
    }
}

fn source_status(s: &SourcePartitionStatus) -> QueueSourceStatus {
    QueueSourceStatus {
        topic: s.topic.clone(),
        partition: s.partition,
        last_offset: s.origin_last_offset,
        received_offset: s.received_offset,
        pending: s.pending,
    }
}

/// Sets `SourcingStalled` and raises a Warning Event when it turns true.
fn sourcing_condition(
    status: &mut QueueStatus,
    stalls: &[Stall],
    generation: Option<i64>,
    events: &mut Vec<ObjectEvent>,
) {
    if stalls.is_empty() {
        if status.sources.is_empty() {
            status
                .conditions
                .retain(|c| c.type_ != conditions::SOURCING_STALLED);
        } else {
            conditions::set(
                &mut status.conditions,
                conditions::SOURCING_STALLED,
                ConditionStatus::False,
                "Flowing",
                "every source partition is being received",
                generation,
            );
        }
        return;
    }
    let message = format!(
        "{}; the relay was restarted to repair it",
        stalls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !conditions::is_true(&status.conditions, conditions::SOURCING_STALLED) {
        events.push(ObjectEvent {
            warning: true,
            reason: "SourcingStalled",
            message: message.clone(),
            action: None,
        });
    }
    conditions::set(
        &mut status.conditions,
        conditions::SOURCING_STALLED,
        ConditionStatus::True,
        "RelayStalled",
        message,
        generation,
    );
}

/// Step 1 (dereference): the Broker and the source Topics.
async fn dereference(
    ctx: &ReconcileContext,
    ns: &str,
    queue: &Queue,
) -> Result<(Broker, Vec<ResolvedTopic>), Failure> {
    let broker = broker_of(ctx, ns, &queue.spec.broker).await?;
    let mut topics = Vec::new();
    for (i, source) in queue.spec.sources.iter().enumerate() {
        let topic = ctx.lookup.get::<Topic>(ns, &source.topic).await?.ok_or_else(|| Failure::Missing {
            reason: "SourceNotFound",
            message: format!("spec.sources[{i}].topic: Topic {} does not exist in namespace {ns}; create it or fix the source", source.topic),
        })?;
        topics.push(ResolvedTopic {
            name: source.topic.clone(),
            broker: topic.spec.broker.clone(),
            partitions: topic.spec.partitions,
        });
    }
    Ok((broker, topics))
}

/// Steps 2-3 (validate + build, pure): the queue stream and its sources as the broker should
/// have them.
#[derive(Debug, Clone)]
struct DesiredQueue {
    rr: sluice_broker::ResourceRef,
    settings: sluice_broker::config::QueueSettings,
}

/// Validates the spec against its Broker and sources and builds the settings.
fn desired(
    ns: &str,
    name: &str,
    queue: &Queue,
    broker: &Broker,
    topics: &[ResolvedTopic],
) -> Result<DesiredQueue, Failure> {
    let mut settings = queue_settings(&queue.spec, topics)?;
    settings.replicas = stream_replicas(
        queue.spec.replicas,
        &queue.spec.broker,
        broker.spec.replicas,
    )?;
    Ok(DesiredQueue {
        rr: resource_ref(ns, name)?,
        settings,
    })
}

/// Step 4 (apply): creates or updates the stream and keeps the fan-out relays running.
async fn provision(
    ctx: &ReconcileContext,
    broker: &Broker,
    desired: &DesiredQueue,
) -> Result<sluice_broker::Broker, Failure> {
    let rr = &desired.rr;
    let connection = connect(ctx, &rr.namespace, broker).await?;
    let changes = connection
        .ensure_queue(rr, &desired.settings)
        .await
        .map_err(|e| Failure::broker(&format!("failed to provision queue {rr}"), e))?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "queue provisioned");
    }
    if desired.settings.sources.is_empty() {
        ctx.relays.stop(rr);
    } else {
        ctx.relays
            .ensure(&connection, rr, &desired.settings.sources);
    }
    Ok(connection)
}

/// Step 5 (status): waiting messages, how far each source partition was received, stalls.
async fn observe(
    ctx: &ReconcileContext,
    broker: &sluice_broker::Broker,
    desired: &DesiredQueue,
) -> Result<QueueState, Failure> {
    let rr = &desired.rr;
    let stream_name = sluice_broker::names::queue_stream(rr);
    let mut stream = broker
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(|e| {
            Failure::broker_refused(
                format!("failed to look up stream {stream_name} of queue {rr}: {e}"),
                e,
            )
        })?;
    let info = stream.info().await.map_err(|e| {
        Failure::broker_refused(
            format!("failed to read stream {stream_name} of queue {rr}: {e}"),
            e,
        )
    })?;
    let messages = info.state.messages;
    let sources = broker
        .fanout_status(rr, &desired.settings.sources)
        .await
        .map_err(|e| Failure::broker(&format!("failed to read the sources of queue {rr}"), e))?;
    let stalls = ctx.relays.stalls(broker, rr, &sources, DEFAULT_STALL_AFTER);
    Ok(QueueState {
        messages,
        replicas: desired.settings.replicas,
        sources,
        stalls,
    })
}

/// The pipeline: [`dereference`], [`desired`], [`provision`], [`observe`].
async fn apply(ctx: &ReconcileContext, queue: &Queue) -> Result<QueueState, Failure> {
    let (ns, name) = ns_name(queue);
    let (broker, topics) = dereference(ctx, &ns, queue).await?;
    let desired = desired(&ns, &name, queue, &broker, &topics)?;
    let connection = provision(ctx, &broker, &desired).await?;
    observe(ctx, &connection, &desired).await
}

/// Cleans up a deleted Queue: its fan-out relays stop; with `deletionPolicy: Delete` the
/// stream and the relay consumers on the source topics are deleted too.
#[instrument(skip_all, fields(queue = %format!("{}/{}", ns_name(queue).0, ns_name(queue).1)))]
pub async fn cleanup(ctx: &ReconcileContext, queue: &Queue) -> Result<(), Failure> {
    let (ns, name) = ns_name(queue);
    let rr = resource_ref(&ns, &name)?;
    ctx.relays.stop(&rr);
    let policy = queue.spec.deletion_policy.unwrap_or_default();
    let kept = "the queue stream and its relay positions";
    let Some(broker) = cleanup_broker(ctx, &ns, &queue.spec.broker, policy, kept).await? else {
        return Ok(());
    };
    let sources: Vec<sluice_broker::config::QueueSource> = queue
        .status
        .as_ref()
        .map(|s| partitions_by_topic(&s.sources))
        .unwrap_or_default();
    broker.delete_fanout(&rr, &sources).await.map_err(|e| {
        Failure::broker(
            &format!("failed to delete the fan-out consumers of queue {ns}/{name}"),
            e,
        )
    })?;
    broker
        .delete_queue(&rr)
        .await
        .map_err(|e| Failure::broker(&format!("failed to delete queue {ns}/{name}"), e))?;
    Ok(())
}

/// The sources recorded in status, as topic and partition count (what was provisioned, even
/// when the Topics are already gone).
fn partitions_by_topic(sources: &[QueueSourceStatus]) -> Vec<sluice_broker::config::QueueSource> {
    let mut out: Vec<sluice_broker::config::QueueSource> = Vec::new();
    for s in sources {
        match out.iter_mut().find(|q| q.topic == s.topic) {
            Some(q) => q.partitions = q.partitions.max(s.partition + 1),
            None => out.push(sluice_broker::config::QueueSource {
                topic: s.topic.clone(),
                partitions: s.partition + 1,
            }),
        }
    }
    out
}

impl BrokerResource for Queue {
    const KIND: &'static str = "Queue";

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    fn reconcile<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
        resync: Duration,
    ) -> impl Future<Output = Outcome<QueueStatus>> + Send + 'a {
        reconcile(ctx, self, resync)
    }

    fn cleanup<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
        cleanup(ctx, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(topic: &str, partition: u32) -> QueueSourceStatus {
        QueueSourceStatus {
            topic: topic.into(),
            partition,
            ..Default::default()
        }
    }

    #[test]
    fn provisioned_sources_are_recovered_from_status() {
        let got = partitions_by_topic(&[src("a", 0), src("a", 2), src("b", 0), src("a", 1)]);
        assert_eq!(
            got,
            vec![
                sluice_broker::config::QueueSource {
                    topic: "a".into(),
                    partitions: 3
                },
                sluice_broker::config::QueueSource {
                    topic: "b".into(),
                    partitions: 1
                },
            ]
        );
    }

    #[test]
    fn a_stall_raises_one_event_and_the_condition() {
        let mut status = QueueStatus {
            sources: vec![src("a", 0)],
            ..Default::default()
        };
        let stall = Stall {
            topic: "a".into(),
            partition: 0,
            pending: 5,
            idle_for: Duration::from_secs(90),
            last_error: Some("no responders".into()),
        };
        let mut events = Vec::new();
        sourcing_condition(
            &mut status,
            std::slice::from_ref(&stall),
            Some(1),
            &mut events,
        );
        assert_eq!(events.len(), 1);
        assert!(conditions::is_true(
            &status.conditions,
            conditions::SOURCING_STALLED
        ));
        let c = conditions::get(&status.conditions, conditions::SOURCING_STALLED).unwrap();
        assert!(
            c.message.contains("topic a partition 0: 5 messages"),
            "{}",
            c.message
        );
        // Still stalled: no second Event.
        sourcing_condition(&mut status, &[stall], Some(1), &mut events);
        assert_eq!(events.len(), 1);
        // Flowing again.
        sourcing_condition(&mut status, &[], Some(1), &mut events);
        assert!(!conditions::is_true(
            &status.conditions,
            conditions::SOURCING_STALLED
        ));
    }
}
