//! ConsumerGroup: dereference the source (Topic or Queue), its Broker and the dead-letter
//! queue -> validate and build the `GroupConfig` and the worker Deployment -> `ensure_group`
//! (consumers + config channel) -> status with lag per partition. The runtime applies the
//! returned Deployment. Cleanup removes the group's consumers and config entry.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sluice_broker::GroupConfig;
use sluice_broker::config::SourceKind;
use tracing::{info, instrument, warn};

use super::context::ReconcileContext;
use super::dereference::{broker_of, connect, live_broker, resource_ref};
use super::{Failure, Outcome, Requeue, conditions, ns_name};
use crate::autoscale::{Measured, measure};
use crate::crd::group::PartitionLagStatus;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, DeadLetterQueue, InvalidField, Queue, Topic};
use crate::desired::group::{ResolvedSource, group_broker, group_config, source_label, source_of};
use crate::desired::queue::visibility_timeout_ms;
use crate::desired::worker::{WorkerInputs, worker_deployment};

/// A group's reconcile result: the status and the Deployment to apply, if any.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    /// Status, requeue, Events.
    pub outcome: Outcome<ConsumerGroupStatus>,
    /// The worker Deployment (when the group has a template and is valid).
    pub deployment: Option<Deployment>,
    /// What the autoscaler needs, when the broker answered.
    pub measured: Option<Measured>,
}

/// Reconciles one ConsumerGroup against its broker.
#[instrument(skip_all, fields(group = %format!("{}/{}", ns_name(group).0, ns_name(group).1)))]
pub async fn reconcile(
    ctx: &ReconcileContext,
    group: &ConsumerGroup,
    resync: std::time::Duration,
) -> GroupOutcome {
    let generation = group.metadata.generation;
    let mut status = group.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    if let Ok((kind, name)) = source_of(&group.spec.source) {
        status.source = Some(source_label(kind, name));
    }
    match apply(ctx, group, &status).await {
        Ok((measured, deployment)) => {
            let lag = &measured.lag;
            status.lag = Some(lag.total());
            status.partitions = lag
                .partitions
                .iter()
                .map(|p| PartitionLagStatus {
                    partition: p.partition,
                    pending: p.pending,
                    ack_pending: p.ack_pending,
                    waiting_backoff: p.retrying,
                })
                .collect();
            conditions::ready(
                &mut status.conditions,
                "consumers provisioned and group config published",
                generation,
            );
            GroupOutcome {
                outcome: Outcome {
                    status,
                    requeue: Requeue::After(resync),
                    events: Vec::new(),
                },
                deployment,
                measured: Some(measured),
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "consumer group not ready");
            conditions::failed(&mut status.conditions, &failure, generation);
            GroupOutcome {
                outcome: Outcome {
                    requeue: failure.requeue(),
                    status,
                    events: Vec::new(),
                },
                deployment: None,
                measured: None,
            }
        }
    }
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
            })
        }
        SourceKind::Queue => {
            let q = ctx
                .lookup
                .get::<Queue>(namespace, name)
                .await?
                .ok_or_else(|| missing("Queue"))?;
            let visibility = visibility_timeout_ms(&q.spec).map_err(|e| {
                InvalidField::new("source.queue", format!("Queue {name} is invalid: {e}"))
            })?;
            Ok(ResolvedSource {
                kind,
                name: name.into(),
                broker: q.spec.broker,
                partitions: 1,
                visibility_timeout_ms: Some(visibility),
            })
        }
    }
}

