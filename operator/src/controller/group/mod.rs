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

use super::context::{CONNECT_TIMEOUT, ReconcileContext};
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
    /// The published config and the Broker's name, for the group's broker identity.
    pub identity: Option<(GroupConfig, String)>,
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
        Ok((measured, deployment, broker_name, config)) => {
            status.broker = Some(broker_name.clone());
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
                identity: Some((config, broker_name)),
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
                identity: None,
            }
        }
    }
}

/// Steps 1-5: returns the measured lag, the Deployment for the runtime to apply and the
/// name of the Broker the group was provisioned on.
async fn provision(
    ctx: &ReconcileContext,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
) -> Result<(Measured, Option<Deployment>, String, GroupConfig), Failure> {
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
    Ok((
        measured,
        desired.deployment,
        valid.refs().broker_name.clone(),
        desired.config,
    ))
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
/// Messages stay in the source.
///
/// It does not depend on deletion order (a namespace deletes everything at once): the Broker
/// is the one in `spec.broker`, else the source's, else the one recorded in
/// `status.broker`; the partitions are counted on the server when the Topic is gone. When the
/// Broker resource is gone too, the operator's open connection to it is used while the
/// servers still answer; otherwise it lets go and logs what is left on the server.
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
    let recorded = group.status.as_ref().and_then(|s| s.broker.clone());
    let broker_name = match (&group.spec.broker, &source, recorded) {
        (Some(b), _, _) => b.clone(),
        (None, Some(s), _) => s.broker.clone(),
        (None, None, Some(b)) => b,
        (None, None, None) => {
            info!("never provisioned (no source, no broker recorded): nothing to clean up");
            return Ok(());
        }
    };
    let live = live_broker(ctx, &ns, &broker_name).await?;
    let broker_gone = live.is_none();
    let broker = match live {
        Some(broker_obj) => connect(ctx, &ns, &broker_obj).await?,
        None => match ctx.pool.cached(&ns, &broker_name).await {
            Some(open) => open,
            None => {
                warn!(broker = %broker_name, "Broker is gone and the operator has no connection to it: the group's consumers stay on its servers' storage");
                return Ok(());
            }
        },
    };
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
    let deleted = tokio::time::timeout(CONNECT_TIMEOUT, broker.delete_group(&cfg)).await;
    match deleted {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == sluice_broker::ErrorKind::NotFound => Ok(()),
        // The Broker is being torn down: its servers may already be gone.
        Ok(Err(e)) if broker_gone => {
            warn!(error = %e, "could not remove the group's consumers from a Broker being deleted; letting go");
            Ok(())
        }
        Err(_) if broker_gone => {
            warn!("the servers of a Broker being deleted did not answer; letting go");
            Ok(())
        }
        Ok(Err(e)) => Err(Failure::broker(
            &format!("failed to delete consumer group {ns}/{name}"),
            e,
        )),
        Err(e) => Err(Failure::unavailable(
            format!(
                "Broker {broker_name} did not answer while deleting consumer group {ns}/{name}"
            ),
            Some(Box::new(e)),
        )),
    }
}
