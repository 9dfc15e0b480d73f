//! ConsumerGroup, one reconcile as typed steps:
//!
//! 1. [`dereference`] — the source (Topic or Queue), its Broker and the dead-letter queue
//!    ([`GroupRefs`]);
//! 2. [`validate`] (pure) — they fit together and the spec maps onto a `GroupConfig`
//!    ([`ValidGroup`], only made there);
//! 3. [`build`] (pure) — the `GroupConfig` and the worker Deployment ([`DesiredGroup`]);
//! 4. **apply** — `ensure_group` (consumers + config channel); the runtime applies the
//!    returned Deployment with the autoscaler's replica count;
//! 5. **status** — lag per partition, measured once ([`crate::autoscale::measure`]) for the
//!    status and the autoscaler.
//!
//! Cleanup removes the group's consumers and config entry.

pub mod build;
pub mod dereference;
pub mod validate;

use k8s_openapi::api::apps::v1::Deployment;
use sluice_broker::GroupConfig;
use sluice_broker::config::SourceKind;
use tracing::{info, instrument, warn};

pub use build::{DesiredGroup, build};
pub use dereference::{GroupRefs, dereference, resolve_source};
pub use validate::{ValidGroup, validate};

use super::context::ReconcileContext;
use super::dereference::{connect, live_broker, resource_ref};
use super::{Failure, Outcome, Requeue, conditions, ns_name};
use crate::autoscale::{Measured, measure};
use crate::crd::group::PartitionLagStatus;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus};
use crate::desired::group::{source_label, source_of};

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
    match provision(ctx, group, &status).await {
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

/// Steps 1-5: returns the measured lag and the Deployment for the runtime to apply.
async fn provision(
    ctx: &ReconcileContext,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
) -> Result<(Measured, Option<Deployment>), Failure> {
    let (ns, name) = ns_name(group);
    let refs = dereference(ctx, &ns, group).await?;
    let valid = validate(&ns, &name, group, refs)?;
    let url = ctx.pool.url(&ns, &valid.refs().broker_name);
    let desired = build(&ns, &name, &valid, &url, desired_replicas(group, status))?;
    // apply
    let broker = connect(ctx, &ns, &valid.refs().broker).await?;
    let changes = broker.ensure_group(&desired.config).await.map_err(|e| {
        Failure::broker(
            &format!("failed to provision consumer group {ns}/{name}"),
            e,
        )
    })?;
    if !changes.is_noop() {
        info!(created = ?changes.created, updated = ?changes.updated, "consumer group provisioned");
    }
    // status
    let measured = measure(&broker, &desired.config).await.map_err(|e| {
        Failure::broker(
            &format!("failed to read lag of consumer group {ns}/{name}"),
            e,
        )
    })?;
    Ok((measured, desired.deployment))
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