async fn apply(
    ctx: &ReconcileContext,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
) -> Result<(Measured, Option<Deployment>), Failure> {
    let (ns, name) = ns_name(group);
    // dereference
    let source = resolve_source(ctx, &ns, group).await?;
    let broker_name = group_broker(&group.spec, &source)?;
    let broker_obj = broker_of(ctx, &ns, &broker_name).await?;
    if let Some(dl) = &group.spec.dead_letter {
        let d = ctx.lookup.get::<DeadLetterQueue>(&ns, &dl.queue).await?.ok_or_else(|| Failure::Missing {
            reason: "DeadLetterQueueNotFound",
            message: format!("spec.deadLetter.queue: DeadLetterQueue {} does not exist in namespace {ns}; create it or fix the name", dl.queue),
        })?;
        if d.spec.broker != broker_name {
            return Err(InvalidField::new(
                "deadLetter.queue",
                format!(
                    "DeadLetterQueue {} is on Broker {}, but the group is on Broker {broker_name}",
                    dl.queue, d.spec.broker
                ),
            )
            .into());
        }
    }
    // validate + build
    let cfg = group_config(&ns, &name, &group.spec, &source)?;
    let deployment = match &group.spec.template {
        Some(t) => {
            let template = t.decode("template")?;
            let secret = broker_obj.credentials_secret();
            let url = ctx.pool.url(&ns, &broker_name);
            Some(worker_deployment(WorkerInputs {
                namespace: &ns,
                group: &name,
                broker_urls: &url,
                credentials_secret: Some(&secret),
                ack_wait_ms: cfg.ack_wait_ms,
                replicas: desired_replicas(group, status),
                owner: owner_reference(group)?,
                template,
            })?)
        }
        None => None,
    };
    // apply
    let broker = connect(ctx, &ns, &broker_obj).await?;
    let changes = broker.ensure_group(&cfg).await.map_err(|e| {
        Failure::broker(
            &format!("failed to provision consumer group {ns}/{name}"),
            e,
        )
    })?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "consumer group provisioned");
    }
    // status
    let measured = measure(&broker, &cfg).await.map_err(|e| {
        Failure::broker(
            &format!("failed to read lag of consumer group {ns}/{name}"),
            e,
        )
    })?;
    Ok((measured, deployment))
}

/// Replicas to run: what the autoscaler asked for in status, else `autoscaling.minReplicas`
/// (default 1), never above `maxReplicas`.
pub fn desired_replicas(group: &ConsumerGroup, status: &ConsumerGroupStatus) -> i32 {
    let scaling = group.spec.autoscaling.as_ref();
    let min = scaling.and_then(|a| a.min_replicas).unwrap_or(1);
    let max = scaling.map_or(u32::MAX, |a| a.max_replicas);
    let wanted = status
        .desired_replicas
        .map_or(min, |d| u32::try_from(d).unwrap_or(0));
    i32::try_from(wanted.min(max)).unwrap_or(i32::MAX)
}

fn owner_reference(group: &ConsumerGroup) -> Result<OwnerReference, Failure> {
    kube::Resource::controller_owner_ref(group, &()).ok_or_else(|| Failure::Missing {
        reason: "NotYetStored",
        message: "the ConsumerGroup has no uid yet".into(),
    })
}

/// Cleans up a deleted ConsumerGroup: removes its consumers (positions) and config entry.
/// Messages stay in the source. Lets go when the Broker is gone.
#[instrument(skip_all, fields(group = %format!("{}/{}", ns_name(group).0, ns_name(group).1)))]
pub async fn cleanup(ctx: &ReconcileContext, group: &ConsumerGroup) -> Result<(), Failure> {
    let (ns, name) = ns_name(group);
    let Ok((kind, source_name)) = source_of(&group.spec.source) else {
        return Ok(());
    };
    let source = match resolve_source(ctx, &ns, group).await {
        Ok(s) => Some(s),
        Err(Failure::Missing { .. } | Failure::InvalidSpec(_)) => None,
        Err(e) => return Err(e),
    };
    let broker_name = match (&group.spec.broker, &source) {
        (Some(b), _) => b.clone(),
        (None, Some(s)) => s.broker.clone(),
        (None, None) => {
            warn!("source and broker unknown: nothing to clean up");
            return Ok(());
        }
    };
    let Some(broker_obj) = live_broker(ctx, &ns, &broker_name).await? else {
        return Ok(());
    };
    let broker = connect(ctx, &ns, &broker_obj).await?;
    let partitions = match (&source, kind) {
        (Some(s), _) => s.partitions,
        (None, SourceKind::Queue) => 1,
        (None, SourceKind::Topic) => {
            let rr = resource_ref(&ns, source_name)?;
            broker
                .topic_partition_count(&rr)
                .await
                .map_err(|e| Failure::broker("failed to count partitions", e))?
        }
    };
    let cfg = GroupConfig::new(
        ns.clone(),
        name.clone(),
        sluice_broker::config::SourceRef {
            kind,
            name: source_name.into(),
            partitions: partitions.max(1),
        },
    );
    match broker.delete_group(&cfg).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == sluice_broker::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::broker(
            &format!("failed to delete consumer group {ns}/{name}"),
            e,
        )),
    }
}
